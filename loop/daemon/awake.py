"""Sleep awareness: a clock that stops while the machine sleeps, and keeping the Mac awake.

`--hours H` is a budget of work: a laptop that slept for two hours of an eight-hour night
did six hours of experiments, and the budget should say so. It is counted on a clock that
does not advance during system sleep:
- macOS: `CLOCK_UPTIME_RAW` ("not incremented while the system is asleep", Python >= 3.8;
  it is mach_absolute_time in nanoseconds). Chosen by name rather than through
  time.monotonic, whose macOS source is an implementation detail of CPython;
- Linux: `CLOCK_MONOTONIC`, which excludes suspend (CLOCK_BOOTTIME is the one that counts it);
- elsewhere: time.monotonic.
`--until HH:MM` stays a wall-clock deadline (time.time): 07:30 is 07:30, slept or not.

`keep_awake()` holds a `caffeinate -i -w <our pid>` on macOS for the duration of
`autogolf run`, so the Mac does not idle-sleep mid-benchmark; `-w` ends the assertion when
the daemon dies, even by SIGKILL. Nothing happens on Linux or without caffeinate.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator


def awake_clock() -> Callable[[], float]:
    """The best clock (seconds) of this platform that does not count system sleep."""
    if sys.platform == "darwin" and hasattr(time, "CLOCK_UPTIME_RAW"):
        clock_id = time.CLOCK_UPTIME_RAW
        return lambda: time.clock_gettime(clock_id)
    if sys.platform.startswith("linux") and hasattr(time, "CLOCK_MONOTONIC"):
        clock_id = time.CLOCK_MONOTONIC
        return lambda: time.clock_gettime(clock_id)
    return time.monotonic


class AwakeBudget:
    """`hours` of awake time from now: `expired()` once they are used up."""

    def __init__(self, hours: float, clock: Callable[[], float] | None = None) -> None:
        if not hours > 0:
            raise ValueError(f"hours must be > 0, got {hours}")
        self.clock = clock or awake_clock()
        self.limit_s = hours * 3600.0
        self.start = self.clock()

    def used_s(self) -> float:
        return self.clock() - self.start

    def expired(self) -> bool:
        return self.used_s() >= self.limit_s


def caffeinate_command(pid: int, platform: str | None = None) -> list[str] | None:
    """The command that keeps the machine awake while `pid` lives, or None (not macOS)."""
    if (platform or sys.platform) != "darwin":
        return None
    exe = shutil.which("caffeinate")
    return [exe, "-i", "-w", str(pid)] if exe else None


@contextlib.contextmanager
def keep_awake(platform: str | None = None) -> Iterator[subprocess.Popen | None]:
    """Keep the machine from idle-sleeping inside the block (macOS); yields the helper."""
    command = caffeinate_command(os.getpid(), platform)
    helper = None
    if command is not None:
        try:
            helper = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            helper = None  # no caffeinate after all: run anyway, awake or not
    try:
        yield helper
    finally:
        if helper is not None and helper.poll() is None:
            helper.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                helper.wait(timeout=5)
