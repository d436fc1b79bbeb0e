"""Scenarios: TOML workload files and the runner that drives a world model through them.

``load_scenario(path)`` validates a file into a frozen :class:`Scenario`;
``build_world_model_config(scenario)`` gives the model config; ``run_scenario(scenario, model)``
collects with real MCTS over real gymnasium envs and returns a :class:`RunSummary`.
"""

from __future__ import annotations

from pathlib import Path

from harness.scenario.envs import KNOWN_ENVS, EnvBatch, EnvInfo
from harness.scenario.loader import build_world_model_config, load_scenario, parse_scenario
from harness.scenario.runner import ProgressCallback, RunSummary, ScenarioWorldModel, run_scenario
from harness.scenario.spec import (EnvSpec, ReanalyzeSpec, RunSpec, Scenario, ScenarioError,
                                   SearchSpec, WeightUpdateSpec)

__all__ = ["KNOWN_ENVS", "EnvBatch", "EnvInfo", "EnvSpec", "ProgressCallback", "ReanalyzeSpec",
           "RunSpec", "RunSummary", "Scenario", "ScenarioError", "ScenarioWorldModel",
           "SearchSpec", "WeightUpdateSpec", "BUNDLED_SCENARIO_DIR", "bundled_scenario_paths",
           "build_world_model_config", "load_scenario", "parse_scenario", "run_scenario"]

BUNDLED_SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"


def bundled_scenario_paths() -> list[Path]:
    """The scenario files shipped in ``scenarios/``, sorted by name."""
    return sorted(BUNDLED_SCENARIO_DIR.glob("*.toml"))
