"""The comparator (harness.compare) and the result model (harness.results)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from harness.compare import (DEFAULT_TOLERANCES, NoiseFloor, Tolerance, ToleranceError,
                             TolerancePolicy, compare_events, compare_tensor_maps,
                             compare_tensors, parse_tol_option, slot_differences)
from harness.results import (SCHEMA_VERSION, CallComparison, EngineTiming, EventDivergence,
                             PoolStats, RunResult, SlotDifference, TensorDivergence, TraceResult)
from unizero.events import Clear, Lookup, Store, Trim

KEY_A = 0x1A2B3C4D5E6F7788
KEY_B = 0xFEDCBA9876543210  # above 2**63: must survive JSON as an int


# --- tensors: defaults agree with torch.testing.assert_close ---------------------------------

# Relative distance from the tolerance boundary inside which torch, rounding in the tensor's own
# dtype, and this comparator, working in float64, may legitimately disagree.
_ROUNDING_MARGIN = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-4,
                    torch.float64: 1e-9}


def _torch_passes(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    try:
        torch.testing.assert_close(actual, expected, equal_nan=True)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("dtype", list(_ROUNDING_MARGIN))
def test_default_tolerance_agrees_with_assert_close_near_the_boundary(dtype):
    generator = torch.Generator().manual_seed(1234)
    num_pairs = 400
    magnitude = 10 ** (torch.rand(num_pairs, generator=generator, dtype=torch.float64) * 8 - 5)
    sign = torch.where(torch.rand(num_pairs, generator=generator) < 0.5, -1.0, 1.0)
    expected = (magnitude * sign).to(dtype)
    tol = DEFAULT_TOLERANCES[str(dtype).removeprefix("torch.")]
    expected64 = expected.double()
    allowed = tol.atol + tol.rtol * expected64.abs()
    factor = torch.rand(num_pairs, generator=generator, dtype=torch.float64) + 0.5  # [0.5, 1.5)
    step = torch.where(torch.rand(num_pairs, generator=generator) < 0.5, -1.0, 1.0)
    actual = (expected64 + step * factor * allowed).to(dtype)
    distance = ((actual.double() - expected64).abs() - allowed).abs() / allowed

    verdicts = {True: 0, False: 0}
    for index in range(num_pairs):
        if distance[index] < _ROUNDING_MARGIN[dtype]:
            continue
        a, e = actual[index:index + 1], expected[index:index + 1]
        ours = compare_tensors("x", a, e) is None
        assert ours == _torch_passes(a, e), (
            f"{dtype}: actual={a.item()!r} expected={e.item()!r}: ours passes={ours}")
        verdicts[ours] += 1
    assert verdicts[True] >= num_pairs // 5 and verdicts[False] >= num_pairs // 5, verdicts
    keep = distance >= _ROUNDING_MARGIN[dtype]
    torch_mismatched = int((~torch.isclose(actual[keep], expected[keep], tol.rtol, tol.atol)).sum())
    assert compare_tensors("x", actual[keep], expected[keep]).num_mismatched == torch_mismatched


def test_default_tolerances_are_torch_defaults_and_integers_are_exact():
    assert DEFAULT_TOLERANCES == {"float16": Tolerance(1e-3, 1e-5),
                                  "bfloat16": Tolerance(1.6e-2, 1e-5),
                                  "float32": Tolerance(1.3e-6, 1e-5),
                                  "float64": Tolerance(1e-7, 1e-7)}
    big = torch.tensor([2 ** 60], dtype=torch.int64)
    divergence = compare_tensors("ids", big + 1, big)
    assert divergence is not None and (divergence.rtol, divergence.atol) == (0.0, 0.0)
    assert divergence.num_mismatched == 1
    assert compare_tensors("ids", big.clone(), big) is None
    assert compare_tensors("mask", np.array([True, False]), np.array([True, True])) is not None


def test_numpy_and_torch_inputs_of_the_same_dtype_compare_as_equals():
    values = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert compare_tensors("latent", torch.from_numpy(values.copy()), values) is None
    bf16 = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
    assert compare_tensors("latent", bf16, bf16.clone()) is None


# --- tensors: structure, NaN, inf, statistics -------------------------------------------------

def test_dtype_mismatch_is_a_divergence_not_a_crash():
    divergence = compare_tensors("latent", torch.zeros(2, 3),
                                 torch.zeros(2, 3, dtype=torch.float64))
    assert divergence.kind == "dtype"
    assert (divergence.actual_dtype, divergence.expected_dtype) == ("float32", "float64")
    assert divergence.num_mismatched == 0 and divergence.max_abs_err is None


def test_shape_mismatch_is_a_divergence_not_a_crash():
    divergence = compare_tensors("policy_logits", np.zeros((2, 3)), np.zeros((3, 2)))
    assert divergence.kind == "shape"
    assert (divergence.actual_shape, divergence.expected_shape) == ((2, 3), (3, 2))


def test_dtype_is_checked_before_shape():
    divergence = compare_tensors("x", np.zeros(2, np.float32), np.zeros(3, np.float64))
    assert divergence.kind == "dtype"
    assert (divergence.actual_shape, divergence.expected_shape) == ((2,), (3,))


def test_nan_in_the_same_position_is_equal_under_the_default_policy():
    values = np.array([1.0, math.nan, 3.0])
    assert compare_tensors("x", values.copy(), values) is None
    moved = compare_tensors("x", np.array([math.nan, 2.0, 3.0]), values)
    assert moved.num_mismatched == 2 and moved.num_nonfinite == 2
    assert moved.worst_flat_index == 0


def test_nan_fails_everywhere_under_the_fail_policy():
    values = np.array([1.0, math.nan, 3.0])
    divergence = compare_tensors("x", values.copy(), values, nan="fail")
    assert divergence.num_mismatched == 1 and divergence.num_nonfinite == 1
    assert divergence.max_abs_err is None and divergence.max_rel_err is None
    assert divergence.worst_index == (1,)
    assert math.isnan(divergence.actual_value) and math.isnan(divergence.expected_value)
    assert TolerancePolicy(nan="fail").compare("x", values.copy(), values) is not None


def test_infinities_must_match_in_sign_and_position_whatever_the_tolerance():
    loose = Tolerance(rtol=1.0, atol=1e300)
    inf = math.inf
    assert compare_tensors("x", np.array([inf, -inf]), np.array([inf, -inf]), loose) is None
    assert compare_tensors("x", np.array([-inf]), np.array([inf]), loose).num_nonfinite == 1
    assert compare_tensors("x", np.array([inf]), np.array([1e300]), loose) is not None
    assert compare_tensors("x", np.array([1e300]), np.array([inf]), loose) is not None


def test_statistics_cover_only_the_mismatched_elements():
    expected = np.array([[1.0, 2.0, 0.0], [4.0, -5.0, 6.0]])
    actual = np.array([[1.0, 2.5, 0.25], [4.05, -5.0, 3.0]])  # 4.05 is within atol
    divergence = compare_tensors("value_logits", actual, expected, Tolerance(rtol=0.0, atol=0.1))
    assert divergence.kind == "value"
    assert (divergence.num_mismatched, divergence.num_elements) == (3, 6)
    assert divergence.max_abs_err == 3.0
    assert divergence.mean_abs_err == pytest.approx((0.5 + 0.25 + 3.0) / 3, abs=0)
    # Relative error skips the element whose expected value is 0.
    assert divergence.max_rel_err == 0.5
    assert divergence.mean_rel_err == (0.25 + 0.5) / 2
    assert divergence.worst_flat_index == 5 and divergence.worst_index == (1, 2)
    assert (divergence.actual_value, divergence.expected_value) == (3.0, 6.0)
    assert (divergence.rtol, divergence.atol) == (0.0, 0.1)


def test_noise_floor_records_the_largest_difference_on_equal_tensors():
    floor = NoiseFloor()
    assert compare_tensors("x", np.array([1.0, 2.0 + 1e-9]), np.array([1.0, 2.0]),
                           noise_floor=floor) is None
    assert floor.max_abs_diff == pytest.approx(1e-9, rel=1e-6)
    compare_tensors("x", np.array([5.0]), np.array([1.0]), noise_floor=floor)
    assert floor.max_abs_diff == pytest.approx(1e-9, rel=1e-6)


def test_tensor_maps_check_keys_before_values():
    expected = {"latent": torch.zeros(2, 4), "policy_logits": torch.zeros(2, 3)}
    actual = {"latent": torch.zeros(2, 4), "value_logits": torch.zeros(2, 5)}
    divergences = compare_tensor_maps(actual, expected, prefix="out.")
    assert [(d.path, d.kind) for d in divergences] == [("out.policy_logits", "missing"),
                                                     ("out.value_logits", "missing")]
    assert divergences[0].actual_shape is None and divergences[0].expected_shape == (2, 3)


# --- tolerance policy -------------------------------------------------------------------------

def test_overrides_match_whole_paths_by_glob_and_the_last_match_wins():
    policy = TolerancePolicy((("kv.*", Tolerance(1e-4, 1e-5)),
                              ("kv.layer1.k[env3]", Tolerance(1e-2, 1e-3)),
                              ("latent", Tolerance(0.0, 0.0))))
    assert policy.tolerance_for("kv.layer0.v[env0]", "float32") == Tolerance(1e-4, 1e-5)
    assert policy.tolerance_for("kv.layer1.k[env3]", "float32") == Tolerance(1e-2, 1e-3)
    assert policy.tolerance_for("kv.layer1.k[env33]", "float32") == Tolerance(1e-4, 1e-5)
    assert policy.tolerance_for("latent", "float32") == Tolerance(0.0, 0.0)
    assert policy.tolerance_for("latent2", "float32") == DEFAULT_TOLERANCES["float32"]
    assert policy.tolerance_for("policy_logits", "float16") == DEFAULT_TOLERANCES["float16"]
    later = policy.with_overrides([("kv.*", Tolerance(0.5, 0.5))])
    assert later.tolerance_for("kv.layer1.k[env3]", "float32") == Tolerance(0.5, 0.5)


def test_override_decides_the_comparison_of_its_path():
    policy = TolerancePolicy((("policy_*", Tolerance(0.0, 0.1)),))
    actual, expected = np.array([1.05], np.float32), np.array([1.0], np.float32)
    assert policy.compare("policy_logits", actual, expected) is None
    assert policy.compare("value_logits", actual, expected).atol == 1e-5


def test_policy_loads_from_a_mapping_and_round_trips():
    policy = TolerancePolicy.from_mapping({
        "nan": "fail",
        "paths": {"latent": {"rtol": 1e-5, "atol": 1e-6}, "kv.*": [1e-4, 1e-5],
                  "policy_logits": "1e-3,0"}})
    assert policy.overrides == (("latent", Tolerance(1e-5, 1e-6)), ("kv.*", Tolerance(1e-4, 1e-5)),
                                ("policy_logits", Tolerance(1e-3, 0.0)))
    assert policy.nan == "fail"
    assert TolerancePolicy.from_mapping(json.loads(json.dumps(policy.to_dict()))) == policy
    assert TolerancePolicy.from_mapping({}) == TolerancePolicy()


@pytest.mark.parametrize("data, message", [
    ({"paths": {"latent": {"rtol": -1, "atol": 0}}}, "tolerance for 'latent': rtol must be"),
    ({"paths": {"latent": {"rtol": 1e-5}}}, "expected keys rtol and atol"),
    ({"paths": {"latent": "1e-5"}}, "expected RTOL,ATOL"),
    ({"paths": {"latent": [1, 2, 3]}}, "expected {rtol, atol}"),
    ({"nan": "maybe"}, "nan policy must be one of"),
    ({"tolerance": {}}, "unknown tolerance setting(s) ['tolerance']"),
])
def test_malformed_tolerance_settings_raise_one_line_errors(data, message):
    with pytest.raises(ToleranceError) as error:
        TolerancePolicy.from_mapping(data)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tol_option_parses_path_and_tolerances():
    assert parse_tol_option("kv.layer1.k[env3]=1e-5,1e-6") == ("kv.layer1.k[env3]",
                                                               Tolerance(1e-5, 1e-6))
    for bad in ("latent", "=1e-5,1e-6", "latent=1e-5", "latent=a,b", "latent=1e-5,inf"):
        with pytest.raises(ToleranceError) as error:
            parse_tol_option(bad)
        assert "\n" not in str(error.value)


# --- events -----------------------------------------------------------------------------------

def _call_events(**lookup_changes):
    lookup = replace(Lookup(env=1, key=KEY_A, path="recurrent", hit=True, pool="recurrent",
                            size=5), **lookup_changes)
    return [lookup, Trim(env=1, pool="recurrent", size_before=8, size_after=6),
            Store(env=1, key=KEY_B, pool="recurrent", slot=4, evicted=None, size=6)]


def test_identical_decisions_are_no_divergence():
    assert compare_events(_call_events(), _call_events()) is None


def test_hit_against_miss_is_summarised_in_one_line():
    control = _call_events()
    candidate = _call_events(hit=False, pool=None, size=1)
    divergence = compare_events(candidate, control)
    assert divergence.summary == ("env 1 lookup key 0x1a2b3c4d…: control hit (recurrent pool), "
                                  "candidate miss")
    assert divergence.first_index == 0
    assert divergence.deepdiff["values_changed"]["root[0]['hit']"] == {"old_value": True,
                                                                       "new_value": False}
    json.dumps(divergence.deepdiff, allow_nan=False)


def test_different_serving_pool_is_a_divergence():
    divergence = compare_events(_call_events(pool="root"), _call_events())
    assert divergence.summary == ("env 1 lookup key 0x1a2b3c4d…: control hit (recurrent pool), "
                                  "candidate hit (root pool)")


def test_different_evicted_key_is_a_divergence():
    control = _call_events()
    candidate = control[:2] + [replace(control[2], evicted=KEY_A)]
    divergence = compare_events(candidate, control)
    assert divergence.summary == ("keys evicted by this call: control none; "
                                  "candidate recurrent 0x1a2b3c4d…")
    assert divergence.first_index == 2


def test_an_eviction_attributed_to_another_store_of_the_same_call_is_no_divergence():
    """Lookups of a call all precede its stores, so only the keys a call evicts are observable
    (legacy's stale reverse map moves an eviction to an earlier store: quirk 1)."""
    first = Store(env=0, key=KEY_B, pool="recurrent", slot=0, evicted=None, size=3)
    second = Store(env=1, key=KEY_B, pool="recurrent", slot=1, evicted=None, size=3)
    control = [replace(first, evicted=KEY_A), second]
    candidate = [first, replace(second, evicted=KEY_A)]
    assert compare_events(candidate, control) is None
    other_key = [first, replace(second, evicted=KEY_B)]
    assert compare_events(other_key, control).summary.startswith("keys evicted by this call")


def test_missing_event_and_other_fields_are_named():
    control = _call_events()
    assert compare_events(control[:2], control).summary.startswith(
        "event 2: candidate lacks control's store(env=1, key=0xfedcba98…")
    trimmed = control[:1] + [replace(control[1], size_after=4)] + control[2:]
    assert compare_events(trimmed, control).summary == (
        "env 1 trim: control size_after 6, candidate size_after 4")
    assert compare_events([Clear("all", "periodic")], [Clear("all", "epoch")]).summary == (
        "clear: control reason epoch, candidate reason periodic")


def test_slot_only_difference_is_information_not_a_divergence():
    control = _call_events()
    candidate = control[:2] + [replace(control[2], slot=9)]
    assert compare_events(candidate, control) is None
    assert slot_differences(candidate, control) == (SlotDifference(1, "recurrent", KEY_B, 4, 9),)
    diverging = compare_events([replace(candidate[0], size=4)] + candidate[1:], control)
    assert diverging.slot_differences == (SlotDifference(1, "recurrent", KEY_B, 4, 9),)


# --- result model -----------------------------------------------------------------------------

def _value_divergence(**changes) -> TensorDivergence:
    return replace(TensorDivergence(
        "kv.layer1.k[env3]", "value", "float32", "float32", (2, 5, 4), (2, 5, 4), 1.3e-6, 1e-5,
        num_mismatched=2, num_elements=40, num_nonfinite=1, max_abs_err=0.5, mean_abs_err=0.5,
        max_rel_err=0.25, mean_rel_err=0.25, worst_flat_index=7, worst_index=(0, 1, 3),
        actual_value=math.inf, expected_value=2.0), **changes)


def _run(*traces: TraceResult) -> RunResult:
    return RunResult(created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                     control_engine="legacy", candidate_engine="refactored",
                     manager_spec="refactored.kv_cache_manager:KVCacheManager",
                     tolerances=TolerancePolicy((("kv.*", Tolerance(1e-4, 1e-5)),)).to_dict(),
                     traces=traces)


def _trace(*divergences: CallComparison) -> TraceResult:
    return TraceResult(
        trace_path="scenarios/traces/pong.kvtrace", trace_digest="sha256:ab12", num_calls=40,
        num_tensors_compared=900, divergences=divergences,
        timings=(EngineTiming("legacy", "recurrent", 30, 0.002, 0.004, 0.07),),
        pool_stats=(PoolStats("legacy", "recurrent", 20, 10, 30, 2),),
        self_check=False, noise_floor=0.0, num_slot_differences=3)


def _call(index: int, **changes) -> CallComparison:
    event = EventDivergence("env 1 lookup key 0xfedcba98…: control hit (recurrent pool), "
                            "candidate miss", 0, 3, 4,
                            {"values_changed": {"root[0]['key']": {"old_value": KEY_B,
                                                                   "new_value": KEY_A}}},
                            (SlotDifference(1, "recurrent", KEY_B, 4, 9),))
    return replace(CallComparison("pong", index, "recurrent", (1, 3), (_value_divergence(),),
                                  event), **changes)


def test_run_result_round_trips_through_strict_json():
    run = _run(_trace(_call(3), _call(7, waiver_id="W-1", event_divergence=None)),
               _trace())
    text = json.dumps(run.to_dict(), allow_nan=False)
    assert '"actual_value": "Infinity"' in text and str(KEY_B) in text
    assert RunResult.from_dict(json.loads(text)) == run


def test_nan_values_survive_the_round_trip_as_strings():
    divergence = _value_divergence(actual_value=math.nan, expected_value=-math.inf)
    data = json.loads(json.dumps(divergence.to_dict(), allow_nan=False))
    assert (data["actual_value"], data["expected_value"]) == ("NaN", "-Infinity")
    restored = TensorDivergence.from_dict(data)
    assert math.isnan(restored.actual_value) and restored.expected_value == -math.inf
    assert restored.to_dict() == divergence.to_dict()


def test_classification_says_which_comparison_failed():
    assert _call(0).classification == "both"
    assert _call(0, event_divergence=None).classification == "tensor"
    assert _call(0, tensor_divergences=()).classification == "decision"
    with pytest.raises(ValueError, match="has no divergence"):
        _call(0, tensor_divergences=(), event_divergence=None)


def test_exit_code_is_one_only_for_unwaived_divergences():
    assert _run(_trace()).exit_code == 0
    assert _run(_trace(_call(2, waiver_id="W-1"))).exit_code == 0
    waived_then_not = _trace(_call(2, waiver_id="W-1"), _call(5))
    assert _run(_trace(), waived_then_not).exit_code == 1
    assert waived_then_not.first_divergence.call_index == 2
    assert waived_then_not.first_unwaived.call_index == 5
    assert _trace().first_divergence is None and _trace().ok


def test_trace_result_requires_divergences_in_call_order():
    with pytest.raises(ValueError, match=r"call indices \[5, 2\]"):
        _trace(_call(5), _call(2))


def test_result_reader_rejects_other_schemas_and_missing_fields():
    data = _run(_trace()).to_dict()
    with pytest.raises(ValueError, match="unsupported result schema 'kvmigrate.compare/2'"):
        RunResult.from_dict({**data, "schema_version": "kvmigrate.compare/2"})
    del data["traces"][0]["trace_digest"]
    with pytest.raises(ValueError, match=r"\$\.traces\[0\]\.trace_digest: missing required field"):
        RunResult.from_dict(data)
    assert SCHEMA_VERSION == "kvmigrate.compare/1"
