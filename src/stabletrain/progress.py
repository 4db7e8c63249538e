"""Progress bars that also reach a log file: tqdm on a terminal, plain timed lines when stderr is not one.

tqdm's own ``disable=None`` hides a bar whenever stderr is not a terminal,
so a long run under ``nohup``, ``sbatch`` or a pipe said nothing until it
finished. :func:`progress_bar` keeps the bar on a terminal and otherwise
writes one plain line when the bar starts, at most one every
:data:`LOG_INTERVAL` seconds while it runs, and one when it ends (no
carriage returns, no bar characters), so ``tail -f`` of a log shows where a
run is.

Example:
    >>> for _ in progress_bar(range(3), desc="work", enabled=False):
    ...     pass
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, TextIO

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL", "progress_bar"]

#: Seconds between two progress lines in a log (stderr not a terminal).
LOG_INTERVAL = 30.0
_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed} elapsed, {remaining} left, {rate_fmt}{postfix}]"
_LOG_FORMAT_OPEN = "{desc}: {n_fmt} {unit} [{elapsed} elapsed, {rate_fmt}{postfix}]"


class _Lines:
    """A text stream for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for piece in text.replace("\r", "\n").split("\n"):
            if piece.strip():
                self.stream.write(piece.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """A bar for logs: postfix and description changes wait for the next timed line instead of printing one."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, total: float | None = None,
                 desc: str | None = None, unit: str = "it", leave: bool = True, **options: Any) -> tqdm:
    """A tqdm bar: on a terminal as usual, in a log as plain lines every :data:`LOG_INTERVAL` seconds, or
    nothing when not ``enabled``. ``options`` go to tqdm on a terminal."""
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, **options)
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return _LogBar(iterable, total=total, desc=desc or "progress", unit=unit, leave=True, file=_Lines(stream),
                mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, ascii=True,
                bar_format=_LOG_FORMAT if total is not None else _LOG_FORMAT_OPEN)
