"""The refactored world model: the legacy algorithm, with every cache held by a KVCacheManager.

Same public API, same batch assembly (left padding with zeros, unmasked), same positions, same
trim with the position-difference correction, same heads. What changed is only where caches
live and how much data moves per call:

* a hit is read straight from the pool's storage into a preallocated batch buffer — legacy first
  copies it into the scratch ("wm") pool, then concatenates and stacks fresh tensors;
* a store copies one env's row of the batch into the pool slot once (the manager owns the
  copy); only a trimmed row goes through a preallocated scratch first.

The manager class is ``config.cache_manager_class`` unless one is passed in, so the harness can
test any candidate with the same constructor and API.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from unizero.backends import load_object
from unizero.config import WorldModelConfig
from unizero.events import POOL_RECURRENT, POOL_ROOT, Clear, Lookup, Store, Trim
from unizero.imagine import forward_action_then_obs, forward_fresh_context, forward_root_first_step
from unizero.kv_cache import KeysValues
from unizero.world_model import BaseWorldModel, InferenceOutput, InputError

__all__ = ["RefactoredWorldModel"]

logger = logging.getLogger(__name__)


class RefactoredWorldModel(BaseWorldModel):
    """UniZero's world model with one ``KVCacheManager`` in place of the scattered caches."""

    def __init__(self, config: WorldModelConfig, device: torch.device | str = "cpu",
                 manager_cls: type | None = None) -> None:
        super().__init__(config, device)
        manager_cls = manager_cls or load_object(config.cache_manager_class)
        self.kv_cache_manager = manager_cls(config=config, env_num=self.env_num, enable_stats=True)
        # Backward compatibility (guide step 2): the same list objects as the manager's.
        self.keys_values_wm_list = self.kv_cache_manager.keys_values_wm_list
        self.keys_values_wm_size_list = self.kv_cache_manager.keys_values_wm_size_list
        self._batch = self.net.empty_keys_values(self.env_num)       # storage [E, H, C, hd]
        self._batch_view = self.net.empty_keys_values(1)             # re-pointed at [:B]
        self._fresh = [self.net.empty_keys_values(1) for _ in range(self.env_num)]
        self._single = self.net.empty_keys_values(1)                 # re-pointed per store
        self._scratch = self.net.empty_keys_values(1)                # holds trimmed rows
        self._num_calls = 0

    # ------------------------------------------------------------------ root path
    @torch.no_grad()
    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        current = self._obs_tensor(current_obs, "current_obs", self.env_num)
        batch = current.shape[0]
        actions = self._action_array(last_actions, "last_actions", batch, allow_first=True)
        self._start_positions(start_pos, batch)
        current_emb = self.net.encode(current)  # [B, D]
        if int(actions.max()) == -1:
            batch_cache = self._assemble([], [], batch)
            out = forward_root_first_step(self.net, batch_cache, current_emb)
        else:
            last = self._obs_tensor(last_obs, "last_obs", self.env_num)
            if last.shape[0] < batch:
                raise InputError(f"last_obs: expected at least {batch} rows (one per current obs), "
                                 f"got {last.shape[0]}")
            if int(actions[:batch].min()) < 0:
                raise InputError(f"last_actions: a batch mixing first steps (-1) and real actions "
                                 f"cannot be embedded, got {actions.tolist()}")
            last_emb = self.net.encode(last)
            contexts, sizes = [], []
            for i in range(batch):
                key = self.kv_cache_manager.make_key(last_emb[i])
                matched = self.kv_cache_manager.get_init_cache(i, key)
                self._collect_context(i, key, matched, POOL_ROOT if matched is not None else None,
                                      last_emb[i], contexts, sizes, path="root")
            batch_cache = self._assemble(contexts, sizes, batch)
            positions = torch.full((batch, 1), batch_cache.size, dtype=torch.long, device=self.device)
            out = forward_action_then_obs(self.net, batch_cache, actions[:batch], positions, current_emb)
        self._store_all(current_emb, batch_cache, is_root=True, sizes_current=None)
        self.kv_cache_manager.clear_recur_cache()
        if self.events.recording:
            self.events.emit(Clear(scope="recurrent", reason="after_root"))
        self._tick()
        return out

    # ------------------------------------------------------------------ recurrent path
    @torch.no_grad()
    def recurrent_inference(self, latent_state: np.ndarray, actions: Any,
                            simulation_index: int = 0, search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput:
        latent = self._latent_array(latent_state)
        batch = latent.shape[0]
        batch_action = self._action_array(actions, "actions", batch, allow_first=False)[:batch]
        self._start_positions(start_pos, batch)
        contexts, sizes = [], []
        for j in range(batch):
            key = self.kv_cache_manager.make_key(latent[j])
            if self.reanalyze_phase:
                matched, pool = None, None
            else:
                matched, pool = self.kv_cache_manager.hierarchical_get(j, key)
            state = None if matched is not None else torch.from_numpy(np.ascontiguousarray(latent[j])).to(self.device)
            self._collect_context(j, key, matched, pool, state, contexts, sizes, path="recurrent")
        batch_cache = self._assemble(contexts, sizes, batch)
        positions = torch.as_tensor(sizes, dtype=torch.long, device=self.device).unsqueeze(1)
        out = forward_action_then_obs(self.net, batch_cache, batch_action, positions, None)
        self._store_all(out.latent, batch_cache, is_root=False, sizes_current=[s + 2 for s in sizes])
        self._tick()
        return out

    # ------------------------------------------------------------------ lookups and assembly
    def _collect_context(self, env: int, key: int, matched: KeysValues | None, pool: str | None,
                         latent: torch.Tensor | None, contexts: list[KeysValues],
                         sizes: list[int], path: str) -> None:
        if matched is not None:
            contexts.append(matched)
            sizes.append(matched.size)
        else:
            fresh = self._fresh[env]
            for layer in fresh.layers:
                layer.k.size = layer.v.size = 0
            forward_fresh_context(self.net, fresh, latent)
            contexts.append(fresh)
            sizes.append(1)
        if self.events.recording:
            self.events.emit(Lookup(env=env, key=key, path=path, hit=matched is not None, pool=pool,
                                    size=sizes[-1], forced=path == "recurrent" and self.reanalyze_phase))

    def _assemble(self, contexts: list[KeysValues], sizes: list[int], batch: int) -> KeysValues:
        """Left-pad each context to the longest one, writing straight into the batch buffer."""
        max_size = max(sizes, default=0)
        for layer, (dst_layer, view_layer) in enumerate(zip(self._batch.layers, self._batch_view.layers)):
            for name in ("k", "v"):
                storage = getattr(dst_layer, name).tensor  # [E, H, C, hd]
                for row, (context, size) in enumerate(zip(contexts, sizes)):
                    src = getattr(context[layer], name).tensor  # [1, H, C, hd]
                    pad = max_size - size
                    storage[row, :, :pad].zero_()
                    storage[row, :, pad:].copy_(src[0, :, : storage.shape[2] - pad])
                view = getattr(view_layer, name)
                view.tensor, view.size = storage[:batch], max_size
        return self._batch_view

    # ------------------------------------------------------------------ stores
    def _store_all(self, latents: torch.Tensor, batch_cache: KeysValues, is_root: bool,
                   sizes_current: list[int] | None) -> None:
        context = self.context_length
        if context <= 2:
            return
        pool = POOL_ROOT if is_root else POOL_RECURRENT
        batch_size = batch_cache.size
        for i in range(latents.shape[0]):
            key = self.kv_cache_manager.make_key(latents[i])
            if is_root:
                own_size, shift = batch_size, 0  # the batch size for every env (legacy quirk 4)
            else:
                own_size, shift = sizes_current[i], max(sizes_current) - sizes_current[i]
            stored_size = self._single_env_context(batch_cache, i, shift, own_size)
            if stored_size != own_size and self.events.recording:
                self.events.emit(Trim(env=i, pool=pool, size_before=own_size, size_after=stored_size))
            if is_root:
                slot = self.kv_cache_manager.set_init_cache(i, key, self._single)
            else:
                slot = self.kv_cache_manager.set_recur_cache(key, self._single)
            if self.events.recording:
                self.events.emit(Store(env=i, key=key, pool=pool, slot=slot,
                                       evicted=self.kv_cache_manager.last_evicted, size=stored_size))

    def _single_env_context(self, batch_cache: KeysValues, row: int, shift: int, size: int) -> int:
        """Point ``self._single`` at env ``row``'s context: left padding removed, trimmed at C-1.

        Returns the stored size. Untrimmed rows are views of the batch (the manager copies them);
        a shifted or trimmed row is written into the preallocated scratch first.
        """
        context = self.context_length
        trim = size >= context - 1
        for layer in range(len(batch_cache)):
            for name, correction in (("k", self.net.pos_emb_diff_k[layer]),
                                     ("v", self.net.pos_emb_diff_v[layer])):
                src = getattr(batch_cache[layer], name).tensor[row: row + 1]  # [1, H, C, hd]
                single = getattr(self._single[layer], name)
                if shift == 0 and not trim:
                    single.tensor, single.size = src, size
                    continue
                scratch = getattr(self._scratch[layer], name).tensor
                if shift:
                    src = F.pad(src[:, :, shift:], (0, 0, 0, shift))
                if trim:
                    kept = src[:, :, 2: context - 1] + correction
                    scratch[:, :, : context - 3].copy_(kept)
                    scratch[:, :, context - 3:].zero_()
                else:
                    scratch.copy_(src)
                single.tensor, single.size = scratch, context - 3 if trim else size
        return context - 3 if trim else size

    # ------------------------------------------------------------------ lifecycle
    def _tick(self) -> None:
        self._num_calls += 1
        self.kv_cache_manager.maybe_log_stats(self._num_calls)

    def clear_caches(self, reason: str = "clear_caches") -> None:
        """Clear every pool through the manager; log the stats summary, then reset it (guide step 5)."""
        logger.info("Cache stats before clear (%s): %s", reason, self.kv_cache_manager.get_stats_summary())
        self.kv_cache_manager.clear_all()
        self.kv_cache_manager.reset_stats()
        if self.events.recording:
            self.events.emit(Clear(scope="all", reason=reason))

    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        env_id = self.check_env_id(env_id)
        self.kv_cache_manager.clear_init_cache(env_id)
        if self.events.recording:
            self.events.emit(Clear(scope="root_env", reason=reason, env=env_id))

    def stats(self) -> dict[str, Any]:
        return self.kv_cache_manager.get_stats_summary()
