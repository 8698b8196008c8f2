"""Single-instance lock: `.autogolf/lock`, so one daemon (and one benchmark) runs at a time.

The lock file is created atomically (O_CREAT | O_EXCL) and holds JSON naming its owner:
pid, the process's create time, hostname, start time and a random token. A lock whose owner
is gone is stale and taken over: the pid no longer exists, or it exists but with another
create time (the pid was reused by an unrelated process after a crash or reboot).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

log = logging.getLogger(__name__)

# A lock file with no readable content is normally a writer caught between create and
# write; only after this long is it treated as left by a crash.
_UNREADABLE_GRACE_S = 5.0
# psutil create times are rounded differently across platforms; this is far below any
# realistic gap between a dead process and a new one reusing its pid.
_CREATE_TIME_TOLERANCE_S = 1.0


class LockHeld(Exception):
    """Another live process holds the lock; `pid` names it (None if it cannot be read)."""

    def __init__(self, message: str, pid: int | None = None, hostname: str | None = None):
        super().__init__(message)
        self.pid = pid
        self.hostname = hostname


class DaemonLock:
    """Context manager on a lock file; `taken_over` says whose stale lock was replaced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.taken_over: str | None = None
        self._token: str | None = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._token is not None

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; raise LockHeld if a live owner has it."""
        if self.held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Two rounds: a stale lock is moved away in the first, then created in the second.
        for _ in range(2):
            if self._try_create():
                return
            owner = _read(self.path)
            reason = _stale_reason(owner, self.path)
            if reason is None:
                raise _held_error(owner, self.path)
            self._take_over(owner, reason)
        raise LockHeld(f"{self.path}: another process took the lock while this one started")

    def release(self) -> None:
        """Remove the lock file, but only when it is still ours."""
        if self._token is None:
            return
        owner = _read(self.path)
        if owner is not None and owner.get("token") == self._token:
            self.path.unlink(missing_ok=True)
        self._token = None

    def _try_create(self) -> bool:
        token = uuid.uuid4().hex
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(_owner_record(token)).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._token = token
        return True

    def _take_over(self, owner: dict[str, Any] | None, reason: str) -> None:
        """Move the stale lock aside, checking that it is still the file we judged stale."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it meanwhile; the next round competes for it
        if _read(aside) != owner:
            # A competitor replaced the stale lock with a live one between our read and the
            # rename: put theirs back (link fails if yet another appeared) and give up.
            try:
                os.link(aside, self.path)
            finally:
                aside.unlink(missing_ok=True)
            raise _held_error(_read(self.path), self.path)
        aside.unlink(missing_ok=True)
        self.taken_over = f"took over a stale lock {self.path}: {reason}"
        log.warning(self.taken_over)


def _owner_record(token: str) -> dict[str, Any]:
    me = psutil.Process()
    return {
        "pid": me.pid,
        "create_time": me.create_time(),
        "hostname": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "token": token,
    }


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's owner record, or None when the file is missing, empty or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _stale_reason(owner: dict[str, Any] | None, path: Path) -> str | None:
    """Why the lock is stale, or None when its owner may still be alive."""
    if owner is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "it vanished"
        if age < _UNREADABLE_GRACE_S:
            return None
        return "its content is unreadable (a crash while it was being written)"
    if owner.get("hostname") != socket.gethostname():
        return None  # another machine's process: we cannot see it, so never steal
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return "it names no pid"
    try:
        process = psutil.Process(pid)
        created = process.create_time()
        if process.status() == psutil.STATUS_ZOMBIE:
            return f"process {pid} has exited"
    except psutil.NoSuchProcess:
        return f"process {pid} is not running"
    except psutil.AccessDenied:
        return None  # it exists and belongs to someone else: assume alive
    recorded = owner.get("create_time")
    if isinstance(recorded, (int, float)) and abs(created - recorded) > _CREATE_TIME_TOLERANCE_S:
        return f"process {pid} is not running (its pid now belongs to another process)"
    return None


def _held_error(owner: dict[str, Any] | None, path: Path) -> LockHeld:
    if owner is None:
        return LockHeld(f"{path} is being created by another process; try again in a moment")
    pid, host = owner.get("pid"), owner.get("hostname")
    message = (
        f"another autogolf process holds {path}: pid {pid} on {host}, "
        f"started {owner.get('started')}. Stop it first (or wait for it to finish); "
        "delete the file only if you are sure that process is gone."
    )
    return LockHeld(message, pid=pid if isinstance(pid, int) else None, hostname=host)
