"""The refactored world model: the legacy algorithm, with every cache held by a KVCacheManager.

The imagine flow, positions, store plan, trim rule and cache events are shared with legacy
(``unizero.world_model.BaseWorldModel``, ``unizero.context``); this module only keeps caches.
What changed is where caches live, how much data moves per call, and how store decisions are
learnt: the slot written and the key evicted come from the manager's drained events
(``KVCacheManager.take_events()``), not from an attribute read after each store.

* a hit is read straight from the pool's storage into a preallocated batch buffer — legacy first
  copies it into the scratch ("wm") pool, then concatenates and stacks fresh tensors;
* a store copies one env's row of the batch into the pool slot once (the manager owns the
  copy); only a trimmed row goes through a preallocated scratch first.

The manager class is ``config.cache_manager_class`` unless one is passed in, so the harness can
test any candidate with the same constructor and API.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from refactored.cache_events import EntryStored
from unizero.backends import load_object
from unizero.config import WorldModelConfig
from unizero.context import StorePlan, left_pads, trim_window, trim_with_correction
from unizero.events import POOL_ROOT
from unizero.kv_cache import KeysValues
from unizero.world_model import BaseWorldModel

__all__ = ["RefactoredWorldModel"]

logger = logging.getLogger(__name__)


class _Batch:
    """The batch being assembled: its row count and the contexts collected so far.

    A plain object, so per-call updates skip ``nn.Module.__setattr__`` (several isinstance
    checks per attribute write, measurable on the hot path).
    """

    __slots__ = ("rows", "contexts")

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.contexts: list[KeysValues] = []


class RefactoredWorldModel(BaseWorldModel):
    """UniZero's world model with one ``KVCacheManager`` in place of the scattered caches.

    Args:
        config: the world-model config.
        device: device of the network and buffers.
        manager_cls: the manager class; None resolves ``config.cache_manager_class``. It is
            built as ``manager_cls(config=..., env_num=..., enable_stats=True)`` and must offer
            the guide's API plus ``take_events()``, which reports each ``set_init_cache`` /
            ``set_recur_cache`` as an ``EntryStored`` (slot written, key evicted), in order.
    """

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
        self._batch = _Batch(self.env_num)
        self._trim_window = trim_window(self.context_length)
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

    # ------------------------------------------------------------------ lookups
    def _lookup_root(self, env: int, latent: torch.Tensor) -> tuple[int, KeysValues | None, str | None]:
        key = self.kv_cache_manager.make_key(latent)
        matched = self.kv_cache_manager.get_init_cache(env, key)
        return key, matched, POOL_ROOT if matched is not None else None

    def _lookup_recurrent(self, env: int,
                          latent: np.ndarray) -> tuple[int, KeysValues | None, str | None]:
        key = self.kv_cache_manager.make_key(latent)
        if self.reanalyze_phase:
            return key, None, None
        matched, pool = self.kv_cache_manager.hierarchical_get(env, key)
        return key, matched, pool

    # ------------------------------------------------------------------ batch assembly
    def _first_step_cache(self, batch: int) -> KeysValues:
        self._begin_batch(batch)
        return self._assemble_batch([])

    def _begin_batch(self, batch: int) -> None:
        if batch > len(self._fresh):  # only a reanalysis batch has more rows than envs
            self._allocate_buffers(batch)
        self._batch.rows = batch
        self._batch.contexts.clear()

    def _fresh_cache(self, env: int) -> KeysValues:
        fresh = self._fresh[env]
        for layer in fresh.layers:
            layer.k.size = layer.v.size = 0
        return fresh

    def _append_context(self, entry: KeysValues, size: int, hit: bool) -> None:
        self._batch.contexts.append(entry)  # a hit is read straight from pool storage

    def _views(self, batch: int) -> tuple[KeysValues, list[KeysValues]]:
        """The batch view of the first ``batch`` rows and one view per row (cached per batch)."""
        views = self._views_by_batch.get(batch)
        if views is None:
            packed = self._batch_packed[:, :, :batch]  # [L, 2, B, H, C, hd]
            views = (KeysValues.from_packed(packed),
                     [KeysValues.from_packed(packed[:, :, row: row + 1]) for row in range(batch)])
            self._views_by_batch[batch] = views
        return views

    def _assemble_batch(self, sizes: list[int]) -> KeysValues:
        """Left-pad each context to the longest one: one copy (and one zero fill) per env."""
        max_size, pads = left_pads(sizes)
        batch_cache, rows = self._views(self._batch.rows)
        for row, entry, size, pad in zip(rows, self._batch.contexts, sizes, pads):
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
        self._batch.contexts.clear()
        return batch_cache

    def _batch_size(self) -> int:
        return self._views(self._batch.rows)[0].size

    # ------------------------------------------------------------------ stores
    def _correction(self) -> torch.Tensor:
        """The trim correction packed as ``[L, 2, 1, H, C-3, hd]``; rebuilt when the buffers change."""
        diff_k, diff_v = self._diff_buffers
        stamp = (diff_k._version, diff_v._version)  # in-place updates (recompute, load) bump it
        if stamp != self._correction_stamp:
            self._correction_packed = torch.stack([diff_k, diff_v], dim=1).unsqueeze(2)
            self._correction_stamp = stamp
        return self._correction_packed

    def _store_keys(self, latents: torch.Tensor) -> list[int]:
        latents_np = latents.detach().cpu().numpy()  # one transfer for the whole batch
        return [self.kv_cache_manager.make_key(row) for row in latents_np]

    def _store_context(self, env: int, key: int, plan: StorePlan, is_root: bool) -> None:
        """Store env ``env``'s batch row: the manager copies it (or the trimmed scratch) once."""
        _, rows = self._views(self._batch.rows)
        single = self._single_env_context(rows[env], plan)
        if is_root:
            self.kv_cache_manager.set_init_cache(env, key, single)
        else:
            self.kv_cache_manager.set_recur_cache(key, single)

    def _take_store_outcomes(self) -> list[tuple[int, int | None]]:
        """The manager's drained store events as ``(slot, evicted key)``; other events (clears)
        are the manager's own report and carry nothing the world model's events need."""
        return [(event.slot, event.evicted) for event in self.kv_cache_manager.take_events()
                if isinstance(event, EntryStored)]

    def _single_env_context(self, row: KeysValues, plan: StorePlan) -> KeysValues:
        """Env ``row``'s context with its left padding shifted out, trimmed as ``plan`` says.

        An untrimmed, unshifted row is the batch row itself (the manager copies it once); a
        shifted or trimmed row is written into the preallocated scratch first, in one op. The
        scratch tail past the stored size is left as it is: only ``[:size]`` is ever read.
        """
        context = self.context_length
        if plan.shift == 0 and not plan.trimmed:
            single = row
        else:
            single = self._scratch  # [L, 2, 1, H, C, hd]
            if plan.shift:
                shifted = F.pad(row.window(plan.shift, context), (0, 0, 0, plan.shift))
                source = KeysValues.from_packed(shifted)
            else:
                source = row
            if plan.trimmed:
                trim_with_correction(source.window(*self._trim_window), self._correction(),
                                     out=single.window(0, plan.stored_size))
            else:
                single.packed.copy_(source.packed)
        for layer in single.layers:
            layer.k.size = layer.v.size = plan.stored_size
        return single

    # ------------------------------------------------------------------ lifecycle
    def _after_call(self) -> None:
        self._num_calls += 1
        if self._log_stats:  # periodic stats logging (guide step 6), off the hot path otherwise
            self.kv_cache_manager.maybe_log_stats(self._num_calls)

    def _forget_recurrent(self) -> None:
        self.kv_cache_manager.clear_recur_cache()
        # Store events were drained by the stores; what is left is clears, which the model's
        # own Clear events already report. Draining here bounds the queue even without stores.
        self.kv_cache_manager.take_events()

    def _forget_all(self, reason: str) -> None:
        """Clear every pool through the manager; log the stats summary, then reset it (guide step 5)."""
        logger.info("Cache stats before clear (%s): %s", reason, self.kv_cache_manager.get_stats_summary())
        self.kv_cache_manager.clear_all()
        self.kv_cache_manager.reset_stats()

    def _forget_root(self, env_id: int) -> None:
        self.kv_cache_manager.clear_init_cache(env_id)

    def stats(self) -> dict[str, Any]:
        return self.kv_cache_manager.get_stats_summary()
