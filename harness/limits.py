"""Every bound the harness puts on sizes that a file declares, in one frozen record.

A trace header, a record, a scenario or a report may declare a model geometry, a pool size, an
array shape or a payload size. Each is checked against a :class:`Limits` before anything is
allocated or read, so a hostile file is refused at once and at flat memory. The defaults are
generous for real workloads (an Atari-size UniZero: embed 768, 12 layers, hundreds of tokens of
context, 8+ envs, 50 simulations) and are raised explicitly: ``--limit NAME=VALUE`` on the
command line (:func:`parse_limit_option`) or a ``[limits]`` table (:meth:`Limits.from_mapping`).
See docs/security.md for the trust model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from unizero.config import ConfigError, WorldModelConfig

__all__ = ["Limits", "LimitError", "DEFAULT_LIMITS", "check_config", "config_from_header",
           "parse_limit_option", "apply_limit_options", "model_num_params", "kv_slot_bytes",
           "kv_cache_bytes"]

_MiB = 2**20
_GiB = 2**30


class LimitError(ConfigError):
    """A declared size over a limit; the message names the field, the size, the limit and how
    to raise it. A :class:`~unizero.config.ConfigError`, so it is a user error (exit 2)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds on what an input file may declare (all inclusive).

    Attributes:
        max_frame_bytes: stored and inflated payload of one trace record frame.
        max_header_bytes: stored and inflated payload of a trace header frame.
        max_arrays_per_record: arrays one trace record may hold.
        max_array_ndim: dimensions of one array in a trace record.
        max_input_file_bytes: size of a TOML or JSON input (scenario, waivers, report, ...).
        max_embed_dim, max_num_layers, max_num_heads, max_tokens, max_context_length,
        max_obs_dim, max_action_space_size, max_encoder_hidden, max_support_size,
        max_env_num, max_num_simulations, max_game_segment_length, max_pool_slots:
            bounds on the matching :class:`~unizero.config.WorldModelConfig` fields (the pool
            bound applies to each pool's slot count, overrides included).
        max_model_params: parameters of the world model the config describes (estimated).
        max_kv_slot_bytes: float32 bytes of one KV pool slot (all layers, keys and values,
            ``max_tokens`` positions).
        max_kv_cache_bytes: float32 bytes of every KV pool slot filled, a worst case that
            the lazily filled pools reach only on long traces.
        max_scenario_steps: environment steps one scenario may ask for.
    """

    max_frame_bytes: int = 512 * _MiB
    max_header_bytes: int = 4 * _MiB
    max_arrays_per_record: int = 4096
    max_array_ndim: int = 16
    max_input_file_bytes: int = 256 * _MiB
    max_embed_dim: int = 2048
    max_num_layers: int = 48
    max_num_heads: int = 64
    max_tokens: int = 8192
    max_context_length: int = 8192
    max_obs_dim: int = 2**20
    max_action_space_size: int = 2**16
    max_encoder_hidden: int = 2**14
    max_support_size: int = 2**12
    max_env_num: int = 1024
    max_num_simulations: int = 10_000
    max_game_segment_length: int = 100_000
    max_pool_slots: int = 1_000_000
    max_model_params: int = 500_000_000
    max_kv_slot_bytes: int = 64 * _MiB
    max_kv_cache_bytes: int = 128 * _GiB
    max_scenario_steps: int = 10_000_000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value <= 0:
                raise LimitError(f"limits.{field.name}: expected a positive int, got {value!r}")

    def replace(self, **changes: int) -> Limits:
        """A copy with some bounds changed; unknown names raise :class:`LimitError`."""
        unknown = sorted(set(changes) - _NAMES)
        if unknown:
            raise LimitError(f"limits: unknown limit(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(_NAMES))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "[limits]") -> Limits:
        """Defaults with the entries of a ``[limits]`` table applied (name -> positive int)."""
        if not isinstance(data, Mapping):
            raise LimitError(f"{where}: expected a table of limits, got {type(data).__name__}")
        try:
            return DEFAULT_LIMITS.replace(**{str(key): value for key, value in data.items()})
        except LimitError as exc:
            raise LimitError(f"{where}: {exc}") from None

    def check(self, name: str, value: int, what: str) -> None:
        """Raise :class:`LimitError` if ``value`` exceeds the bound ``name``.

        Args:
            name: a field of this record, e.g. ``"max_frame_bytes"``.
            value: the declared size.
            what: where it was declared, e.g. ``"trace.kvtrace: header.config.embed_dim"``.
        """
        bound = getattr(self, name)
        if value > bound:
            raise LimitError(f"{what}: {value} is over the limit {name} = {bound} "
                             f"(raise it with --limit {name}={value} if the input is trusted)")


_NAMES = frozenset(field.name for field in dataclasses.fields(Limits))
DEFAULT_LIMITS = Limits()

_CONFIG_BOUNDS = (("embed_dim", "max_embed_dim"), ("num_layers", "max_num_layers"),
                  ("num_heads", "max_num_heads"), ("max_tokens", "max_tokens"),
                  ("context_length", "max_context_length"), ("obs_dim", "max_obs_dim"),
                  ("action_space_size", "max_action_space_size"),
                  ("encoder_hidden", "max_encoder_hidden"), ("support_size", "max_support_size"),
                  ("env_num", "max_env_num"), ("num_simulations", "max_num_simulations"),
                  ("game_segment_length", "max_game_segment_length"),
                  ("init_pool_size", "max_pool_slots"), ("recur_pool_size", "max_pool_slots"),
                  ("wm_pool_size", "max_pool_slots"))


def model_num_params(config: WorldModelConfig) -> int:
    """An upper estimate of the world model's parameter count (transformer, encoder, heads)."""
    embed, hidden = config.embed_dim, config.encoder_hidden
    transformer = config.num_layers * (12 * embed * embed + 13 * embed)
    encoder = config.obs_dim * hidden + hidden * hidden + hidden * embed + 2 * hidden + embed
    tables = (config.max_tokens + config.action_space_size + 2) * embed
    heads = 3 * (embed * embed + embed) + embed * (config.obs_dim + config.action_space_size
                                                    + 2 * config.num_support_bins + 4)
    return transformer + encoder + tables + heads


def kv_slot_bytes(config: WorldModelConfig) -> int:
    """Float32 bytes of one KV pool slot: keys and values of all layers, one sample of
    ``max_tokens`` positions."""
    return config.num_layers * 2 * config.max_tokens * config.embed_dim * 4


def kv_cache_bytes(config: WorldModelConfig) -> int:
    """Float32 bytes of every KV pool slot filled (root pools once per env)."""
    slots = (config.init_pool_size * config.env_num + config.recur_pool_size
             + config.wm_pool_size)
    return kv_slot_bytes(config) * slots


def check_config(config: WorldModelConfig, limits: Limits = DEFAULT_LIMITS, *,
                 where: str = "config") -> None:
    """Refuse a config whose geometry, pools or estimated memory exceed ``limits``.

    Call it before any model or pool is built from a config that came from a file.

    Raises:
        LimitError: one line naming ``where.field``, the value and the limit.
    """
    for field, bound in _CONFIG_BOUNDS:
        limits.check(bound, getattr(config, field), f"{where}.{field}")
    limits.check("max_model_params", model_num_params(config),
                 f"{where}: the model's estimated parameter count")
    limits.check("max_kv_slot_bytes", kv_slot_bytes(config),
                 f"{where}: the estimated bytes of one KV pool slot")
    limits.check("max_kv_cache_bytes", kv_cache_bytes(config),
                 f"{where}: the KV pools' estimated bytes")


def config_from_header(header: Mapping[str, Any], path: str,
                       limits: Limits = DEFAULT_LIMITS) -> WorldModelConfig:
    """The checked, bounded :class:`WorldModelConfig` of a trace header's ``config`` table.

    ``cache_manager_class`` in it is provenance only: it is validated as a string and never
    imported.

    Raises:
        ConfigError: a missing or invalid field, named as ``PATH: header.config.FIELD``.
        LimitError: a declared size over ``limits``.
    """
    where = f"{path}: header.config"
    config = WorldModelConfig.from_dict(header.get("config") if isinstance(header, Mapping)
                                        else None, where=where)
    check_config(config, limits, where=where)
    return config


def parse_limit_option(text: str, base: Limits = DEFAULT_LIMITS) -> Limits:
    """``base`` with one ``NAME=VALUE`` (a ``--limit`` option) applied; VALUE takes ``_``,
    and the suffixes ``K``, ``M``, ``G`` (powers of 1024)."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip().replace("_", "")
    scale = {"K": 2**10, "M": _MiB, "G": _GiB}.get(value[-1:].upper(), 1)
    digits = value[:-1] if scale != 1 else value
    if not sep or not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise LimitError(f"--limit: expected NAME=VALUE with a positive int VALUE, got {text!r}")
    return base.replace(**{name: int(digits) * scale})


def apply_limit_options(options: Iterable[str], base: Limits = DEFAULT_LIMITS) -> Limits:
    """``base`` with every ``--limit NAME=VALUE`` applied in order."""
    limits = base
    for text in options:
        limits = parse_limit_option(text, limits)
    return limits
