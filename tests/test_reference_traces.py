"""The uncached reference on every bundled trace, against the outputs legacy recorded there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.calls import RecordedCall, call_from_record, invoke
from harness.trace import open_trace
from reference.world_model import UncachedWorldModel
from unizero.config import WorldModelConfig
from unizero.events import Lookup, Trim

TRACES = sorted(Path(__file__).resolve().parent.parent.joinpath("scenarios", "traces").glob("*.kvtrace"))


def replay_reference(path: Path) -> tuple[UncachedWorldModel, list[tuple[RecordedCall, dict]]]:
    """The reference model after the trace, and ``(recorded, its outputs)`` per call; the
    recorded latents are passed back after each call, as the uncached engine does."""
    calls = []
    with open_trace(path) as reader:
        model = UncachedWorldModel(WorldModelConfig.from_dict(reader.header["config"]))
        for record in reader:
            recorded = call_from_record(record.index, record.kind, record.meta, record.arrays)
            outputs = {name: value.numpy() for name, value in invoke(model, recorded.call).items()}
            if "latent" in recorded.outputs:
                model.note_recorded_latents(recorded.outputs["latent"])
            calls.append((recorded, outputs))
    return model, calls


def departs_by_design(recorded: RecordedCall) -> bool:
    """Legacy trimmed a context, left-padded a batch or rebuilt a missed context from one token
    in this call (docs/reference.md)."""
    lookups = [event for event in recorded.events if isinstance(event, Lookup)]
    return (len({event.size for event in lookups}) > 1 or any(not event.hit for event in lookups)
            or any(isinstance(event, Trim) for event in recorded.events))


@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_the_reference_answers_every_call_of_every_bundled_trace(path: Path) -> None:
    """Every call answered, every parent found by its bytes, and legacy equal to the reference
    up to its first trim or padding (everywhere for a zero-initialised model)."""
    num_answered = num_equal = 0
    departed = False
    model, calls = replay_reference(path)
    zero_init = model.config.zero_init_heads  # every output is exactly zero either way
    for recorded, outputs in calls:
        assert set(outputs) == set(recorded.outputs), f"call {recorded.index}"
        departed = departed or (departs_by_design(recorded) and not zero_init)
        for name, value in outputs.items():
            assert value.shape == recorded.outputs[name].shape, f"call {recorded.index} {name}"
            assert np.isfinite(value).all(), f"call {recorded.index} {name}"
            if not departed:
                np.testing.assert_allclose(value, recorded.outputs[name], atol=1e-5, rtol=0,
                                           err_msg=f"call {recorded.index} {name}")
        num_answered += bool(outputs)
        num_equal += bool(outputs) and not departed
    stats = model.stats()
    assert num_answered == sum(r.kind in ("root", "recurrent") for r, _ in calls) > 0
    assert num_equal >= 1  # at least the first root step, before anything can depart
    assert stats["parent_nearest"] == stats["parent_orphan"] == 0, stats
    assert stats["parent_exact"] > 0
