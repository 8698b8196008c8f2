"""The daemon's own, trusted reading of raw trainer output (SPEC section 3 log lines).

The METRIC extractor is editable by proposers; this parser is not. The keep rule compares
the two (`loop.judge.validity.judge_run`), so a wrong extractor cannot score a run. Every
field is None when the log does not say it: unknown, never 0. Both our trainer's log and
upstream's MLX log (which has no `Code size:` / `Total submission size` lines) are accepted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# `{:.4f}` of a float prints nan / inf / -inf; those parse as unknown (None), not as no-match.
_NUM = r"([-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|nan|inf))"
_TRAIN_STEP = re.compile(
    rf"step:(\d+)/(\d+) train_loss:{_NUM} train_time:{_NUM}ms step_avg:{_NUM}ms"
    rf"(?: tok_s:{_NUM})?(?:\s|$)"
)
_VAL_STEP = re.compile(
    rf"step:(\d+)/(\d+) val_loss:{_NUM} val_bpb:{_NUM} train_time:{_NUM}ms step_avg:{_NUM}ms"
    r"(?:\s|$)"
)
_ANY_STEP = re.compile(r"step:(\d+)/(\d+)(?:\s|$)")
_SERIALIZED = re.compile(r"serialized_model_int8_zlib:(\d+) bytes(?:\s|$)")
_ROUNDTRIP = re.compile(rf"final_int8_zlib_roundtrip val_loss:{_NUM} val_bpb:{_NUM} "
                        rf"eval_time:{_NUM}ms(?:\s|$)")
_EXACT = re.compile(rf"final_int8_zlib_roundtrip_exact val_loss:{_NUM} val_bpb:{_NUM}(?:\s|$)")
_CODE = re.compile(r"Code size: (\d+) bytes(?:\s|$)")
_TOTAL = re.compile(r"Total submission size int8\+zlib: (\d+) bytes(?:\s|$)")
# A protocol line: one lowercase `key:value` pair alone on its line (seed:1337). Lines with
# several pairs are descriptive prose, not settings; `n/m` values are progress counters.
_SETTING = re.compile(r"([a-z][a-z0-9_]*):(\S+)")
_COUNTER = re.compile(r"\d+/\d+")
# autoresearch.sh's settings line: `autoresearch: ITERATIONS=30 MODEL_DIM=64 ...` (upper-case
# NAME=value pairs only): what the benchmark gave the trainer, a claim like every other line.
_RUN_SETTINGS = re.compile(r"autoresearch: ((?:[A-Z][A-Z0-9_]*=\S* ?)+)")


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


@dataclass
class TrainerLog:
    """What the raw trainer output says; every field None when the log does not say it."""

    iterations: int | None = None
    last_step: int | None = None
    last_train_loss: float | None = None
    step_ms: float | None = None
    tok_s: float | None = None
    pre_quant_val_bpb: float | None = None
    roundtrip_val_bpb: float | None = None
    exact_val_bpb: float | None = None
    exact_val_loss: float | None = None
    eval_ms: float | None = None
    serialized_bytes: int | None = None
    code_bytes: int | None = None
    total_bytes: int | None = None
    nonfinite_loss: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    # The NAME=value settings the benchmark script says it gave the trainer (its
    # `autoresearch: NAME=value ...` line); the built-in loader builds the model under them.
    run_settings: dict[str, str] = field(default_factory=dict)

    def artifact_bytes(self) -> int | None:
        """The artifact size by the log: its total line, else serialized + code, else None."""
        if self.total_bytes is not None:
            return self.total_bytes
        if self.serialized_bytes is not None and self.code_bytes is not None:
            return self.serialized_bytes + self.code_bytes
        return None


def _read_train_step(log: TrainerLog, m: re.Match[str]) -> None:
    step, total, loss, _train_ms, avg, tok_s = m.groups()
    log.last_step, log.iterations = int(step), int(total)
    log.last_train_loss = _finite(loss)
    if log.last_train_loss is None:
        log.nonfinite_loss = True
    if int(step) > 0:
        log.step_ms = _finite(avg)
    log.tok_s = _finite(tok_s) if tok_s is not None else None


def _read_val_step(log: TrainerLog, m: re.Match[str]) -> None:
    step, total, _loss, bpb, _train_ms, avg = m.groups()
    log.last_step, log.iterations = int(step), int(total)
    log.pre_quant_val_bpb = _finite(bpb)
    if int(step) > 0:  # step 0's average is 0/1 ms: no timing information
        log.step_ms = _finite(avg)


def _read_final(log: TrainerLog, line: str) -> bool:
    """The export / roundtrip lines; True when `line` was one of them."""
    if m := _SERIALIZED.match(line):
        log.serialized_bytes = int(m.group(1))
    elif m := _EXACT.match(line):
        log.exact_val_loss, log.exact_val_bpb = _finite(m.group(1)), _finite(m.group(2))
    elif m := _ROUNDTRIP.match(line):
        log.roundtrip_val_bpb, log.eval_ms = _finite(m.group(2)), _finite(m.group(3))
    elif m := _CODE.match(line):
        log.code_bytes = int(m.group(1))
    elif m := _TOTAL.match(line):
        log.total_bytes = int(m.group(1))
    else:
        return False
    return True


def _read_line(log: TrainerLog, line: str) -> None:
    if m := _TRAIN_STEP.match(line):
        _read_train_step(log, m)
    elif m := _VAL_STEP.match(line):
        _read_val_step(log, m)
    elif _read_final(log, line):
        pass
    elif m := _RUN_SETTINGS.fullmatch(line):
        log.run_settings = dict(p.split("=", 1) for p in m.group(1).split())
    elif (m := _SETTING.fullmatch(line)) and not _COUNTER.fullmatch(m.group(2)):
        log.settings[m.group(1)] = m.group(2)


def parse_trainer_log(text: str) -> TrainerLog:
    """Read a whole captured trainer output; for a line reported twice, the last one wins."""
    log = TrainerLog()
    for raw in text.splitlines():
        _read_line(log, raw.strip())
    return log


def parse_train_curve(text: str) -> list[tuple[int, float | None]]:
    """(step, train_loss) of every `step:s/n train_loss:...` line, in order; a non-finite loss
    is None (unknown). A step printed twice keeps its last value."""
    curve: dict[int, float | None] = {}
    for raw in text.splitlines():
        if m := _TRAIN_STEP.match(raw.strip()):
            curve[int(m.group(1))] = _finite(m.group(3))
    return sorted(curve.items())


def parse_progress(line: str) -> tuple[int, int] | None:
    """(step, total) from a `step:s/n ...` line, else None."""
    m = _ANY_STEP.match(line.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


_VAL_PROGRESS = re.compile(r"val_progress:(\d+)/(\d+)")


@dataclass
class Progress:
    """A snapshot for the live progress line of `autogolf bench`."""

    phase: str                  # "starting", "training", "evaluating", "exporting", "done"
    step: int | None = None
    total: int | None = None
    eta_s: float | None = None  # seconds until training ends; None when not yet estimable
    elapsed_s: float = 0.0

    def line(self) -> str:
        """E.g. `training step 120/200 (60%) ETA 1m20s, elapsed 2m05s`."""
        parts = [self.phase]
        if self.step is not None and self.total:
            parts.append(f"step {self.step}/{self.total} ({100 * self.step // self.total}%)")
        if self.eta_s is not None:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        return " ".join(parts) + f", elapsed {format_seconds(self.elapsed_s)}"


def format_seconds(seconds: float) -> str:
    """`45s`, `3m05s`, `1h02m` - short enough for one terminal line."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressEstimator:
    """Turns trainer lines as they stream in, plus the wall clock, into step/total and ETA.

    The rate comes from the wall clock between the first and the latest step lines, so compile
    time before step 1 and the final evaluation are not counted as training speed.
    """

    def __init__(self, start: float) -> None:
        self._start = start
        self._now = start
        self._phase = "starting"
        self._step: int | None = None
        self._total: int | None = None
        self._first: tuple[int, float] | None = None  # (step, wall time) of the first step line
        self._last: tuple[int, float] | None = None

    def feed(self, line: str, now: float) -> None:
        """Account for one output line seen at wall time `now` (seconds, any monotonic clock)."""
        self._now = now
        text = line.strip()
        if (pos := parse_progress(text)) is not None:
            self._on_step(pos, now)
        elif _VAL_PROGRESS.match(text):
            self._phase = "evaluating"
        elif text.startswith("serialized_model_"):
            self._phase = "exporting"
        elif text.startswith("final_int8_zlib_roundtrip_exact"):
            self._phase = "done"

    def _on_step(self, pos: tuple[int, int], now: float) -> None:
        step, total = pos
        self._step, self._total = step, total
        self._phase = "training" if step < total else "evaluating"
        if step <= 0:
            return
        if self._first is None:
            self._first = (step, now)
        self._last = (step, now)

    def _eta(self) -> float | None:
        if self._first is None or self._last is None or self._total is None:
            return None
        steps = self._last[0] - self._first[0]
        seconds = self._last[1] - self._first[1]
        if steps <= 0 or seconds <= 0:
            return None
        remaining = max(self._total - self._last[0], 0) * seconds / steps
        # Count down from the last step line, not from the moment it arrived.
        return max(remaining - (self._now - self._last[1]), 0.0)

    def snapshot(self, now: float | None = None) -> Progress:
        """The progress as of `now` (default: the time of the last line fed)."""
        if now is not None:
            self._now = now
        eta = self._eta() if self._phase == "training" else None
        return Progress(self._phase, self._step, self._total, eta, self._now - self._start)
