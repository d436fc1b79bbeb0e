"""Opening inputs and writing outputs safely: the file half of the trust boundary.

An input must be a regular file (or a directory where a command documents one): a FIFO, a
device, a socket or a symlink loop is refused at once, before anything opens it, so no input can
block the harness. An output is written through a temporary file in its folder and renamed into
place, and is refused when it would replace an input of the same run or lies under something
that is not a directory. Errors are one line naming the path and what was expected.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from harness.errors import UserError

__all__ = ["InputFileError", "OutputFileError", "check_input_file", "check_input_dir",
           "open_input", "read_input_bytes", "check_output_path", "atomic_write_bytes",
           "atomic_write_text", "file_digest"]

PathLike = str | os.PathLike[str]


class InputFileError(UserError):
    """An input path that is missing, unreadable, too big or not a regular file (one line)."""


class OutputFileError(UserError):
    """An output path that would replace an input or cannot be created (one line)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file or directory"


def _stat(path: PathLike, what: str, error: type[Exception]) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise error(f"{os.fspath(path)}: no such {what}") from None
    except OSError as exc:  # ELOOP (a symlink loop), ENAMETOOLONG, EACCES, ENOTDIR, ...
        raise error(f"{os.fspath(path)}: cannot read the {what} ({exc.strerror})") from None
    except ValueError as exc:  # an embedded NUL byte
        raise error(f"{os.fspath(path)!r}: not a usable path for the {what} ({exc})") from None


def check_input_file(path: PathLike, what: str = "input file", *,
                     error: type[Exception] = InputFileError) -> os.stat_result:
    """Stat ``path`` without opening it; refuse anything but a regular file.

    Args:
        what: how the message names the file, e.g. ``"waiver file"``.
        error: the exception class to raise (the caller's user-error class).
    """
    info = _stat(path, what, error)
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{os.fspath(path)}: is {_kind(info.st_mode)}, expected a {what}")
    return info


def check_input_dir(path: PathLike, what: str = "input folder", *,
                    error: type[Exception] = InputFileError) -> os.stat_result:
    """Refuse ``path`` unless it is a directory (symlinks to one are followed)."""
    info = _stat(path, what, error)
    if not stat.S_ISDIR(info.st_mode):
        raise error(f"{os.fspath(path)}: is {_kind(info.st_mode)}, expected a {what}")
    return info


def open_input(path: PathLike, what: str = "input file", *,
               error: type[Exception] = InputFileError) -> BinaryIO:
    """Open a regular file for binary reading; never blocks on a FIFO.

    The path is checked before opening, opened with ``O_NONBLOCK`` (so a FIFO swapped in
    between cannot block) and checked again on the open descriptor.
    """
    check_input_file(path, what, error=error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{os.fspath(path)}: cannot open the {what} ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{os.fspath(path)}: is {_kind(mode)}, expected a {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input_bytes(path: PathLike, what: str, max_bytes: int, *,
                     error: type[Exception] = InputFileError) -> bytes:
    """The whole of a regular file of at most ``max_bytes`` bytes (checked before reading)."""
    with open_input(path, what, error=error) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise error(f"{os.fspath(path)}: the {what} is {size} bytes, over the limit "
                        f"max_input_file_bytes = {max_bytes}")
        try:
            data = handle.read(size + 1)  # read(n) allocates n bytes up front: not the cap
        except OSError as exc:
            raise error(f"{os.fspath(path)}: cannot read the {what} ({exc.strerror})") from None
    if len(data) > size:
        raise error(f"{os.fspath(path)}: the {what} grew while it was read; expected a file "
                    f"that is not being written")
    return data


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path: PathLike, what: str = "output file", *,
                      inputs: Iterable[PathLike] = (), related: Iterable[str] = (".partial",),
                      error: type[Exception] = OutputFileError) -> Path:
    """Refuse an output that would replace an input of this run or cannot be created.

    Checked before any work, so a run never computes a result it cannot write. Refused: an
    output that is (or whose ``related`` sidecar, e.g. ``X.partial``, is) one of ``inputs``,
    an existing directory, or a path with a non-directory among its existing parents.

    Returns:
        The output as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    candidates = [out, *(Path(os.fspath(out) + suffix) for suffix in related)]
    for given in inputs:
        source = Path(given)
        if any(_same_file(candidate, source) for candidate in candidates):
            raise error(f"{out}: the {what} would overwrite the input {source}; "
                        f"choose another output path")
    if out.is_dir():
        raise error(f"{out}: is a directory, expected a file path for the {what}")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise error(f"{out}: {parent} is not a directory, so the {what} cannot be "
                            f"created under it")
            break
    return out


def atomic_write_bytes(path: PathLike, data: bytes, *, what: str = "output file",
                       inputs: Iterable[PathLike] = (),
                       error: type[Exception] = OutputFileError) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync,
    rename. Missing parent folders are created. Readers see the old file or the new one.

    Raises:
        OutputFileError: (or ``error``) the path is refused by :func:`check_output_path` or
            cannot be written; the temporary file is removed.
    """
    out = check_output_path(path, what, inputs=inputs, related=(), error=error)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise error(f"{out}: cannot create the {what} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise error(f"{out}: cannot write the {what} ({exc.strerror})") from None
        raise
    return out


def atomic_write_text(path: PathLike, text: str, *, what: str = "output file",
                      inputs: Iterable[PathLike] = (),
                      error: type[Exception] = OutputFileError) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), what=what, inputs=inputs, error=error)


def file_digest(path: PathLike, what: str = "input file", *,
                error: type[Exception] = InputFileError) -> str:
    """``sha256:<hex>`` of a regular file, streamed in 1 MiB chunks (a FIFO is refused)."""
    digest = hashlib.sha256()
    with open_input(path, what, error=error) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
