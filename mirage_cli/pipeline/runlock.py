"""The run lock: one mirage process per run directory.

An advisory ``fcntl.flock`` on ``.<name>.mirage.lock`` *beside* the run directory (not inside it,
so the lock stays put while ``--overwrite`` renames the old run aside). The file records the
holder's PID and host. The kernel drops a flock when its process dies, so a lock file that is
still there but not locked is stale (its process was killed): it is taken over with a warning.
The file is removed on release.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import MirageError

if sys.platform != "win32":  # Windows has no fcntl: no advisory locks there; runs are then unguarded (documented)
    import fcntl


def lock_path(out: Path) -> Path:
    """``outputs/run`` -> ``outputs/.run.mirage.lock``."""
    return out.parent / f".{out.name}.mirage.lock"


class RunLock:
    """Exclusive lock on one run directory for the life of a run (``generate`` or ``--resume``)."""

    def __init__(self, out: Path):
        self.out = out
        self.path = lock_path(out)
        self.fd: int | None = None

    def acquire(self, warn: Callable[[str], None]) -> RunLock:
        """Take the lock or raise a one-line MirageError naming the process that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MirageError(f"{self.out.parent}: cannot write here ({e.strerror or e})") from e
        if sys.platform == "win32":
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise MirageError(f"{self.path}: cannot create the run lock ({e.strerror or e})") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise MirageError(f"{self.out}: another mirage process ({_describe(holder)}) is writing this run; "
                                  "wait for it to finish or choose another --out") from None
            # A releasing holder unlinks the file after we opened it: our lock is then on a dead
            # inode that nobody else sees; start over on the current file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_holder(fd)
        if stale:
            warn(f"{self.out}: taking over a stale run lock ({_describe(stale)}, no longer running)")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file, then unlock (in that order, see the inode check in acquire)."""
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass  # a leftover unlocked file is only a stale lock, taken over next time
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode()) if data else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "PID unknown"
    return f"PID {holder.get('pid')} on {holder.get('host')}"
