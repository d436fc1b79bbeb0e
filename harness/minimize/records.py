"""Trace records as the minimiser handles them: removable units, recurrent dependencies, env
slicing with renumbering, writing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from harness.trace import TraceWriter
from unizero.hashing import hash_state

__all__ = ["RawRecord", "split_units", "recurrent_parents", "slice_envs", "renumber_sources",
           "write_records"]

_ROW_ARRAYS = {"root": ("in/current_obs", "in/start_pos"),
               "recurrent": ("in/latent_state", "in/actions", "in/search_depth", "in/start_pos")}
_ENV_ROWS = ("in/last_obs", "in/last_actions")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One trace record as stored: kind, JSON meta and named arrays (see docs/trace-format.md)."""

    kind: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def split_units(records: Sequence[RawRecord], indices: Sequence[int]) -> list[tuple[int, ...]]:
    """Group ``indices`` into removable units; the first unit is the initial-weights record(s)
    before the first other call, which always stays."""
    units: list[list[int]] = [[]]
    in_reanalysis = False
    for index in indices:
        record = records[index]
        if record.kind == "weights" and record.meta.get("inputs", {}).get("initial"):
            units[0].append(index)
        elif record.kind == "recurrent" and len(units) > 1 and not in_reanalysis:
            units[-1].append(index)
        elif in_reanalysis:
            units[-1].append(index)
            in_reanalysis = not (record.kind == "reanalyze" and not record.meta["inputs"].get("on"))
        else:
            units.append([index])
            in_reanalysis = record.kind == "reanalyze" and bool(record.meta["inputs"].get("on"))
    return [tuple(unit) for unit in units]


def recurrent_parents(records: Sequence[RawRecord], indices: Sequence[int]) -> dict[int, set[int]]:
    """For each recurrent call among ``indices``: the recurrent calls whose outputs it expands.

    A row's parent latent is matched by its bytes to the latest earlier output of the same row
    in the same search (MCTS hands a node's latent back byte for byte).
    """
    parents: dict[int, set[int]] = {}
    producers: dict[tuple[int, int], int] = {}
    for index in indices:
        record = records[index]
        if record.kind == "root":
            producers.clear()
        if record.kind != "recurrent":
            continue
        latents = record.arrays["in/latent_state"]
        parents[index] = {producers[(row, hash_state(latents[row]))] for row in range(len(latents))
                          if (row, hash_state(latents[row])) in producers}
        outputs = record.arrays.get("out/latent")
        for row in range(0 if outputs is None else len(outputs)):
            producers[(row, hash_state(np.ascontiguousarray(outputs[row])))] = index
    return parents


def slice_envs(record: RawRecord, envs: Sequence[int]) -> RawRecord | None:
    """``record`` restricted to the env positions ``envs`` (renumbered 0, 1, ... in order), or
    None when no row of it is left."""
    position = {env: new for new, env in enumerate(envs)}
    meta = dict(record.meta)
    if record.kind == "clear" and meta["inputs"].get("env") is not None:
        if meta["inputs"]["env"] not in position:
            return None
        meta["inputs"] = {**meta["inputs"], "env": position[meta["inputs"]["env"]]}
    arrays = dict(record.arrays)
    if record.kind in _ROW_ARRAYS:
        num_rows = len(arrays[_ROW_ARRAYS[record.kind][0]])
        rows = [env for env in envs if env < num_rows]
        if not rows:
            return None
        if meta["inputs"].get("latent_source") is not None:
            meta["inputs"] = {**meta["inputs"],
                              "latent_source": [meta["inputs"]["latent_source"][env] for env in rows]}
        for name, value in record.arrays.items():
            if name in _ROW_ARRAYS[record.kind] or name.startswith("out/") or name in _ENV_ROWS:
                arrays[name] = np.ascontiguousarray(value[[env for env in envs if env < len(value)]])
    meta["events"] = [{**event, "env": position[event["env"]]} if event.get("env") is not None
                      else event for event in record.meta.get("events", [])
                      if event.get("env") is None or event["env"] in position]
    return RawRecord(record.kind, meta, arrays)


def renumber_sources(record: RawRecord, positions: dict[int, int], rows: dict[int, int]) -> RawRecord:
    """Point a recurrent record's recorded latent provenance (``inputs.latent_source``: one
    ``[record, row]`` or null per row) at the kept records' new positions and rows; a source
    that was dropped becomes null."""
    sources = record.meta.get("inputs", {}).get("latent_source")
    if record.kind != "recurrent" or sources is None:
        return record
    renumbered = [[positions[item[0]], rows[item[1]]]
                  if item is not None and item[0] in positions and item[1] in rows else None
                  for item in sources]
    inputs = {**record.meta["inputs"], "latent_source": renumbered}
    return RawRecord(record.kind, {**record.meta, "inputs": inputs}, record.arrays)


def write_records(path: str, header: dict[str, Any], records: Sequence[RawRecord], *,
                  compress_level: int = 6) -> None:
    """Write ``records`` after ``header`` as a finished trace at ``path``."""
    with TraceWriter(path, header, compress_level=compress_level) as writer:
        for record in records:
            writer.append(record.kind, record.meta, record.arrays)
