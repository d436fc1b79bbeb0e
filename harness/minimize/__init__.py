"""Minimise a diverging trace to a small one that still diverges the same way (delta debugging).

The reduced trace must diverge with the same first-divergence class (``error``, ``tensor``,
``decision`` or ``both``) under the same control, candidate and manager. Replays are
deterministic, so the calls after the first diverging one are dropped at once; then ``ddmin``
(Zeller and Hildebrandt) removes, in order:

1. whole *units*: a search (its root call and its recurrent calls), a reanalysis block, a
   clear, a weight update — never part of a search, so each kept root still stores what its
   searches look up;
2. recurrent calls inside the kept searches, each only together with its descendants (a call
   whose parent latent another call produced goes when that call goes), so a lookup still
   sees the stores it depends on;
3. envs: their rows of every call, their episode-end clears and their cache events (the
   envs left are renumbered in order, as the world models index envs by batch position);

and repeats 1-3 until a round removes nothing (or a replay budget runs out: the smallest
failing reduction found so far is then kept). With a judge (waivers), the first *unwaived*
divergence is the one kept. The initial weights record always stays. The kept calls are
finally re-recorded by the control engine, so the reduced trace's outputs and events are what
the control produces on exactly those inputs. No argparse, no printing: progress goes to a
callback.
"""

from harness.minimize.ddmin import ddmin
from harness.minimize.pytest_file import MANAGER_VARIABLE, write_pytest
from harness.minimize.records import (RawRecord, recurrent_parents, renumber_sources, slice_envs,
                                      split_units, write_records)
from harness.minimize.reduce import (MinimizeError, MinimizeProgress, MinimizeResult, Progress,
                                     minimize_trace, rerecorded)

__all__ = ["MANAGER_VARIABLE", "MinimizeError", "MinimizeProgress", "MinimizeResult", "Progress",
           "RawRecord", "ddmin", "minimize_trace", "recurrent_parents", "renumber_sources",
           "rerecorded", "slice_envs", "split_units", "write_pytest", "write_records"]
