"""Atomic writes of results and checkpoints.

Every file stabletrain writes goes to a temporary file in the same folder,
is flushed to disk, and then renamed over the target. A crash or a kill at
any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import yaml

from .checks import StableTrainError

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_json", "write_csv", "write_yaml", "read_yaml",
           "atomic_torch_save", "safe_torch_load"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; create parent folders as needed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


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
