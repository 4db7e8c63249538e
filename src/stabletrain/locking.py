"""One stabletrain run per output folder.

:func:`output_lock` marks a folder as in use by creating
``<folder>/.stabletrain.lock`` atomically. The file holds JSON describing
the holder: ``pid``, ``hostname``, ``started`` (ISO 8601 time), ``command``,
and, where the system offers them, the boot id and the start time of the
process, which tell a reused pid from the original holder. A second run
into the same folder stops at once with :class:`StableTrainError` instead of
silently overwriting the first run's results::

    with output_lock(out, what="train"):
        ...  # write results into out

Stale locks. A lock left behind by a process that was killed is detected
and taken over, with a warning on the ``stabletrain.locking`` logger, when
its holder ran on this host and is gone (no such pid, a zombie, a different
process under the same pid, or an earlier boot). A lock written on another
host cannot be checked from here, so it counts as held; the error then
names the lock file, to be deleted by hand if no run is active there.

Re-entrancy. Entering the lock of a folder that the same thread already
holds is allowed and does nothing; the outermost exit releases it. Another
thread of the same process is refused like another process.

Distributed runs. Only one process of a ``torchrun`` job should hold the
lock: pass ``rank`` (the default reads the ``RANK`` variable that torchrun
sets), and every rank but 0 enters and leaves without touching the folder.
Take the lock before any rank reads or writes the folder, and put a barrier
after it, so a refused rank 0 stops the job before the others start.

Release removes the lock file only if it still holds this run's token, so
a lock that somebody deleted and another run re-created is left alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

from .checks import StableTrainError
from .files import describe_os_error

__all__ = ["output_lock", "LOCK_NAME", "read_lock"]

logger = logging.getLogger(__name__)

#: Name of the lock file inside the output folder.
LOCK_NAME = ".stabletrain.lock"

_held: dict[str, dict] = {}  # resolved lock path -> {"token", "thread"} for locks this process holds
_tokens: set[str] = set()  # tokens of the locks this process holds or is acquiring
_held_guard = threading.Lock()


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_state(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks after boot)`` of ``pid`` from ``/proc``, or None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name in (...) may hold spaces
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _describe_self(what: str, token: str) -> dict:
    state = _process_state(os.getpid())
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": what,
        "argv": list(sys.argv),
        "boot_id": _boot_id(),
        "process_start": None if state is None else state[1],
        "token": token,
    }


def read_lock(folder: str | os.PathLike) -> dict | None:
    """The holder recorded in ``folder``'s lock file; None if there is none, ``{}`` if it cannot be parsed."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _is_stale(holder: dict) -> bool:
    """True only if the holder is known to be gone: same host, and its process no longer exists."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0 or holder.get("hostname") != socket.gethostname():
        return False
    boot = _boot_id()
    if boot is not None and holder.get("boot_id") not in (None, boot):
        return True  # written before the last reboot
    start = holder.get("process_start")
    if pid == os.getpid():
        mine = _process_state(pid)
        if mine is not None and isinstance(start, int) and start != mine[1]:
            return True  # an earlier process that had our pid
        token = holder.get("token")
        return token is not None and token not in _tokens  # written by this process, which no longer holds it
    if os.name == "nt":
        return False  # os.kill would terminate the process there; such a lock is reported, never taken over
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    except OSError:
        return False
    state = _process_state(pid)
    if state is not None:
        if state[0] in ("Z", "X"):
            return True  # a zombie or dead process that nobody has reaped
        if isinstance(start, int) and start != state[1]:
            return True  # the pid now belongs to another process
    return False


def _holder_text(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('hostname', '?')}, "
            f"since {holder.get('started', '?')}")


def _create(lock: Path, content: bytes) -> bool:
    """Create ``lock`` holding ``content`` atomically; False if it exists already.

    The content is written to a temporary file first and hard-linked into
    place, so no reader ever sees a half-written lock; where hard links are
    not supported the lock is created directly with ``O_CREAT | O_EXCL``.
    """
    tmp = lock.with_name(f"{lock.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, lock)
            return True
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        try:  # no hard links here
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _take_over(lock: Path, stale: bytes, content: bytes) -> bool:
    """Replace the stale lock whose bytes are ``stale`` by ``content``; False if somebody else changed it first.

    Take-overs are serialized by a second lock, ``<lock>.takeover``, so two
    runs that both find the same stale lock cannot both delete it and each
    believe it holds the folder.
    """
    guard = lock.with_name(lock.name + ".takeover")
    me = json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(), "boot_id": _boot_id()}).encode()
    if not _create(guard, me):
        try:
            other = json.loads(guard.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if isinstance(other, dict) and _is_stale(other):  # a take-over that was killed half-way
            with contextlib.suppress(OSError):
                guard.unlink()
        return False
    try:
        try:
            if lock.read_bytes() != stale:
                return False
        except FileNotFoundError:
            pass
        else:
            lock.unlink()
        return _create(lock, content)
    finally:
        with contextlib.suppress(OSError):
            guard.unlink()


def _acquire(lock: Path, content: bytes, folder: Path) -> None:
    for attempt in range(50):
        if _create(lock, content):
            return
        try:
            stale_bytes = lock.read_bytes()
        except FileNotFoundError:
            continue  # released between our attempt and the read: try again
        holder = read_lock(folder)
        if holder is None:
            continue
        if not holder or not isinstance(holder.get("pid"), int):
            raise StableTrainError(
                f"{folder} holds a lock file that stabletrain cannot read; if no stabletrain run is using the "
                f"folder, delete {lock}")
        if not _is_stale(holder):
            hint = "" if holder.get("hostname") == socket.gethostname() else (
                f"; the run is on another host and cannot be checked from here, so if it is no longer active, "
                f"delete {lock}")
            raise StableTrainError(f"{folder} is in use by another stabletrain run ({_holder_text(holder)}); "
                                   f"wait for it or choose another --out{hint}")
        if _take_over(lock, stale_bytes, content):
            logger.warning("took over the stale lock of %s: its run (%s, %s) is no longer running", folder,
                           holder.get("command", "?"), _holder_text(holder))
            return
        time.sleep(0.01 * min(attempt + 1, 10))  # another run is taking over the same lock
    raise StableTrainError(f"cannot lock {folder}: the lock file {lock} keeps changing; is another run starting?")


def _release(lock: Path, token: str, folder: Path, created: list[Path]) -> None:
    holder = read_lock(folder)
    if holder and holder.get("token") == token:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    elif holder is not None:
        logger.warning("left %s in place: it no longer holds this run's lock", lock)
    for path in created:  # folders this lock created and nothing else filled
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, what: str = "run", *, rank: int | None = None) -> Iterator[Path | None]:
    """Hold ``folder`` for this run: create ``folder/.stabletrain.lock`` on entry, remove it on exit.

    Args:
        folder: the output folder; it is created if missing (and removed
            again on exit if it is still empty).
        what: the command, recorded in the lock for whoever finds it
            (``"train"``, ``"compare"``...).
        rank: the process's rank in a distributed job; ranks other than 0 do
            nothing. None reads the ``RANK`` environment variable (0 if unset).

    Yields the lock file's path (None on ranks other than 0).

    Raises:
        StableTrainError: the folder is in use by a live run (or one on
            another host), or it cannot be created or written.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     with output_lock(root, what="doctest") as lock:
        ...         print(lock.name, read_lock(root)["command"])
        ...     print(read_lock(root))
        .stabletrain.lock doctest
        None
    """
    if rank is None:
        try:
            rank = int(os.environ.get("RANK", "0"))
        except ValueError:
            rank = 0
    if rank != 0:
        yield None
        return
    path = Path(folder)
    lock = path / LOCK_NAME
    try:
        missing = [p for p in [path, *path.parents] if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        key = str(lock.resolve())
    except OSError as err:
        raise StableTrainError(describe_os_error(err, path, folder=True)) from err
    me = threading.get_ident()
    with _held_guard:
        entry = _held.get(key)
        reentered = (entry is not None and entry["thread"] == me
                     and (read_lock(path) or {}).get("token") == entry["token"])
    if reentered:  # the outermost entry releases the lock
        yield lock
        return
    token = uuid.uuid4().hex
    content = (json.dumps(_describe_self(what, token), indent=2) + "\n").encode("utf-8")
    _tokens.add(token)
    try:
        _acquire(lock, content, path)
    except BaseException as err:
        _tokens.discard(token)
        for created in missing:
            with contextlib.suppress(OSError):
                created.rmdir()
        if isinstance(err, OSError):
            raise StableTrainError(describe_os_error(err, path, folder=True, what="cannot lock output folder")) from err
        raise
    entry = {"token": token, "thread": me}
    with _held_guard:
        _held[key] = entry
    try:
        yield lock
    finally:
        with _held_guard:
            if _held.get(key) is entry:
                del _held[key]
        _release(lock, token, path, missing)
        _tokens.discard(token)
