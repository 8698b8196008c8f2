"""Memory watchdog and run guard (loop.measure.watchdog)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil
import pytest

from loop.measure import watchdog
from loop.measure.earlyabort import Abort, EarlyAbort
from loop.measure.watchdog import MemoryWatchdog, RunGuard, tree_rss

# A parent that starts a child holding ~120 MB, then both wait: the memory is in the tree,
# not in the process the watchdog is attached to.
HOG_IN_CHILD = textwrap.dedent("""
    import subprocess, sys, time
    code = ("import sys, time; x = b'\\\\1' * (120 << 20); print('ready', flush=True); "
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    child.stdout.readline()
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def hog():
    proc = subprocess.Popen([sys.executable, "-c", HOG_IN_CHILD], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    for child in psutil.Process(proc.pid).children(recursive=True):
        child.kill()
    proc.kill()
    proc.wait()


def test_tree_rss_counts_the_descendants(hog):
    assert tree_rss(hog.pid) > 120 * watchdog.MB
    assert psutil.Process(hog.pid).memory_info().rss < 60 * watchdog.MB


def test_tree_rss_of_a_gone_process_is_zero():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert tree_rss(proc.pid) == 0


def test_a_tree_over_the_memory_limit_is_reported_as_oom(hog):
    dog = MemoryWatchdog(max_memory_mb=80)
    dog.attach(hog.pid)
    reason = dog.check()
    assert reason is not None and reason.startswith("oom: ")
    assert "limits.max_memory_mb 80" in reason
    assert dog.peak_bytes > 120 * watchdog.MB


def test_a_tree_under_the_limit_is_left_alone(hog):
    dog = MemoryWatchdog(max_memory_mb=4096)
    dog.attach(hog.pid)
    assert dog.check() is None


def test_a_machine_under_the_available_memory_floor_is_reported_as_oom(hog):
    floor = psutil.virtual_memory().total // watchdog.MB + 1  # more than the machine has
    dog = MemoryWatchdog(min_available_mb=floor)
    dog.attach(hog.pid)
    reason = dog.check()
    assert reason is not None and reason.startswith("oom: ")
    assert f"limits.min_available_memory_mb {floor}" in reason


def test_zero_limits_disable_the_watchdog(monkeypatch):
    monkeypatch.setattr(watchdog, "tree_rss", lambda pid: pytest.fail("measured"))
    dog = MemoryWatchdog(0, 0)
    dog.attach(1)
    assert not dog.enabled and dog.check() is None


def test_checks_are_rate_limited_by_the_clock(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(watchdog, "tree_rss", lambda pid: calls.append(pid) or 0)
    now = [0.0]
    dog = MemoryWatchdog(max_memory_mb=10, every_s=0.5, clock=lambda: now[0])
    dog.attach(42)
    dog.check()
    now[0] = 0.4
    dog.check()
    now[0] = 0.6
    dog.check()
    assert calls == [42, 42]


def test_guard_forwards_lines_and_stops_on_divergence():
    seen: list[str] = []
    guard = RunGuard(None, EarlyAbort(100, 0.0), clock=lambda: 1.0, forward=seen.append)
    guard.on_line("step:1/9 train_loss:4.0 train_time:1ms step_avg:1.00ms")
    assert not guard.stop()
    guard.on_line("step:2/9 train_loss:nan train_time:2ms step_avg:1.00ms")
    assert guard.stop() and guard.verdict == Abort("crash", "diverged: train_loss nan at step 2/9")
    assert len(seen) == 2


def test_guard_turns_a_watchdog_reason_into_a_crash(hog):
    guard = RunGuard(MemoryWatchdog(max_memory_mb=80), None)
    guard.on_start(hog.pid)
    assert guard.stop()
    assert guard.verdict is not None and guard.verdict.status == "crash"
    assert guard.verdict.reason.startswith("oom: ")


def test_guard_for_leaves_out_a_disabled_watchdog():
    assert watchdog.guard_for(10, 0, 0).watchdog is None
    assert watchdog.guard_for(10, 100, 0).watchdog is not None
