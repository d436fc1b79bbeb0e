"""Coverage vocabulary: which legacy cache paths and quirks (legacy-spec §12) a trace exercised.

Every name of :data:`COVERAGE_TABLE` is either a *path* (a way through the cache code: a first
root step, a hit served by the recurrent pool, a trim that keeps nothing...) or a *quirk*
(``quirk-N``, the spec's numbering). Each says what the refactor does about it:

* ``match`` — the refactor must reproduce it; a phase gate requires each at least once
  (:data:`REQUIRED`), or it passes on evidence that never went there;
* ``fixed`` — the refactor corrects it on purpose; divergences it causes are labelled by its
  counterfactual (:mod:`harness.causes`), and it is counted, not required;
* ``unobservable`` / ``unreachable`` / ``not_modelled`` — no trace can show it (the comparison
  reads only valid cache regions and outputs; input validation rejects it; the runner has no
  such component). Listed so the table names every quirk.

Counting runs over the *control's* events of each call (legacy's). Some items depend on the
history (a key's current slot, whether the correction was recomputed yet), so the counter is
the stateful :class:`CoverageCounter`; :func:`coverage_of` is the one-call form for callers
that keep a counter per trace.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from harness.calls import (ClearCall, RecordedCall, RecurrentCall, RootCall, WeightsCall,
                           call_from_record)
from harness.limits import DEFAULT_LIMITS, Limits
from harness.trace import open_trace
from unizero.events import POOL_RECURRENT, POOL_ROOT, CacheEvent, Clear, Lookup, Store, Trim

__all__ = ["CoverageItem", "COVERAGE_TABLE", "COVERAGE_NAMES", "REQUIRED", "FIXED",
           "CoverageCounter", "coverage_of", "missing_required", "coverage_rows", "recorded_coverage"]

MATCH, FIXED_KIND = "match", "fixed"


@dataclass(frozen=True, slots=True)
class CoverageItem:
    """One row of the coverage table.

    Attributes:
        name: the counter name (``root_first_step``, ``quirk-4``).
        kind: ``path`` or ``quirk``.
        refactor: ``match``, ``fixed``, ``unobservable``, ``unreachable`` or ``not_modelled``.
        description: what a call must do to count, in words.
    """

    name: str
    kind: str
    refactor: str
    description: str


def _path(name: str, description: str) -> CoverageItem:
    return CoverageItem(name, "path", MATCH, description)


def _quirk(number: int, refactor: str, description: str) -> CoverageItem:
    return CoverageItem(f"quirk-{number}", "quirk", refactor, description)


COVERAGE_TABLE: tuple[CoverageItem, ...] = (
    _path("root_first_step", "a root call whose previous actions are all -1 (spec §6 first step)"),
    _path("root_continuing", "a root call with previous actions (spec §6 continuing step)"),
    _path("hit_root_pool", "a lookup served by a per-env root pool"),
    _path("hit_recurrent_pool", "a lookup served by the global recurrent pool"),
    _path("miss", "a lookup that found nothing (fresh one-latent context)"),
    _path("forced_miss", "a reanalysis lookup, a miss without a lookup (spec §7)"),
    _path("eviction", "a store that removed another live key from a lookup map"),
    _path("trim", "a store whose context reached C-1 and was trimmed with the correction"),
    _path("trim_context_even", "a trim keeping an odd C-3 > 0 positions (even context length)"),
    _path("trim_context_odd", "a trim keeping an even C-3 > 0 positions (odd context length)"),
    _path("trim_to_empty", "a trim that keeps nothing (context length 3: C-3 = 0)"),
    _path("store_skipped", "a root or recurrent call that stored nothing (context length <= 2)"),
    _path("clear_after_root", "the recurrent dict cleared after a root call"),
    _path("clear_periodic", "the collector's periodic global wipe"),
    _path("clear_episode_end", "one env's root dict cleared at its episode end"),
    _path("clear_epoch", "the end-of-epoch recompute and clear"),
    _path("weights_update", "a parameter update (not the initial weights)"),
    _path("weights_between_searches",
          "a parameter update followed by a search with no clear in between (stale keys miss)"),
    _path("reanalyze", "a reanalysis phase switch"),
    _quirk(1, FIXED_KIND, "a store deleted a key through a stale reverse-map entry while the key "
                          "lived in another slot"),
    _quirk(2, MATCH, "the first store into a pool after a clear landed mid-pool (pointers never "
                     "reset)"),
    _quirk(3, MATCH, "a recurrent hit on an entry another env stored (global pool keyed by "
                     "content)"),
    _quirk(4, MATCH, "a continuing root batch of unequal context sizes: shorter envs store the "
                     "batch size, padding included"),
    _quirk(5, MATCH, "a batch of unequal context sizes attended over unmasked left padding"),
    _quirk(6, MATCH, "inconsistent positions: unequal root sizes share positions M, M+1, or a "
                     "miss encoded at position 0 beside longer contexts"),
    _quirk(7, MATCH, "a root trim: the correction is added in place to the batch tensor"),
    _quirk(8, MATCH, "a trim before the first epoch recompute (stale correction)"),
    _quirk(9, MATCH, "a root batch of fewer envs than last_obs rows: positions are not env ids"),
    _quirk(10, "unreachable", "mixed first-step batches: rejected by input validation on both "
                              "sides"),
    _quirk(11, "unreachable", "wm pool aliasing needs more hits than env_num in one call"),
    _quirk(12, "unobservable", "uninitialised tails beyond a cache's size are never compared"),
    _quirk(13, "not_modelled", "shared collect/eval model: the scenario runner has no evaluator"),
    _quirk(14, MATCH, "reanalysis: forced misses whose results are still stored"),
    _quirk(15, "unobservable", "per-miss and per-clear prints (logging here)"),
    _quirk(16, "not_modelled", "RoPE flag without RoPE: the core has no rotary option"),
    _quirk(17, MATCH, "the recurrent pool evicted a key stored earlier in the same search "
                      "(pool smaller than one search)"),
)

COVERAGE_NAMES: tuple[str, ...] = tuple(item.name for item in COVERAGE_TABLE)
REQUIRED: tuple[str, ...] = tuple(item.name for item in COVERAGE_TABLE if item.refactor == MATCH)
FIXED: tuple[str, ...] = tuple(item.name for item in COVERAGE_TABLE if item.refactor == FIXED_KIND)


@dataclass(slots=True)
class _PoolShadow:
    """Legacy's lookup maps as the control's events show them: key -> (slot, env)."""

    maps: dict[tuple[str, int], dict[int, tuple[int, int]]] = field(default_factory=dict)
    cleared: set[tuple[str, int]] = field(default_factory=set)

    def lookup_map(self, pool: str, env: int) -> dict[int, tuple[int, int]]:
        return self.maps.setdefault((pool, env if pool == POOL_ROOT else -1), {})

    def clear(self, event: Clear) -> None:
        for (pool, env), entries in self.maps.items():
            if event.scope == "all" or (event.scope == "recurrent" and pool == POOL_RECURRENT) \
                    or (event.scope == "root_env" and pool == POOL_ROOT and env == event.env):
                if entries:
                    self.cleared.add((pool, env))
                entries.clear()


class CoverageCounter:
    """Counts coverage names over the calls of one trace, in order.

    Attributes:
        counts: ``{name: calls or events that exercised it}``; only names of
            :data:`COVERAGE_NAMES` appear (plus ``weights_initial``, information only).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._shadow = _PoolShadow()
        self._search_keys: set[int] = set()  # recurrent keys stored since the last root call
        self._recomputed = False
        self._pending_weights = False

    def observe(self, recorded: RecordedCall, events: Sequence[CacheEvent]) -> None:
        """Count what one call exercised, from the control's events for it."""
        counts, call = self.counts, recorded.call
        self._count_call(recorded)
        lookups = [e for e in events if isinstance(e, Lookup)]
        self._count_lookups(call, lookups)
        stores = 0
        for event in events:
            if isinstance(event, Store):
                stores += 1
                self._count_store(event)
            elif isinstance(event, Trim):
                self._count_trim(event)
            elif isinstance(event, Clear):
                counts[f"clear_{event.reason}"] += 1
                self._shadow.clear(event)
                self._pending_weights = False
                self._recomputed |= event.reason == "epoch"
        if isinstance(call, (RootCall, RecurrentCall)) and not stores:
            counts["store_skipped"] += 1
        if any(e.forced for e in lookups) and stores:
            counts["quirk-14"] += 1

    def _count_call(self, recorded: RecordedCall) -> None:
        call, counts = recorded.call, self.counts
        if isinstance(call, RootCall):
            first = int(np.max(call.last_actions)) == -1
            counts["root_first_step" if first else "root_continuing"] += 1
            if call.current_obs.shape[0] < call.last_obs.shape[0]:
                counts["quirk-9"] += 1
            if self._pending_weights:
                counts["weights_between_searches"] += 1
                self._pending_weights = False
            self._search_keys.clear()
        elif isinstance(call, WeightsCall):
            counts["weights_initial" if call.initial else "weights_update"] += 1
            self._pending_weights = not call.initial
        elif isinstance(call, ClearCall):
            self._pending_weights = False
        elif recorded.kind == "reanalyze":
            counts["reanalyze"] += 1

    def _count_lookups(self, call: object, lookups: list[Lookup]) -> None:
        counts = self.counts
        for event in lookups:
            if event.hit:
                counts[f"hit_{event.pool}_pool"] += 1
                if event.pool == POOL_RECURRENT:
                    entry = self._shadow.lookup_map(POOL_RECURRENT, event.env).get(event.key)
                    if entry is not None and entry[1] != event.env:
                        counts["quirk-3"] += 1
            else:
                counts["forced_miss" if event.forced else "miss"] += 1
        sizes = [event.size for event in lookups]
        if len(set(sizes)) > 1:
            counts["quirk-5"] += 1
            if isinstance(call, RootCall):
                counts["quirk-4"] += 1
        root_unequal = isinstance(call, RootCall) and len(set(sizes)) > 1
        miss_beside_longer = any(not e.hit for e in lookups) and max(sizes, default=0) > 1
        if root_unequal or miss_beside_longer:
            counts["quirk-6"] += 1

    def _count_store(self, event: Store) -> None:
        counts = self.counts
        lookup = self._shadow.lookup_map(event.pool, event.env)
        pool_id = (event.pool, event.env if event.pool == POOL_ROOT else -1)
        if pool_id in self._shadow.cleared:
            self._shadow.cleared.discard(pool_id)
            if event.slot != 0:
                counts["quirk-2"] += 1
        if event.evicted is not None:
            counts["eviction"] += 1
            entry = lookup.pop(event.evicted, None)
            if entry is not None and entry[0] != event.slot:
                counts["quirk-1"] += 1
            if event.pool == POOL_RECURRENT and event.evicted in self._search_keys:
                counts["quirk-17"] += 1
        lookup[event.key] = (event.slot, event.env)
        if event.pool == POOL_RECURRENT:
            self._search_keys.add(event.key)

    def _count_trim(self, event: Trim) -> None:
        counts = self.counts
        counts["trim"] += 1
        if event.size_after == 0:
            counts["trim_to_empty"] += 1
        else:
            counts["trim_context_even" if event.size_after % 2 else "trim_context_odd"] += 1
        if event.pool == POOL_ROOT:
            counts["quirk-7"] += 1
        if not self._recomputed:
            counts["quirk-8"] += 1


def coverage_of(recorded: RecordedCall, events: Sequence[CacheEvent], counts: Counter,
                counter: CoverageCounter | None = None) -> None:
    """Add what one call exercised to ``counts``.

    Args:
        recorded: the call.
        events: the control's cache events for it.
        counts: the per-trace totals to add to.
        counter: the trace's running counter; history-dependent items (quirks 1, 2, 3, 8, 17,
            ``weights_between_searches``) need one kept across the trace's calls. Without one,
            the call is counted as if it were the trace's first.
    """
    counter = counter or CoverageCounter()
    before = Counter(counter.counts)
    counter.observe(recorded, events)
    counts.update(counter.counts - before)


def missing_required(counts: Mapping[str, int], required: Iterable[str] = REQUIRED) -> list[str]:
    """The required names that ``counts`` (summed over a trace set) never saw, in table order."""
    return [name for name in required if counts.get(name, 0) < 1]


def coverage_rows(counts: Mapping[str, int]) -> list[tuple[str, str, str, int]]:
    """``(name, kind, refactor, count)`` for every row of the table: the report's coverage table."""
    return [(item.name, item.kind, item.refactor, int(counts.get(item.name, 0)))
            for item in COVERAGE_TABLE]


def recorded_coverage(path: str, limits: Limits = DEFAULT_LIMITS) -> Counter:
    """Coverage of a trace counted on the events recorded in it (its producer's), no replay."""
    counter = CoverageCounter()
    with open_trace(path, limits=limits) as reader:
        for record in reader:
            recorded = call_from_record(record.index, record.kind, record.meta, record.arrays,
                                        where=path)
            counter.observe(recorded, recorded.events)
    return counter.counts
