"""KV-cache comparison over each row's valid region only (positions ``[:size]``).

Positions past a row's fill size hold whatever the buffer held before (legacy never zeroes,
spec quirk 12), so they are never compared.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from harness.compare.tensors import (NoiseFloor, TolerancePolicy, _as_numpy, _compare,
                                     _missing)
from harness.results import TensorDivergence

__all__ = ["compare_kv"]


def compare_kv(prefix: str, actual_kv_layers: Sequence[tuple[Any, Any]],
               expected_kv_layers: Sequence[tuple[Any, Any]], sizes: Sequence[int], *,
               actual_sizes: Sequence[int] | None = None, env_ids: Sequence[int] | None = None,
               policy: TolerancePolicy | None = None,
               noise_floor: NoiseFloor | None = None) -> list[TensorDivergence]:
    """Compare per-layer KV caches over each row's valid region only.

    Each layer is a ``(k, v)`` pair of ``[B, H, T, head_dim]`` tensors; row ``b`` is compared
    over ``[b, :, :size_b, :]``, so whatever lies beyond the fill size (uninitialised storage)
    is ignored, and the two sides may allocate a different ``T``. Paths read
    ``{prefix}.layer{i}.{k|v}[env{e}]``.

    Args:
        prefix: path prefix, e.g. ``kv`` or ``kv.recurrent``.
        actual_kv_layers: candidate ``[(k, v), ...]`` per layer.
        expected_kv_layers: control ``[(k, v), ...]`` per layer.
        sizes: valid length per row (the control's).
        actual_sizes: the candidate's valid lengths when they may differ from ``sizes``; a
            row whose sizes differ becomes a ``shape`` divergence. Defaults to ``sizes``.
        env_ids: env id per row for the paths; defaults to the row index.
        policy: tolerances and NaN policy; defaults to ``TolerancePolicy()``.
        noise_floor: passed to each comparison.

    Returns:
        Divergences in layer, k/v, row order. A layer present on one side only gives
        ``missing`` divergences for its k and v; a candidate tensor that is not
        ``[len(sizes), ...]`` 4-D gives one whole-tensor divergence.

    Raises:
        ValueError: ``sizes``/``actual_sizes``/``env_ids`` do not fit the tensors they describe.
    """
    policy = policy or TolerancePolicy()
    actual_sizes = sizes if actual_sizes is None else actual_sizes
    env_ids = range(len(sizes)) if env_ids is None else env_ids
    if not len(sizes) == len(actual_sizes) == len(env_ids):
        raise ValueError(f"{prefix}: sizes ({len(sizes)}), actual_sizes ({len(actual_sizes)}) "
                         f"and env_ids ({len(env_ids)}) must have one entry per row")
    divergences = []
    for layer in range(max(len(actual_kv_layers), len(expected_kv_layers))):
        for slot, name in enumerate("kv"):
            path = f"{prefix}.layer{layer}.{name}"
            actual = actual_kv_layers[layer][slot] if layer < len(actual_kv_layers) else None
            expected = expected_kv_layers[layer][slot] if layer < len(expected_kv_layers) else None
            if actual is None or expected is None:
                divergences.append(_missing(path, actual, expected, policy))
                continue
            divergences.extend(_compare_kv_rows(path, actual, expected, sizes, actual_sizes,
                                                env_ids, policy, noise_floor))
    return divergences


def _compare_kv_rows(path: str, actual: Any, expected: Any, sizes: Sequence[int],
                     actual_sizes: Sequence[int], env_ids: Sequence[int],
                     policy: TolerancePolicy, noise_floor: NoiseFloor | None
                     ) -> list[TensorDivergence]:
    # actual, expected: [B, H, T, head_dim]; T may differ between the two sides.
    actual_dtype, actual_array = _as_numpy(actual, path, "actual")
    expected_dtype, expected_array = _as_numpy(expected, path, "expected")
    _check_rows(path, "expected", expected_array.shape, sizes)
    if (actual_dtype != expected_dtype or actual_array.ndim != 4
            or actual_array.shape[0] != len(sizes)):
        whole = policy.compare(path, actual_array, expected_array)
        assert whole is not None, f"{path}: {actual_dtype}{actual_array.shape} and " \
                                  f"{expected_dtype}{expected_array.shape} compared equal"
        return [whole]
    _check_rows(path, "actual", actual_array.shape, actual_sizes)
    exact_rows = _exactly_equal_rows(actual_array, expected_array, sizes, actual_sizes)
    divergences = []
    for row, (size, actual_size, env) in enumerate(zip(sizes, actual_sizes, env_ids)):
        if exact_rows[row]:
            continue
        row_path = f"{path}[env{env}]"
        divergence = _compare(row_path, actual_dtype, actual_array[row, :, :actual_size, :],
                              expected_dtype, expected_array[row, :, :size, :],
                              policy.tolerance_for(row_path, expected_dtype), policy.nan,
                              noise_floor)
        if divergence is not None:
            divergences.append(divergence)
    return divergences


def _exactly_equal_rows(actual: np.ndarray, expected: np.ndarray, sizes: Sequence[int],
                        actual_sizes: Sequence[int]) -> np.ndarray:
    """``[B]`` mask of rows whose valid regions are bit-for-bit equal (one vectorised pass)."""
    # A deterministic replay makes most rows exactly equal; only the others need a full compare.
    rows = np.array([size == actual_size for size, actual_size in zip(sizes, actual_sizes)])
    if not rows.any() or (actual.shape[1], actual.shape[3]) != (expected.shape[1],
                                                               expected.shape[3]):
        return np.zeros(len(sizes), dtype=bool)
    limit = max(size for size, same_size in zip(sizes, rows) if same_size)  # <= T on both sides
    invalid = np.arange(limit)[None, :] >= np.asarray(sizes)[:, None]  # [B, T']
    same = (actual[:, :, :limit] == expected[:, :, :limit]) | invalid[:, None, :, None]
    return rows & same.reshape(len(sizes), -1).all(axis=1)


def _check_rows(path: str, role: str, shape: Sequence[int], sizes: Sequence[int]) -> None:
    if len(shape) != 4 or shape[0] != len(sizes):
        raise ValueError(f"{path}: {role} KV tensor must be [B={len(sizes)}, H, T, head_dim], "
                         f"got shape {tuple(shape)}")
    bad = [size for size in sizes if not 0 <= size <= shape[2]]
    if bad:
        raise ValueError(f"{path}: {role} valid sizes {bad} are outside [0, T={shape[2]}]")
