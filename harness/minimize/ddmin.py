"""Delta debugging (Zeller and Hildebrandt's ``ddmin``) over a sequence."""

from __future__ import annotations

from typing import Any, Callable, Sequence

__all__ = ["ddmin"]


def ddmin(items: Sequence[Any], still_fails: Callable[[tuple[Any, ...]], bool]) -> tuple[Any, ...]:
    """A 1-minimal subsequence of ``items`` for which ``still_fails`` holds (``items`` must).

    Tries each of ``n`` chunks alone, then each complement; doubles ``n`` when neither fails.
    Deterministic: the order of tries depends only on ``items``.
    """
    current, n = tuple(items), 2
    while len(current) >= 2:
        size = -(-len(current) // n)
        chunks = [current[i:i + size] for i in range(0, len(current), size)]
        for candidate in [*chunks, *(_without(chunks, i) for i in range(len(chunks)))]:
            if len(candidate) < len(current) and still_fails(candidate):
                n = 2 if len(candidate) <= size else max(n - 1, 2)
                current = candidate
                break
        else:
            if n >= len(current):
                break
            n = min(2 * n, len(current))
    return current


def _without(chunks: list[tuple[Any, ...]], index: int) -> tuple[Any, ...]:
    return tuple(item for i, chunk in enumerate(chunks) if i != index for item in chunk)
