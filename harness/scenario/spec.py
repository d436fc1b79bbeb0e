"""Scenario records: frozen, validated descriptions of one capture workload.

A scenario says which gymnasium env to run with how many copies and seeds, how to build the world
model, how to search, how long to collect and when the collector clears caches, updates weights
and reanalyses. :mod:`harness.scenario.loader` builds these records from TOML files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.errors import UserError
from unizero.config import WorldModelConfig
from unizero.mcts import MCTSConfig

__all__ = ["ScenarioError", "EnvSpec", "SearchSpec", "RunSpec", "WeightUpdateSpec",
           "ReanalyzeSpec", "Scenario", "WEIGHT_UPDATE_KINDS", "REANALYZE_MODELS"]

WEIGHT_UPDATE_KINDS = ("perturb", "sgd")


class ScenarioError(UserError):
    """A scenario file that cannot be run; the one-line message names the file and the field."""


@dataclass(frozen=True, slots=True)
class EnvSpec:
    """``env_num`` copies of a gymnasium env; env k is first reset with ``seeds[k]``.

    Later resets of env k continue that env's own seeded generator (gymnasium semantics), so the
    whole episode sequence of every env is fixed by its seed.
    """

    id: str
    env_num: int
    seeds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """The collect search: may run more simulations than the model's ``num_simulations``
    (which only sizes the recurrent pool, legacy-spec §1).

    Attributes:
        temperature: action sampling temperature over visit counts; 0 takes the most visited.
        seed: seeds PUCT tie-breaking and action sampling.
        root_noise: whether Dirichlet noise is mixed into root priors (seeded by
            ``root_noise_seed``).
    """

    num_simulations: int
    discount: float
    temperature: float
    seed: int
    root_noise: bool
    root_noise_seed: int
    root_dirichlet_alpha: float
    root_noise_fraction: float

    def mcts_config(self, num_simulations: int | None = None) -> MCTSConfig:
        return MCTSConfig(num_simulations=num_simulations or self.num_simulations,
                          discount=self.discount, root_dirichlet_alpha=self.root_dirichlet_alpha,
                          root_noise_fraction=self.root_noise_fraction)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """How long to collect and the collector's lifecycle.

    Exactly one of ``num_steps`` (lock-step env steps) and ``num_episodes`` (completed episodes,
    all envs together) is set. A round is ``steps_per_round`` steps; rounds with index
    ``>= warmup_rounds`` "train": at their end the weights may be updated, reanalysis may run and
    ``recompute_pos_emb_diff_and_clear_cache()`` is called. ``max_episode_steps`` (one per env)
    truncates episodes so that envs end at different times. ``clear_interval`` is the collector's
    periodic global wipe (legacy-spec §10, §14.6).

    Ready envs (upstream's collector passes only the envs whose step is done): each step, every
    env waits with probability ``wait_probability`` (seeded by ``wait_seed``; at least one env
    is always ready), and env k finishes for good after ``active_steps[k]`` steps of its own.
    A batch then holds the ready envs in env order, so batch positions differ from env ids
    (legacy quirk 9). The run ends early when every env has finished.

    ``restart_all_on_episode_end``: upstream's collector restarts every env's context when one
    episode ends (``reset_init_data=True``). When false, only the ended env's root cache is
    cleared and the others keep their context, so the next root call is a continuing step in
    which that env misses beside hits of the others (legacy quirks 4 and 6 on the root path).
    """

    num_steps: int | None
    num_episodes: int | None
    steps_per_round: int
    max_episode_steps: tuple[int, ...] | None
    clear_interval: int
    warmup_rounds: int
    wait_probability: float = 0.0
    wait_seed: int = 0
    active_steps: tuple[int, ...] | None = None
    restart_all_on_episode_end: bool = True

    @property
    def partial_batches(self) -> bool:
        """Whether a step may pass fewer envs than ``env_num``."""
        return self.wait_probability > 0 or self.active_steps is not None

    def __post_init__(self) -> None:
        assert (self.num_steps is None) != (self.num_episodes is None), (
            f"RunSpec: exactly one of num_steps and num_episodes must be set, got "
            f"num_steps={self.num_steps!r}, num_episodes={self.num_episodes!r}")

    @property
    def total(self) -> int:
        """The progress total: steps or episodes."""
        return self.num_steps if self.num_steps is not None else self.num_episodes  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class WeightUpdateSpec:
    """A parameter update at the end of every ``every``-th training round, and (when
    ``every_steps`` is set) also after every ``every_steps``-th collect step, between two
    searches and without any clear, so stale root keys must miss.

    ``perturb`` adds seeded Gaussian noise of std ``scale`` to every parameter; ``sgd`` takes one
    SGD step of size ``learning_rate`` on policy/value targets from the round's searches.
    """

    kind: str
    every: int
    scale: float
    learning_rate: float
    seed: int
    every_steps: int | None = None


REANALYZE_MODELS = ("collect", "target")


@dataclass(frozen=True, slots=True)
class ReanalyzeSpec:
    """Every ``every``-th training round, re-search ``env_num`` observations of the round
    (sampled with ``seed``) with ``set_reanalyze_phase(True)``.

    ``model`` says which world model reanalyses: ``collect`` (the collecting model itself, so its
    pools and write pointers see the forced misses) or ``target`` (a separate target model with
    caches of its own, as upstream's ``_target_model``, legacy-spec §10): it starts with the
    collecting model's weights, takes them again after every training round (one round behind)
    and has its trim correction recomputed and caches cleared with the collecting model's.
    """

    every: int
    num_simulations: int
    seed: int
    model: str = "collect"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One capture workload. ``model`` is complete: obs/action sizes and env_num are filled in."""

    name: str
    description: str
    source: str
    env: EnvSpec
    model: WorldModelConfig
    search: SearchSpec
    run: RunSpec
    weights: WeightUpdateSpec | None = None
    reanalyze: ReanalyzeSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data (for trace headers)."""
        def plain(value: Any) -> Any:
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value
        return plain(self)

    def with_run(self, **changes: Any) -> "Scenario":
        """A copy with some :class:`RunSpec` fields changed (e.g. a shorter run for tests)."""
        return dataclasses.replace(self, run=dataclasses.replace(self.run, **changes))
