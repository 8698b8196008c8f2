"""Run one child command (checks, benchmark, agent) so that nothing it starts outlives it.

The child gets its own session and process group; stdout and stderr are merged and copied
as they arrive to a log file (flushed) and, line by line, to an optional callback. On timeout
or when `stop()` says so, the whole group gets SIGTERM, then SIGKILL after a grace period.
Descendants that left the group (setsid, double fork) are tracked with psutil while the
child runs and are killed too, also when the child itself exits normally: no orphans.
"""

from __future__ import annotations

import os
import resource
import selectors
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

# Environment variable set to a per-run token in the child; every descendant inherits it,
# which finds the ones that escaped both the process group and our view of the tree.
MARKER = "AUTOGOLF_RUN_TOKEN"
# How often the loop wakes up to check the clock, stop() and the process tree when the
# child prints nothing: short enough that a stop is prompt, long enough to cost no CPU.
_POLL_S = 0.1
# How often the process tree is scanned for descendants (a scan of every process, so not
# per output chunk); `sweep` at the end catches what these scans miss.
_REFRESH_S = 1.0
# After the child exits, how long to wait for output still buffered in the pipe (a
# descendant that escaped the group can keep the pipe open forever).
_DRAIN_S = 1.0


@dataclass
class RunResult:
    """How a command ended: `exit_code` is None when we killed it (timeout or stop)."""

    exit_code: int | None
    timed_out: bool
    wall_s: float
    log_path: Path
    stopped: bool = False  # stop() asked for the end (not the timeout)
    pid: int | None = None
    # CPU seconds (user + system) of the child and every descendant it waited for, as the
    # kernel counted them: what the run spent on the CPU, whatever else loads the machine.
    cpu_s: float | None = None


def run_command(
    command: str | list[str],
    cwd: Path,
    env: dict[str, str] | None,
    timeout_s: float,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
    *,
    grace_s: float = 10.0,
    on_start: Callable[[int], None] | None = None,
) -> RunResult:
    """Run `command` (a string runs under /bin/sh) in `cwd`; wait for it, kill it on timeout.

    `env` is the child's whole environment (None = inherit ours), plus MARKER. Output goes
    to `log_path` (overwritten) and each complete line, without its newline, to `on_line`.
    `on_start` gets the child's pid (e.g. for a memory watchdog that then answers through
    `stop`). A child killed by a signal that was not ours reports the negative signal number.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    child_env = dict(os.environ if env is None else env)
    child_env[MARKER] = token
    start = time.monotonic()
    cpu_before = _children_cpu()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            shell=isinstance(command, str),
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stream = _Stream(process, log, on_line)
        tracker = _Tracker(process.pid, token)
        ended: str | None = "error"  # stays so if a callback raises (or Ctrl-C): kill then
        try:
            if on_start is not None:
                on_start(process.pid)
            ended = _supervise(process, stream, tracker, start + timeout_s, stop)
        finally:
            _finish(process, stream, tracker, grace_s, killing=ended is not None)
    return RunResult(
        exit_code=None if ended else process.returncode,
        timed_out=ended == "timeout",
        wall_s=time.monotonic() - start,
        log_path=log_path,
        stopped=ended == "stop",
        pid=process.pid,
        cpu_s=_children_cpu() - cpu_before,
    )


def _children_cpu() -> float:
    """User + system CPU seconds of this process's reaped children so far. The daemon runs
    one child at a time, so the difference around a run is that run's (its descendants
    are counted once each has been waited for: a sandbox's init waits for all of them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _finish(
    process: subprocess.Popen, stream: _Stream, tracker: _Tracker, grace_s: float, killing: bool
) -> None:
    """End the child's whole tree (if `killing`) and leftovers, and collect the last output."""
    if killing:
        tracker.sweep()
        _terminate(process, tracker, grace_s)
    stream.drain(_DRAIN_S)
    # Anything left in the group, or escaped from it, after the child ended is an orphan.
    tracker.sweep()
    _terminate(process, tracker, grace_s)
    stream.drain(_DRAIN_S)
    stream.close()


def _supervise(
    process: subprocess.Popen,
    stream: _Stream,
    tracker: _Tracker,
    deadline: float,
    stop: Callable[[], bool] | None,
) -> str | None:
    """Pump output until the child exits (None), times out ("timeout") or is stopped ("stop")."""
    refreshed = 0.0
    while process.poll() is None:
        stream.pump(_POLL_S)
        if time.monotonic() - refreshed >= _REFRESH_S:
            tracker.refresh()
            refreshed = time.monotonic()
        if time.monotonic() >= deadline:
            return "timeout"
        if stop is not None and stop():
            return "stop"
    return None


class _Stream:
    """Copies the child's merged output to the log file and, per line, to the callback."""

    def __init__(self, process: subprocess.Popen, log, on_line: Callable[[str], None] | None):
        assert process.stdout is not None
        self._fd = process.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._log = log
        self._on_line = on_line
        self._partial = b""
        self._open = True

    def pump(self, wait_s: float) -> None:
        """Read what is available within `wait_s`."""
        if not self._open:
            time.sleep(wait_s)
            return
        if self._selector.select(wait_s):
            self._read()

    def drain(self, limit_s: float) -> bool:
        """Read until end of file (True), or until `limit_s` passes without it (False)."""
        deadline = time.monotonic() + limit_s
        while self._open and time.monotonic() < deadline:
            self.pump(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        return not self._open

    def close(self) -> None:
        if self._partial:
            self._emit(self._partial)  # the last line had no newline
            self._partial = b""
        self._selector.close()
        self._open = False

    def _read(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._selector.unregister(self._fd)
            self._open = False
            return
        self._log.write(chunk)
        self._log.flush()
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._emit(line)

    def _emit(self, line: bytes) -> None:
        if self._on_line is not None:
            self._on_line(line.decode("utf-8", errors="replace").rstrip("\r"))


class _Tracker:
    """Remembers every descendant seen, so those that escape the group can be found later."""

    def __init__(self, pid: int, token: str) -> None:
        self.pgid = pid
        self.token = token
        self.seen: dict[int, psutil.Process] = {}
        try:
            self._root: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._root = None
        self.refresh()

    def refresh(self) -> None:
        if self._root is None:
            return
        try:
            children = self._root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            self.seen.setdefault(child.pid, child)
        # Children of remembered processes that were reparented after their parent died.
        for known in list(self.seen.values()):
            try:
                for child in known.children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                continue

    def sweep(self) -> None:
        """Find processes carrying our environment marker: descendants whose parent died
        before `refresh` saw them (a quick double fork). Reads every process's environment
        (about 10 ms per 100 processes), so it runs only when the child has ended."""
        me = os.getpid()
        for process in psutil.process_iter():
            if process.pid == me or process.pid in self.seen:
                continue
            try:
                if process.environ().get(MARKER) == self.token:
                    self.seen[process.pid] = process
            except (psutil.Error, OSError):
                continue  # gone, or not ours to read (then it is not our descendant)

    def alive(self) -> list[psutil.Process]:
        """Remembered descendants still running (psutil checks pid reuse by create time)."""
        return [p for p in self.seen.values() if p.is_running() and not _is_zombie(p)]


def _is_zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _terminate(process: subprocess.Popen, tracker: _Tracker, grace_s: float) -> None:
    """SIGTERM the group and every live descendant; SIGKILL whatever is left after grace."""
    tracker.refresh()
    if not _signal_all(process, tracker, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()
        if process.returncode is not None and not _group_alive(tracker) and not tracker.alive():
            return
        time.sleep(0.05)
        tracker.refresh()
    _signal_all(process, tracker, signal.SIGKILL)
    process.wait()
    psutil.wait_procs(tracker.alive(), timeout=grace_s)


def _signal_all(process: subprocess.Popen, tracker: _Tracker, sig: int) -> bool:
    """Send `sig` to the group and to live descendants; False when nothing was left."""
    sent = False
    if process.poll() is None or _group_alive(tracker):
        try:
            os.killpg(tracker.pgid, sig)
            sent = True
        except ProcessLookupError:
            pass
    for descendant in tracker.alive():
        try:
            descendant.send_signal(sig)
            sent = True
        except psutil.NoSuchProcess:
            continue
    return sent


def _group_alive(tracker: _Tracker) -> bool:
    """True while any process remains in the child's process group."""
    try:
        os.killpg(tracker.pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
