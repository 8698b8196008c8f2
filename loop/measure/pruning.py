"""Pruning inside a run: stop a candidate whose training curve is clearly behind the
incumbent's at the same seed and step (issue 26). Pure logic, like loop.measure.earlyabort:
the caller feeds the candidate's output lines as they stream and asks `verdict()`.

The paired design makes the curves comparable: the judge runs the candidate and the
incumbent at the same seed, so both start from the same initialisation draw and see the same
batches in the same order, and their `train_loss` at step s differ by what the change did.

Curves cross, and early gaps say little. Measured at smoke on the real trainer
(bench/pruning.py: 21 knob moves x 6 seeds): a lower embedding learning rate
(TIED_EMBED_LR x0.3) is *behind* the incumbent by 0.37-0.40 nats at a third of the run and
ends 0.03-0.11 val_bpb *ahead*; a runs that went on to win by min_improvement or more lagged
by at most 0.09 nats at 60% of its steps. Hence three rules, all conservative:

- no look before `MIN_FRACTION` (60%) of the steps; before that a gap is not evidence;
- prune only when the candidate is behind by more than `MARGIN` nats (about 3x the largest
  lag of any winning run measured at that point) at *every* logged step from MIN_FRACTION on
  that both curves have: a curve that is catching up (crossing late) is never pruned;
- never without a comparable incumbent curve: the same seed, the same step count (a change
  to ITERATIONS or the schedule has no paired curve), at least one common step at or after
  MIN_FRACTION. The judge prunes candidate runs only, never the incumbent's.

A prune can cause a miss, never a false keep (it only ever stops a candidate). The share
of would-be keeps it drops and the compute it saves are measured by bench/pruning.py; the
margin is calibrated at smoke only (the sample data, a 2x64 model, 30 steps): at breadth and
above the same rules apply, with MIN_FRACTION and MARGIN as measured at smoke.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from loop.measure.earlyabort import Abort

_TRAIN = re.compile(r"step:(\d+)/(\d+) train_loss:(\S+) ")
MIN_FRACTION = 0.6  # no look before this share of the steps (curves cross earlier)
MARGIN = 0.25  # nats of train_loss behind the incumbent at every look since MIN_FRACTION


def read_curve(text: str) -> tuple[int | None, dict[int, float]]:
    """(total steps, {step: train_loss}) of a trainer log's finite train_loss lines."""
    total, curve = None, {}
    for line in text.splitlines():
        if m := _TRAIN.match(line.strip()):
            value = _number(m.group(3))
            if value is not None and math.isfinite(value):
                total = int(m.group(2))
                curve[int(m.group(1))] = value
    return total, curve


def curve_of_log(path: Path) -> tuple[int | None, dict[int, float]]:
    """read_curve of a log file; (None, {}) when it cannot be read."""
    try:
        return read_curve(path.read_text(errors="replace"))
    except OSError:
        return None, {}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class CurvePruner:
    """Feed the candidate's lines with `feed(line)`; `verdict()` is an Abort("pruned", ...)
    once the candidate is clearly behind the incumbent's curve (module docstring)."""

    def __init__(self, incumbent: dict[int, float], total: int, margin: float = MARGIN,
                 min_fraction: float = MIN_FRACTION) -> None:
        if not (margin > 0 and 0 < min_fraction <= 1):
            raise ValueError(f"CurvePruner: margin > 0 and 0 < min_fraction <= 1, got "
                             f"{margin}, {min_fraction}")
        self.incumbent = dict(incumbent)
        self.total = total
        self.margin = margin
        self.first_look = math.ceil(min_fraction * total)
        self.gaps: dict[int, float] = {}  # step -> candidate - incumbent, from first_look on
        self._abort: Abort | None = None

    def feed(self, line: str) -> Abort | None:
        if self._abort is not None:
            return self._abort
        m = _TRAIN.match(line.strip())
        if not m or int(m.group(2)) != self.total:
            return None  # another step count has no paired curve: never pruned
        step, value = int(m.group(1)), _number(m.group(3))
        if step < self.first_look or step not in self.incumbent or value is None or (
                not math.isfinite(value)):
            return None
        self.gaps[step] = value - self.incumbent[step]
        if min(self.gaps.values()) > self.margin:
            shown = ", ".join(f"{s}: +{g:.3f}" for s, g in sorted(self.gaps.items()))
            self._abort = Abort("pruned", (
                f"pruned at step {step}/{self.total}: train_loss behind the incumbent's at the "
                f"same seed by more than {self.margin:g} nats at every look from step "
                f"{self.first_look} on ({shown})"))
        return self._abort

    def verdict(self) -> Abort | None:
        return self._abort


def pruner_for(incumbent_log: Path | None, margin: float = MARGIN,
               min_fraction: float = MIN_FRACTION) -> CurvePruner | None:
    """A pruner against the incumbent's run in `incumbent_log`; None when there is no curve
    to compare with (no log, no step reaching min_fraction)."""
    if incumbent_log is None:
        return None
    total, curve = curve_of_log(incumbent_log)
    if total is None or not any(s >= min_fraction * total for s in curve):
        return None
    return CurvePruner(curve, total, margin, min_fraction)
