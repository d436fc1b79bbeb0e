"""Counterfactual legacy world models: legacy with exactly one documented defect corrected.

Each class here subclasses :class:`~legacy.world_model.LegacyWorldModel` and overrides only the
method that holds one quirk of legacy-spec §12. Everything else — pools, pointers, padding,
positions, trims, the other quirks — stays legacy's own code. A divergence between legacy and a
candidate is *explained* by quirk N when the candidate agrees with the quirk-N counterfactual at
that call (:mod:`harness.causes` does the replay and the comparison).

To add one for a new quirk: subclass ``LegacyWorldModel``, override the smallest method that
holds the defect, add a :class:`Counterfactual` entry to ``COUNTERFACTUALS`` and register the
engine name in ``unizero.backends.WORLD_MODEL_BACKENDS`` (docs/causes.md walks through it).
"""

from __future__ import annotations

from dataclasses import dataclass

from legacy.world_model import LegacyWorldModel

__all__ = ["Counterfactual", "COUNTERFACTUALS", "LegacyFixQuirk1", "counterfactual_for"]


@dataclass(frozen=True, slots=True)
class Counterfactual:
    """One counterfactual control.

    Attributes:
        cause: the label a divergence it explains gets, named after the spec's quirk number
            (``quirk-1``).
        engine: the engine name it is registered under (``legacy-fix-quirk1``).
        spec: ``package.module:Class`` of the world model.
        description: the one defect it corrects, in words.
    """

    cause: str
    engine: str
    spec: str
    description: str


class LegacyFixQuirk1(LegacyWorldModel):
    """Legacy with quirk 1 corrected: a store evicts the key its slot holds only while that key
    still points at the slot.

    Legacy deletes ``reverse[w]`` whenever it is a key of the lookup dict, even when the dict
    entry has since moved to another slot (a duplicate store) or was re-stored after a dict clear
    (legacy-spec §12 quirk 1 (a), (b)); a later lookup of that key then misses. Here the delete
    also requires ``dict[reverse[w]] == w``. Nothing else changes: pointers, slots, reverse-map
    writes and every other quirk are legacy's.
    """

    def _store_root(self, env_id: int, cache_key: int) -> tuple[int | None, int]:
        index_to_write = self.shared_pool_index_init_envs[env_id]
        lookup = self.past_kv_cache_init_infer_envs[env_id]
        old_key = self.pool_idx_to_key_map_init_envs[env_id][index_to_write]
        evicted = None
        if old_key is not None and lookup.get(old_key) == index_to_write:
            del lookup[old_key]
            evicted = old_key
        cache_index = self.custom_copy_kv_cache_to_shared_init_envs(self.keys_values_wm_single_env, env_id)
        lookup[cache_key] = cache_index
        self.pool_idx_to_key_map_init_envs[env_id][index_to_write] = cache_key
        return evicted, cache_index

    def _store_recurrent(self, cache_key: int) -> tuple[int | None, int]:
        index_to_write = self.shared_pool_index
        lookup = self.past_kv_cache_recurrent_infer
        old_key = self.pool_idx_to_key_map_recur_infer[index_to_write]
        evicted = None
        if old_key is not None and lookup.get(old_key) == index_to_write:
            del lookup[old_key]
            evicted = old_key
        cache_index = self.custom_copy_kv_cache_to_shared_recur(self.keys_values_wm_single_env)
        lookup[cache_key] = cache_index
        self.pool_idx_to_key_map_recur_infer[index_to_write] = cache_key
        return evicted, cache_index


COUNTERFACTUALS: tuple[Counterfactual, ...] = (
    Counterfactual(
        cause="quirk-1", engine="legacy-fix-quirk1",
        spec="legacy.counterfactual:LegacyFixQuirk1",
        description="a stale reverse-map entry no longer deletes a live key (legacy-spec §12 "
                    "quirk 1): legacy misses where the corrected cache hits"),
)


def counterfactual_for(cause: str) -> Counterfactual:
    """The counterfactual registered for ``cause`` (``quirk-1``, ...).

    Raises:
        KeyError: no counterfactual carries that cause; the message lists the known ones.
    """
    for counterfactual in COUNTERFACTUALS:
        if counterfactual.cause == cause:
            return counterfactual
    raise KeyError(f"cause {cause!r}: expected one of "
                   f"{', '.join(c.cause for c in COUNTERFACTUALS)}")
