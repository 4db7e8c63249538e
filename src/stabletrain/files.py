"""Atomic writes of results and checkpoints.

Every file stabletrain writes goes to a temporary file in the same folder,
is flushed to disk, and then renamed over the target. A crash or a kill at
any moment leaves either the old file or the new one, never half of one.

Files get the permissions of any newly created file, ``0o666`` less the
process umask (``-rw-r--r--`` under the usual umask 022), not the
owner-only ``0o600`` of :func:`tempfile.mkstemp`. A write that fails
because of the output location (a file where a folder should be, no
permission, a read-only or full disk) raises
:class:`~stabletrain.checks.StableTrainError` with one line naming the path
and the reason, and removes its temporary file. :func:`ensure_output_dir`
makes the same check up front, before any work is done.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import yaml

from .checks import StableTrainError

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_json", "write_csv", "write_yaml", "read_yaml",
           "atomic_torch_save", "safe_torch_load", "ensure_output_dir", "describe_os_error"]

#: Reasons in words for the errno values an output location typically fails with.
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error",
}


def _first_non_folder(path: Path) -> Path | None:
    """The first ancestor of ``path`` (or ``path`` itself) that exists and is not a folder."""
    for candidate in reversed([path, *path.parents]):
        try:
            if candidate.exists() and not candidate.is_dir():
                return candidate
        except OSError:
            return None
    return None


def describe_os_error(err: OSError, path: str | os.PathLike, *, folder: bool = False,
                      what: str = "cannot write results to") -> str:
    """One line naming ``path`` (a file, or with ``folder`` a folder) and why ``err`` stopped writing it.

    Example:
        >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"), "/data/run/results.json")
        'cannot write results to /data/run/results.json: no space left on device'
    """
    target = Path(path)
    blocker = None
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = _first_non_folder(target if folder else target.parent)
    if blocker == target:
        reason = "it is a file, not a folder"
    elif blocker is not None:
        reason = f"parent {blocker} is a file, not a folder"
    elif not folder and (err.errno == errno.EISDIR or target.is_dir()):
        reason = "it is a folder, not a file"
    elif err.errno in _REASONS:
        reason = _REASONS[err.errno]
    else:
        reason = (err.strerror or str(err) or type(err).__name__).rstrip(".")
        reason = reason[:1].lower() + reason[1:]
    return f"{what} {target}: {reason}"


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new file in ``folder`` opened for writing, with the permissions that the umask gives new files."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp  # the kernel applies the umask (and default ACLs)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; create parent folders as needed.

    The file gets mode ``0o666`` less the umask. Problems with the location
    (see the module docstring) raise :class:`StableTrainError`; the target
    is then unchanged and no temporary file is left behind.
    """
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(target))
        fd, tmp = _create_temp(target.parent, target.name)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError):
            raise StableTrainError(describe_os_error(err, target)) from err
        raise
    return target


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) and check that files can be written in it.

    A probe file is created, written, flushed to disk and removed. If that
    fails, :class:`StableTrainError` names the folder and the reason, and
    the folders this call created are removed again. Returns the folder.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     ensure_output_dir(Path(root) / "runs" / "a").is_dir()
        True
    """
    folder = Path(path)
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    probe: Path | None = None
    try:
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(errno.EEXIST, "File exists", str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = _create_temp(folder, "stabletrain-probe")
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"stabletrain write check\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.unlink(probe)
        probe = None
    except OSError as err:
        if probe is not None:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()
        raise StableTrainError(describe_os_error(err, folder, folder=True)) from err
    return folder


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON; NaN and inf become ``null``."""
    return atomic_write_text(path, json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> Path:
    """Write dict rows as CSV; the columns are the union of keys, in first-seen order."""
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _json_safe(v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def write_yaml(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    return atomic_write_text(path, yaml.safe_dump(_json_safe(dict(data)), sort_keys=False))


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping with the safe loader; errors name the file."""
    file = Path(path)
    if not file.exists():
        raise StableTrainError(f"config file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StableTrainError(f"cannot parse config {file}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StableTrainError(f"config {file} must be a mapping of option: value, got {type(data).__name__}")
    return data


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing or corrupt files."""
    file = Path(path)
    if not file.exists():
        raise StableTrainError(f"checkpoint not found: {file}")
    if file.is_dir():
        candidate = file / "checkpoint.pt"
        if not candidate.exists():
            raise StableTrainError(f"{file} is a folder without checkpoint.pt")
        file = candidate
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        unpickler = [line for line in lines if "WeightsUnpickler" in line]
        first = (unpickler or lines or [type(err).__name__])[0]
        raise StableTrainError(f"cannot read checkpoint {file}: corrupt or not a checkpoint ({first[:160]})") from None
