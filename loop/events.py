"""What the loop tells its subscribers while it works.

The scheduler only emits these events; what happens on them is each subscriber's job: the
live display (loop.ui.progress), the bookkeeping in the backlog (loop.backlog.bookkeeping),
the shared workspace (loop.workspace.hook). Every method is a no-op here, so a subscriber
overrides only what it needs, and `RunEvents()` is the silent default. A subscriber must be
quick: `output_line` runs once per line of trainer output. A subscriber that raises never
stops the loop (`EventBus`); it is told once, as a warning.

The module sits at the root of the package, below the daemon and its subscribers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class RunEvents:
    """The events of one `autogolf run` (and of `autogolf bench`, which uses a few)."""

    def session_opened(self, session: str, dataset: str | None) -> None:
        """The session is open (new or continued) on this dataset."""

    def proposing(self, exp_id: str, proposer: str) -> None:
        """The proposer is about to be asked for a change for `exp_id` (an agent may take
        minutes)."""

    def nothing_proposed(self) -> None:
        """The proposer had nothing left; the run stops."""

    def experiment_started(self, exp_id: str, proposer: str, idea: str | None,
                           description: str) -> None:
        """`exp_id` has its change (or is a baseline, proposer "baseline") and starts."""

    def rung_started(self, exp_id: str | None, profile: str, tag: str = "") -> None:
        """A benchmark of `exp_id` at `profile` starts (None: a manual bench); `tag` marks an
        extra run of the same rung (a re-run or a noise calibration run, e.g. "-r2")."""

    def output_line(self, line: str) -> None:
        """One line of the running benchmark's output, without its newline."""

    def recording(self, exp: Any, row: dict) -> None:
        """`row` is about to be appended for `exp`; a subscriber may add its own field."""

    def decided(self, exp_id: str, status: str, reason: str | None) -> None:
        """`exp_id`'s row was written with this status and reason."""

    def recorded(self, row: dict) -> None:
        """`row` is in the ledger (after `decided`)."""

    def stopped(self, reason: str) -> None:
        """The run ended (its stop row says `reason`), also on an error."""


class EventBus(RunEvents):
    """Forwards every event to each subscriber in order; a failing one is reported once and
    never stops the loop or the subscribers after it."""

    def __init__(self, subscribers: Sequence[RunEvents],
                 warn: Callable[[str], None] = lambda _: None):
        self.subscribers = list(subscribers)
        self._warn = warn
        self._reported: set[tuple[int, str]] = set()

    def _emit(self, event: str, *args: Any) -> None:
        for subscriber in self.subscribers:
            try:
                getattr(subscriber, event)(*args)
            except Exception as exc:  # noqa: BLE001 - a subscriber never stops the loop
                key = (id(subscriber), event)
                if key not in self._reported:
                    self._reported.add(key)
                    self._warn(f"{type(subscriber).__name__}.{event} failed: "
                               f"{type(exc).__name__}: {exc}")

    def session_opened(self, *args: Any) -> None:
        self._emit("session_opened", *args)

    def proposing(self, *args: Any) -> None:
        self._emit("proposing", *args)

    def nothing_proposed(self) -> None:
        self._emit("nothing_proposed")

    def experiment_started(self, *args: Any) -> None:
        self._emit("experiment_started", *args)

    def rung_started(self, *args: Any) -> None:
        self._emit("rung_started", *args)

    def output_line(self, line: str) -> None:
        self._emit("output_line", line)

    def recording(self, exp: Any, row: dict) -> None:
        self._emit("recording", exp, row)

    def decided(self, *args: Any) -> None:
        self._emit("decided", *args)

    def recorded(self, row: dict) -> None:
        self._emit("recorded", row)

    def stopped(self, reason: str) -> None:
        self._emit("stopped", reason)
