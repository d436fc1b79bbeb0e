"""Backend registry: the phase-1 switch picks a world model by name, never by branching inside it.

``use_new_cache_manager`` in the config selects ``refactored`` (True) or ``legacy`` (False).
Any ``package.module:Attr`` can be named instead, which is how the harness plugs in candidates.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from unizero.config import WorldModelConfig

__all__ = ["WORLD_MODEL_BACKENDS", "load_object", "build_world_model", "BackendError"]

WORLD_MODEL_BACKENDS: dict[str, str] = {
    "legacy": "legacy.world_model:LegacyWorldModel",
    "refactored": "refactored.world_model:RefactoredWorldModel",
    # Counterfactual controls (legacy with one quirk corrected): harness.causes labels causes.
    "legacy-fix-quirk1": "legacy.counterfactual:LegacyFixQuirk1",
}


class BackendError(ValueError):
    """A backend or class spec that cannot be resolved; the message names it."""


def load_object(spec: str) -> Any:
    """Resolve ``package.module:Attr`` (attribute paths with dots allowed) to the object."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise BackendError(f"{spec!r}: expected 'package.module:Attr'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"{spec!r}: cannot import module {module_name!r} ({exc})") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BackendError(f"{spec!r}: module {module_name!r} has no attribute {attr_path!r}") from None
    return obj


def build_world_model(config: WorldModelConfig, device: torch.device | str = "cpu",
                      backend: str | None = None) -> Any:
    """Build the world model that ``config.use_new_cache_manager`` (or ``backend``) selects."""
    name = backend or ("refactored" if config.use_new_cache_manager else "legacy")
    spec = WORLD_MODEL_BACKENDS.get(name, name)
    return load_object(spec)(config, device)
