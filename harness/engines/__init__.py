"""Engines and their registry: a spec on the command line names the engine to build.

Specs: ``legacy``, ``refactored``, ``golden`` (the outputs and events recorded in the trace),
``uncached`` (every call recomputed from its full recorded context, no cache: a reference),
``lightzero:PATH`` / ``lightzero-manager:PATH`` (LightZero's own world model from the source root
PATH, old cache path / KVCacheManager, in a worker process: :mod:`harness.upstream`) or
``package.module:Attr`` naming a world-model class or factory ``(config, device)``. Code is named
only here, by the user: nothing read from a trace names code. A trace header's
``config.cache_manager_class`` is provenance; ``refactored`` is always built with the manager
class the user names (``--manager``) or the project's own ``KVCacheManager``.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.engines.local import (Engine, GoldenEngine, UncachedEngine, WorldModelEngine,
                                   check_isolation, clone_call)
from harness.errors import UserError
from harness.observation import Observation
from harness.upstream.engine import UpstreamEngine, is_upstream_spec
from reference.world_model import UncachedWorldModel
from unizero.backends import WORLD_MODEL_BACKENDS, BackendError, load_object
from unizero.config import WorldModelConfig

__all__ = ["Observation", "Engine", "WorldModelEngine", "GoldenEngine", "build_engine",
           "ENGINE_NAMES", "MANAGER_ENGINES", "DEFAULT_MANAGER", "check_isolation", "clone_call",
           "EngineError", "engine_label", "check_engine_options"]

ENGINE_NAMES = ("legacy", "refactored", "golden", "uncached", "legacy-fix-quirk1")
MANAGER_ENGINES = ("refactored",)
"""Engines that take ``--manager``: the refactored world model's cache manager class."""
DEFAULT_MANAGER = "refactored.kv_cache_manager:KVCacheManager"


class EngineError(UserError):
    """An engine spec that cannot be built; the message names it."""


def engine_label(spec: str, manager: str | None = None) -> str:
    """The name an engine's timings and pool statistics are recorded under."""
    return spec if manager is None else f"{spec}[{manager}]"


def check_engine_options(candidate: str, manager: str | None) -> None:
    """Refuse an option that does not apply to the chosen candidate (exit 2, not ignored)."""
    if manager is not None and candidate not in MANAGER_ENGINES:
        raise EngineError(f"--manager {manager!r} applies to a candidate of "
                          f"{', '.join(MANAGER_ENGINES)}, not to {candidate!r}")


def _load(spec: str, what: str) -> Any:
    try:
        return load_object(spec)
    except BackendError as exc:
        raise EngineError(f"{what}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin that fails on import is a user error
        raise EngineError(f"{what}: could not load plugin {spec!r}: "
                          f"{type(exc).__name__}: {exc}") from None


def _factory(spec: str, manager: str | None) -> Any:
    if spec == "refactored":
        manager_cls = _load(manager or DEFAULT_MANAGER, f"manager {manager or DEFAULT_MANAGER!r}")
        if not isinstance(manager_cls, type):
            raise EngineError(f"--manager {manager!r}: {manager_cls!r} is not a class")
        model_cls = load_object(WORLD_MODEL_BACKENDS["refactored"])

        def factory(config: WorldModelConfig, device: Any) -> Any:
            return model_cls(config, device, manager_cls=manager_cls)
        return factory
    if spec in WORLD_MODEL_BACKENDS:
        return load_object(WORLD_MODEL_BACKENDS[spec])
    if ":" in spec:
        factory = _load(spec, f"engine {spec!r}")
        if not callable(factory):
            raise EngineError(f"engine {spec!r}: {factory!r} is not a world-model class or factory")
        return factory
    raise EngineError(f"engine {spec!r}: expected one of {', '.join(ENGINE_NAMES)}, "
                      f"'lightzero:PATH', 'lightzero-manager:PATH' or 'package.module:Attr'")


def build_engine(spec: str, config: WorldModelConfig, *, device: torch.device | str = "cpu",
                 manager: str | None = None) -> Engine:
    """Build the engine named by ``spec`` for a trace whose model config is ``config``.

    Args:
        spec: ``legacy``, ``refactored``, ``golden``, ``lightzero:PATH`` /
            ``lightzero-manager:PATH`` (upstream LightZero in a worker process) or
            ``package.module:Attr``.
        manager: ``package.module:Class`` replacing the KVCacheManager of ``refactored``.

    Raises:
        EngineError: an unknown spec, a plugin that cannot be loaded, or ``manager`` given for
            an engine that takes none.
    """
    check_engine_options(spec, manager)
    if spec == "golden":
        return GoldenEngine()
    if is_upstream_spec(spec):
        return UpstreamEngine(spec, config)
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise EngineError(f"--device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"--device {device}: CUDA is not available on this machine")
    if spec == "uncached":
        return UncachedEngine.build("uncached", UncachedWorldModel, config, device)
    return WorldModelEngine.build(engine_label(spec, manager), _factory(spec, manager), config,
                                  device)
