"""Decision comparison: the cache events of one call, candidate against control.

Every event field is a decision except ``Store.slot`` and ``Store.evicted``:

* where an entry lands is internal to a pool, so slot differences are reported as information
  (:func:`slot_differences`) and never fail;
* evictions are compared per call and pool, as the multiset of keys the call evicted, not per
  store: within one call every lookup comes before every store, so which of the call's stores
  evicted a key cannot change any lookup; only the keys a call leaves evicted can. (Legacy's
  stale reverse map attributes an eviction to an earlier store of the same call, spec quirk 1.)
The cheap path compares tuples of decision fields; DeepDiff runs only when they differ, to give
the structured diff that the one-line summary condenses.
"""

from __future__ import annotations

import json
from dataclasses import fields
from operator import attrgetter
from typing import Any, Callable, Sequence

from deepdiff import DeepDiff

from harness.results import EventDivergence, SlotDifference
from unizero.events import CacheEvent, Clear, Lookup, Store, Trim, event_to_dict

__all__ = ["INFO_FIELDS", "decision_fields", "compare_events", "slot_differences"]

INFO_FIELDS: dict[type, tuple[str, ...]] = {Store: ("slot", "evicted")}
_KEY_FIELDS = frozenset({"key", "evicted"})


def decision_fields(event_type: type) -> tuple[str, ...]:
    """The fields of an event type that the comparison fails on, in declaration order."""
    info = INFO_FIELDS.get(event_type, ())
    return tuple(field.name for field in fields(event_type) if field.name not in info)


_DECISION_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    event_type: attrgetter(*decision_fields(event_type))
    for event_type in (Lookup, Store, Trim, Clear)
}


def _decision(event: CacheEvent) -> tuple[Any, ...]:
    getter = _DECISION_GETTERS.get(type(event))
    if getter is None:
        raise TypeError(f"not a cache event: {event!r}; expected one of "
                        f"{[cls.__name__ for cls in _DECISION_GETTERS]}")
    return (type(event), getter(event))


def _decision_dict(event: CacheEvent) -> dict[str, Any]:
    data = event_to_dict(event)
    for name in INFO_FIELDS.get(type(event), ()):
        del data[name]
    return data


def compare_events(actual: Sequence[CacheEvent],
                   expected: Sequence[CacheEvent]) -> EventDivergence | None:
    """Compare the decisions in two event lists; None when they agree.

    Args:
        actual: the candidate's events for one call, in emission order.
        expected: the control's events for the same call.

    Returns:
        An :class:`EventDivergence` whose summary names the first differing decision, with the
        DeepDiff (control as t1) and the slot differences, or None when every decision agrees
        (slot differences alone are not a divergence; see :func:`slot_differences`).
    """
    actual_decisions = [_decision(event) for event in actual]
    expected_decisions = [_decision(event) for event in expected]
    if actual_decisions == expected_decisions:
        return _compare_evictions(actual, expected)
    first = next((index for index, (a, e) in enumerate(zip(actual_decisions, expected_decisions))
                  if a != e), min(len(actual), len(expected)))
    control = expected[first] if first < len(expected) else None
    candidate = actual[first] if first < len(actual) else None
    diff = DeepDiff([_decision_dict(event) for event in expected],
                    [_decision_dict(event) for event in actual], verbose_level=2)
    return EventDivergence(
        summary=_describe(first, control, candidate),
        first_index=first,
        num_control_events=len(expected),
        num_candidate_events=len(actual),
        deepdiff=json.loads(diff.to_json()),
        slot_differences=slot_differences(actual, expected),
    )


def _evictions(events: Sequence[CacheEvent]) -> list[tuple[str, int]]:
    return sorted((event.pool, event.evicted) for event in events
                  if type(event) is Store and event.evicted is not None)


def _compare_evictions(actual: Sequence[CacheEvent],
                       expected: Sequence[CacheEvent]) -> EventDivergence | None:
    """The keys each pool lost in this call, as multisets; None when they agree."""
    actual_evicted, expected_evicted = _evictions(actual), _evictions(expected)
    if actual_evicted == expected_evicted:
        return None
    def listing(items: list[tuple[str, int]]) -> str:
        return ", ".join(f"{pool} {_format_key(key)}" for pool, key in items) or "none"
    first = next((index for index, (a, e) in enumerate(zip(actual, expected))
                  if type(a) is Store and type(e) is Store and a.evicted != e.evicted), 0)
    diff = DeepDiff([list(item) for item in expected_evicted],
                    [list(item) for item in actual_evicted], verbose_level=2)
    return EventDivergence(
        summary=f"keys evicted by this call: control {listing(expected_evicted)}; "
                f"candidate {listing(actual_evicted)}",
        first_index=first, num_control_events=len(expected), num_candidate_events=len(actual),
        deepdiff=json.loads(diff.to_json()), slot_differences=slot_differences(actual, expected))


def slot_differences(actual: Sequence[CacheEvent],
                     expected: Sequence[CacheEvent]) -> tuple[SlotDifference, ...]:
    """Stores present on both sides whose slots differ, in control order.

    Stores are matched on ``(env, pool, key, occurrence)``, so an extra or missing event
    elsewhere does not shift the matching.
    """
    candidate_slots = _slots_by_store(actual)
    differences = []
    for match, control_slot in _slots_by_store(expected).items():
        candidate_slot = candidate_slots.get(match)
        if candidate_slot is not None and candidate_slot != control_slot:
            env, pool, key, _ = match
            differences.append(SlotDifference(env, pool, key, control_slot, candidate_slot))
    return tuple(differences)


def _slots_by_store(events: Sequence[CacheEvent]) -> dict[tuple[int, str, int, int], int]:
    slots: dict[tuple[int, str, int, int], int] = {}
    seen: dict[tuple[int, str, int], int] = {}
    for event in events:
        if type(event) is Store:
            store = (event.env, event.pool, event.key)
            occurrence = seen.get(store, 0)
            seen[store] = occurrence + 1
            slots[(*store, occurrence)] = event.slot
    return slots


def _format_value(name: str, value: Any) -> str:
    if value is None:
        return "none"
    if name in _KEY_FIELDS:
        return _format_key(value)
    return str(value)


def _format_key(key: int) -> str:
    return f"0x{key & 0xFFFF_FFFF_FFFF_FFFF:016x}"[:10] + "…"


def _brief(event: CacheEvent) -> str:
    parts = ", ".join(f"{name}={_format_value(name, getattr(event, name))}"
                      for name in decision_fields(type(event)))
    return f"{type(event).__name__.lower()}({parts})"


def _lookup_outcome(event: Lookup) -> str:
    if event.hit:
        return f"hit ({event.pool} pool)"
    return "forced miss" if event.forced else "miss"


def _describe(index: int, control: CacheEvent | None, candidate: CacheEvent | None) -> str:
    """One line naming the first differing decision."""
    if candidate is None:
        return f"event {index}: candidate lacks control's {_brief(control)}"
    if control is None:
        return f"event {index}: candidate has an extra {_brief(candidate)}"
    if type(control) is not type(candidate):
        return f"event {index}: control {_brief(control)}, candidate {_brief(candidate)}"
    names = decision_fields(type(control))
    differing = [name for name in names if getattr(control, name) != getattr(candidate, name)]
    subject = type(control).__name__.lower()
    if "key" in names and "key" not in differing:
        subject = f"{subject} key {_format_key(control.key)}"
    if "env" in names and "env" not in differing and control.env is not None:
        subject = f"env {control.env} {subject}"
    if isinstance(control, Lookup) and {"hit", "pool", "forced"} & set(differing):
        return (f"{subject}: control {_lookup_outcome(control)}, "
                f"candidate {_lookup_outcome(candidate)}")

    def values(event: CacheEvent) -> str:
        return ", ".join(f"{name} {_format_value(name, getattr(event, name))}"
                         for name in differing)

    return f"{subject}: control {values(control)}, candidate {values(candidate)}"
