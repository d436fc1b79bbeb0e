"""The context rules both world models share (unizero.context): trim, padding, positions, plans."""

from __future__ import annotations

import numpy as np
import torch

from unizero.context import (StorePlan, evicted_key, left_pads, needs_trim, recurrent_positions,
                             root_positions, sizes_after_recurrent, store_plans, stores_contexts,
                             trim_window, trim_with_correction, trimmed_size)

C = 8


def marked_row(context: int = C) -> torch.Tensor:
    """``[1, 2, C, 3]`` whose value at position p is p (every head and channel)."""
    return torch.arange(context, dtype=torch.float32).view(1, 1, context, 1).expand(1, 2, context, 3).clone()


def test_contexts_of_two_tokens_or_fewer_are_never_stored():
    assert [stores_contexts(c) for c in (1, 2, 3)] == [False, False, True]


def test_a_context_is_trimmed_once_it_reaches_c_minus_one_and_keeps_c_minus_three():
    assert [needs_trim(size, C) for size in (5, 6, 7, 8)] == [False, False, True, True]
    assert trimmed_size(C) == 5 and trim_window(C) == (2, 7)


def test_trim_keeps_positions_two_to_c_minus_one_plus_the_correction_into_out():
    row, correction = marked_row(), torch.full((1, 2, 5, 3), 0.5)
    out = torch.empty(1, 2, 5, 3)
    result = trim_with_correction(row[..., 2:7, :], correction, out=out)
    assert result is out
    assert out[0, 0, :, 0].tolist() == [2.5, 3.5, 4.5, 5.5, 6.5]
    assert torch.equal(row, marked_row())  # the source row is untouched


def test_trim_without_out_corrects_the_row_in_place_as_legacy_does():
    row, correction = marked_row(), torch.full((1, 2, 5, 3), 0.5)
    result = trim_with_correction(row[..., 2:7, :], correction)
    assert result.data_ptr() == row[..., 2:, :].data_ptr()  # a view of the row itself
    assert row[0, 0, :, 0].tolist() == [0.0, 1.0, 2.5, 3.5, 4.5, 5.5, 6.5, 7.0]


def test_trim_works_on_packed_layouts_with_leading_dims():
    packed = marked_row().expand(3, 2, 1, 2, C, 3).clone()  # [L, 2, B, H, C, hd]
    out = torch.empty(3, 2, 1, 2, 5, 3)
    trim_with_correction(packed[..., 2:7, :], torch.ones(3, 2, 1, 2, 5, 3), out=out)
    assert out[2, 1, 0, 1, :, 2].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_left_pads_pad_every_context_to_the_longest():
    assert left_pads([5, 2, 1]) == (5, [0, 3, 4])
    assert left_pads([]) == (0, [])


def test_root_tokens_sit_at_the_batch_size_and_recurrent_tokens_at_each_own_size():
    assert root_positions(3, 4).tolist() == [[4], [4], [4]]
    assert recurrent_positions([5, 1]).tolist() == [[5], [1]]
    assert root_positions(2, 1).dtype == recurrent_positions([1]).dtype == np.int64
    assert sizes_after_recurrent([5, 1]) == [7, 3]


def test_root_store_plans_keep_the_batch_size_for_every_env_unshifted():
    assert store_plans(2, 7, None, C) == [StorePlan(7, 0, True, 5), StorePlan(7, 0, True, 5)]
    assert [(p.trimmed, p.stored_size) for p in store_plans(1, 7, None, C)] == [(True, 5)]


def test_recurrent_store_plans_shift_out_each_envs_left_padding():
    plans = store_plans(3, 9, [7, 3, 6], C)
    assert [(p.own_size, p.shift) for p in plans] == [(7, 0), (3, 4), (6, 1)]
    assert [(p.trimmed, p.stored_size) for p in plans] == [(True, 5), (False, 3), (False, 6)]


def test_restoring_the_deleted_key_itself_is_a_replacement_not_an_eviction():
    assert (evicted_key(None, 1), evicted_key(2, 1), evicted_key(1, 1)) == (None, 2, None)
