"""The comparator: tensors (:mod:`.tensors`) and cache decisions (:mod:`.events`).

Results are the records of :mod:`harness.results`; this package decides, it does not render.
"""

from harness.compare.events import compare_events, decision_fields, slot_differences
from harness.compare.tensors import (DEFAULT_TOLERANCES, NanPolicy, NoiseFloor, Tolerance,
                                     ToleranceError, TolerancePolicy,
                                     compare_tensor_maps, compare_tensors, default_tolerance,
                                     parse_tol_option)

__all__ = ["DEFAULT_TOLERANCES", "NanPolicy", "NoiseFloor", "Tolerance", "ToleranceError",
           "TolerancePolicy", "compare_events", "compare_tensor_maps",
           "compare_tensors", "decision_fields", "default_tolerance", "parse_tol_option",
           "slot_differences"]
