"""Validated, frozen world-model configuration shared by the legacy and refactored models."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["ConfigError", "WorldModelConfig"]


class ConfigError(ValueError):
    """A world-model configuration that cannot work; the message names the field."""


# A ceiling on every integer field, far above any real geometry, so no size computed from a
# config overflows a C integer; the harness applies its own tighter limits (harness/limits.py).
_MAX_INT = 2**31 - 1


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_int(value: Any, low: int, high: int = _MAX_INT) -> bool:
    return type(value) is int and low <= value <= high


def _require_int(name: str, value: Any, low: int, expected: str, *, nullable: bool = False) -> None:
    """``value`` an int in ``[low, _MAX_INT]`` (or None when ``nullable``), else a one-line
    ConfigError: ``expected`` for a wrong type or a value too small, the ceiling above it."""
    if nullable and value is None:
        return
    _require(type(value) is int and value >= low, f"config.{name}: expected {expected}, "
                                                   f"got {value!r}")
    _require(value <= _MAX_INT, f"config.{name}: expected {expected} <= {_MAX_INT}, got {value!r}")


@dataclass(frozen=True, slots=True)
class WorldModelConfig:
    """Geometry and cache sizing of a UniZero-style world model.

    Pool sizes follow the legacy sizing (legacy-spec §1): one root ("init") pool of
    ``game_segment_length`` slots per env, one recurrent pool of
    ``num_simulations * env_num`` slots and a scratch ("wm") pool of ``env_num`` slots.
    Each can be overridden for the refactored manager only.
    """

    obs_dim: int = 4
    action_space_size: int = 2
    embed_dim: int = 32
    num_layers: int = 2
    num_heads: int = 4
    context_length: int = 8
    max_tokens: int = 20
    env_num: int = 2
    num_simulations: int = 8
    game_segment_length: int = 20
    support_size: int = 10
    encoder_hidden: int = 64
    zero_init_heads: bool = False
    weight_seed: int = 0
    init_std: float = 0.02
    use_new_cache_manager: bool = False
    cache_manager_class: str = "refactored.kv_cache_manager:KVCacheManager"
    init_pool_size_override: int | None = None
    recur_pool_size_override: int | None = None
    wm_pool_size_override: int | None = None
    eviction: str = "fifo"
    enable_cache_logging: bool = False
    cache_log_interval: int = 1000

    def __post_init__(self) -> None:
        positive = ("obs_dim", "action_space_size", "embed_dim", "num_layers", "num_heads",
                    "context_length", "max_tokens", "env_num", "num_simulations",
                    "game_segment_length", "encoder_hidden", "cache_log_interval")
        for name in positive:
            value = getattr(self, name)
            _require_int(name, value, 1, "a positive integer")
        _require_int("support_size", self.support_size, 0, "a non-negative integer")
        for name in ("zero_init_heads", "use_new_cache_manager", "enable_cache_logging"):
            _require(type(getattr(self, name)) is bool,
                     f"config.{name}: expected true or false, got {getattr(self, name)!r}")
        _require(self.embed_dim % self.num_heads == 0,
                 f"config.embed_dim: expected a multiple of num_heads={self.num_heads}, "
                 f"got {self.embed_dim}")
        _require(self.context_length <= self.max_tokens,
                 f"config.context_length: expected <= max_tokens={self.max_tokens} "
                 f"(positions index the position table), got {self.context_length}")
        _require(self.context_length >= 2,
                 f"config.context_length: expected >= 2 (one obs and one action token), "
                 f"got {self.context_length}")
        _require(isinstance(self.init_std, float) and math.isfinite(self.init_std)
                 and self.init_std > 0,
                 f"config.init_std: expected a finite positive float, got {self.init_std!r}")
        _require(_is_int(self.weight_seed, 0, 2**63 - 1),
                 f"config.weight_seed: expected an integer in [0, 2**63 - 1], "
                 f"got {self.weight_seed!r}")
        for name in ("init_pool_size_override", "recur_pool_size_override", "wm_pool_size_override"):
            value = getattr(self, name)
            _require_int(name, value, 1, "a positive integer or null", nullable=True)
        _require(isinstance(self.eviction, str) and self.eviction in ("fifo", "lru"),
                 f"config.eviction: expected 'fifo' or 'lru', got {self.eviction!r}")
        _require(isinstance(self.cache_manager_class, str) and ":" in self.cache_manager_class,
                 f"config.cache_manager_class: expected 'package.module:ClassName', "
                 f"got {self.cache_manager_class!r}")

    # Derived sizes -----------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_support_bins(self) -> int:
        return 2 * self.support_size + 1

    @property
    def legacy_init_pool_size(self) -> int:
        return int(self.game_segment_length)

    @property
    def legacy_recur_pool_size(self) -> int:
        return int(self.num_simulations * self.env_num)

    @property
    def legacy_wm_pool_size(self) -> int:
        return int(self.env_num)

    @property
    def init_pool_size(self) -> int:
        return self.init_pool_size_override or self.legacy_init_pool_size

    @property
    def recur_pool_size(self) -> int:
        return self.recur_pool_size_override or self.legacy_recur_pool_size

    @property
    def wm_pool_size(self) -> int:
        return self.wm_pool_size_override or self.legacy_wm_pool_size

    # Serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "config") -> "WorldModelConfig":
        """Build a config from a mapping, rejecting unknown fields by name."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table of config fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                              f"known fields: {', '.join(sorted(known))}")
        try:
            return cls(**dict(data))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("config.", f"{where}.", 1)) from None
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def replace(self, **changes: Any) -> "WorldModelConfig":
        return dataclasses.replace(self, **changes)
