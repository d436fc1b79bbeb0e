"""The world-model algorithm both implementations share; subclasses only keep the caches.

A world model answers search-time ``imagine`` calls:

* ``initial_inference(last_obs, last_actions, current_obs, start_pos)`` — the root call of a
  search step (first step of an episode when every previous action is -1);
* ``recurrent_inference(latent_state, actions, simulation_index, search_depth, start_pos)`` —
  one MCTS simulation expanding one leaf per root;
* ``clear_caches()``, ``clear_root_cache(env_id)``, ``recompute_pos_emb_diff_and_clear_cache()``
  and ``reanalyze_phase`` — the cache lifecycle the policy/collector drive.

``BaseWorldModel`` runs these calls once for both world models — input validation, lookups in
env order, batch assembly, token positions, forwards, the store plan (``unizero.context``) and
the cache events — and asks its subclass (``legacy``, ``refactored``) only how caches are kept:
how a lookup finds an entry, how the batch cache is assembled, how an entry is stored and
what it evicted, and how keys are forgotten.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from unizero.config import WorldModelConfig
from unizero.context import (StorePlan, evicted_key, recurrent_positions, root_positions,
                             sizes_after_recurrent, store_plans, stores_contexts)
from unizero.events import POOL_RECURRENT, POOL_ROOT, CacheEvent, Clear, EventLog, Lookup, Store, Trim
from unizero.imagine import (InferenceOutput, forward_action_then_obs, forward_fresh_context,
                             forward_root_first_step)
from unizero.kv_cache import KeysValues
from unizero.network import WorldModelNetwork

__all__ = ["InferenceOutput", "WorldModelCore", "BaseWorldModel", "InputError"]


class InputError(ValueError):
    """An imagine() argument of the wrong shape, dtype or range; the message names it."""


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
        raise InputError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from None


class WorldModelCore(nn.Module, abc.ABC):
    """What every world model here has, whatever it does about caches: the network, the device,
    the event log, the weight and reanalysis switches and input validation. The imagine calls
    are abstract: :class:`BaseWorldModel` answers them through a KV cache, the uncached
    reference (:mod:`reference.world_model`) by recomputing every call."""

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
        # Each env's own size after the last imagine call (recurrent stores read it).
        self.keys_values_wm_size_list_current: list[int] = []

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
    def stats(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput: ...

    @abc.abstractmethod
    def recurrent_inference(self, latent_state: np.ndarray, actions: Any,
                            simulation_index: int = 0, search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput: ...

    @abc.abstractmethod
    def clear_caches(self, reason: str = "clear_caches") -> None: ...

    @abc.abstractmethod
    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None: ...

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


class BaseWorldModel(WorldModelCore):
    """Owns the imagine flow through a KV cache; subclasses own the caches (the abstract
    ``_lookup_*``, ``_assemble_batch``, ``_store_context``, ...)."""

    # ------------------------------------------------------------------ root call (spec §6)
    @torch.no_grad()
    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        """Root call: look up each env's previous latent, run action then observation, store.

        A first step (every previous action -1) runs the observation alone into an empty cache.
        Every root call ends by forgetting the recurrent keys.
        """
        current, actions, _, last = self._root_inputs(last_obs, last_actions, current_obs, start_pos)
        current_emb = self.net.encode(current)  # [B, D]
        batch = current_emb.shape[0]
        if last is None:
            out = forward_root_first_step(self.net, self._first_step_cache(batch), current_emb)
        else:
            last_emb = self.net.encode(last)  # [B, D]
            self._begin_batch(batch)
            sizes = [self._add_context(i, *self._lookup_root(i, last_emb[i]), last_emb[i], "root")
                     for i in range(batch)]
            batch_cache = self._assemble_batch(sizes)
            self.keys_values_wm_size_list_current[:] = sizes  # in place: no Module.__setattr__
            out = forward_action_then_obs(self.net, batch_cache, actions,
                                          root_positions(batch, batch_cache.size), current_emb)
        self.update_cache_context(current_emb, is_init_infer=True)
        self._forget_recurrent()
        if self.events.recording:
            self.events.emit(Clear(scope="recurrent", reason="after_root"))
        self._after_call()
        return out

    # ------------------------------------------------------------------ recurrent call (§7)
    @torch.no_grad()
    def recurrent_inference(self, latent_state: np.ndarray, actions: Any,
                            simulation_index: int = 0, search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput:
        """One simulation step: look up each leaf's latent (root pool, then recurrent pool),
        run action then the predicted observation, store. Reanalysis forces every miss."""
        latent, batch_action, _ = self._recurrent_inputs(latent_state, actions, start_pos)
        batch = latent.shape[0]
        self._begin_batch(batch)
        sizes = [self._add_context(j, *self._lookup_recurrent(j, latent[j]), latent[j], "recurrent")
                 for j in range(batch)]
        batch_cache = self._assemble_batch(sizes)
        out = forward_action_then_obs(self.net, batch_cache, batch_action,
                                      recurrent_positions(sizes), None)
        self.keys_values_wm_size_list_current[:] = sizes_after_recurrent(sizes)
        self.update_cache_context(out.latent, is_init_infer=False)
        self._after_call()
        return out

    def _add_context(self, env: int, key: int, matched: KeysValues | None, pool: str | None,
                     latent: torch.Tensor | np.ndarray, path: str) -> int:
        """Queue env ``env``'s context for the batch (the hit, or a fresh one holding only
        ``latent`` at position 0); record the lookup; return the context's size."""
        if matched is not None:
            entry, size = matched, matched.size
        else:
            if isinstance(latent, np.ndarray):
                latent = torch.from_numpy(np.ascontiguousarray(latent)).to(self.device)
            entry, size = self._fresh_cache(env), 1
            forward_fresh_context(self.net, entry, latent)
        self._append_context(entry, size, hit=matched is not None)
        if self.events.recording:
            self.events.emit(Lookup(env=env, key=key, path=path, hit=matched is not None, pool=pool,
                                    size=size, forced=path == "recurrent" and self.reanalyze_phase))
        return size

    # ------------------------------------------------------------------ store path (§8)
    def update_cache_context(self, latent_state: torch.Tensor, is_init_infer: bool = True) -> None:
        """Store each env's context from the batch cache under the key of its new latent.

        Root stores keep the padded batch size for every env (quirk 4); recurrent stores shift
        each env's left padding out first. Contexts reaching ``C - 1`` are trimmed.
        """
        if not stores_contexts(self.context_length):
            return
        batch = latent_state.size(0)
        sizes_current = None if is_init_infer else self.keys_values_wm_size_list_current
        plans = store_plans(batch, self._batch_size(), sizes_current, self.context_length)
        keys = self._store_keys(latent_state)
        for env, plan in enumerate(plans):
            self._store_context(env, keys[env], plan, is_init_infer)
        outcomes = self._take_store_outcomes()
        assert len(outcomes) == batch, (
            f"{type(self).__name__}: {len(outcomes)} store outcomes reported for {batch} stores")
        if self.events.recording:
            pool = POOL_ROOT if is_init_infer else POOL_RECURRENT
            for env, (plan, key, (slot, deleted)) in enumerate(zip(plans, keys, outcomes)):
                if plan.trimmed:
                    self.events.emit(Trim(env=env, pool=pool, size_before=plan.own_size,
                                          size_after=plan.stored_size))
                self.events.emit(Store(env=env, key=key, pool=pool, slot=slot,
                                       evicted=evicted_key(deleted, key), size=plan.stored_size))

    # ------------------------------------------------------------------ clearing (§10)
    def clear_caches(self, reason: str = "clear_caches") -> None:
        """Forget every root and recurrent key; ``reason`` labels the Clear event."""
        self._forget_all(reason)
        if self.events.recording:
            self.events.emit(Clear(scope="all", reason=reason))

    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        """Forget one env's root keys (the collector's episode-end reset)."""
        env_id = self.check_env_id(env_id)
        self._forget_root(env_id)
        if self.events.recording:
            self.events.emit(Clear(scope="root_env", reason=reason, env=env_id))

    # ------------------------------------------------------------------ cache keeping
    @abc.abstractmethod
    def _lookup_root(self, env: int, latent: torch.Tensor) -> tuple[int, KeysValues | None, str | None]:
        """Root-call lookup of ``latent: [D]`` in env ``env``'s root cache: ``(key, entry, pool)``."""

    @abc.abstractmethod
    def _lookup_recurrent(self, env: int,
                          latent: np.ndarray) -> tuple[int, KeysValues | None, str | None]:
        """Recurrent lookup (root cache, then recurrent cache; a forced miss while
        ``reanalyze_phase``): ``(key, entry, pool)``."""

    @abc.abstractmethod
    def _first_step_cache(self, batch: int) -> KeysValues:
        """An empty batch cache for a first root step of ``batch`` envs."""

    @abc.abstractmethod
    def _begin_batch(self, batch: int) -> None:
        """Start collecting the contexts of a batch of ``batch`` envs."""

    @abc.abstractmethod
    def _fresh_cache(self, env: int) -> KeysValues:
        """An empty single-env cache for env ``env``'s miss context."""

    @abc.abstractmethod
    def _append_context(self, entry: KeysValues, size: int, hit: bool) -> None:
        """Add the next env's context (a cache entry when ``hit``, else a fresh cache)."""

    @abc.abstractmethod
    def _assemble_batch(self, sizes: list[int]) -> KeysValues:
        """The batch cache: the collected contexts left-padded to the longest (``left_pads``)."""

    @abc.abstractmethod
    def _batch_size(self) -> int:
        """Valid (padded) size of the batch cache the last forward wrote."""

    @abc.abstractmethod
    def _store_keys(self, latents: torch.Tensor) -> list[int]:
        """The cache key of each row of ``latents: [B, D]``."""

    @abc.abstractmethod
    def _store_context(self, env: int, key: int, plan: StorePlan, is_root: bool) -> None:
        """Store env ``env``'s context (as ``plan`` says) in the root or recurrent cache."""

    @abc.abstractmethod
    def _take_store_outcomes(self) -> list[tuple[int, int | None]]:
        """``(slot, deleted key)`` of each store since the last call, in order."""

    @abc.abstractmethod
    def _forget_recurrent(self) -> None:
        """Forget every recurrent key (after each root call)."""

    @abc.abstractmethod
    def _forget_all(self, reason: str) -> None:
        """Forget every root and recurrent key."""

    @abc.abstractmethod
    def _forget_root(self, env_id: int) -> None:
        """Forget env ``env_id``'s root keys."""

    def _after_call(self) -> None:
        """Runs after every imagine call (periodic bookkeeping); nothing by default."""
