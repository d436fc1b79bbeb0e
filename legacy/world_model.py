"""The legacy UniZero world model: cache logic inline, reproduced exactly (legacy-spec §4–§12).

Data structures keep their legacy names: per-env root dicts, the global recurrent dict, three
circular pools with lazily allocated slots, reverse maps, write pointers that never reset, and
the three copy helpers. Quirks 1–7, 9, 11, 12, 14 and 17 are reproduced on purpose; do not fix
them here — this module is the reference the refactor is compared against.

Deliberate departures (behaviour-neutral): the per-miss and per-clear ``print`` lines (quirk 15)
are lazy ``logging.debug`` calls, and the unused ``keys_values_wm_single_env_tmp`` is omitted.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from unizero.config import WorldModelConfig
from unizero.events import POOL_RECURRENT, POOL_ROOT, Clear, Lookup, Store, Trim
from unizero.hashing import hash_state
from unizero.imagine import forward_action_then_obs, forward_fresh_context, forward_root_first_step
from unizero.kv_cache import KeysValues
from unizero.world_model import BaseWorldModel, InferenceOutput

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
        self.latent_state: torch.Tensor | None = None
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

    def _initialize_cache_structures(self) -> None:
        self.past_kv_cache_recurrent_infer: dict[int, int] = {}
        self.pool_idx_to_key_map_recur_infer: list[int | None] = [None] * self.shared_pool_size_recur
        self.past_kv_cache_init_infer_envs: list[dict[int, int]] = [{} for _ in range(self.env_num)]
        self.pool_idx_to_key_map_init_envs: list[list[int | None]] = [
            [None] * self.shared_pool_size_init for _ in range(self.env_num)]
        self.keys_values_wm_list: list[KeysValues] = []
        self.keys_values_wm_size_list: list[int] = []
        self.keys_values_wm_size_list_current: list[int] = []

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

    # ------------------------------------------------------------------ root path (§6)
    @torch.no_grad()
    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        current, actions, start, last = self._root_inputs(last_obs, last_actions, current_obs,
                                                          start_pos)
        current_obs_embeddings = self.net.encode(current)  # [B, D]
        self.latent_state = current_obs_embeddings
        if last is None:
            out = self._root_first_step(current_obs_embeddings)
        else:
            # batch_action[:B], start_pos[:B]: the first B entries by position (quirk 9).
            out = self._root_continuing_step(self.net.encode(last), current_obs_embeddings,
                                             actions, start)
        self.past_kv_cache_recurrent_infer.clear()
        if self.events.recording:
            self.events.emit(Clear(scope="recurrent", reason="after_root"))
        return out

    def _root_first_step(self, current_obs_embeddings: torch.Tensor) -> InferenceOutput:
        self.keys_values_wm = self.net.empty_keys_values(current_obs_embeddings.shape[0])
        out = forward_root_first_step(self.net, self.keys_values_wm, current_obs_embeddings)
        self.update_cache_context(current_obs_embeddings, is_init_infer=True)
        return out

    def _root_continuing_step(self, last_obs_embeddings: torch.Tensor,
                              current_obs_embeddings: torch.Tensor, batch_action: np.ndarray,
                              start_pos: np.ndarray) -> InferenceOutput:
        batch = current_obs_embeddings.shape[0]
        self.keys_values_wm_list = []
        self.keys_values_wm_size_list = []
        for i in range(batch):
            cache_key = hash_state(last_obs_embeddings[i].view(-1).cpu().numpy())
            cache_index = self.past_kv_cache_init_infer_envs[i].get(cache_key)
            matched = self.shared_pool_init_infer[i][cache_index] if cache_index is not None else None
            self.root_total_query_cnt += 1
            if matched is not None:
                self.root_hit_cnt += 1
                self.keys_values_wm_list.append(self.custom_copy_kv_cache_to_shared_wm(matched))
                self.keys_values_wm_size_list.append(matched.size)
            else:
                self._append_fresh_context(last_obs_embeddings[i])
            if self.events.recording:
                self.events.emit(Lookup(env=i, key=cache_key, path="root", hit=matched is not None,
                                        pool=POOL_ROOT if matched is not None else None,
                                        size=self.keys_values_wm_size_list[-1]))
        self.keys_values_wm_size_list_current = self.trim_and_pad_kv_cache(is_init_infer=True)
        # Every env's tokens sit at the batch size M and M+1 (quirk 6).
        prev_steps = self.keys_values_wm.size
        positions = np.full((batch, 1), prev_steps, dtype=np.int64)
        out = forward_action_then_obs(self.net, self.keys_values_wm, batch_action, positions,
                                      current_obs_embeddings)
        self.update_cache_context(current_obs_embeddings, is_init_infer=True)
        return out

    def _append_fresh_context(self, latent: torch.Tensor) -> None:
        """Miss path: a new single-env cache holding only ``latent``, encoded at position 0."""
        self.keys_values_wm_single_env = self.net.empty_keys_values(1)
        forward_fresh_context(self.net, self.keys_values_wm_single_env, latent)
        self.keys_values_wm_list.append(self.keys_values_wm_single_env)
        self.keys_values_wm_size_list.append(1)

    # ------------------------------------------------------------------ recurrent path (§7)
    @torch.no_grad()
    def recurrent_inference(self, latent_state: np.ndarray, actions: Any,
                            simulation_index: int = 0, search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput:
        latent, batch_action, start = self._recurrent_inputs(latent_state, actions, start_pos)
        batch = latent.shape[0]
        self.keys_values_wm_list = []
        self.keys_values_wm_size_list = []
        self.retrieve_or_generate_kvcache(latent, batch, simulation_index, start)
        sizes = list(self.trim_and_pad_kv_cache(is_init_infer=False))
        # Recurrent tokens sit at each env's own unpadded size (quirk 6).
        positions = np.asarray(sizes, dtype=np.int64)[:, None]
        out = forward_action_then_obs(self.net, self.keys_values_wm, batch_action, positions, None)
        self.keys_values_wm_size_list_current = [size + 2 for size in sizes]
        self.latent_state = out.latent
        self.update_cache_context(out.latent, is_init_infer=False)
        return out

    def retrieve_or_generate_kvcache(self, latent_state: np.ndarray, ready_env_num: int,
                                     simulation_index: int = 0,
                                     start_pos: np.ndarray | None = None) -> list[int]:
        for index in range(ready_env_num):
            self.total_query_count += 1
            state_single_env = latent_state[index]
            cache_key = hash_state(state_single_env)
            matched, pool = None, None
            if not self.reanalyze_phase:
                cache_index = self.past_kv_cache_init_infer_envs[index].get(cache_key)
                if cache_index is not None:
                    matched, pool = self.shared_pool_init_infer[index][cache_index], POOL_ROOT
                if matched is None:
                    recur_index = self.past_kv_cache_recurrent_infer.get(cache_key)
                    if recur_index is not None:
                        matched = self.shared_pool_recur_infer[recur_index]
                        pool = POOL_RECURRENT if matched is not None else None
                if matched is None:
                    logger.debug("[CACHE MISS] key=%s, generating a fresh context", cache_key)
            if matched is not None:
                self.hit_count += 1
                self.keys_values_wm_list.append(self.custom_copy_kv_cache_to_shared_wm(matched))
                self.keys_values_wm_size_list.append(matched.size)
            else:
                latent = torch.from_numpy(np.ascontiguousarray(state_single_env)).to(self.device)
                self._append_fresh_context(latent)
            if self.events.recording:
                self.events.emit(Lookup(env=index, key=cache_key, path="recurrent",
                                        hit=matched is not None, pool=pool,
                                        size=self.keys_values_wm_size_list[-1],
                                        forced=self.reanalyze_phase))
        return self.keys_values_wm_size_list

    # ------------------------------------------------------------------ batch assembly (§5)
    def trim_and_pad_kv_cache(self, is_init_infer: bool = True) -> list[int]:
        """Left-pad every env's cache with literal zeros to the longest one and stack (unmasked)."""
        max_size = max(self.keys_values_wm_size_list)
        for layer in range(self.num_layers):
            for name in ("k", "v"):
                rows = []
                for idx, keys_values in enumerate(self.keys_values_wm_list):
                    tensor = getattr(keys_values[layer], name).tensor  # [1, H, C, hd]
                    pad = max_size - self.keys_values_wm_size_list[idx]
                    if pad > 0:
                        zeros = torch.zeros_like(tensor[:, :, :pad, :])
                        tensor = torch.cat([zeros, tensor[:, :, :-pad, :]], dim=2)
                    rows.append(tensor)
                cache = getattr(self.keys_values_wm[layer], name)
                cache.tensor = torch.stack(rows, dim=0).squeeze(1)  # [B, H, C, hd]
                cache.size = max_size
        return self.keys_values_wm_size_list

    # ------------------------------------------------------------------ store path (§8)
    def update_cache_context(self, latent_state: torch.Tensor, is_init_infer: bool = True) -> None:
        context = self.context_length
        if context <= 2:
            return
        for i in range(latent_state.size(0)):
            cache_key = hash_state(latent_state[i].view(-1).cpu().numpy())
            if is_init_infer:
                size_before = self._build_single_env_from_root_batch(i)
            else:
                size_before = self._build_single_env_from_recurrent_batch(i)
            size_after = self.keys_values_wm_single_env.size
            pool = POOL_ROOT if is_init_infer else POOL_RECURRENT
            if size_after != size_before and self.events.recording:
                self.events.emit(Trim(env=i, pool=pool, size_before=size_before, size_after=size_after))
            if is_init_infer:
                deleted, slot = self._store_root(i, cache_key)
            else:
                deleted, slot = self._store_recurrent(cache_key)
            # An event's ``evicted`` is a key that was live before the store and is not after
            # it; deleting the key that is stored again at once is a replacement, not an eviction.
            evicted = deleted if deleted != cache_key else None
            if self.events.recording:
                self.events.emit(Store(env=i, key=cache_key, pool=pool, slot=slot, evicted=evicted,
                                       size=size_after))

    def _trim_with_correction(self, row: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
        """Keep positions [2, C-1) of ``row: [1, H, C, hd]``, add the correction in place, pad 3."""
        trimmed = row[:, :, 2: self.context_length - 1, :]
        trimmed += correction  # in place: mutates the batch tensor when row is a view (quirk 7)
        return F.pad(trimmed, (0, 0, 0, 3))

    def _build_single_env_from_root_batch(self, i: int) -> int:
        """Root: uses the *batch* size for every env (quirk 4); returns the size before trim."""
        batch_size = self.keys_values_wm.size
        for layer in range(self.num_layers):
            for name, correction in (("k", self.net.pos_emb_diff_k[layer]),
                                     ("v", self.net.pos_emb_diff_v[layer])):
                batch_cache = getattr(self.keys_values_wm[layer], name)
                single = getattr(self.keys_values_wm_single_env[layer], name)
                row = batch_cache.tensor[i].unsqueeze(0)
                if batch_cache.size < self.context_length - 1:
                    single.tensor, single.size = row, batch_cache.size
                else:
                    single.tensor = self._trim_with_correction(row, correction)
                    single.size = self.context_length - 3
        return batch_size

    def _build_single_env_from_recurrent_batch(self, i: int) -> int:
        """Recurrent: undo this env's left padding, trim by its own size; returns that size."""
        current = self.keys_values_wm_size_list_current
        own_size = current[i]
        trim_size = max(current) - own_size
        for layer in range(self.num_layers):
            for name, correction in (("k", self.net.pos_emb_diff_k[layer]),
                                     ("v", self.net.pos_emb_diff_v[layer])):
                single = getattr(self.keys_values_wm_single_env[layer], name)
                row = getattr(self.keys_values_wm[layer], name).tensor[i]  # [H, C, hd]
                if trim_size > 0:
                    row = F.pad(row[:, trim_size:, :], (0, 0, 0, trim_size))
                single.tensor, single.size = row.unsqueeze(0), own_size
                if single.size >= self.context_length - 1:
                    single.tensor = self._trim_with_correction(single.tensor, correction)
                    single.size = self.context_length - 3
        return own_size

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
    def clear_caches(self, reason: str = "clear_caches") -> None:
        """Clear every lookup dict and the assembly list; pointers, reverse maps, pools stay."""
        for kv_cache_dict_env in self.past_kv_cache_init_infer_envs:
            kv_cache_dict_env.clear()
        self.past_kv_cache_recurrent_infer.clear()
        self.keys_values_wm_list.clear()
        logger.debug("Cleared %s past_kv_cache (%s).", type(self).__name__, reason)
        if self.events.recording:
            self.events.emit(Clear(scope="all", reason=reason))

    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        """Clear one env's root lookup dict (the collector's episode-end reset)."""
        env_id = self.check_env_id(env_id)
        self.past_kv_cache_init_infer_envs[env_id].clear()
        if self.events.recording:
            self.events.emit(Clear(scope="root_env", reason=reason, env=env_id))

    def stats(self) -> dict[str, int]:
        return {"hit_count": self.hit_count, "total_query_count": self.total_query_count,
                "root_hit_cnt": self.root_hit_cnt, "root_total_query_cnt": self.root_total_query_cnt}
