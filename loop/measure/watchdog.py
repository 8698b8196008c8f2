"""Memory watchdog for the benchmark, and the guard that asks the runner to stop a lost run.

A Mac that runs out of memory does not crash the trainer: it swaps until the machine is of
no use to anyone, and the run ends at its timeout hours later, if at all. The watchdog reads
(psutil) the resident memory of the benchmark's whole process tree and the machine's
available memory; past `limits.max_memory_mb`, or under `limits.min_available_memory_mb`,
it gives a reason starting with `oom:` and the run is stopped. The row is a `crash` whose
reason says `oom` (SPEC's status list is fixed; the reason tells the cause apart).

On Apple silicon, memory MLX allocates for the GPU (Metal buffers) may not all show in a
process's RSS; the machine's available memory sees every allocation, so the floor
(`min_available_memory_mb`) is the guard to rely on there, the RSS limit a second one.

`RunGuard` puts the watchdog, the early abort (loop.measure.earlyabort), the pruner
(loop.measure.pruning) and the daemon's own stop behind the runner's three hooks:
`on_start(pid)`, `on_line(line)` and `stop()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

from loop.measure.earlyabort import Abort, EarlyAbort
from loop.measure.pruning import CurvePruner

MB = 1024 * 1024
# psutil reads every process of the tree: twice a second is prompt enough for memory that
# grows at most a few GB per second, and costs well under 1% of a core.
CHECK_EVERY_S = 0.5


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (0 when it is gone).

    Shared pages are counted once per process, so this errs on the high side.
    """
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue  # exited between the listing and the read
    return total


def available_bytes() -> int:
    return psutil.virtual_memory().available


class MemoryWatchdog:
    """Says `oom: ...` once the watched tree uses too much or the machine has too little.

    0 disables a limit. Checks at most every `every_s` seconds of `clock`.
    """

    def __init__(self, max_memory_mb: int = 0, min_available_mb: int = 0,
                 every_s: float = CHECK_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_memory_mb * MB
        self.min_available = min_available_mb * MB
        self.every_s = every_s
        self.clock = clock
        self.pid: int | None = None
        self.peak_bytes = 0
        self._next = 0.0
        self._reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 or self.min_available > 0

    def attach(self, pid: int) -> None:
        self.pid = pid
        self._next = 0.0

    def check(self) -> str | None:
        """The reason to stop, or None; cheap between two real checks."""
        if self._reason or not self.enabled or self.pid is None:
            return self._reason
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.every_s
        self._reason = self._measure()
        return self._reason

    def _measure(self) -> str | None:
        if self.max_bytes:
            used = tree_rss(self.pid) if self.pid is not None else 0
            self.peak_bytes = max(self.peak_bytes, used)
            if used > self.max_bytes:
                return (f"oom: the benchmark's processes use {used // MB} MB > "
                        f"limits.max_memory_mb {self.max_bytes // MB}; stopped")
        if self.min_available:
            free = available_bytes()
            if free < self.min_available:
                return (f"oom: the machine has {free // MB} MB available < "
                        f"limits.min_available_memory_mb {self.min_available // MB}; "
                        "benchmark stopped before the machine swaps")
        return None


def describe(max_memory_mb: int, min_available_mb: int) -> str:
    """The watchdog's setting in words, for the line the daemon prints at start."""
    limits = [f"a benchmark over {max_memory_mb} MB (limits.max_memory_mb)"
              if max_memory_mb > 0 else "",
              f"a benchmark while the machine has under {min_available_mb} MB available "
              "(limits.min_available_memory_mb)" if min_available_mb > 0 else ""]
    on = [limit for limit in limits if limit]
    if on:
        return "memory watchdog: on, it stops " + " and ".join(on)
    return ("memory watchdog: off (a run that outgrows memory swaps until its timeout; set "
            "limits.max_memory_mb or limits.min_available_memory_mb in autogolf.yaml)")


class RunGuard:
    """The runner's hooks for one benchmark: memory watchdog plus early abort.

    `on_line` passes each line on to `forward` (e.g. a progress display) after reading it.
    `verdict` is the Abort that stopped the run (None: nothing did).
    """

    def __init__(self, watchdog: MemoryWatchdog | None, early: EarlyAbort | None,
                 clock: Callable[[], float] = time.monotonic,
                 forward: Callable[[str], None] | None = None,
                 pruner: CurvePruner | None = None) -> None:
        self.watchdog = watchdog
        self.early = early
        self.pruner = pruner  # a candidate run against the incumbent's curve (issue 26)
        self.clock = clock
        self.forward = forward
        # The daemon's stop (a signal, the deadline): ends the run with no verdict of its own.
        self.daemon_stop: Callable[[], bool] | None = None
        self.verdict: Abort | None = None

    def on_start(self, pid: int) -> None:
        if self.watchdog is not None:
            self.watchdog.attach(pid)

    def on_line(self, line: str) -> None:
        if self.early is not None and self.verdict is None:
            self.verdict = self.early.feed(line, self.clock())
        if self.pruner is not None and self.verdict is None:
            self.verdict = self.pruner.feed(line)
        if self.forward is not None:
            self.forward(line)

    def stop(self) -> bool:
        """True once the run should end (then `verdict` says why, unless the daemon asked)."""
        if self.daemon_stop is not None and self.daemon_stop():
            return True
        if self.verdict is None and self.watchdog is not None:
            reason = self.watchdog.check()
            if reason:
                self.verdict = Abort("crash", reason)
        return self.verdict is not None


def guard_for(timeout_s: float, max_memory_mb: int, min_available_mb: int,
              forward: Callable[[str], None] | None = None,
              clock: Callable[[], float] = time.monotonic) -> RunGuard:
    """A guard for a benchmark with this timeout and these memory limits, started now."""
    watchdog = MemoryWatchdog(max_memory_mb, min_available_mb, clock=clock)
    return RunGuard(watchdog if watchdog.enabled else None,
                    EarlyAbort(timeout_s, clock()), clock=clock, forward=forward)
