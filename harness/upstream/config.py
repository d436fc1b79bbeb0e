"""Map kvmigrate's ``WorldModelConfig`` onto upstream LightZero's world-model config.

The scenario files' ``[model]`` table is the one description of a model for every engine; an
upstream engine translates it here (plain data, so the worker receives it as JSON-like values and
a trace header can carry it). A field with no upstream counterpart is refused with one line that
names it, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import UserError
from unizero.config import WorldModelConfig

__all__ = ["UpstreamConfigError", "UpstreamModelSpec", "upstream_model_spec"]

_DEFAULT_MANAGER = WorldModelConfig.__dataclass_fields__["cache_manager_class"].default


class UpstreamConfigError(UserError):
    """A ``[model]`` field upstream's world model has no counterpart for; the message names it."""


@dataclass(frozen=True, slots=True)
class UpstreamModelSpec:
    """What the worker needs to build upstream's tokenizer and ``WorldModel``.

    Attributes:
        world_model_cfg: upstream's ``world_model_cfg`` fields (plain data).
        obs_dim: the vector observation width (upstream's encoder input).
        weight_seed: seeds the random initialisation.
        init_std: std of the seeded normal init of every weight matrix (``random_init``).
        random_init: True re-initialises every parameter from ``weight_seed`` (the default);
            False keeps upstream's own init, whose heads' last layers are zero, so every latent
            and every cache key would be equal (``zero_init_heads = true`` in ``[model]``).
    """

    world_model_cfg: dict[str, Any]
    obs_dim: int
    weight_seed: int
    init_std: float
    random_init: bool

    def to_dict(self) -> dict[str, Any]:
        return {"world_model_cfg": dict(self.world_model_cfg), "obs_dim": self.obs_dim,
                "weight_seed": self.weight_seed, "init_std": self.init_std,
                "random_init": self.random_init}


def _refuse_unmapped(config: WorldModelConfig) -> None:
    refusals = {
        "encoder_hidden": (config.encoder_hidden != config.embed_dim,
                           f"upstream's vector encoder is embed_dim={config.embed_dim} wide"),
        "max_tokens": (config.max_tokens % 2 != 0,
                       "upstream needs max_tokens = 2 * max_blocks, an even number"),
        "init_pool_size_override": (config.init_pool_size_override is not None,
                                    "upstream sizes its pools itself (null)"),
        "recur_pool_size_override": (config.recur_pool_size_override is not None,
                                     "upstream sizes its pools itself (null)"),
        "wm_pool_size_override": (config.wm_pool_size_override is not None,
                                  "upstream sizes its pools itself (null)"),
        "eviction": (config.eviction != "fifo", "upstream's pools evict FIFO ('fifo')"),
        "cache_manager_class": (config.cache_manager_class != _DEFAULT_MANAGER,
                                "the engine spec picks upstream's manager (the default)"),
        "enable_cache_logging": (config.enable_cache_logging, "upstream has no such switch (false)"),
    }
    for name, (refused, expected) in refusals.items():
        if refused:
            raise UpstreamConfigError(f"model.{name}: no upstream counterpart for "
                                      f"{getattr(config, name)!r}; expected {expected}")


def upstream_model_spec(config: WorldModelConfig, *, manager: bool) -> UpstreamModelSpec:
    """Translate ``config`` for upstream; ``manager`` sets ``use_new_cache_manager``.

    Raises:
        UpstreamConfigError: a field with no upstream counterpart, named in one line.
    """
    _refuse_unmapped(config)
    cfg = {
        # geometry
        "obs_type": "vector", "continuous_action_space": False,
        "action_space_size": config.action_space_size, "embed_dim": config.embed_dim,
        "num_layers": config.num_layers, "num_heads": config.num_heads,
        "tokens_per_block": 2, "max_blocks": config.max_tokens // 2, "max_tokens": config.max_tokens,
        "context_length": config.context_length, "attention": "causal",
        "support_size": config.num_support_bins,  # upstream counts bins; kvmigrate counts one side
        "group_size": 8 if config.embed_dim % 8 == 0 else config.embed_dim,
        "rotary_emb": False, "rope_theta": 10000, "max_seq_len": 8192,
        "final_norm_option_in_head": "LayerNorm", "final_norm_option_in_encoder": "LayerNorm",
        "norm_type": "LN", "predict_latent_loss_type": "mse",
        # cache sizing (legacy sizing, the same on both sides)
        "env_num": config.env_num, "num_simulations": config.num_simulations,
        "game_segment_length": config.game_segment_length, "max_cache_size": 5000,
        "use_new_cache_manager": manager,
        # inference only: no dropout, no analysis, no training extras
        "embed_pdrop": 0.0, "resid_pdrop": 0.0, "attn_pdrop": 0.0, "device": "cpu",
        "gru_gating": False, "analysis_sim_norm": False, "analysis_dormant_ratio_weight_rank": False,
        "latent_recon_loss_weight": 0.0, "perceptual_loss_weight": 0.0, "policy_entropy_weight": 0.0,
        "gamma": 1.0, "dormant_threshold": 0.025, "decode_loss_mode": None, "use_priority": False,
        "policy_loss_type": "kl", "sigma_type": "conditioned", "bound_type": None,
        "fixed_sigma_value": 0.3,
        # fields upstream's WorldModel reads that the policy's default config lacks
        "task_embed_option": None, "use_shared_projection": False, "register_token_num": 0,
        "register_token_shared": True, "moe_in_transformer": False,
        "multiplication_moe_in_transformer": False, "num_experts_of_moe_in_transformer": 1,
        "lora_r": 0, "lora_alpha": 1, "lora_dropout": 0.0, "lora_target_modules": None,
        "curriculum_stage_num": 1, "min_stage0_iters": 1, "max_stage_iters": 1, "lora_scale_init": 1.0,
    }
    return UpstreamModelSpec(world_model_cfg=cfg, obs_dim=config.obs_dim,
                             weight_seed=config.weight_seed, init_std=config.init_std,
                             random_init=not config.zero_init_heads)
