"""The legacy UniZero world model's cache keeping, reproduced exactly (legacy-spec §4–§12).

The imagine flow, positions, store plan, trim rule and cache events are shared with the
refactored model (``unizero.world_model.BaseWorldModel``, ``unizero.context``); this module only
keeps caches, as legacy did. Data structures keep their legacy names: per-env root dicts, the
global recurrent dict, three circular pools with lazily allocated slots, reverse maps, write
pointers that never reset, and the three copy helpers. Quirks 1–7, 9, 11, 12, 14 and 17 are
reproduced on purpose; do not fix them here — this module is the reference the refactor is
compared against.

Deliberate departures (behaviour-neutral): the per-miss and per-clear ``print`` lines (quirk 15)
are lazy ``logging.debug`` calls, and the unused ``keys_values_wm_single_env_tmp`` is omitted.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.nn import functional as F

from unizero.config import WorldModelConfig
from unizero.context import StorePlan, left_pads, trim_window, trim_with_correction
from unizero.events import POOL_RECURRENT, POOL_ROOT
from unizero.hashing import hash_state
from unizero.kv_cache import KeysValues
from unizero.world_model import BaseWorldModel

__all__ = ["LegacyWorldModel"]

logger = logging.getLogger(__name__)


class LegacyWorldModel(BaseWorldModel):
    """UniZero's world model as it was before the KVCacheManager refactor."""

    def __init__(self, config: WorldModelConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        self.num_layers = config.num_layers
        self.shared_pool_size_init = config.legacy_init_pool_size
        self.shared_pool_size_recur = config.legacy_recur_pool_size
        self.shared_pool_size_wm = config.legacy_wm_pool_size
        self.keys_values_wm_single_env = self.net.empty_keys_values(1)
        self.keys_values_wm = self.net.empty_keys_values(self.env_num)
        # Root ("init") pools: one per env, indexed by batch position.
        self.shared_pool_init_infer: list[list[KeysValues | None]] = [
            [None] * self.shared_pool_size_init for _ in range(self.env_num)]
        self.shared_pool_index_init_envs = [0] * self.env_num
        # Recurrent pool: one, shared by all envs, keyed by latent content.
        self.shared_pool_recur_infer: list[KeysValues | None] = [None] * self.shared_pool_size_recur
        self.shared_pool_index = 0
        # Scratch ("wm") pool holding copies of hit caches for batch assembly.
        self.shared_pool_wm: list[KeysValues | None] = [None] * self.shared_pool_size_wm
        self.shared_pool_index_wm = 0
        self._initialize_cache_structures()
        self.hit_count = 0
        self.total_query_count = 0
        self.root_hit_cnt = 0
        self.root_total_query_cnt = 0
        self.length_largethan_maxminus5_context_cnt = 0
        self.length_largethan_maxminus7_context_cnt = 0
        self._store_outcomes: list[tuple[int, int | None]] = []

    def _initialize_cache_structures(self) -> None:
        self.past_kv_cache_recurrent_infer: dict[int, int] = {}
        self.pool_idx_to_key_map_recur_infer: list[int | None] = [None] * self.shared_pool_size_recur
        self.past_kv_cache_init_infer_envs: list[dict[int, int]] = [{} for _ in range(self.env_num)]
        self.pool_idx_to_key_map_init_envs: list[list[int | None]] = [
            [None] * self.shared_pool_size_init for _ in range(self.env_num)]
        self.keys_values_wm_list: list[KeysValues] = []
        self.keys_values_wm_size_list: list[int] = []

    # ------------------------------------------------------------------ copy helpers (§4.1)
    @staticmethod
    def _copy_into_slot(pool: list[KeysValues | None], slot: int, src: KeysValues) -> KeysValues:
        """Allocate the slot lazily from the source's geometry, then copy full tensors + sizes."""
        dst = pool[slot]
        if dst is None:
            n, h, t, hd = src[0].k.tensor.shape
            dst = KeysValues(n, h, t, hd * h, len(src), src[0].k.tensor.device, src[0].k.tensor.dtype)
            pool[slot] = dst
        dst.copy_from(src)
        return dst

    def custom_copy_kv_cache_to_shared_init_envs(self, src_kv: KeysValues, env_id: int) -> int:
        slot = self.shared_pool_index_init_envs[env_id]
        self._copy_into_slot(self.shared_pool_init_infer[env_id], slot, src_kv)
        self.shared_pool_index_init_envs[env_id] = (slot + 1) % self.shared_pool_size_init
        return slot

    def custom_copy_kv_cache_to_shared_wm(self, src_kv: KeysValues) -> KeysValues:
        """Returns the slot's KeysValues object (not an index, despite upstream's annotation)."""
        slot = self.shared_pool_index_wm
        dst = self._copy_into_slot(self.shared_pool_wm, slot, src_kv)
        self.shared_pool_index_wm = (slot + 1) % self.shared_pool_size_wm
        return dst

    def custom_copy_kv_cache_to_shared_recur(self, src_kv: KeysValues) -> int:
        slot = self.shared_pool_index
        self._copy_into_slot(self.shared_pool_recur_infer, slot, src_kv)
        self.shared_pool_index = (slot + 1) % self.shared_pool_size_recur
        return slot

    # ------------------------------------------------------------------ lookups (§6, §7)
    def _lookup_root(self, env: int, latent: torch.Tensor) -> tuple[int, KeysValues | None, str | None]:
        cache_key = hash_state(latent.view(-1).cpu().numpy())
        cache_index = self.past_kv_cache_init_infer_envs[env].get(cache_key)
        matched = self.shared_pool_init_infer[env][cache_index] if cache_index is not None else None
        self.root_total_query_cnt += 1
        if matched is not None:
            self.root_hit_cnt += 1
        return cache_key, matched, POOL_ROOT if matched is not None else None

    def _lookup_recurrent(self, env: int,
                          latent: np.ndarray) -> tuple[int, KeysValues | None, str | None]:
        self.total_query_count += 1
        cache_key = hash_state(latent)
        matched, pool = None, None
        if not self.reanalyze_phase:
            cache_index = self.past_kv_cache_init_infer_envs[env].get(cache_key)
            if cache_index is not None:
                matched, pool = self.shared_pool_init_infer[env][cache_index], POOL_ROOT
            if matched is None:
                recur_index = self.past_kv_cache_recurrent_infer.get(cache_key)
                if recur_index is not None:
                    matched = self.shared_pool_recur_infer[recur_index]
                    pool = POOL_RECURRENT if matched is not None else None
            if matched is None:
                logger.debug("[CACHE MISS] key=%s, generating a fresh context", cache_key)
        if matched is not None:
            self.hit_count += 1
        return cache_key, matched, pool

    # ------------------------------------------------------------------ batch assembly (§5)
    def _first_step_cache(self, batch: int) -> KeysValues:
        self.keys_values_wm = self.net.empty_keys_values(batch)
        return self.keys_values_wm

    def _begin_batch(self, batch: int) -> None:
        self.keys_values_wm_list = []
        self.keys_values_wm_size_list = []

    def _fresh_cache(self, env: int) -> KeysValues:
        self.keys_values_wm_single_env = self.net.empty_keys_values(1)
        return self.keys_values_wm_single_env

    def _append_context(self, entry: KeysValues, size: int, hit: bool) -> None:
        """A hit is first copied into the scratch ("wm") pool; a fresh cache goes in as it is."""
        self.keys_values_wm_list.append(self.custom_copy_kv_cache_to_shared_wm(entry) if hit else entry)
        self.keys_values_wm_size_list.append(size)

    def _assemble_batch(self, sizes: list[int]) -> KeysValues:
        self.trim_and_pad_kv_cache(is_init_infer=True)
        return self.keys_values_wm

    def _batch_size(self) -> int:
        return self.keys_values_wm.size

    def trim_and_pad_kv_cache(self, is_init_infer: bool = True) -> list[int]:
        """Left-pad every env's cache with literal zeros to the longest one and stack (unmasked)."""
        max_size, pads = left_pads(self.keys_values_wm_size_list)
        for layer in range(self.num_layers):
            for name in ("k", "v"):
                rows = []
                for keys_values, pad in zip(self.keys_values_wm_list, pads):
                    tensor = getattr(keys_values[layer], name).tensor  # [1, H, C, hd]
                    if pad > 0:
                        zeros = torch.zeros_like(tensor[:, :, :pad, :])
                        tensor = torch.cat([zeros, tensor[:, :, :-pad, :]], dim=2)
                    rows.append(tensor)
                cache = getattr(self.keys_values_wm[layer], name)
                cache.tensor = torch.stack(rows, dim=0).squeeze(1)  # [B, H, C, hd]
                cache.size = max_size
        return self.keys_values_wm_size_list

    # ------------------------------------------------------------------ store path (§8)
    def _store_keys(self, latents: torch.Tensor) -> list[int]:
        return [hash_state(latents[i].view(-1).cpu().numpy()) for i in range(latents.size(0))]

    def _store_context(self, env: int, key: int, plan: StorePlan, is_root: bool) -> None:
        """Build ``keys_values_wm_single_env`` from the batch row, then copy it into a pool."""
        self._build_single_env(env, plan)
        if is_root:
            deleted, slot = self._store_root(env, key)
        else:
            deleted, slot = self._store_recurrent(key)
        self._store_outcomes.append((slot, deleted))

    def _take_store_outcomes(self) -> list[tuple[int, int | None]]:
        outcomes = list(self._store_outcomes)
        self._store_outcomes.clear()
        return outcomes

    def _build_single_env(self, env: int, plan: StorePlan) -> None:
        """Point each layer of the single-env cache at env ``env``'s batch row, padding shifted
        out and trimmed as ``plan`` says (a trim corrects the batch row in place, quirk 7)."""
        for layer in range(self.num_layers):
            for name, correction in (("k", self.net.pos_emb_diff_k[layer]),
                                     ("v", self.net.pos_emb_diff_v[layer])):
                single = getattr(self.keys_values_wm_single_env[layer], name)
                row = getattr(self.keys_values_wm[layer], name).tensor[env]  # [H, C, hd]
                if plan.shift > 0:
                    row = F.pad(row[:, plan.shift:, :], (0, 0, 0, plan.shift))
                row = row.unsqueeze(0)
                if plan.trimmed:  # [1, H, C-3, hd], zero-padded back to C
                    start, stop = trim_window(self.context_length)
                    row = F.pad(trim_with_correction(row[:, :, start:stop, :], correction),
                                (0, 0, 0, self.context_length - plan.stored_size))
                single.tensor, single.size = row, plan.stored_size

    def _store_root(self, env_id: int, cache_key: int) -> tuple[int | None, int]:
        index_to_write = self.shared_pool_index_init_envs[env_id]
        old_key_to_evict = self.pool_idx_to_key_map_init_envs[env_id][index_to_write]
        evicted = None
        # Quirk 1: only "is the old key live?" is checked, not "does it still point here?".
        if old_key_to_evict is not None and old_key_to_evict in self.past_kv_cache_init_infer_envs[env_id]:
            del self.past_kv_cache_init_infer_envs[env_id][old_key_to_evict]
            evicted = old_key_to_evict
        cache_index = self.custom_copy_kv_cache_to_shared_init_envs(self.keys_values_wm_single_env, env_id)
        self.past_kv_cache_init_infer_envs[env_id][cache_key] = cache_index
        self.pool_idx_to_key_map_init_envs[env_id][index_to_write] = cache_key
        return evicted, cache_index

    def _store_recurrent(self, cache_key: int) -> tuple[int | None, int]:
        index_to_write = self.shared_pool_index
        old_key_to_evict = self.pool_idx_to_key_map_recur_infer[index_to_write]
        evicted = None
        if old_key_to_evict is not None and old_key_to_evict in self.past_kv_cache_recurrent_infer:
            del self.past_kv_cache_recurrent_infer[old_key_to_evict]
            evicted = old_key_to_evict
        cache_index = self.custom_copy_kv_cache_to_shared_recur(self.keys_values_wm_single_env)
        self.past_kv_cache_recurrent_infer[cache_key] = cache_index
        self.pool_idx_to_key_map_recur_infer[index_to_write] = cache_key
        return evicted, cache_index

    # ------------------------------------------------------------------ clearing (§10)
    def _forget_recurrent(self) -> None:
        self.past_kv_cache_recurrent_infer.clear()

    def _forget_all(self, reason: str) -> None:
        """Clear every lookup dict and the assembly list; pointers, reverse maps, pools stay."""
        for kv_cache_dict_env in self.past_kv_cache_init_infer_envs:
            kv_cache_dict_env.clear()
        self.past_kv_cache_recurrent_infer.clear()
        self.keys_values_wm_list.clear()
        logger.debug("Cleared %s past_kv_cache (%s).", type(self).__name__, reason)

    def _forget_root(self, env_id: int) -> None:
        self.past_kv_cache_init_infer_envs[env_id].clear()

    def stats(self) -> dict[str, int]:
        return {"hit_count": self.hit_count, "total_query_count": self.total_query_count,
                "root_hit_cnt": self.root_hit_cnt, "root_total_query_cnt": self.root_total_query_cnt}
