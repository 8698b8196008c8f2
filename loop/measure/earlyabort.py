"""Early abort: read the trainer's output as it streams and say when a run is already lost.

Pure logic (no clock, no processes): the caller feeds each line with the time it arrived and
asks `verdict()`. Two reasons end a run early:

- `crash`, reason `diverged: ...`: a `step:s/n train_loss:nan|inf` line. The trainer stops
  itself on a non-finite loss too, but an edited trainer may not; nothing after it counts.
- `timeout`, reason `projected ...`: the training alone will not end before the profile's
  timeout. After `min_steps` step lines the time per step is measured on the wall clock
  between the first and the latest step line (so compilation before the first step does not
  count), and  projected end = now + remaining steps x time per step. Evaluation and export
  are left out, so the projection is a lower bound of the real end: a run it aborts would
  have been killed at the timeout anyway, only later. A trainer wall-clock cap
  (`max_wallclock_seconds:X`, X > 0) bounds the remaining training time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_TRAIN = re.compile(r"step:(\d+)/(\d+) train_loss:(\S+) train_time:([0-9.]+)ms")
_CAP = re.compile(r"max_wallclock_seconds:([0-9.eE+-]+)(?:\s|$)")

# Step lines (after step 0) needed before a projection is trusted: the first steps of an
# MLX run include compilation for each new shape and are slower than the rest.
MIN_STEPS = 3


@dataclass(frozen=True)
class Abort:
    """Why a run was stopped early: a SPEC status (`crash` or `timeout`) and its reason."""

    status: str
    reason: str


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class EarlyAbort:
    """Feed lines with `feed(line, now)`; `verdict()` is an Abort once the run is lost."""

    def __init__(self, timeout_s: float, start: float, min_steps: int = MIN_STEPS) -> None:
        self.timeout_s = timeout_s
        self.start = start
        self.min_steps = max(2, min_steps)
        self._first: tuple[int, float] | None = None  # (step, arrival time)
        self._last: tuple[int, float, float] | None = None  # (step, arrival, train_time_s)
        self._total: int | None = None
        self._seen = 0
        self._cap_s: float | None = None
        self._abort: Abort | None = None

    def feed(self, line: str, now: float) -> Abort | None:
        """Account for one output line that arrived at `now` (same clock as `start`)."""
        if self._abort is not None:
            return self._abort
        text = line.strip()
        if m := _TRAIN.match(text):
            self._on_step(int(m.group(1)), int(m.group(2)), m.group(3), m.group(4), now)
        elif m := _CAP.search(text):
            cap = _number(m.group(1))
            self._cap_s = cap if cap is not None and cap > 0 else None
        return self._abort

    def verdict(self) -> Abort | None:
        return self._abort

    def _on_step(self, step: int, total: int, loss: str, train_ms: str, now: float) -> None:
        value = _number(loss)
        if value is None or not math.isfinite(value):
            self._abort = Abort("crash", f"diverged: train_loss {loss} at step {step}/{total}")
            return
        if step <= 0:
            return
        self._total = total
        self._seen += 1
        if self._first is None:
            self._first = (step, now)
        self._last = (step, now, (_number(train_ms) or 0.0) / 1000)
        projected = self.projected_end()
        if projected is not None and projected > self.timeout_s:
            done, _, _ = self._last
            self._abort = Abort("timeout", (
                f"projected {projected:.0f} s > timeout {self.timeout_s:g} s at step "
                f"{done}/{total} ({self.seconds_per_step():.3g} s/step); stopped early"))

    def seconds_per_step(self) -> float | None:
        """Wall-clock seconds per step between the first and the latest step line."""
        if self._first is None or self._last is None or self._seen < self.min_steps:
            return None
        steps = self._last[0] - self._first[0]
        seconds = self._last[1] - self._first[1]
        if steps <= 0 or seconds <= 0:
            return None
        return seconds / steps

    def projected_end(self) -> float | None:
        """Seconds from the start at which training is projected to end (None: not yet)."""
        rate = self.seconds_per_step()
        if rate is None or self._last is None or self._total is None:
            return None
        step, arrived, train_s = self._last
        remaining = max(self._total - step, 0) * rate
        if self._cap_s is not None:
            remaining = min(remaining, max(self._cap_s - train_s, 0.0))
        return arrived - self.start + remaining
