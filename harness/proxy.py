"""The one place that turns the world-model API into calls.

:class:`WorldModelProxy` has the world model's public API (``initial_inference``,
``recurrent_inference``, the clears, ``load_weights``, ``set_reanalyze_phase``). Each method
copies its arguments into a :mod:`harness.calls` record and hands it to a handler, which returns
the named output tensors. The recorder (:mod:`harness.recorder`), the live shadow/validate
wrapper (:mod:`harness.shadow`) and the tests all build on it, so a call means the same thing to
each of them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from harness.calls import Call, ClearCall, ReanalyzeCall, RecurrentCall, RootCall, WeightsCall
from unizero.world_model import InferenceOutput

__all__ = ["WorldModelProxy", "Handler", "copy_array", "root_call", "recurrent_call"]

Handler = Callable[[Call], "dict[str, torch.Tensor]"]


def copy_array(value: Any, dtype: Any = None) -> np.ndarray:
    """A fresh numpy copy of a tensor, array or sequence (on the CPU)."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return np.array(arr, dtype=dtype, copy=True)


def _rows(value: Any) -> int:
    shape = np.shape(value.detach() if isinstance(value, torch.Tensor) else value)
    return shape[0] if shape else 1


def root_call(last_obs: Any, last_actions: Any, current_obs: Any, start_pos: Any = None) -> RootCall:
    """A root call from ``initial_inference``'s arguments (copied)."""
    rows = _rows(current_obs)
    return RootCall(last_obs=copy_array(last_obs, np.float32),
                    last_actions=copy_array(last_actions, np.int64),
                    current_obs=copy_array(current_obs, np.float32),
                    start_pos=copy_array(np.zeros(rows) if start_pos is None else start_pos,
                                         np.int64))


def recurrent_call(latent_state: Any, actions: Any, simulation_index: int = 0,
                   search_depth: Sequence[int] | None = None, start_pos: Any = None) -> RecurrentCall:
    """A recurrent call from ``recurrent_inference``'s arguments (copied)."""
    rows = _rows(latent_state)
    return RecurrentCall(
        latent_state=copy_array(latent_state),
        actions=copy_array(actions, np.int64),
        search_depth=copy_array(np.zeros(rows) if search_depth is None else search_depth, np.int64),
        start_pos=copy_array(np.zeros(rows) if start_pos is None else start_pos, np.int64),
        simulation_index=int(simulation_index))


class WorldModelProxy:
    """The world-model API over a handler that applies calls.

    Args:
        handler: applies one call and returns its named output tensors (empty for clears,
            weights and reanalysis switches); whatever it raises propagates to the caller.
        model: the world model the proxy stands for; its ``config``, ``net`` and ``device`` are
            the proxy's.
    """

    def __init__(self, handler: Handler, model: Any) -> None:
        self._handler = handler
        self._model = model

    @property
    def config(self) -> Any:
        return self._model.config

    @property
    def net(self) -> torch.nn.Module:
        return self._model.net

    @property
    def device(self) -> torch.device:
        return self._model.device

    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        return InferenceOutput(**self._handler(root_call(last_obs, last_actions, current_obs,
                                                         start_pos)))

    def recurrent_inference(self, latent_state: Any, actions: Any, simulation_index: int = 0,
                            search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput:
        return InferenceOutput(**self._handler(recurrent_call(
            latent_state, actions, simulation_index, search_depth, start_pos)))

    def clear_caches(self, reason: str = "clear_caches") -> None:
        self._handler(ClearCall(op="all", reason=reason))

    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        self._handler(ClearCall(op="root_env", reason=reason, env=int(env_id)))

    def recompute_pos_emb_diff_and_clear_cache(self) -> None:
        self._handler(ClearCall(op="epoch", reason="epoch"))

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self._handler(WeightsCall(state={k: copy_array(v) for k, v in state_dict.items()}))

    def set_reanalyze_phase(self, on: bool) -> None:
        self._handler(ReanalyzeCall(on=bool(on)))
