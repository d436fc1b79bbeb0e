"""Upstream LightZero engines: ``lightzero:PATH`` and ``lightzero-manager:PATH``.

Each engine runs upstream's world model in a worker process with its own Python (two trees are
both the package ``lzero``, and their dependencies conflict with ours), started through an
execnet gateway: ``popen`` runs ``.venv-lightzero/bin/python`` here; an ``ssh=HOST//python=...``
gateway spec would put the same worker on another machine unchanged. Calls and results cross as
trace records (``harness.trace.codec``: JSON plus raw arrays), never pickle.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.calls import RecordedCall, RecurrentCall, call_to_record
from harness.errors import UserError
from harness.observation import Observation
from harness.paths import ROOT
from harness.trace.codec import PayloadError, decode_record, encode_record
from harness.upstream.config import UpstreamConfigError, upstream_model_spec
from unizero.config import WorldModelConfig
from unizero.events import event_from_dict

__all__ = ["UpstreamSpec", "UpstreamSpecError", "UpstreamEngine",
           "parse_upstream_spec", "is_upstream_spec", "default_lightzero_python", "REPO_ROOT",
           "SPEC_PREFIXES", "UpstreamConfigError"]

REPO_ROOT = ROOT  # the worker puts the repository on its sys.path and runs in it
SPEC_PREFIXES = {"lightzero": False, "lightzero-manager": True}
_BOOTSTRAP = """
import sys
sys.path[:0] = channel.receive()
from harness.upstream.worker import serve
serve(channel)
"""


class UpstreamSpecError(UserError):
    """An upstream engine that cannot be started; the one-line message names the spec."""


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """A parsed ``lightzero:PATH`` / ``lightzero-manager:PATH``.

    Attributes:
        text: the spec as given (the engine's name in reports).
        tree: the source root holding ``lzero/``.
        manager: ``use_new_cache_manager`` for this engine.
    """

    text: str
    tree: Path
    manager: bool


def is_upstream_spec(text: str) -> bool:
    """Whether ``text`` names an upstream engine (so the registry should route it here)."""
    return text.split(":", 1)[0] in SPEC_PREFIXES and ":" in text


def parse_upstream_spec(text: str) -> UpstreamSpec:
    """Parse ``lightzero:PATH`` or ``lightzero-manager:PATH``; PATH must hold ``lzero/``.

    Raises:
        UpstreamSpecError: one line naming the spec and what was expected.
    """
    prefix, _, path = text.partition(":")
    if prefix not in SPEC_PREFIXES or not path:
        raise UpstreamSpecError(f"engine {text!r}: expected 'lightzero:PATH' or "
                                f"'lightzero-manager:PATH' (PATH a source root holding lzero/)")
    tree = Path(path).expanduser().resolve()
    if not (tree / "lzero" / "model" / "unizero_world_models" / "world_model.py").is_file():
        raise UpstreamSpecError(f"engine {text!r}: {tree} holds no "
                                f"lzero/model/unizero_world_models/world_model.py; expected a "
                                f"LightZero source root")
    return UpstreamSpec(text=text, tree=tree, manager=SPEC_PREFIXES[prefix])


def default_lightzero_python() -> str:
    """``$KVMIGRATE_LIGHTZERO_PYTHON``, else ``.venv-lightzero/bin/python`` in the repository."""
    return os.environ.get("KVMIGRATE_LIGHTZERO_PYTHON",
                          str(REPO_ROOT / ".venv-lightzero" / "bin" / "python"))


class UpstreamEngine:
    """The harness engine protocol (``name``, ``apply``) over one upstream worker process."""

    def __init__(self, spec: str | UpstreamSpec, config: WorldModelConfig, *,
                 python: str | None = None, gateway: str | None = None) -> None:
        """Start the worker and build upstream's model from ``config``.

        Args:
            spec: ``lightzero:PATH`` / ``lightzero-manager:PATH`` or a parsed spec.
            config: the trace's (or scenario's) model config, mapped by
                :func:`harness.upstream.config.upstream_model_spec`.
            python: the worker's interpreter (default :func:`default_lightzero_python`).
            gateway: a full execnet gateway spec instead (e.g. ``ssh=gpu-box//python=...``);
                the remote side needs the repository and the tree at the same paths.

        Raises:
            UpstreamSpecError: bad spec, missing interpreter, or a worker that cannot build the
                model; UpstreamConfigError: a ``[model]`` field with no upstream counterpart.
        """
        import execnet

        self.spec = spec if isinstance(spec, UpstreamSpec) else parse_upstream_spec(spec)
        self.name = self.spec.text
        self.model = None  # no in-process model: check_isolation has nothing to compare
        self.model_spec = upstream_model_spec(config, manager=self.spec.manager)
        if gateway is None:
            python = python or default_lightzero_python()
            if not Path(python).is_file():
                raise UpstreamSpecError(f"engine {self.name!r}: no LightZero interpreter at {python}; "
                                        f"run `make lightzero` (or set KVMIGRATE_LIGHTZERO_PYTHON)")
            gateway = f"popen//python={python}//chdir={REPO_ROOT}"
        self._execnet = execnet
        try:
            self._gateway = execnet.makegateway(gateway)
            self._channel = self._gateway.remote_exec(_BOOTSTRAP)
            self._channel.send([str(self.spec.tree), str(REPO_ROOT)])
            kind, meta, _ = self._exchange("init", {"spec": self.model_spec.to_dict()}, {})
        except (OSError, EOFError, PayloadError, execnet.RemoteError, execnet.HostNotFound,
                execnet.DataFormatError) as exc:
            self.close()
            last = (str(exc).strip().splitlines() or [""])[-1]
            raise UpstreamSpecError(f"engine {self.name!r}: the worker did not start "
                                    f"({type(exc).__name__}: {last})") from None
        if kind != "ready":
            self.close()
            raise UpstreamSpecError(f"engine {self.name!r}: the worker could not build the model: "
                                    f"{meta.get('error', kind)}")

    # ------------------------------------------------------------------ transport
    def _exchange(self, kind: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                  ) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
        self._channel.send(encode_record(kind, meta, arrays))
        return decode_record(self._channel.receive())

    def apply(self, recorded: RecordedCall) -> Observation:
        """Send one call to the worker; its outputs, events and aliasing findings come back."""
        call = recorded.call
        if isinstance(call, RecurrentCall) and call.latent_source is not None:
            call = dataclasses.replace(call, latent_source=None)  # provenance: not the worker's
        kind, meta, arrays = call_to_record(call, {}, [])
        start = time.perf_counter()
        try:
            _, reply, outputs = self._exchange(kind, meta, arrays)
        except (OSError, EOFError, PayloadError, self._execnet.RemoteError,
                self._execnet.DataFormatError) as exc:
            last = (str(exc).strip().splitlines() or [""])[-1]
            return Observation({}, (), time.perf_counter() - start,
                               error=f"worker {self.name!r} failed: {type(exc).__name__}: {last}")
        events = tuple(event_from_dict(e) for e in reply.get("events", []))
        elapsed = float(reply.get("elapsed_s", time.perf_counter() - start))
        return Observation({k[4:]: v for k, v in outputs.items() if k.startswith("out/")},
                           events, elapsed, error=reply.get("error"),
                           findings=tuple(f["text"] for f in reply.get("aliasing", [])))

    def state_dict(self) -> dict[str, np.ndarray]:
        """The worker model's current parameters and buffers (upstream's names)."""
        _, _, arrays = self._exchange("state", {}, {})
        return {k[2:]: v for k, v in arrays.items() if k.startswith("w/")}

    def round_trip_s(self, repeats: int = 200) -> float:
        """Mean seconds of one empty request/reply through the worker boundary."""
        start = time.perf_counter()
        for _ in range(repeats):
            self._exchange("noop", {}, {})
        return (time.perf_counter() - start) / repeats

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        gateway, self._gateway = getattr(self, "_gateway", None), None
        if gateway is not None:
            gateway.exit()

    def __enter__(self) -> "UpstreamEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

