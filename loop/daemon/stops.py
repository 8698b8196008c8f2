"""A stop request during `autogolf run`: a signal, the deadline, or the stop file.

Two strengths: a signal (SIGINT/SIGTERM) or the time limit (--until, or --hours of awake
time) *stops* - the child in flight is ended and the experiment is `interrupted` - and is
polled by the runner while a benchmark, the checks or an agent run, and by the judge while it
scores; the stop file only *requests* a stop at the next step boundary (the run in flight
finishes). Every run stops at them: baselines, incumbent re-measures and `full` runs too.
A wait (an agent's backoff after a rate limit) ends at either: nothing is in flight.
When the loop stops between experiments is loop.daemon.stoprules'; every way a run ends is
listed in loop.measure.endings.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

from loop.daemon.awake import AwakeBudget
from loop.daemon.session import Paths
from loop.daemon.stoprules import StopRules
from loop.judge.verdict import Abandon

TIME_LIMIT = "the time limit (--until/--hours)"


class Stops:
    """The stop state of one run: the signal (or time limit) seen, and the stop file."""

    def __init__(self, rules: StopRules, paths: Paths):
        self.rules = rules
        self.paths = paths
        self.signal: str | None = None  # the signal's name, or TIME_LIMIT, once stopped
        self.budget: AwakeBudget | None = None  # --hours, from when the run started

    def note_signal(self, name: str) -> None:
        """A signal arrived (the handler only sets the flag: printing there could re-enter a
        print in progress; the runner's stop poll then ends the child)."""
        self.signal = name

    def stopping(self) -> bool:
        """A stop signal, or the deadline passed: end the child in flight now."""
        deadline = self.rules.deadline
        if self.signal is None and (
                (deadline is not None and time.time() >= deadline)
                or (self.budget is not None and self.budget.expired())):
            self.signal = TIME_LIMIT
        return self.signal is not None

    def requested(self) -> str | None:
        """Why to stop at the next step boundary: a signal or the deadline (which also end
        the child in flight), or the stop file (which lets the run in flight finish: the
        experiment is then `interrupted`, its patch kept, before its next run)."""
        if self.stopping():
            return self.signal
        stop_file = self.rules.stop_file
        if stop_file is not None and stop_file.exists():
            return f"the stop file {self.paths.rel(stop_file)}"
        return None

    def asked_to_stop(self) -> bool:
        """A stop of either strength: what ends a wait (an agent's backoff after a rate
        limit), where nothing is in flight that the stop file would let finish."""
        return self.requested() is not None

    def abandon_if_requested(self, when: str) -> None:
        """Raise Abandon (the experiment is `interrupted`) when a stop was requested."""
        why = self.requested()
        if why:
            raise Abandon(f"stopped by {why} {when}")


@contextlib.contextmanager
def catch_stop_signals(on_signal: Callable[[str], None]) -> Iterator[None]:
    """SIGINT/SIGTERM call `on_signal(name)` instead of killing us (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        on_signal(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
