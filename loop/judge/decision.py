"""The keep rule of SPEC section 6: every way a candidate can fail, each with its own status.

`check_edit` runs before the benchmark, `judge_run` after it (is the measurement valid?), and
`compare` last (is a valid measurement better than the incumbent by the margin?). Every
verdict carries a reason a person can read in the morning, with the numbers in it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loop.measure.logparse import TrainerLog

STATUSES = ("keep", "discard", "crash", "timeout", "checks_failed", "over_cap",
            "forbidden_edit", "invalid_metric", "metric_mismatch", "duplicate", "interrupted",
            # Additions to SPEC's list: how an external coding agent's attempt ended when it
            # left nothing to validate (loop/proposers/agent.py).
            "agent_failed", "agent_timeout", "agent_no_change", "agent_touched_git",
            # Issue 7 (loop/judge/protocol.py): the candidate changed the frozen
            # evaluation protocol.
            "protocol_drift")

# The METRIC val_bpb may be rounded by the extractor (4 decimals at worst, error <= 5e-5);
# the raw log's exact line has 8. A larger difference is a different number, not rounding.
BPB_TOLERANCE = 5e-5
# Scores are printed with 8 decimals, so differences below 1e-9 are float noise: a candidate
# exactly at the margin must not lose because 1.2365 - 1.2345 is 0.0019999999999997797.
_FLOAT_SLACK = 1e-9


@dataclass
class Verdict:
    status: str
    reason: str
    val_bpb: float | None = None
    margin: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; allowed: {', '.join(STATUSES)}")


def margin(min_improvement: float, k: float, noise: float | None) -> float:
    """max(min_improvement, k x noise); an unknown noise (None, NaN) leaves min_improvement."""
    if not (min_improvement >= 0 and k >= 0):
        raise ValueError(f"min_improvement and k must be >= 0, got {min_improvement}, {k}")
    if noise is None or not math.isfinite(noise):
        return min_improvement
    return max(min_improvement, k * abs(noise))


def check_edit(changed_files: Iterable[str], is_editable: Callable[[str], bool]) -> Verdict | None:
    """forbidden_edit when any changed file is outside the editable set, else None."""
    forbidden = sorted(f for f in changed_files if not is_editable(f))
    if not forbidden:
        return None
    shown = ", ".join(forbidden[:5]) + (f" (+{len(forbidden) - 5} more)" if len(forbidden) > 5
                                        else "")
    return Verdict("forbidden_edit", f"changed files outside the editable set: {shown}")


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Both numbers with 4 decimals, or more when 4 would print two different numbers alike
    (a reason saying "improved by only 0.0020 < margin 0.0020" would read as a bug)."""
    for digits in range(4, 9):
        left, right = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if left != right:
            return left, right
    return f"{a:.4f}", f"{b:.4f}"  # equal to 8 decimals: the same score


def _process_failure(log: TrainerLog, exit_code: int | None, timed_out: bool) -> Verdict | None:
    if timed_out:
        return Verdict("timeout", "benchmark exceeded its time limit and was stopped"
                       + (f" at step {log.last_step}/{log.iterations}" if log.last_step else ""))
    if exit_code is None:
        return Verdict("crash", "benchmark ended without an exit status (killed by a signal?)")
    if exit_code != 0:
        hint = "; the trainer printed a non-finite train_loss" if log.nonfinite_loss else ""
        return Verdict("crash", f"benchmark exited with code {exit_code}{hint}")
    if log.nonfinite_loss:
        # The trainer exits non-zero on a non-finite loss; exit 0 means the editable script
        # swallowed it. A diverged run is a crash whatever the script says.
        return Verdict("crash", "benchmark exited 0 but the trainer printed a non-finite "
                       "train_loss (diverged)")
    return None


def _claimed(metrics: dict[str, float], name: str) -> float | None:
    value = metrics.get(name)
    return value if value is not None and math.isfinite(value) else None


def _bpb_mismatch(claimed: float, log: TrainerLog) -> Verdict | None:
    exact = log.exact_val_bpb
    if exact is None:
        return Verdict("metric_mismatch", f"METRIC val_bpb={claimed} but the raw log has no "
                       "finite final_int8_zlib_roundtrip_exact val_bpb")
    if abs(claimed - exact) > BPB_TOLERANCE + _FLOAT_SLACK:
        return Verdict("metric_mismatch", f"METRIC val_bpb={claimed} but the trainer's "
                       f"final_int8_zlib_roundtrip_exact says {exact:.8f} "
                       f"(differs by {abs(claimed - exact):.8f} > {BPB_TOLERANCE})")
    return None


def _bytes_mismatch(claimed: float, log_total: int | None) -> Verdict | None:
    if log_total is None:
        return Verdict("metric_mismatch", f"METRIC total_bytes={claimed:.0f} but the raw log "
                       "has no size lines to confirm it (serialized_model_int8_zlib + code)")
    if abs(claimed - log_total) >= 0.5:  # a byte count: any whole-byte difference
        return Verdict("metric_mismatch", f"METRIC total_bytes={claimed:.0f} but the trainer's "
                       f"own size lines say {log_total} bytes")
    return None


def _log_total(log: TrainerLog, trainer_bytes: int | None) -> int | None:
    total = log.artifact_bytes()
    if total is None and log.serialized_bytes is not None and trainer_bytes is not None:
        total = log.serialized_bytes + trainer_bytes  # upstream's log has no Code size line
    return total


def judge_run(metrics: dict[str, float], log: TrainerLog, cap_bytes: int,
              exit_code: int | None, timed_out: bool, *,
              trainer_bytes: int | None = None) -> Verdict | None:
    """Why a finished benchmark is not a valid measurement, or None when it is.

    `metrics` are the script's METRIC lines, `log` the daemon's own reading of the raw output.
    `trainer_bytes` (the trainer file's UTF-8 size) completes the artifact size of a log that
    has neither a total line nor a `Code size:` line (upstream's trainer).
    """
    failure = _process_failure(log, exit_code, timed_out)
    if failure is not None:
        return failure
    bpb = _claimed(metrics, "val_bpb")
    if bpb is None:
        return Verdict("invalid_metric", "no finite METRIC val_bpb line in the output "
                       "(unknown, not 0)")
    total = _claimed(metrics, "total_bytes")
    if total is None:
        return Verdict("invalid_metric", "no finite METRIC total_bytes line: the artifact size "
                       "is unknown, and unknown is never under the cap")
    log_total = _log_total(log, trainer_bytes)
    mismatch = _bpb_mismatch(bpb, log) or _bytes_mismatch(total, log_total)
    if mismatch is not None:
        return mismatch
    if log_total is not None and log_total > cap_bytes:
        return Verdict("over_cap", f"artifact {log_total:,} bytes > cap {cap_bytes:,} bytes "
                       f"(over by {log_total - cap_bytes:,})", val_bpb=bpb)
    return None


def compare(val_bpb: float, incumbent: float | None, margin: float) -> Verdict:
    """keep when val_bpb <= incumbent - margin, else discard; no incumbent = a baseline keep."""
    if not math.isfinite(val_bpb):
        raise ValueError(f"compare() needs a finite val_bpb (judge_run first), got {val_bpb}")
    if incumbent is None:
        return Verdict("keep", f"baseline: val_bpb {_fmt(val_bpb)} measured with no incumbent "
                       "at this profile; it becomes the incumbent", val_bpb, margin)
    gain = incumbent - val_bpb
    head = "val_bpb {} vs incumbent {}: ".format(*_fmt_pair(val_bpb, incumbent))
    shown_gain, shown_margin = _fmt_pair(gain, margin)
    if gain >= margin - _FLOAT_SLACK:
        return Verdict("keep", head + f"improved by {shown_gain} >= margin {shown_margin}",
                       val_bpb, margin)
    if gain > 0:
        why = f"improved by only {shown_gain} < margin {shown_margin}"
    elif gain == 0:
        why = f"no change; needs an improvement of at least margin {_fmt(margin)}"
    else:
        why = f"worse by {_fmt(-gain)} (margin {_fmt(margin)})"
    return Verdict("discard", head + why, val_bpb, margin)
