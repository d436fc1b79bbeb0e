"""The upstream LightZero engines' parts that need no LightZero environment: spec parsing, the
config mapping, head widening, the cache observer and event assembly, closed-loop feeding."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from harness.calls import RecordedCall, RecurrentCall, RootCall
from harness.scenario import load_scenario
from harness.upstream.capture import check_capturable
from harness.upstream.check import environment_problem
from harness.upstream.check import main as check_main
from harness.lineage import ClosedLoop, LatentLineage
from harness.observation import Observation
from harness.upstream.config import UpstreamConfigError, upstream_model_spec
from harness.upstream.engine import (UpstreamEngine, UpstreamSpecError, is_upstream_spec,
                                     parse_upstream_spec)
from harness.upstream.observe import CacheObserver, RawOp, assemble_events
from harness.upstream.widen import WidenError, fit_state_dict
from unizero.config import WorldModelConfig
from unizero.events import Clear, Lookup, Store

LZ_CONFIG = WorldModelConfig(embed_dim=32, encoder_hidden=32, num_heads=4, env_num=3)


def make_tree(root: Path) -> Path:
    path = root / "lzero" / "model" / "unizero_world_models"
    path.mkdir(parents=True)
    (path / "world_model.py").write_text("")
    return root


# ---------------------------------------------------------------------- specs
def test_spec_names_the_tree_and_the_cache_path(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "checkout")
    assert parse_upstream_spec(f"lightzero:{tree}").manager is False
    parsed = parse_upstream_spec(f"lightzero-manager:{tree}")
    assert (parsed.manager, parsed.tree, parsed.text) == (True, tree.resolve(), f"lightzero-manager:{tree}")
    assert is_upstream_spec(f"lightzero:{tree}") and not is_upstream_spec("legacy")
    assert not is_upstream_spec("pkg.mod:Attr")


@pytest.mark.parametrize("text, expected", [("lightzero:", "expected 'lightzero:PATH'"),
                                            ("lz:somewhere", "expected 'lightzero:PATH'"),
                                            ("lightzero:/no/such/tree", "holds no lzero/")])
def test_bad_spec_is_one_line_naming_it(text: str, expected: str) -> None:
    with pytest.raises(UpstreamSpecError, match=expected) as info:
        parse_upstream_spec(text)
    assert "\n" not in str(info.value) and repr(text) in str(info.value)


def test_missing_interpreter_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "checkout")
    with pytest.raises(UpstreamSpecError, match="make lightzero"):
        UpstreamEngine(f"lightzero:{tree}", LZ_CONFIG, python=str(tmp_path / "none" / "python"))


def test_check_says_in_one_line_why_the_environment_is_unusable(tmp_path: Path) -> None:
    problem = environment_problem(str(tmp_path / "python"), tmp_path)
    assert problem is not None and "make lightzero" in problem and "\n" not in problem


def test_a_worker_interpreter_that_cannot_run_the_worker_is_one_line(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "checkout")
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexit 3\n")
    python.chmod(0o755)
    with pytest.raises(UpstreamSpecError, match="the worker did not start") as info:
        UpstreamEngine(f"lightzero:{tree}", LZ_CONFIG, python=str(python))
    assert "\n" not in str(info.value)


def test_check_fails_in_one_line_without_the_environment(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main(["--trees", str(tmp_path), "--lightzero-python", str(tmp_path / "python")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lightzero-check: FAILED")


# ---------------------------------------------------------------------- config
def test_config_maps_geometry_and_counts_support_bins() -> None:
    spec = upstream_model_spec(LZ_CONFIG.replace(support_size=10, max_tokens=20), manager=True)
    cfg = spec.world_model_cfg
    assert (cfg["support_size"], cfg["max_blocks"], cfg["tokens_per_block"]) == (21, 10, 2)
    assert (cfg["env_num"], cfg["embed_dim"], cfg["use_new_cache_manager"]) == (3, 32, True)
    assert spec.random_init and spec.to_dict()["obs_dim"] == 4


def test_zero_init_heads_keeps_upstreams_own_init() -> None:
    assert upstream_model_spec(LZ_CONFIG.replace(zero_init_heads=True), manager=False).random_init is False


@pytest.mark.parametrize("change, field", [({"encoder_hidden": 64}, "model.encoder_hidden"),
                                           ({"recur_pool_size_override": 4}, "model.recur_pool_size_override"),
                                           ({"eviction": "lru"}, "model.eviction"),
                                           ({"max_tokens": 19}, "model.max_tokens")])
def test_field_without_upstream_counterpart_is_refused_by_name(change: dict, field: str) -> None:
    with pytest.raises(UpstreamConfigError, match=field) as info:
        upstream_model_spec(LZ_CONFIG.replace(**change), manager=False)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- widening
def head(embed: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(embed), nn.Linear(embed, hidden), nn.LayerNorm(hidden),
                         nn.GELU(approximate="tanh"), nn.Linear(hidden, out))


def test_widening_a_head_preserves_its_function() -> None:
    torch.manual_seed(0)
    narrow, wide = head(8, 8, 5), head(8, 32, 5)
    with torch.no_grad():
        for module in narrow.modules():
            for param in module.parameters(recurse=False):
                param.normal_()
    recorded = {k: v.numpy() for k, v in narrow.state_dict().items()}
    fitted = fit_state_dict(wide.state_dict(), recorded)
    wide.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fitted.items()})
    x = torch.randn(6, 8)
    torch.testing.assert_close(wide(x), narrow(x), rtol=1e-5, atol=1e-5)
    assert fitted["4.weight"].shape == (5, 32) and fitted["1.weight"].shape == (32, 8)


def test_widening_refuses_a_missing_parameter_and_an_unexplained_shape() -> None:
    target = {"a": torch.zeros(4, 4), "b": torch.zeros(3)}
    with pytest.raises(WidenError, match="missing \\['b'\\]"):
        fit_state_dict(target, {"a": np.zeros((4, 4), np.float32)})
    with pytest.raises(WidenError, match="weights: a: recorded shape \\[3, 3\\]"):
        fit_state_dict(target, {"a": np.zeros((3, 3), np.float32), "b": np.zeros(3, np.float32)})


# ---------------------------------------------------------------------- observer and events
def test_recurrent_lookup_reads_root_map_then_recurrent_map() -> None:
    raw = [RawOp("get", "root", 0, 11, True, 3), RawOp("get", "root", 1, 12),
           RawOp("get", "recurrent", None, 12, True, 5), RawOp("get", "root", 2, 13),
           RawOp("get", "recurrent", None, 13), RawOp("del", "recurrent", None, 7),
           RawOp("set", "recurrent", None, 21, size=5, slot=4), RawOp("set", "recurrent", None, 22, size=5, slot=5)]
    assert assemble_events(raw, "recurrent") == [
        Lookup(0, 11, "recurrent", True, "root", 3), Lookup(1, 12, "recurrent", True, "recurrent", 5),
        Lookup(2, 13, "recurrent", False, None, 1),
        Store(0, 21, "recurrent", 4, 7, 5), Store(1, 22, "recurrent", 5, None, 5)]


def test_root_call_stores_per_env_and_clears_the_recurrent_map_once() -> None:
    raw = [RawOp("get", "root", 0, 5), RawOp("set", "root", 0, 6, size=3, slot=1, evicted=6),
           RawOp("clear", "recurrent", None), RawOp("clear", "recurrent", None)]
    assert assemble_events(raw, "root") == [
        Lookup(0, 5, "root", False, None, 1), Store(0, 6, "root", 1, None, 3),
        Clear(scope="recurrent", reason="after_root")]


def kv(size: int, tensor: torch.Tensor) -> SimpleNamespace:
    """Upstream's KeysValues layout: ``_keys_values[layer]._k_cache._cache`` (a boundary we don't own)."""
    cache = SimpleNamespace(_cache=tensor)
    return SimpleNamespace(size=size, _keys_values=(SimpleNamespace(_k_cache=cache, _v_cache=cache),))


def old_path_model(num_envs: int = 2) -> SimpleNamespace:
    return SimpleNamespace(past_kv_cache_init_infer_envs=[{} for _ in range(num_envs)],
                           past_kv_cache_recurrent_infer={},
                           shared_pool_init_infer=[[None] * 4 for _ in range(num_envs)],
                           shared_pool_recur_infer=[None] * 4,
                           keys_values_wm_single_env=kv(1, torch.zeros(1, 2)))


def test_old_path_observer_logs_lookups_and_flags_a_read_of_an_aliased_entry() -> None:
    wm = old_path_model()
    observer = CacheObserver(wm, manager=False)
    shared = kv(3, torch.ones(1, 4))
    wm.shared_pool_init_infer[0][0] = shared
    wm.past_kv_cache_init_infer_envs[0][100] = 0
    wm.shared_pool_init_infer[1][0] = shared  # the bug: env 1's entry is env 0's storage
    wm.past_kv_cache_init_infer_envs[1][200] = 0
    assert wm.past_kv_cache_init_infer_envs[1].get(200) == 0
    assert wm.past_kv_cache_init_infer_envs[0].get(999) is None
    raw, findings = observer.take()
    assert [op.op for op in raw] == ["set", "set", "get", "get"]
    assert (raw[2].hit, raw[2].size, raw[3].hit) == (True, 3, False)
    assert len(findings) == 1 and "root[env 0] key 100" in findings[0].describe()


def test_copied_entries_raise_no_finding() -> None:
    wm = old_path_model()
    observer = CacheObserver(wm, manager=False)
    for env in range(2):
        wm.shared_pool_init_infer[env][0] = kv(3, torch.ones(1, 4))
        wm.past_kv_cache_init_infer_envs[env][env] = 0
        wm.past_kv_cache_init_infer_envs[env].get(env)
    assert observer.take()[1] == []


# ---------------------------------------------------------------------- closed loop
def root(index: int, out: np.ndarray) -> RecordedCall:
    call = RootCall(np.zeros((2, 4), np.float32), np.full(2, -1), np.zeros((2, 4), np.float32),
                    np.zeros(2, np.int64))
    return RecordedCall(index, call, {"latent": out}, ())


def recurrent(index: int, latents: np.ndarray, out: np.ndarray) -> RecordedCall:
    call = RecurrentCall(latents, np.zeros(2, np.int64), np.ones(2, np.int64), np.zeros(2, np.int64), 0)
    return RecordedCall(index, call, {"latent": out}, ())


def test_closed_loop_feeds_each_row_from_the_engines_own_producing_output() -> None:
    root_out = np.arange(8, dtype=np.float32).reshape(2, 4)
    first, step = root(1, root_out), recurrent(2, root_out[::-1].copy(), root_out + 1)
    loop = ClosedLoop()
    own = root_out + np.float32(0.5)
    assert loop.feed("candidate", first) is first
    loop.observe("candidate", first, Observation({"latent": own}, (), 0.0))
    loop.record(first)
    fed = loop.feed("candidate", step)
    np.testing.assert_array_equal(fed.call.latent_state, own[::-1])
    np.testing.assert_array_equal(step.call.latent_state, root_out[::-1])  # the record is untouched
    assert loop.feed("control", step) is step  # an engine with no outputs yet: recorded bytes


def test_lineage_restarts_at_each_root_call() -> None:
    out = np.ones((2, 4), np.float32)
    lineage = LatentLineage()
    first = root(1, out)
    lineage.observe(1, first.call, out)
    lineage.observe(2, first.call, out * 2)
    assert lineage.sources(out.copy()) == (None, None)
    assert lineage.sources(out * 2) == ((2, 1), (2, 1))


def test_a_call_fed_last_bit_drifted_latents_is_marked_drifted() -> None:
    control = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    drift = control.copy()
    drift[0, 1] = np.nextafter(drift[0, 1], np.float32(9))
    changed = control.copy()
    changed[1, 0] = 7.0
    def drifted(a, b):
        return ClosedLoop.drifted(recurrent(3, a, a), recurrent(3, b, a), 1.3e-6, 1e-5)
    assert drifted(control, drift)
    assert not drifted(control, changed) and not drifted(control, control)


def test_capture_refuses_scenario_tables_upstream_has_no_counterpart_for() -> None:
    with pytest.raises(UpstreamSpecError, match=r"\[weights\]") as info:
        check_capturable(load_scenario("scenarios/cartpole_pool_pressure.toml"))
    assert "\n" not in str(info.value)
    check_capturable(load_scenario("scenarios/lightzero/lightzero_small.toml"))
