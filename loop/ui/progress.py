"""The live display of `autogolf run` and `autogolf bench`.

`LiveStatus` observes the loop's events (loop.events) and the benchmark's output lines. On a
terminal it keeps one status line, rewritten in place and cut to the terminal's width:

    E0007 breadth [=========>          ] 140/300 ETA 3m10s | search: MATRIX_LR 0.04 -> 0.05

and the loop's own messages scroll above it. Anywhere else (launchd, a tmux log, a pipe) it
writes plain lines, and only a few per benchmark: one per 10% of the steps, one per phase
change, and at least one a minute while output flows, so a night's log stays readable.

Step, total and ETA come from loop.measure.logparse's ProgressEstimator, the same reading of the
trainer's `step:s/n` lines that `autogolf status` uses.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from loop.events import RunEvents
from loop.measure.logparse import Progress, ProgressEstimator, format_seconds

BAR_WIDTH = 20
DESCRIPTION_CHARS = 60
CLEAR_LINE = "\r\x1b[K"


def terminal_width() -> int:
    return shutil.get_terminal_size((100, 20)).columns


def bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[=====>    ]`: the share of `total` done, `width` characters inside the brackets."""
    done = min(max(step, 0), total) * width // total if total > 0 else 0
    if done >= width:
        return "[" + "=" * width + "]"
    return "[" + "=" * done + ">" + " " * (width - done - 1) + "]"


def progress_text(snap: Progress) -> str:
    """The rung's part of the status line: bar, step/total, ETA or phase."""
    if snap.step is None or not snap.total:
        return f"{snap.phase} {format_seconds(snap.elapsed_s)}"
    text = f"{bar(snap.step, snap.total)} {snap.step}/{snap.total}"
    if snap.phase != "training":
        return f"{text} {snap.phase}"
    return text + (f" ETA {format_seconds(snap.eta_s)}" if snap.eta_s is not None else "")


def shorten(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _Experiment:
    exp_id: str
    proposer: str
    idea: str | None = None
    description: str = ""
    asked_at: float | None = None  # when the proposer was asked, for "proposed in 2m03s"

    def who(self) -> str:
        return self.proposer + (f" idea {self.idea}" if self.idea else "")


@dataclass
class _Rung:
    exp_id: str | None
    profile: str
    estimator: ProgressEstimator
    drawn: tuple = ()           # (phase, step) last shown on the terminal
    logged: tuple = ()          # (phase, tenth) last written as a plain line
    logged_at: float = 0.0
    snap: Progress | None = field(default=None)

    def prefix(self) -> str:
        return f"{self.exp_id} {self.profile}" if self.exp_id else self.profile


class LiveStatus(RunEvents):
    """One updating line on a terminal; throttled plain lines elsewhere (see the module doc)."""

    def __init__(self, stream: TextIO, tty: bool, *, clock: Callable[[], float] = time.monotonic,
                 width: Callable[[], int] = terminal_width, redraw_every_s: float = 0.2,
                 log_every_s: float = 60.0) -> None:
        self.stream, self.tty = stream, tty
        self._clock, self._width = clock, width
        self._redraw_every_s, self._log_every_s = redraw_every_s, log_every_s
        self._stack: list[_Experiment] = []  # a baseline may run inside a candidate
        self._rung: _Rung | None = None
        self._last: str | None = None       # "E0006 discard"
        self._shown = ""                     # the status line now on the terminal
        self._drawn_at = float("-inf")

    # ---- events

    def log(self, text: str) -> None:
        """A message of the loop's own (the scheduler's `out`): it scrolls, the status stays."""
        if self.tty and self._shown:
            self.stream.write(CLEAR_LINE)
        self.stream.write(text + "\n")
        if self.tty and self._shown:
            self._draw()
        self.stream.flush()

    def proposing(self, exp_id: str, proposer: str) -> None:
        self._stack.append(_Experiment(exp_id, proposer, asked_at=self._clock()))
        self._redraw()

    def experiment_started(self, exp_id: str, proposer: str, idea: str | None,
                           description: str) -> None:
        exp = self._find(exp_id)
        if exp is None:
            exp = _Experiment(exp_id, proposer)
            self._stack.append(exp)
        exp.proposer, exp.idea, exp.description = proposer, idea, description
        if not self.tty and exp.asked_at is not None:
            took = format_seconds(self._clock() - exp.asked_at)
            self._write_plain(f"{exp_id} proposed by {exp.who()} in {took}")
        self._redraw()

    def rung_started(self, exp_id: str | None, profile: str, tag: str = "") -> None:
        now = self._clock()
        self._rung = _Rung(exp_id, profile + tag, ProgressEstimator(now), logged_at=now)
        self._redraw()

    def output_line(self, line: str) -> None:
        rung = self._rung
        if rung is None:
            return
        now = self._clock()
        rung.estimator.feed(line, now)
        rung.snap = rung.estimator.snapshot(now)
        if self.tty:
            self._maybe_draw(rung, now)
        else:
            self._maybe_log(rung, now)

    def decided(self, exp_id: str, status: str, reason: str | None) -> None:
        self._stack = [e for e in self._stack if e.exp_id != exp_id]
        if self._rung is not None and self._rung.exp_id == exp_id:
            self._rung = None
        self._last = f"{exp_id} {status}"
        self._redraw()

    def close(self) -> None:
        """Take the status line off the terminal (the summary that follows prints cleanly)."""
        if self.tty and self._shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._shown = ""

    # ---- the terminal line

    def status_text(self) -> str:
        """Experiment, rung, progress bar and ETA, proposer and idea, change, last decision."""
        exp = self._stack[-1] if self._stack else None
        rung = self._rung
        if rung is not None and exp is not None and rung.exp_id not in (exp.exp_id, None):
            rung = None  # a rung of an experiment that is not the one running now
        parts = [exp.exp_id if exp else ""]
        if rung is not None:
            snap = rung.snap or rung.estimator.snapshot(self._clock())
            parts = [f"{rung.prefix()} {progress_text(snap)}"]
        if exp is not None and exp.proposer == "baseline":
            parts.append(shorten(exp.description))  # "baseline <commit> at <profile>"
        elif exp is not None:
            what = shorten(exp.description) if exp.description else "proposing..."
            parts.append(f"{exp.who()}: {what}")
        if self._last:
            parts.append(f"last {self._last}")
        return " | ".join(p.strip() for p in parts if p.strip())

    def _maybe_draw(self, rung: _Rung, now: float) -> None:
        snap = rung.snap
        key = (snap.phase, snap.step) if snap else ()
        if key == rung.drawn:
            return
        if rung.drawn and key[0] == rung.drawn[0] and now - self._drawn_at < self._redraw_every_s:
            return  # the same phase, drawn a moment ago: at most 5 redraws a second
        rung.drawn = key
        self._draw()
        self.stream.flush()

    def _redraw(self) -> None:
        if self.tty:
            self._draw()
            self.stream.flush()

    def _draw(self) -> None:
        text = self.status_text()[: max(self._width() - 1, 10)]
        self.stream.write(CLEAR_LINE + text)
        self._shown = text
        self._drawn_at = self._clock()

    # ---- plain lines

    def _maybe_log(self, rung: _Rung, now: float) -> None:
        snap = rung.snap
        if snap is None or snap.phase == "starting" and now - rung.logged_at < self._log_every_s:
            return
        tenth = 10 * snap.step // snap.total if snap.step is not None and snap.total else None
        key = (snap.phase, tenth)
        if key == rung.logged and now - rung.logged_at < self._log_every_s:
            return
        rung.logged, rung.logged_at = key, now
        self._write_plain(f"{rung.prefix()} {snap.line()}")

    def _write_plain(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _find(self, exp_id: str) -> _Experiment | None:
        return next((e for e in self._stack if e.exp_id == exp_id), None)
