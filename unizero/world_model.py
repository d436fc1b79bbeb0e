"""The public world-model API both implementations share, and its input validation.

A world model answers search-time ``imagine`` calls:

* ``initial_inference(last_obs, last_actions, current_obs, start_pos)`` — the root call of a
  search step (first step of an episode when every previous action is -1);
* ``recurrent_inference(latent_state, actions, simulation_index, search_depth, start_pos)`` —
  one MCTS simulation expanding one leaf per root;
* ``clear_caches()``, ``clear_root_cache(env_id)``, ``recompute_pos_emb_diff_and_clear_cache()``
  and ``reanalyze_phase`` — the cache lifecycle the policy/collector drive.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from unizero.config import WorldModelConfig
from unizero.events import CacheEvent, EventLog
from unizero.network import WorldModelNetwork

__all__ = ["InferenceOutput", "BaseWorldModel", "InputError"]


class InputError(ValueError):
    """An imagine() argument of the wrong shape, dtype or range; the message names it."""


@dataclass(frozen=True, slots=True)
class InferenceOutput:
    """Outputs of one imagine call, all on the model's device.

    Attributes:
        latent: ``[B, D]`` float32 — the root embedding or the predicted next latent.
        reward_logits: ``[B, bins]`` — zero on a first root step (no action token).
        policy_logits: ``[B, A]``.
        value_logits: ``[B, bins]``.
    """

    latent: torch.Tensor
    reward_logits: torch.Tensor
    policy_logits: torch.Tensor
    value_logits: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"latent": self.latent, "reward_logits": self.reward_logits,
                "policy_logits": self.policy_logits, "value_logits": self.value_logits}


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
        raise InputError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from None


class BaseWorldModel(nn.Module, abc.ABC):
    """Owns the network, the event log and input validation; subclasses own the caches."""

    def __init__(self, config: WorldModelConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if not isinstance(config, WorldModelConfig):
            raise TypeError(f"config: expected WorldModelConfig, got {type(config).__name__}")
        self.config = config
        self.env_num = config.env_num
        self.context_length = config.context_length
        self.net = WorldModelNetwork(config).to(device)
        self.net.eval()
        self._device = self.net.pos_emb.weight.device
        self.events = EventLog()
        self.reanalyze_phase = False

    # ------------------------------------------------------------------ public API
    @property
    def device(self) -> torch.device:
        return self._device

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        """Keep the cached device right across ``.to()`` / ``.cuda()`` (cheap ``device`` reads)."""
        out = super()._apply(fn, recurse)
        self._device = self.net.pos_emb.weight.device
        return out

    def take_events(self) -> list[CacheEvent]:
        """Drain the cache events recorded since the last call (enable with ``record_events``)."""
        return self.events.take_events()

    def record_events(self, on: bool = True) -> None:
        self.events.recording = on
        if not on:
            self.events.take_events()

    @abc.abstractmethod
    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput: ...

    @abc.abstractmethod
    def recurrent_inference(self, latent_state: np.ndarray, actions: Any,
                            simulation_index: int = 0, search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput: ...

    @abc.abstractmethod
    def clear_caches(self, reason: str = "clear_caches") -> None:
        """Clear every lookup structure; ``reason`` labels the Clear event."""

    @abc.abstractmethod
    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        """Clear one env's root cache (the collector's episode-end reset)."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]: ...

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the network's parameters and buffers (a training update between rounds).

        The trim correction buffers travel with the state dict, so a stale correction stays
        stale until ``recompute_pos_emb_diff_and_clear_cache`` (legacy quirk 8).
        """
        self.net.load_state_dict(state_dict, strict=True)

    def set_reanalyze_phase(self, on: bool) -> None:
        """Reanalysis mode: every recurrent lookup is a forced miss (results are still stored)."""
        self.reanalyze_phase = bool(on)

    def recompute_pos_emb_diff_and_clear_cache(self) -> None:
        """End-of-epoch hook: refresh the trim correction from current weights, clear caches."""
        self.net.recompute_pos_emb_diff()
        self.clear_caches(reason="epoch")

    # ------------------------------------------------------------------ validation
    def check_env_id(self, env_id: Any) -> int:
        if not isinstance(env_id, (int, np.integer)) or isinstance(env_id, bool) \
                or not 0 <= int(env_id) < self.env_num:
            raise InputError(f"env_id: expected an integer in [0, {self.env_num}), got {env_id!r}")
        return int(env_id)

    def _obs_tensor(self, obs: Any, name: str, max_rows: int) -> torch.Tensor:
        arr = _as_array(obs, name)
        if arr.ndim != 2 or arr.shape[1] != self.config.obs_dim or not 0 < arr.shape[0] <= max_rows:
            raise InputError(f"{name}: expected shape [B, {self.config.obs_dim}] with "
                             f"1 <= B <= {max_rows}, got {list(arr.shape)}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"{name}: expected a float array, got dtype {arr.dtype}")
        return torch.as_tensor(arr, dtype=torch.float32, device=self.device)

    def _action_array(self, actions: Any, name: str, rows: int, allow_first: bool) -> np.ndarray:
        arr = actions if isinstance(actions, np.ndarray) else _as_array(actions, name)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1 or arr.shape[0] < rows:
            raise InputError(f"{name}: expected {rows} or more action indices, got shape {list(arr.shape)}")
        if arr.dtype.kind not in "iu":
            raise InputError(f"{name}: expected integer actions, got dtype {arr.dtype}")
        low = -1 if allow_first else 0
        values = arr.tolist()  # a handful of entries: Python min/max beat numpy reductions here
        if values and (min(values) < low or max(values) >= self.config.action_space_size):
            raise InputError(f"{name}: expected actions in [{low}, {self.config.action_space_size}), "
                             f"got {values}")
        return arr if arr.dtype == np.int64 else arr.astype(np.int64)

    def _latent_array(self, latent_state: Any) -> np.ndarray:
        if not isinstance(latent_state, np.ndarray):
            raise InputError(f"latent_state: expected a float32 numpy array [B, {self.config.embed_dim}], "
                             f"got {type(latent_state).__name__}")
        if latent_state.dtype != np.float32:
            raise InputError(f"latent_state: expected dtype float32 (the cache key hashes its bytes), "
                             f"got {latent_state.dtype}")
        arr = latent_state.reshape(latent_state.shape[0], -1) if latent_state.ndim == 3 else latent_state
        # Reanalysis searches a replay batch, not the live envs: no lookup is indexed by env
        # there (every lookup is a forced miss), so B may exceed env_num (spec §7, quirk 14).
        max_rows = None if self.reanalyze_phase else self.env_num
        if arr.ndim != 2 or arr.shape[1] != self.config.embed_dim or arr.shape[0] < 1 \
                or (max_rows is not None and arr.shape[0] > max_rows):
            bound = "1 <= B" if max_rows is None else f"1 <= B <= {max_rows}"
            raise InputError(f"latent_state: expected shape [B, {self.config.embed_dim}] with "
                             f"{bound}, got {list(latent_state.shape)}")
        return arr

    def _root_inputs(self, last_obs: Any, last_actions: Any, current_obs: Any,
                     start_pos: Any) -> tuple[torch.Tensor, np.ndarray, np.ndarray, torch.Tensor | None]:
        """Validated root-call inputs: ``(current [B, obs], actions [B], start [B], last)``.

        ``last`` (the previous observations) is None on a first step, when every previous
        action is -1; a batch mixing -1 with real actions is rejected (legacy would index the
        action table with -1, spec quirk 10).
        """
        current = self._obs_tensor(current_obs, "current_obs", self.env_num)
        batch = current.shape[0]
        actions = self._action_array(last_actions, "last_actions", batch, allow_first=True)
        start = self._start_positions(start_pos, batch)
        if int(actions.max()) == -1:
            return current, actions, start, None
        last = self._obs_tensor(last_obs, "last_obs", self.env_num)
        if last.shape[0] < batch:
            raise InputError(f"last_obs: expected at least {batch} rows (one per current obs), "
                             f"got {last.shape[0]}")
        if int(actions[:batch].min()) < 0:
            raise InputError(f"last_actions: a batch mixing first steps (-1) and real actions "
                             f"cannot be embedded, got {actions.tolist()}")
        return current, actions[:batch], start[:batch], last

    def _recurrent_inputs(self, latent_state: Any, actions: Any,
                          start_pos: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validated recurrent-call inputs: ``(latent [B, D] float32, actions [B], start)``."""
        latent = self._latent_array(latent_state)
        batch = latent.shape[0]
        batch_action = self._action_array(actions, "actions", batch, allow_first=False)[:batch]
        return latent, batch_action, self._start_positions(start_pos, batch)

    def _start_positions(self, start_pos: Any, rows: int) -> np.ndarray:
        """Start positions only matter with RoPE (absent here); validated, passed through.

        Accepts a scalar (upstream's default ``start_pos=0``), one entry per row, or the
        reanalysis layout ``[R, C]`` that covers ``R * (C + 1)`` rows (spec §7 step 5).
        """
        if start_pos is None:
            return np.zeros(rows, dtype=np.int64)
        arr = _as_array(start_pos, "start_pos")
        if arr.ndim == 0:
            return np.full(rows, arr.item())
        covered = arr.shape[0] * (arr.shape[1] + 1) if arr.ndim == 2 else arr.shape[0]
        if arr.ndim > 2 or covered < rows:
            raise InputError(f"start_pos: expected {rows} or more entries (or a [R, C] reanalysis "
                             f"table with R * (C + 1) >= {rows}), got shape {list(arr.shape)}")
        return arr
