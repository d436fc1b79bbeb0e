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
from unizero.world_model import BaseWorldModel, InferenceOutput

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
        self._views_by_batch: dict[int, tuple[KeysValues, list[KeysValues]]] = {}
        self._allocate_buffers(self.env_num)
        self._diff_buffers = (self.net.pos_emb_diff_k, self.net.pos_emb_diff_v)
        self._correction_stamp: tuple | None = None
        self._log_stats = config.enable_cache_logging
        self._correction_packed: torch.Tensor | None = None
        self._num_calls = 0

    def _allocate_buffers(self, rows: int) -> None:
        """Preallocate the batch buffer, per-row fresh contexts and the trim scratch for ``rows``.

        ``rows`` is env_num; only a reanalysis batch (more rows than envs) grows it.
        """
        config = self.config
        row_shape = (config.num_layers, 2, 1, config.num_heads, config.context_length, config.head_dim)
        self._batch_packed = torch.zeros((*row_shape[:2], rows, *row_shape[3:]), device=self.device)
        fresh = torch.zeros((rows, *row_shape), device=self.device)
        self._fresh = [KeysValues.from_packed(fresh[row]) for row in range(rows)]
        self._scratch = KeysValues.from_packed(torch.zeros(row_shape, device=self.device))
        self._views_by_batch.clear()

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        out = super()._apply(fn, recurse)
        self._allocate_buffers(len(self._fresh))  # buffers follow the model across devices
        self._diff_buffers = (self.net.pos_emb_diff_k, self.net.pos_emb_diff_v)
        self._correction_stamp = None
        return out

    # ------------------------------------------------------------------ root path
    @torch.no_grad()
    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        current, actions, _, last = self._root_inputs(last_obs, last_actions, current_obs, start_pos)
        batch = current.shape[0]
        current_emb = self.net.encode(current)  # [B, D]
        if last is None:
            batch_cache = self._assemble([], [], batch)
            out = forward_root_first_step(self.net, batch_cache, current_emb)
        else:
            last_emb = self.net.encode(last)
            contexts, sizes = [], []
            for i in range(batch):
                key = self.kv_cache_manager.make_key(last_emb[i])
                matched = self.kv_cache_manager.get_init_cache(i, key)
                self._collect_context(i, key, matched, POOL_ROOT if matched is not None else None,
                                      last_emb[i], contexts, sizes, path="root")
            batch_cache = self._assemble(contexts, sizes, batch)
            positions = np.full((batch, 1), batch_cache.size, dtype=np.int64)
            out = forward_action_then_obs(self.net, batch_cache, actions, positions, current_emb)
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
        latent, batch_action, _ = self._recurrent_inputs(latent_state, actions, start_pos)
        batch = latent.shape[0]
        if batch > len(self._fresh):
            self._allocate_buffers(batch)
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
        positions = np.asarray(sizes, dtype=np.int64)[:, None]
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

    def _views(self, batch: int) -> tuple[KeysValues, list[KeysValues]]:
        """The batch view of the first ``batch`` rows and one view per row (cached per batch)."""
        views = self._views_by_batch.get(batch)
        if views is None:
            packed = self._batch_packed[:, :, :batch]  # [L, 2, B, H, C, hd]
            views = (KeysValues.from_packed(packed),
                     [KeysValues.from_packed(packed[:, :, row: row + 1]) for row in range(batch)])
            self._views_by_batch[batch] = views
        return views

    def _assemble(self, contexts: list[KeysValues], sizes: list[int], batch: int) -> KeysValues:
        """Left-pad each context to the longest one: one copy (and one zero fill) per env."""
        max_size = max(sizes, default=0)
        batch_cache, rows = self._views(batch)
        for row, entry, size in zip(rows, contexts, sizes):
            pad = max_size - size
            if pad:
                row.window(0, pad).zero_()  # unmasked zeros the forward attends to (quirk 5)
            # Only the valid positions move: positions past max_size are never read.
            if entry.as_packed() is not None:
                row.window(pad, max_size).copy_(entry.window(0, size))
            else:  # a manager whose entries are not packed: copy layer by layer
                for dst_layer, src_layer in zip(row.layers, entry.layers):
                    dst_layer.k.tensor[:, :, pad:max_size].copy_(src_layer.k.tensor[:, :, :size])
                    dst_layer.v.tensor[:, :, pad:max_size].copy_(src_layer.v.tensor[:, :, :size])
        for layer in batch_cache.layers:
            layer.k.size = layer.v.size = max_size
        return batch_cache

    # ------------------------------------------------------------------ stores
    def _correction(self) -> torch.Tensor:
        """The trim correction packed as ``[L, 2, 1, H, C-3, hd]``; rebuilt when the buffers change."""
        diff_k, diff_v = self._diff_buffers
        stamp = (diff_k._version, diff_v._version)  # in-place updates (recompute, load) bump it
        if stamp != self._correction_stamp:
            self._correction_packed = torch.stack([diff_k, diff_v], dim=1).unsqueeze(2)
            self._correction_stamp = stamp
        return self._correction_packed

    def _store_all(self, latents: torch.Tensor, batch_cache: KeysValues, is_root: bool,
                   sizes_current: list[int] | None) -> None:
        context = self.context_length
        if context <= 2:
            return
        pool = POOL_ROOT if is_root else POOL_RECURRENT
        batch_size = batch_cache.size
        _, rows = self._views(latents.shape[0])
        correction = self._correction()
        latents_np = latents.detach().cpu().numpy()
        for i in range(latents.shape[0]):
            key = self.kv_cache_manager.make_key(latents_np[i])
            if is_root:
                own_size, shift = batch_size, 0  # the batch size for every env (legacy quirk 4)
            else:
                own_size, shift = sizes_current[i], max(sizes_current) - sizes_current[i]
            single, stored_size = self._single_env_context(rows[i], shift, own_size, correction)
            if stored_size != own_size and self.events.recording:
                self.events.emit(Trim(env=i, pool=pool, size_before=own_size, size_after=stored_size))
            if is_root:
                slot = self.kv_cache_manager.set_init_cache(i, key, single)
            else:
                slot = self.kv_cache_manager.set_recur_cache(key, single)
            if self.events.recording:
                self.events.emit(Store(env=i, key=key, pool=pool, slot=slot,
                                       evicted=self.kv_cache_manager.last_evicted, size=stored_size))

    def _single_env_context(self, row: KeysValues, shift: int, size: int,
                            correction: torch.Tensor) -> tuple[KeysValues, int]:
        """Env ``row``'s context with its left padding removed and trimmed at C-1.

        An untrimmed, unshifted row is the batch row itself (the manager copies it once); a
        shifted or trimmed row is written into the preallocated scratch first, in one op. The
        scratch tail past the stored size is left as it is: only ``[:size]`` is ever read.
        """
        context = self.context_length
        trim = size >= context - 1
        if shift == 0 and not trim:
            single = row
        else:
            single = self._scratch  # [L, 2, 1, H, C, hd]
            if shift:
                source = KeysValues.from_packed(F.pad(row.window(shift, context), (0, 0, 0, shift)))
            else:
                source = row
            if trim:
                torch.add(source.window(2, context - 1), correction, out=single.window(0, context - 3))
                size = context - 3
            else:
                single.packed.copy_(source.packed)
        for layer in single.layers:
            layer.k.size = layer.v.size = size
        return single, size

    # ------------------------------------------------------------------ lifecycle
    def _tick(self) -> None:
        self._num_calls += 1
        if self._log_stats:  # periodic stats logging (guide step 6), off the hot path otherwise
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
