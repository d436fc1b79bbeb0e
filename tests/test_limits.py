"""The limits record: generous defaults, explicit raising, and the real workloads passing."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.limits import (DEFAULT_LIMITS, LimitError, Limits, apply_limit_options,
                            check_config, config_from_header, kv_cache_bytes, kv_slot_bytes,
                            model_num_params, parse_limit_option)
from harness.trace import TraceReader
from unizero.config import ConfigError, WorldModelConfig
from unizero.network import WorldModelNetwork

REPO = Path(__file__).resolve().parents[1]


def test_every_bundled_trace_passes_the_default_limits():
    traces = sorted((REPO / "scenarios" / "traces").glob("*.kvtrace"))
    assert len(traces) >= 6
    for path in traces:
        with TraceReader(path) as reader:
            config = config_from_header(reader.header, str(path))
            num_records = sum(1 for _ in reader)
        assert num_records == reader.num_records > 0
        assert config.embed_dim <= DEFAULT_LIMITS.max_embed_dim


def test_the_parameter_estimate_bounds_the_real_network_from_above():
    config = WorldModelConfig(obs_dim=6, action_space_size=3, embed_dim=32, num_layers=2,
                              num_heads=4, context_length=8, max_tokens=20, env_num=2)
    actual = sum(p.numel() for p in WorldModelNetwork(config).parameters())
    assert actual <= model_num_params(config) <= 2 * actual


def test_kv_sizes_follow_the_pool_geometry():
    config = WorldModelConfig(embed_dim=32, num_layers=2, num_heads=4, max_tokens=20, env_num=2,
                              num_simulations=8, game_segment_length=20)
    assert kv_slot_bytes(config) == 2 * 2 * 20 * 32 * 4
    assert kv_cache_bytes(config) == kv_slot_bytes(config) * (20 * 2 + 8 * 2 + 2)


def test_check_config_names_the_first_field_over_its_limit():
    config = WorldModelConfig(embed_dim=64, num_heads=4, env_num=9)
    check_config(config)
    with pytest.raises(LimitError) as excinfo:
        check_config(config, DEFAULT_LIMITS.replace(max_env_num=8), where="s.toml: [model]")
    assert str(excinfo.value) == ("s.toml: [model].env_num: 9 is over the limit max_env_num = 8 "
                                  "(raise it with --limit max_env_num=9 if the input is trusted)")
    assert isinstance(excinfo.value, ConfigError)


@pytest.mark.parametrize("text, name, value", [
    ("max_embed_dim=4096", "max_embed_dim", 4096),
    ("max_frame_bytes=2G", "max_frame_bytes", 2 * 2**30),
    ("max_header_bytes = 8M", "max_header_bytes", 8 * 2**20),
    ("max_pool_slots=2_000_000", "max_pool_slots", 2_000_000),
    ("max_arrays_per_record=16k", "max_arrays_per_record", 16 * 1024),
])
def test_a_limit_option_raises_one_bound(text, name, value):
    limits = parse_limit_option(text)
    assert getattr(limits, name) == value
    others = {f: getattr(limits, f) for f in Limits.__slots__ if f != name}
    assert others == {f: getattr(DEFAULT_LIMITS, f) for f in others}


@pytest.mark.parametrize("text, fragment", [
    ("max_embed_dim", "expected NAME=VALUE with a positive int VALUE, got 'max_embed_dim'"),
    ("max_embed_dim=-1", "expected NAME=VALUE with a positive int VALUE"),
    ("max_embed_dim=1e9", "expected NAME=VALUE with a positive int VALUE"),
    ("max_embed_dim=" + "9" * 40, "expected NAME=VALUE with a positive int VALUE"),
    ("max_embed_dim=0", "limits.max_embed_dim: expected a positive int, got 0"),
    ("max_everything=5", "limits: unknown limit(s) max_everything; known: "),
    ("max_embed_dim=²", "expected NAME=VALUE with a positive int VALUE"),
])
def test_a_bad_limit_option_is_one_line(text, fragment):
    with pytest.raises(LimitError) as excinfo:
        parse_limit_option(text)
    assert fragment in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_limit_options_apply_in_order_and_a_table_sets_several():
    limits = apply_limit_options(["max_env_num=16", "max_env_num=32", "max_num_layers=64"])
    assert (limits.max_env_num, limits.max_num_layers) == (32, 64)
    table = Limits.from_mapping({"max_env_num": 4, "max_tokens": 100})
    assert (table.max_env_num, table.max_tokens) == (4, 100)
    with pytest.raises(LimitError, match=r"^s.toml: \[limits\]: limits.max_tokens: expected a "
                                         r"positive int, got 1.5$"):
        Limits.from_mapping({"max_tokens": 1.5}, where="s.toml: [limits]")
    with pytest.raises(LimitError, match="expected a positive int, got True"):
        Limits(max_env_num=True)


def test_the_limits_record_is_frozen():
    with pytest.raises(AttributeError):
        DEFAULT_LIMITS.max_env_num = 10**9  # type: ignore[misc]
