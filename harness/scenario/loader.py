"""Load and validate scenario TOML files into :class:`~harness.scenario.spec.Scenario` records.

Every error is one line: ``<file>: <field>: expected <form>, got <value>``. The file format::

    name = "cartpole_small"            # required
    description = "..."                # optional

    [env]
    id = "CartPole-v1"                 # one of KNOWN_ENVS
    env_num = 2
    seeds = [11, 23]                   # one per env; or `seed = 0` (env k gets seed + k)

    [model]                            # any WorldModelConfig field except obs_dim,
    embed_dim = 32                     # action_space_size and env_num (filled in)

    [search]
    num_simulations = 8                # default: [model].num_simulations
    temperature = 1.0                  # 0 = most visited action
    seed = 0                           # tie-breaking and action sampling
    root_noise = false                 # + root_noise_seed, root_dirichlet_alpha,
    discount = 0.997                   #   root_noise_fraction

    [run]
    steps = 40                         # or `episodes = 6`
    steps_per_round = 20               # default: [model].game_segment_length
    warmup_rounds = 0                  # rounds before the first that trains
    max_episode_steps = [15, 22]       # an int or one per env; default: the env's own
    clear_interval = 20                # default: [model].game_segment_length
    wait_probability = 0.0             # each step, each env waits with this probability
    wait_seed = 0                      #   (a batch holds only the ready envs)
    active_steps = [40, 25]            # env k finishes after this many steps of its own
    restart_all_on_episode_end = true  # false: only the ended env loses its context

    [weights]                          # optional
    kind = "perturb"                   # or "sgd" (+ learning_rate)
    every = 1                          # rounds
    every_steps = 5                    # also between searches, every 5 steps (optional)
    scale = 0.01
    seed = 0

    [reanalyze]                        # optional
    every = 1
    num_simulations = 4                # default: [search].num_simulations
    seed = 0
    model = "collect"                  # or "target": a separate target model (upstream)

Sizes are bounded (``SIZE_LIMITS``) so that a typo cannot ask for a run that never ends or a
model that does not fit in memory; the bounds are far above any useful capture.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Mapping

from harness.scenario.envs import KNOWN_ENVS
from harness.scenario.spec import (REANALYZE_MODELS, WEIGHT_UPDATE_KINDS, EnvSpec, ReanalyzeSpec,
                                   RunSpec, Scenario, ScenarioError, SearchSpec, WeightUpdateSpec)
from unizero.config import ConfigError, WorldModelConfig

__all__ = ["load_scenario", "parse_scenario", "build_world_model_config", "SIZE_LIMITS",
           "POOL_BYTES_LIMIT"]

POOL_BYTES_LIMIT = 8 << 30  # the legacy recurrent pool, fully written, in bytes

# Largest accepted value of each size field, by "[table].field".
SIZE_LIMITS: dict[str, int] = {
    "[env].env_num": 256,
    "[run].steps": 1_000_000,
    "[run].episodes": 100_000,
    "[run].steps_per_round": 1_000_000,
    "[run].active_steps": 1_000_000,
    "[search].num_simulations": 10_000,
    "[reanalyze].num_simulations": 10_000,
    "[model].embed_dim": 8192,
    "[model].num_layers": 64,
    "[model].num_heads": 256,
    "[model].context_length": 8192,
    "[model].max_tokens": 8192,
    "[model].num_simulations": 10_000,
    "[model].game_segment_length": 1_000_000,
    "[model].encoder_hidden": 65_536,
    "[model].support_size": 10_000,
}

_REQUIRED = object()
_FILLED_FROM_ENV = ("obs_dim", "action_space_size", "env_num")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Section:
    """Typed reads from one TOML table; ``finish()`` rejects the fields nobody read."""

    def __init__(self, data: Any, name: str, source: str) -> None:
        self.name = name
        self.source = source
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{source}: {name}: expected a table, got {data!r}")
        self._data = dict(data)
        self._read: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str) -> Any:
        """The value as written (for error messages and pass-through tables)."""
        return self._data.get(key)

    def items(self) -> dict[str, Any]:
        self._read.update(self._data)
        return dict(self._data)

    def error(self, key: str, expected: str, got: Any) -> ScenarioError:
        field = f"{self.name}.{key}" if self.name else key
        return ScenarioError(f"{self.source}: {field}: expected {expected}, got {got!r}")

    def _get(self, key: str, default: Any, expected: str) -> Any:
        self._read.add(key)
        if key in self._data:
            return self._data[key]
        if default is _REQUIRED:
            raise ScenarioError(f"{self.source}: {self.name + '.' if self.name else ''}{key}: "
                                f"expected {expected}, got nothing (the field is required)")
        return default

    def limit(self, key: str) -> int | None:
        return SIZE_LIMITS.get(f"{self.name}.{key}")

    def integer(self, key: str, default: Any = _REQUIRED, *, minimum: int = 1) -> Any:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        value = self._get(key, default, expected)
        if value is not default and not (_is_int(value) and value >= minimum):
            raise self.error(key, expected, value)
        self.check_limit(key, value)
        return value

    def check_limit(self, key: str, value: Any) -> None:
        """Refuse a size above its bound in ``SIZE_LIMITS`` (one line, naming the field)."""
        maximum = self.limit(key)
        if maximum is not None and _is_int(value) and value > maximum:
            raise self.error(key, f"an integer <= {maximum} (the scenario size limit)", value)

    def number(self, key: str, default: Any, *, low: float, high: float | None = None,
               low_open: bool = False) -> float:
        if high is None:
            expected = f"a number {'>' if low_open else '>='} {low}"
        else:
            expected = f"a number in {'(' if low_open else '['}{low}, {high}]"
        value = self._get(key, default, expected)
        ok = (_is_int(value) or isinstance(value, float)) and (value > low if low_open else value >= low)
        if not ok or (high is not None and value > high):
            raise self.error(key, expected, value)
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default, "true or false")
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def string(self, key: str, default: Any = _REQUIRED, *, choices: tuple[str, ...] = ()) -> str:
        expected = f"one of {', '.join(choices)}" if choices else "a non-empty string"
        value = self._get(key, default, expected)
        if value is default:
            return value
        if not isinstance(value, str) or not value or (choices and value not in choices):
            raise self.error(key, expected, value)
        return value

    def per_env_ints(self, key: str, env_num: int, *, minimum: int) -> tuple[int, ...] | None:
        """An int (same for every env) or a list of ``env_num`` ints; None when absent."""
        kind = "integers" if minimum == 0 else "positive integers"
        expected = f"an integer or a list of {env_num} {kind} (one per env)"
        value = self._get(key, None, expected)
        if value is None:
            return None
        values = [value] * env_num if _is_int(value) else value
        if not (isinstance(values, list) and len(values) == env_num
                and all(_is_int(v) and v >= minimum for v in values)):
            raise self.error(key, expected, value)
        for v in values:
            self.check_limit(key, v)
        return tuple(values)

    def table(self, key: str, *, required: bool = False) -> "_Section":
        """The sub-table ``[key]``; an empty one when absent and not required."""
        name = f"[{key}]"
        value = self._get(key, _REQUIRED if required else {}, f"the table {name}")
        return _Section(value, name, self.source)

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            where = self.name or "top level"
            raise ScenarioError(f"{self.source}: {where}: unknown field(s) {', '.join(unknown)}; "
                                f"expected only {', '.join(sorted(self._read))}")


def _env(section: _Section) -> EnvSpec:
    env_id = section.string("id", choices=tuple(KNOWN_ENVS))
    env_num = section.integer("env_num")
    if section.has("seeds") and section.has("seed"):
        raise section.error("seed", "either seeds or seed, not both", section.raw("seed"))
    seeds = section.per_env_ints("seeds", env_num, minimum=0) if section.has("seeds") else None
    if seeds is None:
        base = section.integer("seed", 0, minimum=0)
        seeds = tuple(base + k for k in range(env_num))
    section.finish()
    return EnvSpec(id=env_id, env_num=env_num, seeds=seeds)


def _model(section: _Section, env: EnvSpec) -> WorldModelConfig:
    for key in _FILLED_FROM_ENV:
        if section.has(key):
            raise section.error(key, "no value (filled in from [env])", section.raw(key))
    for key in section.items():
        section.check_limit(key, section.raw(key))
    info = KNOWN_ENVS[env.id]
    fields = {**section.items(), "obs_dim": info.obs_dim, "action_space_size": info.num_actions,
              "env_num": env.env_num}
    try:
        config = WorldModelConfig.from_dict(fields, where="[model]")
    except ConfigError as exc:
        raise ScenarioError(f"{section.source}: {exc}") from None
    # Each bound alone is generous; together they could still ask for terabytes of pool.
    pool_bytes = _recurrent_pool_bytes(config)
    if pool_bytes > POOL_BYTES_LIMIT:
        raise ScenarioError(
            f"{section.source}: [model].num_simulations: expected a recurrent pool of at most "
            f"{POOL_BYTES_LIMIT >> 30} GiB (num_simulations x env_num slots of num_layers x 2 x "
            f"context_length x embed_dim float32), got {pool_bytes / 2**30:.1f} GiB")
    return config


def _recurrent_pool_bytes(config: WorldModelConfig) -> int:
    slot = config.num_layers * 2 * config.context_length * config.embed_dim * 4
    return config.legacy_recur_pool_size * slot


def _search(section: _Section, model: WorldModelConfig) -> SearchSpec:
    spec = SearchSpec(
        num_simulations=section.integer("num_simulations", model.num_simulations),
        discount=section.number("discount", 0.997, low=0.0, high=1.0, low_open=True),
        temperature=section.number("temperature", 1.0, low=0.0),
        seed=section.integer("seed", 0, minimum=0),
        root_noise=section.boolean("root_noise", False),
        root_noise_seed=section.integer("root_noise_seed", 0, minimum=0),
        root_dirichlet_alpha=section.number("root_dirichlet_alpha", 0.3, low=0.0, low_open=True),
        root_noise_fraction=section.number("root_noise_fraction", 0.25, low=0.0, high=1.0))
    section.finish()
    return spec


def _run(section: _Section, model: WorldModelConfig, env: EnvSpec) -> RunSpec:
    if section.has("steps") == section.has("episodes"):
        got = "both" if section.has("steps") else "neither"
        raise ScenarioError(f"{section.source}: [run]: expected exactly one of steps or episodes, "
                            f"got {got}")
    spec = RunSpec(
        num_steps=section.integer("steps", None),
        num_episodes=section.integer("episodes", None),
        steps_per_round=section.integer("steps_per_round", model.game_segment_length),
        max_episode_steps=section.per_env_ints("max_episode_steps", env.env_num, minimum=1),
        clear_interval=section.integer("clear_interval", model.game_segment_length),
        warmup_rounds=section.integer("warmup_rounds", 0, minimum=0),
        wait_probability=section.number("wait_probability", 0.0, low=0.0, high=0.9),
        wait_seed=section.integer("wait_seed", 0, minimum=0),
        active_steps=section.per_env_ints("active_steps", env.env_num, minimum=1),
        restart_all_on_episode_end=section.boolean("restart_all_on_episode_end", True))
    section.finish()
    return spec


def _weights(section: _Section) -> WeightUpdateSpec:
    kind = section.string("kind", choices=WEIGHT_UPDATE_KINDS)
    only = {"scale": "perturb", "learning_rate": "sgd"}
    for key, owner in only.items():
        if section.has(key) and kind != owner:
            raise section.error(key, f"no value for kind {kind!r} (it applies to {owner!r})",
                                section.raw(key))
    spec = WeightUpdateSpec(kind=kind, every=section.integer("every", 1),
                            scale=section.number("scale", 0.01, low=0.0, low_open=True),
                            learning_rate=section.number("learning_rate", 0.01, low=0.0, low_open=True),
                            seed=section.integer("seed", 0, minimum=0),
                            every_steps=section.integer("every_steps", None))
    section.finish()
    return spec


def _reanalyze(section: _Section, search: SearchSpec) -> ReanalyzeSpec:
    spec = ReanalyzeSpec(every=section.integer("every", 1),
                         num_simulations=section.integer("num_simulations", search.num_simulations),
                         seed=section.integer("seed", 0, minimum=0),
                         model=section.string("model", "collect", choices=REANALYZE_MODELS))
    section.finish()
    return spec


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate parsed TOML data; ``source`` prefixes every error message."""
    top = _Section(data, "", source)
    name = top.string("name")
    description = top.string("description", "")
    env = _env(top.table("env", required=True))
    model = _model(top.table("model"), env)
    search = _search(top.table("search"), model)
    run = _run(top.table("run", required=True), model, env)
    weights = _weights(top.table("weights")) if top.has("weights") else None
    reanalyze = _reanalyze(top.table("reanalyze"), search) if top.has("reanalyze") else None
    top.finish()
    return Scenario(name=name, description=description, source=source, env=env, model=model,
                    search=search, run=run, weights=weights, reanalyze=reanalyze)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file.

    Raises:
        ScenarioError: a missing or unreadable file, invalid TOML, or a bad field (named).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot read the scenario file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML ({exc})") from None
    return parse_scenario(data, source)


def build_world_model_config(scenario: Scenario, **changes: Any) -> WorldModelConfig:
    """The scenario's world-model config, optionally with some fields changed
    (e.g. ``use_new_cache_manager=True``)."""
    return scenario.model.replace(**changes) if changes else scenario.model
