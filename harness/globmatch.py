"""Glob matching for waiver scopes and tolerance paths without backtracking.

Only ``*`` (any run of characters, ``/`` and ``.`` included) and ``?`` (one character) are
wildcards; every other character, brackets included (``k[env3]``), is literal. A regex built
from a glob backtracks: ``*?*?*?...`` against a long path takes minutes. Here a pattern is split
at its stars into segments, the first anchored at the start, the last at the end, and each one
between found at its leftmost place after the previous one; a leftmost match is always safe to
take, so nothing is ever retried: the time is at most ``len(text) * len(pattern)`` steps, and
linear in the text for patterns whose segments hold no ``?``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["GlobPattern", "compile_glob", "glob_match"]


def _segment_at(segment: str, text: str, start: int) -> bool:
    """Whether ``segment`` (literal characters and ``?``) matches ``text`` at ``start``."""
    if start + len(segment) > len(text):
        return False
    return all(char == "?" or char == text[start + i] for i, char in enumerate(segment))


def _find(segment: str, text: str, start: int, end: int) -> int:
    """The leftmost position in ``[start, end - len(segment)]`` where ``segment`` matches."""
    if "?" not in segment:
        return text.find(segment, start, end)
    anchor = max(segment.split("?"), key=len)
    if not anchor:  # all "?": any place with room
        return start if start + len(segment) <= end else -1
    shift = segment.index(anchor)
    at = text.find(anchor, start + shift, end)
    while at != -1:
        if _segment_at(segment, text, at - shift) and at - shift + len(segment) <= end:
            return at - shift
        at = text.find(anchor, at + 1, end)
    return -1


@dataclass(frozen=True, slots=True)
class GlobPattern:
    """A compiled glob. ``fullmatch(text)`` is True when the whole of ``text`` matches.

    Attributes:
        pattern: the glob as written.
        segments: the pattern split at its stars (runs of stars count as one).
    """

    pattern: str
    segments: tuple[str, ...]

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of ``text`` matches the glob."""
        segments = self.segments
        if len(segments) == 1:
            return len(text) == len(segments[0]) and _segment_at(segments[0], text, 0)
        first, last = segments[0], segments[-1]
        if len(first) + len(last) > len(text):
            return False
        if not _segment_at(first, text, 0) or not _segment_at(last, text, len(text) - len(last)):
            return False
        pos, end = len(first), len(text) - len(last)
        for segment in segments[1:-1]:
            at = _find(segment, text, pos, end)
            if at == -1:
                return False
            pos = at + len(segment)
        return True


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> GlobPattern:
    """Compile ``pattern`` (cached: waivers match the same few globs against every call)."""
    if not isinstance(pattern, str):
        raise TypeError(f"glob pattern: expected a str, got {type(pattern).__name__}")
    parts = pattern.split("*")
    middle = tuple(part for part in parts[1:-1] if part)
    return GlobPattern(pattern, (parts[0], *middle, parts[-1]) if len(parts) > 1 else (parts[0],))


def glob_match(pattern: str, text: str) -> bool:
    """Whether the whole of ``text`` matches the glob ``pattern``."""
    return compile_glob(pattern).fullmatch(text)
