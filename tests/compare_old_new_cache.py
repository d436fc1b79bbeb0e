"""The refactor guide's consistency check (功能一致性测试): ``python tests/compare_old_new_cache.py``.

Replays the bundled traces (or the trace files and folders given) through the legacy and the
refactored world model, prints the comparison report and exits as ``python -m harness compare``
does: 0 equivalent, 1 divergence, 2 bad input. Extra options pass through (``--help`` lists them).
Not a pytest module: its name does not start with ``test_``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.cli import main  # noqa: E402 - needs the repository on sys.path first

if __name__ == "__main__":
    sys.exit(main(["compare", "--control", "legacy", "--candidate", "refactored", *sys.argv[1:]]))
