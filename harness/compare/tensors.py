"""Tensor comparison: checks keys, then dtype, then shape, then values within tolerance.

Values are close when ``|a - e| <= atol + rtol * |e|`` (``a`` actual = candidate, ``e``
expected = control), evaluated in float64, or when ``a == e`` exactly (so equal infinities
match, and integers compare exactly). Defaults per dtype are those of
``torch.testing.assert_close``; a :class:`TolerancePolicy` overrides them per tensor path.
Away from the boundary the verdict agrees with ``assert_close``; within a rounding error of it,
float64 gives the exact answer where torch rounds in the tensor's own dtype.

NaN policy (``nan=``): ``"equal"`` (the default) counts NaN in the same position on both sides
as equal; ``"fail"`` counts every NaN as a mismatch. The default differs from torch's
``equal_nan=False`` on purpose: the question here is whether two engines behave the same, and
both producing NaN at the same place is the same behaviour. Infinities must match exactly in
sign and position under either policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import torch

from harness.errors import UserError
from harness.globmatch import GlobPattern, compile_glob
from harness.results import TensorDivergence

__all__ = ["NanPolicy", "ToleranceError", "Tolerance", "DEFAULT_TOLERANCES", "default_tolerance",
           "TolerancePolicy", "parse_tol_option", "NoiseFloor", "compare_tensors",
           "compare_tensor_maps"]

NanPolicy = Literal["equal", "fail"]
_NAN_POLICIES = ("equal", "fail")


class ToleranceError(UserError):
    """A tolerance setting is malformed; the message is one line naming the value."""


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Relative and absolute tolerance; both finite and >= 0."""

    rtol: float
    atol: float

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ToleranceError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def exact(self) -> bool:
        return self.rtol == 0 and self.atol == 0

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """Parse ``"RTOL,ATOL"`` (e.g. ``"1e-5,1e-6"``)."""
        parts = text.split(",")
        if len(parts) != 2:
            raise ToleranceError(f"expected RTOL,ATOL such as 1e-5,1e-6, got {text!r}")
        try:
            rtol, atol = (float(part) for part in parts)
        except ValueError:
            raise ToleranceError(f"expected two numbers RTOL,ATOL, got {text!r}") from None
        return cls(rtol, atol)


# Same values as torch.testing.assert_close; every other dtype (integers, bool) is exact.
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = {
    "float16": Tolerance(1e-3, 1e-5),
    "bfloat16": Tolerance(1.6e-2, 1e-5),
    "float32": Tolerance(1.3e-6, 1e-5),
    "float64": Tolerance(1e-7, 1e-7),
}
_EXACT = Tolerance(0.0, 0.0)


def default_tolerance(dtype: str) -> Tolerance:
    """The ``assert_close`` default for a dtype name; exact for integers and bool."""
    return DEFAULT_TOLERANCES.get(dtype, _EXACT)


def glob_regex(pattern: str) -> GlobPattern:
    """The compiled glob (``.fullmatch(text)``); kept for callers, see :mod:`harness.globmatch`."""
    return compile_glob(pattern)


def _tolerance_from_spec(pattern: str, spec: Any) -> Tolerance:
    where = f"tolerance for {pattern!r}"
    try:
        if isinstance(spec, str):
            return Tolerance.parse(spec)
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"rtol", "atol"}
            if unknown or len(spec) != 2:
                raise ToleranceError(f"expected keys rtol and atol, got {sorted(spec)}")
            return Tolerance(spec["rtol"], spec["atol"])
        if isinstance(spec, Sequence) and len(spec) == 2:
            return Tolerance(spec[0], spec[1])
    except ToleranceError as exc:
        raise ToleranceError(f"{where}: {exc}") from None
    raise ToleranceError(f"{where}: expected {{rtol, atol}}, [rtol, atol] or 'rtol,atol', "
                         f"got {spec!r}")


@dataclass(frozen=True, slots=True)
class TolerancePolicy:
    """Dtype defaults, per-path overrides and the NaN policy.

    Overrides are ``(pattern, Tolerance)`` pairs; a pattern matches a whole tensor path with
    ``*`` (any run of characters, dots included) and ``?`` (one character) as the only
    wildcards. When several patterns match, the last one wins, so later settings (a ``--tol``
    on the command line) override earlier ones (the config file).
    """

    overrides: tuple[tuple[str, Tolerance], ...] = ()
    nan: NanPolicy = "equal"

    def __post_init__(self) -> None:
        if self.nan not in _NAN_POLICIES:
            raise ToleranceError(f"nan policy must be one of {_NAN_POLICIES}, got {self.nan!r}")
        patterns = [pattern for pattern, _ in self.overrides]
        for pattern, tolerance in self.overrides:
            if not isinstance(pattern, str) or not pattern:
                raise ToleranceError(f"tolerance path pattern must be a non-empty string, "
                                     f"got {pattern!r}")
            if not isinstance(tolerance, Tolerance):
                raise ToleranceError(f"tolerance for {pattern!r} must be a Tolerance, "
                                     f"got {tolerance!r}")
        if len(set(patterns)) != len(patterns):
            raise ToleranceError(f"duplicate tolerance path patterns in {patterns}; "
                                 f"use with_overrides() to replace one")

    def tolerance_for(self, path: str, dtype: str) -> Tolerance:
        """The tolerance for a tensor path: the last matching override, else the dtype default."""
        for pattern, tolerance in reversed(self.overrides):
            if glob_regex(pattern).fullmatch(path):
                return tolerance
        return default_tolerance(dtype)

    def with_overrides(self, overrides: Iterable[tuple[str, Tolerance]]) -> TolerancePolicy:
        """A policy with ``overrides`` added after the existing ones (so they win).

        A pattern already present is moved to the end with its new tolerance.
        """
        merged = dict(self.overrides)
        for pattern, tolerance in overrides:
            merged.pop(pattern, None)
            merged[pattern] = tolerance
        return TolerancePolicy(tuple(merged.items()), self.nan)

    def compare(self, path: str, actual: Any, expected: Any, *,
                noise_floor: NoiseFloor | None = None) -> TensorDivergence | None:
        """:func:`compare_tensors` with this policy's tolerance for ``path`` and NaN policy."""
        actual_dtype, actual_array = _as_numpy(actual, path, "actual")
        expected_dtype, expected_array = _as_numpy(expected, path, "expected")
        tolerance = self.tolerance_for(path, expected_dtype)
        return _compare(path, actual_dtype, actual_array, expected_dtype, expected_array,
                        tolerance, self.nan, noise_floor)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TolerancePolicy:
        """Build from plain data, e.g. a TOML ``[tolerances]`` table.

        ``{"nan": "equal", "paths": {"latent": {"rtol": 1e-5, "atol": 1e-6},
        "kv.*": [1e-4, 1e-5], "policy_logits": "1e-5,1e-6"}}``; both keys are optional.
        """
        if not isinstance(data, Mapping):
            raise ToleranceError(f"tolerances must be a table, got {type(data).__name__}")
        unknown = set(data) - {"nan", "paths"}
        if unknown:
            raise ToleranceError(f"unknown tolerance setting(s) {sorted(unknown)}; "
                                 f"expected 'nan' and/or 'paths'")
        paths = data.get("paths", {})
        if not isinstance(paths, Mapping):
            raise ToleranceError(f"tolerances.paths must be a table of PATTERN = tolerance, "
                                 f"got {type(paths).__name__}")
        overrides = tuple((pattern, _tolerance_from_spec(pattern, spec))
                          for pattern, spec in paths.items())
        return cls(overrides, data.get("nan", "equal"))

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_mapping` reads back to an equal policy."""
        return {"nan": self.nan,
                "paths": {pattern: {"rtol": tolerance.rtol, "atol": tolerance.atol}
                          for pattern, tolerance in self.overrides}}


def parse_tol_option(text: str) -> tuple[str, Tolerance]:
    """Parse a command-line ``--tol PATH=RTOL,ATOL`` into ``(pattern, Tolerance)``."""
    pattern, sep, spec = text.rpartition("=")
    if not sep or not pattern:
        raise ToleranceError(f"--tol expects PATH=RTOL,ATOL such as latent=1e-5,1e-6, "
                             f"got {text!r}")
    try:
        return pattern, Tolerance.parse(spec)
    except ToleranceError as exc:
        raise ToleranceError(f"--tol {text!r}: {exc}") from None


class NoiseFloor:
    """Running maximum of ``|a - e|`` over tensors judged equal (finite elements only)."""

    __slots__ = ("max_abs_diff",)

    def __init__(self) -> None:
        self.max_abs_diff = 0.0

    def observe(self, abs_diff: float) -> None:
        self.max_abs_diff = max(self.max_abs_diff, abs_diff)


_NUMPY_NATIVE = frozenset({torch.bool, torch.uint8, torch.uint16, torch.uint32, torch.uint64,
                           torch.int8, torch.int16, torch.int32, torch.int64,
                           torch.float16, torch.float32, torch.float64})


def _as_numpy(value: Any, path: str, role: str) -> tuple[str, np.ndarray]:
    """Return ``(dtype name, CPU numpy array holding the values exactly)``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype in _NUMPY_NATIVE:
            return dtype, tensor.numpy()
        if tensor.dtype.is_floating_point:  # bfloat16, float8: float32 holds them exactly
            return dtype, tensor.float().numpy()
        raise TypeError(f"{path}: {role} tensor has unsupported dtype {dtype}; "
                        f"expected a real floating point, integer or bool dtype")
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{path}: {role} has unsupported dtype {array.dtype} "
                        f"({type(value).__name__}); expected real floats, integers or bool")
    return array.dtype.name, array


def compare_tensors(path: str, actual: Any, expected: Any, tol: Tolerance | None = None, *,
                    nan: NanPolicy = "equal",
                    noise_floor: NoiseFloor | None = None) -> TensorDivergence | None:
    """Compare one tensor: dtype, then shape, then values; None when they agree.

    Args:
        path: tensor path for the report, e.g. ``latent``.
        actual: candidate value, a numpy array or torch tensor on any device.
        expected: control value, same kinds.
        tol: tolerance; None for the ``assert_close`` default of the expected dtype.
        nan: ``"equal"`` or ``"fail"`` (see module docstring).
        noise_floor: if given, records the largest ``|a - e|`` when the tensors agree.

    Returns:
        A ``dtype``, ``shape`` or ``value`` divergence, or None. Never raises on a mismatch;
        raises TypeError only for a value that is not a real/integer/bool array.
    """
    if nan not in _NAN_POLICIES:
        raise ToleranceError(f"nan policy must be one of {_NAN_POLICIES}, got {nan!r}")
    actual_dtype, actual_array = _as_numpy(actual, path, "actual")
    expected_dtype, expected_array = _as_numpy(expected, path, "expected")
    tolerance = tol if tol is not None else default_tolerance(expected_dtype)
    return _compare(path, actual_dtype, actual_array, expected_dtype, expected_array, tolerance,
                    nan, noise_floor)


def _compare(path: str, actual_dtype: str, actual: np.ndarray, expected_dtype: str,
             expected: np.ndarray, tol: Tolerance, nan: NanPolicy,
             noise_floor: NoiseFloor | None) -> TensorDivergence | None:
    def structural(kind: Literal["dtype", "shape"]) -> TensorDivergence:
        return TensorDivergence(path, kind, actual_dtype, expected_dtype, actual.shape,
                                expected.shape, tol.rtol, tol.atol)

    if actual_dtype != expected_dtype:
        return structural("dtype")
    if actual.shape != expected.shape:
        return structural("shape")
    if expected.size == 0:
        return None
    close, abs_err = _closeness(actual, expected, tol, nan)
    if close.all():
        if noise_floor is not None:
            finite = abs_err[np.isfinite(abs_err)]
            noise_floor.observe(float(finite.max()) if finite.size else 0.0)
        return None
    return _value_divergence(path, actual_dtype, actual, expected, tol, close, abs_err)


def _closeness(actual: np.ndarray, expected: np.ndarray, tol: Tolerance,
               nan: NanPolicy) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(close mask, |a - e| in float64)``, both shaped like the inputs."""
    with np.errstate(invalid="ignore", over="ignore"):
        exact = actual == expected  # native dtype: exact for int64, inf == inf, NaN != NaN
        abs_err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        if tol.exact and expected.dtype.kind in "biu":
            # float64 cannot tell apart integers above 2**53; the native == can.
            return exact, abs_err
        allowed = tol.atol + tol.rtol * np.abs(expected.astype(np.float64))
        close = exact | (np.isfinite(abs_err) & (abs_err <= allowed))
    if nan == "equal" and expected.dtype.kind == "f":
        close |= np.isnan(actual) & np.isnan(expected)
    return close, abs_err


def _value_divergence(path: str, dtype: str, actual: np.ndarray, expected: np.ndarray,
                      tol: Tolerance, close: np.ndarray, abs_err: np.ndarray) -> TensorDivergence:
    mismatched = np.flatnonzero(~close.ravel())
    errors = abs_err.ravel()[mismatched]
    finite = np.isfinite(errors)
    finite_errors = errors[finite]
    expected_magnitude = np.abs(expected.ravel()[mismatched][finite].astype(np.float64))
    relative = finite_errors[expected_magnitude > 0] / expected_magnitude[expected_magnitude > 0]
    if not finite.all():
        worst = int(mismatched[~finite][0])
    else:
        worst = int(mismatched[np.argmax(finite_errors)])
    return TensorDivergence(
        path, "value", dtype, dtype, actual.shape, expected.shape, tol.rtol, tol.atol,
        num_mismatched=int(mismatched.size), num_elements=int(expected.size),
        num_nonfinite=int(mismatched.size - finite_errors.size),
        max_abs_err=float(finite_errors.max()) if finite_errors.size else None,
        mean_abs_err=float(finite_errors.mean()) if finite_errors.size else None,
        max_rel_err=float(relative.max()) if relative.size else None,
        mean_rel_err=float(relative.mean()) if relative.size else None,
        worst_flat_index=worst,
        worst_index=tuple(int(i) for i in np.unravel_index(worst, expected.shape)),
        actual_value=actual.ravel()[worst].item(),
        expected_value=expected.ravel()[worst].item(),
    )


def _missing(path: str, actual: Any | None, expected: Any | None,
             policy: TolerancePolicy) -> TensorDivergence:
    """A ``missing`` divergence: the path exists on one side only."""
    dtypes_shapes = []
    for value, role in ((actual, "actual"), (expected, "expected")):
        if value is None:
            dtypes_shapes.append((None, None))
        else:
            dtype, array = _as_numpy(value, path, role)
            dtypes_shapes.append((dtype, array.shape))
    (actual_dtype, actual_shape), (expected_dtype, expected_shape) = dtypes_shapes
    tolerance = policy.tolerance_for(path, expected_dtype or actual_dtype or "")
    return TensorDivergence(path, "missing", actual_dtype, expected_dtype, actual_shape,
                            expected_shape, tolerance.rtol, tolerance.atol)


def compare_tensor_maps(actual: Mapping[str, Any], expected: Mapping[str, Any],
                        policy: TolerancePolicy | None = None, *, prefix: str = "",
                        noise_floor: NoiseFloor | None = None) -> list[TensorDivergence]:
    """Compare named tensors (e.g. ``InferenceOutput.as_dict()``): keys first, then each value.

    Paths are ``prefix + name``; expected's key order, then keys only the candidate has.
    """
    policy = policy or TolerancePolicy()
    divergences = []
    for name, expected_value in expected.items():
        path = prefix + name
        if name not in actual:
            divergences.append(_missing(path, None, expected_value, policy))
            continue
        divergence = policy.compare(path, actual[name], expected_value, noise_floor=noise_floor)
        if divergence is not None:
            divergences.append(divergence)
    for name, actual_value in actual.items():
        if name not in expected:
            divergences.append(_missing(prefix + name, actual_value, None, policy))
    return divergences
