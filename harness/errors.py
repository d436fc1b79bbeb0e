"""User-facing error classes: each prints as one line and maps to exit code 2 (bad input)."""

from __future__ import annotations

from harness.calls import CallFormatError
from harness.compare import ToleranceError
from harness.engines import EngineError
from harness.evidence import EvidenceError
from harness.fileio import InputFileError, OutputFileError
from harness.scenario import ScenarioError
from harness.trace import TraceError
from harness.waivers import WaiverError
from unizero.backends import BackendError
from unizero.config import ConfigError
from unizero.world_model import InputError

__all__ = ["UsageError", "USER_ERRORS"]


class UsageError(ValueError):
    """A command line that cannot be acted on (bad option value, no such file)."""


USER_ERRORS = (UsageError, TraceError, CallFormatError, ToleranceError, EngineError, ScenarioError,
               BackendError, ConfigError, InputError, WaiverError, FileNotFoundError, IsADirectoryError,
               PermissionError, InputFileError, OutputFileError, EvidenceError)
