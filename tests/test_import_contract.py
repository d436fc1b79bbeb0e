"""The import contract in pyproject.toml (import-linter) holds, and a planted cycle breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "legacy", "refactored", "unizero")
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's packages and pyproject.toml, to plant imports in."""
    root = tmp_path_factory.mktemp("contract")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def _plant(root: Path, module: str, line: str) -> Path:
    path = root / Path(*module.split(".")).with_suffix(".py")
    original = path.read_text()
    path.write_text(original + f"\n{line}\n")
    return path


def test_the_project_keeps_its_import_contract():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("harness.results.records", "import harness.cli  # planted", "Nothing imports the CLI"),
    ("harness.compare.tensors", "from harness import replay  # planted", "Harness layers"),
    ("unizero.config", "import legacy.world_model  # planted", "Project layers"),
])
def test_a_planted_upward_import_fails_the_contract(tree, module, line, broken):
    path = _plant(tree, module, line)
    try:
        done = _lint(tree)
    finally:
        path.write_text(path.read_text().replace(f"\n{line}\n", ""))
    assert done.returncode != 0, done.stdout
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout, done.stdout
