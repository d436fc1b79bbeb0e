"""Config validation (§1), the causal transformer over a cache (§2.4) and the network (§9, quirk 3)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_config
from unizero.config import ConfigError, WorldModelConfig
from unizero.network import WorldModelNetwork

POSITIVE_FIELDS = ["obs_dim", "action_space_size", "embed_dim", "num_layers", "num_heads",
                   "context_length", "max_tokens", "env_num", "num_simulations",
                   "game_segment_length", "encoder_hidden", "cache_log_interval"]


# ---------------------------------------------------------------------------- config
def test_config_rejects_embed_dim_not_divisible_by_num_heads() -> None:
    with pytest.raises(ConfigError, match=r"^config\.embed_dim: expected a multiple of "
                                          r"num_heads=4, got 18$"):
        make_config(embed_dim=18, num_heads=4)


def test_config_rejects_context_longer_than_the_position_table() -> None:
    with pytest.raises(ConfigError, match=r"^config\.context_length: expected <= max_tokens=20"
                                          r".*got 21$"):
        make_config(context_length=21, max_tokens=20)


def test_config_accepts_context_equal_to_max_tokens() -> None:
    assert make_config(context_length=20, max_tokens=20).context_length == 20


@pytest.mark.parametrize("field", POSITIVE_FIELDS)
@pytest.mark.parametrize("value", [0, -3])
def test_config_rejects_non_positive_fields_by_name(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=rf"^config\.{field}: expected a positive integer, "
                                          rf"got {value}$"):
        make_config(**{field: value})


@pytest.mark.parametrize("field", ["num_layers", "env_num"])
def test_config_rejects_booleans_and_floats_for_integer_fields(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config\.{field}: .*got True$"):
        make_config(**{field: True})
    with pytest.raises(ConfigError, match=rf"^config\.{field}: .*got 2\.0$"):
        make_config(**{field: 2.0})


def test_config_rejects_a_one_token_context() -> None:
    with pytest.raises(ConfigError, match=r"^config\.context_length: expected >= 2"):
        make_config(context_length=1)


def test_config_from_dict_names_unknown_fields_and_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^scenario\.toml: unknown field\(s\) colour, depth;"):
        WorldModelConfig.from_dict({"depth": 2, "colour": 1}, where="scenario.toml")
    with pytest.raises(ConfigError, match=r"^scenario\.toml\.env_num: expected a positive"):
        WorldModelConfig.from_dict({"env_num": 0}, where="scenario.toml")


def test_config_round_trips_through_a_dict() -> None:
    config = make_config(env_num=3)
    assert WorldModelConfig.from_dict(config.to_dict()) == config


def test_legacy_pool_sizes_follow_segment_length_simulations_and_env_count() -> None:
    config = make_config(game_segment_length=20, num_simulations=50, env_num=8,
                         recur_pool_size_override=7)
    assert config.legacy_init_pool_size == 20
    assert config.legacy_recur_pool_size == 400
    assert config.legacy_wm_pool_size == 8
    assert config.recur_pool_size == 7
    assert config.head_dim == config.embed_dim // config.num_heads


# ---------------------------------------------------------------------------- transformer
def make_net(**overrides) -> WorldModelNetwork:
    return WorldModelNetwork(make_config(**overrides)).eval()


def random_tokens(count: int, rows: int = 2, seed: int = 0, dim: int = 16) -> torch.Tensor:
    return torch.randn(rows, count, dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_split_forward_through_the_cache_equals_the_full_forward() -> None:
    net = make_net()
    x = random_tokens(6)
    pos = torch.arange(6).expand(2, 6)
    full = net.forward_tokens(x, net.empty_keys_values(2), pos)
    cache = net.empty_keys_values(2)
    prefix = net.forward_tokens(x[:, :4], cache, pos[:, :4])
    suffix = net.forward_tokens(x[:, 4:], cache, pos[:, 4:])
    assert cache.size == 6
    torch.testing.assert_close(torch.cat([prefix, suffix], 1), full, atol=1e-5, rtol=0)
    one_by_one = net.empty_keys_values(2)
    steps = [net.forward_tokens(x[:, t: t + 1], one_by_one, pos[:, t: t + 1]) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


@torch.no_grad()
def test_attention_is_causal_within_a_multi_token_forward() -> None:
    net = make_net()
    x = random_tokens(3)
    pos = torch.arange(3).expand(2, 3)
    full = net.forward_tokens(x, net.empty_keys_values(2), pos)
    first = net.forward_tokens(x[:, :1], net.empty_keys_values(2), pos[:, :1])
    torch.testing.assert_close(full[:, 0], first[:, 0], atol=1e-6, rtol=0)


def padded_and_unpadded(net: WorldModelNetwork, pad: int):
    """One context token computed into an unpadded cache and a zero-left-padded copy."""
    ctx = random_tokens(1, rows=1, seed=5)
    unpadded = net.empty_keys_values(1)
    net.forward_tokens(ctx, unpadded, torch.zeros(1, 1, dtype=torch.long))
    padded = net.empty_keys_values(1)
    for src, dst in zip(unpadded.layers, padded.layers):
        for a, b in ((src.k, dst.k), (src.v, dst.v)):
            b.tensor.zero_()
            b.tensor[:, :, pad] = a.tensor[:, :, 0]
            b.size = pad + 1
    return unpadded, padded


@torch.no_grad()
def test_unmasked_zero_left_padding_changes_the_next_token_output() -> None:
    # Legacy quirk 5: inference never passes valid_context_lengths, so padding zeros are
    # attended with logit q.0 = 0.
    net = make_net()
    unpadded, padded = padded_and_unpadded(net, pad=2)
    x = random_tokens(1, rows=1, seed=6) + net.pos_emb(torch.tensor([[1]]))
    reference = net.transformer(x, unpadded)
    unmasked = net.transformer(x, padded)
    assert (unmasked - reference).abs().max().item() > 1e-3


@torch.no_grad()
def test_masking_the_padding_with_valid_context_lengths_recovers_the_unpadded_output() -> None:
    net = make_net()
    unpadded, padded = padded_and_unpadded(net, pad=2)
    x = random_tokens(1, rows=1, seed=6) + net.pos_emb(torch.tensor([[1]]))
    reference = net.transformer(x, unpadded)
    masked = net.transformer(x, padded, valid_context_lengths=torch.tensor([1]))
    torch.testing.assert_close(masked, reference, atol=1e-5, rtol=0)


def test_transformer_rejects_a_cache_with_the_wrong_layer_count() -> None:
    net = make_net()
    wrong = net.transformer.generate_empty_keys_values(1, 8)
    wrong.layers = wrong.layers[:1]
    with pytest.raises(AssertionError, match="cache has 1 layers, transformer has 2"):
        net.forward_tokens(random_tokens(1, rows=1), wrong, torch.zeros(1, 1, dtype=torch.long))


def test_empty_keys_values_has_context_length_geometry() -> None:
    net = make_net()
    kv = net.empty_keys_values(3)
    assert kv.geometry == (2, 3, 4, 8, 4)
    assert kv.size == 0


# ---------------------------------------------------------------------------- pos-emb diff (§9)
def manual_diff(net: WorldModelNetwork, layer: int, which: str) -> torch.Tensor:
    c, h, hd = net.config.context_length, net.config.num_heads, net.config.head_dim
    proj = getattr(net.transformer.blocks[layer].attn, which)
    with torch.no_grad():
        p = proj(net.pos_emb.weight).view(-1, h, hd).transpose(0, 1)  # [H, max_tokens, hd]
    return p[:, 0: c - 3] - p[:, 2: c - 1]


def test_pos_emb_diff_is_computed_before_the_custom_init(monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net()
    with monkeypatch.context() as patch:
        patch.setattr(WorldModelNetwork, "_custom_init", lambda self, config: None)
        default_init = make_net()  # same seed, PyTorch default init only
    assert torch.equal(net.pos_emb_diff_k, default_init.pos_emb_diff_k)
    assert torch.equal(net.pos_emb_diff_v, default_init.pos_emb_diff_v)
    for layer in range(2):
        assert torch.equal(net.pos_emb_diff_k[layer], manual_diff(default_init, layer, "key"))
        assert torch.equal(net.pos_emb_diff_v[layer], manual_diff(default_init, layer, "value"))
    # ...and it is not what the initialised weights give.
    assert not torch.allclose(net.pos_emb_diff_k[0], manual_diff(net, 0, "key"), atol=1e-3)


def test_recompute_pos_emb_diff_uses_the_current_weights() -> None:
    net = make_net()
    stale = net.pos_emb_diff_k.clone()
    net.recompute_pos_emb_diff()
    assert net.pos_emb_diff_k.shape == (2, 4, 5, 4)
    assert not torch.equal(net.pos_emb_diff_k, stale)
    for layer in range(2):
        assert torch.equal(net.pos_emb_diff_k[layer], manual_diff(net, layer, "key"))
        assert torch.equal(net.pos_emb_diff_v[layer], manual_diff(net, layer, "value"))


def test_pos_emb_diff_is_skipped_for_a_context_of_two() -> None:
    net = make_net(context_length=2)
    assert net.pos_emb_diff_k.shape == (2, 4, 0, 4)
    net.recompute_pos_emb_diff()
    assert net.pos_emb_diff_v.shape == (2, 4, 0, 4)


def test_network_weights_are_a_function_of_the_seed_only() -> None:
    torch.manual_seed(123)
    a = make_net(weight_seed=7).state_dict()
    torch.manual_seed(456)
    b = make_net(weight_seed=7).state_dict()
    c = make_net(weight_seed=8).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not torch.equal(a["pos_emb.weight"], c["pos_emb.weight"])


# ---------------------------------------------------------------------------- heads (quirk 3)
@torch.no_grad()
def test_zero_init_heads_predict_the_all_positive_zero_latent_and_zero_logits() -> None:
    net = make_net(zero_init_heads=True)
    hidden = random_tokens(4, rows=3, seed=2)[:, :, :]
    reward, latent = net.action_heads(hidden)
    policy, value = net.observation_heads(hidden)
    assert torch.equal(latent, torch.zeros_like(latent))
    assert not torch.signbit(latent).any()  # +0.0, not -0.0: the hash sees the sign bit
    for logits in (reward, policy, value):
        assert torch.equal(logits, torch.zeros_like(logits))


@torch.no_grad()
def test_random_heads_are_not_degenerate() -> None:
    net = make_net()
    hidden = random_tokens(2, rows=1, seed=2)[0]
    reward, latent = net.action_heads(hidden)
    policy, value = net.observation_heads(hidden)
    assert not torch.equal(latent[0], latent[1])
    assert latent.abs().min().item() > 0.0
    for logits in (reward, policy, value):
        assert logits.abs().max().item() > 1e-4
        assert not torch.equal(logits[0], logits[1])


@torch.no_grad()
def test_encoder_maps_obs_to_embed_dim_latents() -> None:
    net = make_net()
    latent = net.encode(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    assert latent.shape == (3, 16)
    assert latent.dtype == torch.float32
