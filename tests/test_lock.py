"""The single-instance lock: one live owner, stale owners taken over, release only our own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loop.daemon.lock import DaemonLock, LockHeld


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / ".autogolf" / "lock"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def _write_owner(path: Path, pid: int, **fields) -> None:
    record = {
        "pid": pid,
        "create_time": psutil.Process(pid).create_time() if psutil.pid_exists(pid) else 0.0,
        "hostname": socket.gethostname(),
        "started": "2026-11-23T01:00:00+00:00",
        "token": "someone-else",
    }
    record.update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_acquire_writes_pid_start_time_and_hostname(lock_path: Path) -> None:
    lock = DaemonLock(lock_path)
    lock.acquire()
    record = json.loads(lock_path.read_text())
    assert record["pid"] == os.getpid()
    assert record["hostname"] == socket.gethostname()
    assert record["create_time"] == pytest.approx(psutil.Process().create_time())
    assert record["started"]
    lock.release()


def test_a_second_lock_is_refused_naming_the_pid(lock_path: Path) -> None:
    with DaemonLock(lock_path):
        with pytest.raises(LockHeld, match=str(os.getpid())) as info:
            DaemonLock(lock_path).acquire()
    assert info.value.pid == os.getpid()


def test_lock_held_by_a_live_process_is_refused(lock_path: Path, sleeper) -> None:
    _write_owner(lock_path, sleeper.pid)
    with pytest.raises(LockHeld, match=f"pid {sleeper.pid}"):
        DaemonLock(lock_path).acquire()
    assert json.loads(lock_path.read_text())["pid"] == sleeper.pid


def test_lock_of_a_dead_pid_is_taken_over_with_a_message(lock_path: Path) -> None:
    dead = _dead_pid()
    _write_owner(lock_path, dead)
    lock = DaemonLock(lock_path)
    lock.acquire()
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert lock.taken_over is not None and f"process {dead} is not running" in lock.taken_over
    lock.release()


def test_lock_of_a_reused_pid_is_taken_over(lock_path: Path, sleeper) -> None:
    # The pid is alive but started at another time than the one the lock recorded.
    _write_owner(
        lock_path, sleeper.pid, create_time=psutil.Process(sleeper.pid).create_time() - 3600
    )
    lock = DaemonLock(lock_path)
    lock.acquire()
    assert "another process" in (lock.taken_over or "")
    lock.release()


def test_lock_from_another_host_is_never_taken_over(lock_path: Path) -> None:
    _write_owner(lock_path, _dead_pid(), hostname="some-other-mac")
    with pytest.raises(LockHeld, match="some-other-mac"):
        DaemonLock(lock_path).acquire()


def test_freshly_created_empty_lock_is_treated_as_held(lock_path: Path) -> None:
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text("")
    with pytest.raises(LockHeld, match="being created"):
        DaemonLock(lock_path).acquire()


def test_old_unreadable_lock_is_taken_over(lock_path: Path) -> None:
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text("{garbage")
    old = time.time() - 60
    os.utime(lock_path, (old, old))
    lock = DaemonLock(lock_path)
    lock.acquire()
    assert "unreadable" in (lock.taken_over or "")
    lock.release()


def test_release_removes_the_file(lock_path: Path) -> None:
    lock = DaemonLock(lock_path)
    lock.acquire()
    lock.release()
    assert not lock_path.exists()


def test_release_leaves_a_lock_that_is_not_ours(lock_path: Path, sleeper) -> None:
    lock = DaemonLock(lock_path)
    lock.acquire()
    _write_owner(lock_path, sleeper.pid)  # e.g. an operator removed ours and another took it
    lock.release()
    assert json.loads(lock_path.read_text())["pid"] == sleeper.pid


def test_context_manager_releases_after_an_error(lock_path: Path) -> None:
    with pytest.raises(RuntimeError), DaemonLock(lock_path):
        raise RuntimeError("boom")
    assert not lock_path.exists()


def test_lock_of_a_killed_daemon_process_is_taken_over(lock_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from loop.daemon.lock import DaemonLock\n"
            "DaemonLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)",
            str(lock_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
            DaemonLock(lock_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = DaemonLock(lock_path)
    lock.acquire()
    assert lock.taken_over is not None
    lock.release()
