"""KV containers (legacy-spec §2.1-§2.3) and the cache key (§3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from unizero.hashing import hash_state
from unizero.kv_cache import Cache, KeysValues, KVCache

XXH64_OF_EMPTY_INPUT = 0xEF46DB3751D8E999  # published XXH64 test vector (seed 0, no bytes)


def filled_cache(max_tokens: int, size: int, heads: int = 2, samples: int = 2,
                 head_dim: int = 3) -> Cache:
    """A cache whose position p holds the value 100 + p everywhere, with ``size`` valid."""
    cache = Cache(samples, heads, max_tokens, heads * head_dim, "cpu")
    marks = 100.0 + torch.arange(max_tokens, dtype=torch.float32)
    cache.tensor = marks.view(1, 1, -1, 1).expand(samples, heads, max_tokens, head_dim).clone()
    cache.size = size
    return cache


def tokens(values: list[float], heads: int = 2, samples: int = 2, head_dim: int = 3) -> torch.Tensor:
    """``x: [B, H, len(values), hd]`` whose position t holds ``values[t]``."""
    x = torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1)
    return x.expand(samples, heads, len(values), head_dim).clone()


def positions(cache: Cache) -> list[float]:
    """The value at each position of the full storage (all positions hold one value each)."""
    return cache.tensor[0, 0, :, 0].tolist()


# ---------------------------------------------------------------------------- Cache.update
def test_update_appends_after_the_valid_region_and_grows_size() -> None:
    cache = filled_cache(max_tokens=6, size=2)
    cache.update(tokens([7.0, 8.0]))
    assert cache.size == 4
    assert positions(cache) == [100.0, 101.0, 7.0, 8.0, 104.0, 105.0]
    assert cache.get().shape == (2, 2, 4, 3)


def test_update_fitting_exactly_does_not_shift() -> None:
    cache = filled_cache(max_tokens=6, size=4)
    cache.update(tokens([7.0, 8.0]))
    assert cache.size == 6
    assert positions(cache) == [100.0, 101.0, 102.0, 103.0, 7.0, 8.0]


def test_update_overflow_by_one_shifts_by_two_and_leaves_the_vacated_tail() -> None:
    # need = 5 + 2 = 7 > 6: shift 1 is odd, so 2 positions are dropped (obs/action pairs stay).
    cache = filled_cache(max_tokens=6, size=5)
    cache.update(tokens([7.0, 8.0]))
    assert cache.size == 5
    # [2, 5) moved to [0, 3); new tokens at [3, 5); position 5 keeps its old content.
    assert positions(cache) == [102.0, 103.0, 104.0, 7.0, 8.0, 105.0]


def test_update_even_overflow_shifts_by_exactly_that_amount() -> None:
    cache = filled_cache(max_tokens=6, size=6)
    cache.update(tokens([7.0, 8.0]))
    assert cache.size == 6
    assert positions(cache) == [102.0, 103.0, 104.0, 105.0, 7.0, 8.0]


def test_update_shift_equal_to_size_zeroes_the_whole_tensor() -> None:
    # need = 2 + 3 = 5 > 4: shift 1 -> 2 >= size 2: all storage zeroed, size restarts at 0.
    cache = filled_cache(max_tokens=4, size=2)
    cache.update(tokens([7.0, 8.0, 9.0]))
    assert cache.size == 3
    assert positions(cache) == [7.0, 8.0, 9.0, 0.0]
    assert torch.equal(cache.tensor[:, :, 3], torch.zeros(2, 2, 3))


def test_update_shift_larger_than_size_zeroes_the_whole_tensor() -> None:
    cache = filled_cache(max_tokens=4, size=1)
    cache.update(tokens([7.0, 8.0, 9.0, 6.0]))
    assert cache.size == 4
    assert positions(cache) == [7.0, 8.0, 9.0, 6.0]


def test_update_shift_with_single_head_single_sample_goes_through_a_temporary() -> None:
    # B = H = 1 is the case where an overlapping in-place copy misbehaves (spec §14.1).
    cache = filled_cache(max_tokens=4, size=4, heads=1, samples=1)
    cache.update(tokens([7.0], heads=1, samples=1))
    assert cache.size == 3
    assert positions(cache) == [102.0, 103.0, 7.0, 103.0]


def test_update_long_left_shift_with_single_head_single_sample() -> None:
    cache = filled_cache(max_tokens=8, size=8, heads=1, samples=1, head_dim=5)
    cache.update(tokens([7.0, 8.0], heads=1, samples=1, head_dim=5))
    assert cache.size == 8
    assert positions(cache) == [102.0, 103.0, 104.0, 105.0, 106.0, 107.0, 7.0, 8.0]


def reference_update(valid: list[float], new: list[float], max_tokens: int) -> list[float]:
    """The §2.1 rule on the valid region only."""
    need = len(valid) + len(new)
    if need > max_tokens:
        shift = need - max_tokens
        shift += shift % 2
        valid = [] if shift >= len(valid) else valid[shift:]
    return valid + new


@settings(max_examples=60, deadline=None)
@given(max_tokens=st.integers(2, 9),
       appends=st.lists(st.integers(1, 2), min_size=1, max_size=12))
def test_update_matches_the_even_shift_rule_on_any_append_sequence(max_tokens: int,
                                                                   appends: list[int]) -> None:
    cache = Cache(1, 1, max_tokens, 2, "cpu")
    expected: list[float] = []
    counter = 0.0
    for count in appends:
        new = [counter + i for i in range(count)]
        counter += count
        cache.update(tokens(new, heads=1, samples=1, head_dim=2))
        expected = reference_update(expected, new, max_tokens)
        assert cache.size == len(expected)
        assert cache.get()[0, 0, :, 0].tolist() == expected


def test_shape_reports_the_stored_sample_count_not_the_tensor_rows() -> None:
    cache = Cache(3, 2, 5, 6, "cpu")
    cache.tensor = torch.zeros(1, 2, 5, 3)
    cache.size = 2
    assert cache.shape == (3, 2, 2, 3)


def test_reset_allocates_new_storage_and_sets_size_zero() -> None:
    cache = filled_cache(max_tokens=4, size=3)
    before = cache.tensor
    cache.reset()
    assert cache.size == 0
    assert cache.tensor is not before
    assert cache.tensor.shape == (2, 2, 4, 3)
    assert cache.tensor.dtype == torch.float32


def test_cache_rejects_embed_dim_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match=r"embed_dim=10 is not divisible by num_heads=4"):
        Cache(1, 4, 8, 10, "cpu")


def test_kv_cache_updates_k_and_v_with_the_same_rule() -> None:
    kv = KVCache(1, 1, 4, 2, "cpu")
    kv.update(torch.ones(1, 1, 3, 2), 2 * torch.ones(1, 1, 3, 2))
    kv.update(3 * torch.ones(1, 1, 2, 2), 4 * torch.ones(1, 1, 2, 2))  # need 5: shift 2
    k, v = kv.get()
    assert kv.size == 3 and kv.v.size == 3
    assert k[0, 0, :, 0].tolist() == [1.0, 3.0, 3.0]
    assert v[0, 0, :, 0].tolist() == [2.0, 4.0, 4.0]
    assert kv.shape == (1, 1, 3, 2)


# ---------------------------------------------------------------------------- KeysValues
def marked_keys_values(num_layers: int = 2, size: int = 3) -> KeysValues:
    kv = KeysValues(1, 2, 5, 6, num_layers, "cpu")
    for i, layer in enumerate(kv.layers):
        layer.k.tensor = torch.arange(30, dtype=torch.float32).view(1, 2, 5, 3) + 1000 * i
        layer.v.tensor = -layer.k.tensor
        layer.k.size, layer.v.size = size, size - 1
    return kv


def test_keys_values_size_is_layer_zero_k_size() -> None:
    kv = marked_keys_values(size=3)
    kv.layers[1].k.size = 1
    assert kv.size == 3
    assert len(kv) == 2
    assert kv[1] is kv.layers[1]
    assert KeysValues(1, 2, 5, 6, 0, "cpu").size == 0


def test_clone_copies_full_tensors_and_both_sizes() -> None:
    src = marked_keys_values(size=3)
    out = src.clone()
    assert out.geometry == (2, 1, 2, 5, 3)
    for a, b in zip(src.layers, out.layers):
        assert torch.equal(a.k.tensor, b.k.tensor)  # full storage, beyond size too
        assert torch.equal(a.v.tensor, b.v.tensor)
        assert (b.k.size, b.v.size) == (3, 2)


def test_clone_is_isolated_from_its_source_both_ways() -> None:
    src = marked_keys_values()
    out = src.clone()
    out.layers[0].k.tensor[0, 0, 0, 0] = -7.0
    out.layers[1].v.size = 5
    assert src.layers[0].k.tensor[0, 0, 0, 0].item() == 0.0
    assert src.layers[1].v.size == 2
    src.layers[1].k.tensor.fill_(9.0)
    assert out.layers[1].k.tensor[0, 0, 0, 0].item() == 1000.0


def test_clone_takes_geometry_from_the_storage_tensors() -> None:
    src = KeysValues(4, 2, 8, 6, 1, "cpu")
    src.layers[0].k.tensor = torch.ones(1, 2, 5, 3)
    src.layers[0].v.tensor = torch.ones(1, 2, 5, 3)
    assert src.clone().geometry == (1, 1, 2, 5, 3)


def test_clone_without_layers_raises() -> None:
    with pytest.raises(ValueError, match="no layers"):
        KeysValues(1, 2, 5, 6, 0, "cpu").clone()


def test_copy_from_writes_into_own_storage() -> None:
    src = marked_keys_values()
    dst = KeysValues(1, 2, 5, 6, 2, "cpu")
    storage = [layer.k.tensor for layer in dst.layers]
    dst.copy_from(src)
    assert all(layer.k.tensor is t for layer, t in zip(dst.layers, storage))
    assert torch.equal(dst.layers[1].v.tensor, src.layers[1].v.tensor)
    assert (dst.layers[1].k.size, dst.layers[1].v.size) == (3, 2)
    src.layers[1].v.tensor.zero_()
    assert dst.layers[1].v.tensor[0, 0, 1, 0].item() == -1003.0


@pytest.mark.parametrize("other", [
    dict(num_samples=2, num_layers=2, max_tokens=5),
    dict(num_samples=1, num_layers=1, max_tokens=5),
    dict(num_samples=1, num_layers=2, max_tokens=6),
])
def test_copy_from_rejects_a_different_geometry_and_leaves_the_destination(other: dict) -> None:
    src = KeysValues(other["num_samples"], 2, other["max_tokens"], 6, other["num_layers"], "cpu")
    dst = marked_keys_values()
    before = dst.layers[0].k.tensor.clone()
    with pytest.raises(ValueError, match=r"geometry mismatch: destination \(2, 1, 2, 5, 3\)"):
        dst.copy_from(src)
    assert torch.equal(dst.layers[0].k.tensor, before)
    assert dst.size == 3


def test_nbytes_counts_k_and_v_of_every_layer() -> None:
    assert KeysValues(2, 2, 5, 6, 3, "cpu").nbytes() == 2 * 2 * 5 * 3 * 4 * 2 * 3


# ---------------------------------------------------------------------------- hash_state
def test_hash_state_is_xxh64_seed_zero_of_the_raw_bytes() -> None:
    assert hash_state(np.zeros(0, dtype=np.float32)) == XXH64_OF_EMPTY_INPUT
    arr = np.random.default_rng(3).standard_normal(16).astype(np.float32)
    assert hash_state(arr) == xxhash.xxh64(arr.tobytes(), seed=0).intdigest()
    assert hash_state(arr) != xxhash.xxh64(arr.tobytes(), seed=1).intdigest()


def test_hash_state_returns_a_python_int_in_the_64_bit_range() -> None:
    key = hash_state(np.ones(4, dtype=np.float32))
    assert type(key) is int
    assert 0 <= key < 2 ** 64


def test_hash_state_distinguishes_positive_and_negative_zero() -> None:
    assert hash_state(np.zeros(4, dtype=np.float32)) != hash_state(-np.zeros(4, dtype=np.float32))


def test_hash_state_depends_on_dtype() -> None:
    values = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    assert hash_state(values) != hash_state(values.astype(np.float64))


def test_hash_state_ignores_shape() -> None:
    values = np.arange(16, dtype=np.float32)
    assert hash_state(values) == hash_state(values.reshape(4, 4)) == hash_state(values.reshape(1, 16))


def test_hash_state_of_tensor_equals_that_of_its_numpy_bytes() -> None:
    t = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    assert hash_state(t) == hash_state(t.numpy())
    assert hash_state(t.T) == hash_state(np.ascontiguousarray(t.T.numpy()))
    assert hash_state(t.T) != hash_state(t)


def test_hash_state_changes_with_a_one_ulp_change() -> None:
    values = np.ones(8, dtype=np.float32)
    bumped = values.copy()
    bumped[3] = np.nextafter(bumped[3], np.float32(2))
    assert hash_state(values) != hash_state(bumped)


# ---------------------------------------------------------------------------- packed containers
def packed_of(value: float, layers: int = 2, samples: int = 1) -> torch.Tensor:
    return torch.full((layers, 2, samples, 2, 5, 3), value)  # [L, 2, B, H, T, hd]


def test_from_packed_layers_are_views_of_the_packed_tensor() -> None:
    packed = packed_of(0.0)
    kv = KeysValues.from_packed(packed)
    assert kv.geometry == (2, 1, 2, 5, 3)
    assert kv.size == 0 and kv.layers[1].v.size == 0
    assert kv.as_packed() is packed
    packed[1, 1, 0, 0, 4, 2] = 5.0
    assert kv.layers[1].v.tensor[0, 0, 4, 2].item() == 5.0
    kv.layers[0].k.tensor[0, 1, 0, 0] = 6.0
    assert packed[0, 0, 0, 1, 0, 0].item() == 6.0


def test_as_packed_is_none_once_a_layer_tensor_is_repointed() -> None:
    kv = KeysValues.from_packed(packed_of(0.0))
    kv.layers[1].v.tensor = torch.zeros(1, 2, 5, 3)
    assert kv.as_packed() is None
    assert KeysValues(1, 2, 5, 6, 2, "cpu").as_packed() is None


def test_from_packed_rejects_a_tensor_without_a_k_v_axis() -> None:
    with pytest.raises(AssertionError, match=r"must be \[L, 2, B, H, T, hd\], got \[2, 3, 1, 2, 5, 3\]"):
        KeysValues.from_packed(torch.zeros(2, 3, 1, 2, 5, 3))


@pytest.mark.parametrize("packed_source", [True, False])
def test_full_copy_between_packed_and_unpacked_containers_is_exact(packed_source: bool) -> None:
    src = KeysValues.from_packed(torch.randn(2, 2, 1, 2, 5, 3)) if packed_source \
        else marked_keys_values()
    for layer in src.layers:
        layer.k.size, layer.v.size = 4, 2
    dst = KeysValues.from_packed(packed_of(-1.0))
    dst.copy_from(src)
    for a, b in zip(src.layers, dst.layers):
        assert torch.equal(a.k.tensor, b.k.tensor) and torch.equal(a.v.tensor, b.v.tensor)
        assert (b.k.size, b.v.size) == (4, 2)
    assert dst.as_packed() is not None  # still its own storage


@pytest.mark.parametrize("v_size", [3, 1])  # equal sizes: one packed op; mixed: per layer
def test_valid_only_copy_leaves_the_destination_tail_untouched(v_size: int) -> None:
    src = KeysValues.from_packed(packed_of(2.0))
    for layer in src.layers:
        layer.k.size, layer.v.size = 3, v_size
    dst = KeysValues.from_packed(packed_of(-1.0))
    dst.copy_from(src, valid_only=True)
    for layer in dst.layers:
        assert layer.k.tensor[0, 0, :, 0].tolist() == [2.0, 2.0, 2.0, -1.0, -1.0]
        assert layer.v.tensor[0, 0, :, 0].tolist() == [2.0] * v_size + [-1.0] * (5 - v_size)
        assert (layer.k.size, layer.v.size) == (3, v_size)
