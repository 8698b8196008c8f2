"""Run validity: is a finished benchmark a measurement at all, and what are its figures?

A run is not valid when the process failed (timeout, no exit status, a non-zero exit, a
diverged loss), when a figure the judge needs is missing (unknown, never 0), when a printed
figure disagrees with the trainer's own lines (`metric_mismatch`), when the artifact is over
the cap, or when it spent more compute than the incumbent's allowance (`over_budget`).
Everything the benchmark printed is a claim: `assess` re-reads the raw log (loop.measure.
logparse) and keeps the daemon's reading. This module does not compare a candidate with the
incumbent (loop.judge.margin, loop.judge.sequential) nor score the artifact itself
(loop.judge.artifact_judge).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from loop.judge import protocol
from loop.judge.margin import FLOAT_SLACK
from loop.judge.verdict import Verdict
from loop.measure.logparse import TrainerLog
from loop.measure.pipeline import TRAINER, Run

# The METRIC val_bpb may be rounded by the extractor (4 decimals at worst, error <= 5e-5);
# the raw log's exact line has 8. A larger difference is a different number, not rounding.
BPB_TOLERANCE = 5e-5
# What a sealed run's last output line says when it reached for something the seal hides.
SEALED_OUT = ("No such file or directory", "Read-only file system", "Permission denied",
              "Network is unreachable", "Temporary failure in name resolution")


@dataclass
class Measurement:
    """A run as the judge reads it."""

    rung: dict  # the ledger rung: METRIC values + wall_s, exit_code, timed_out, log
    verdict: Verdict | None  # None = a valid run
    val_bpb: float | None  # the daemon's own reading of the score (None unless valid)


# --------------------------------------------------------------------------- validity


def assess(run: Run, cap_bytes: int) -> Measurement:
    """Is this run a valid measurement, and what are its figures?"""
    verdict = judge_run(run.metrics, run.log, cap_bytes, run.exit_code, run.timed_out,
                        trainer_bytes=run.trainer_bytes)
    if run.early_abort is not None:
        verdict = Verdict(*run.early_abort)
    verdict = _explain_failure(verdict, run)
    rung = _rung_figures(run.metrics, run.log, verdict)
    rung.update(wall_s=round(run.wall_s, 3), exit_code=run.exit_code,
                timed_out=run.timed_out, log=str(run.log_path))
    rung["protocol"] = protocol.read_protocol(run.log)  # what the trainer says it used
    if run.log.run_settings:  # what the benchmark says it gave the trainer
        rung["run_settings"] = dict(run.log.run_settings)
    params = run.log.settings.get("model_params", "")
    if params.isdigit():  # the search's size model: bytes per parameter
        rung["model_params"] = int(params)
    if run.early_abort is not None:
        rung["early_abort"] = run.early_abort[1]
    return Measurement(rung, verdict, rung.get("val_bpb") if verdict is None else None)


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
    if abs(claimed - exact) > BPB_TOLERANCE + FLOAT_SLACK:
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


def _explain_failure(verdict: Verdict | None, run: Run) -> Verdict | None:
    """A crash reason with the benchmark's last output line, and a missing trainer named."""
    if (verdict is None or verdict.status != "crash"
            or verdict.reason.startswith(("oom:", "diverged:"))):
        return verdict
    last = run.last_line()
    reason = f"{verdict.reason}; last output: {last}"
    if run.trainer_missing:
        reason += f"; the trainer {TRAINER} is missing from the worktree"
    if run.sealed and any(sign in last for sign in SEALED_OUT):
        reason += ("; the run is sealed: it sees only the worktree (read-only), its logs/ "
                   "folder, the data folder the daemon gave it ($DATA_PATH, $TOKENIZER_PATH) "
                   "and a private /tmp, without network. Read inputs from those, write under "
                   "logs/ (docs/THREAT_MODEL.md); `judge: {sealed: false}` runs unsealed")
    return dataclasses.replace(verdict, reason=reason)


def _rung_figures(values: dict[str, float], parsed: TrainerLog,
                  verdict: Verdict | None) -> dict[str, Any]:
    """The METRIC values, with val_bpb as the daemon reads it from the raw log."""
    rung: dict[str, Any] = dict(values)
    claimed = rung.pop("val_bpb", None)
    if verdict is None or verdict.status == "over_cap":
        # The score the daemon believes is its own re-reading of the raw log; the METRIC
        # value agreed with it (judge_run checked), but it comes from an editable script.
        rung["val_bpb"] = parsed.exact_val_bpb if parsed.exact_val_bpb is not None else claimed
        return rung
    # A run the daemon did not accept has no score; what each side said is kept apart.
    if claimed is not None:
        rung["metric_val_bpb"] = claimed
    if parsed.exact_val_bpb is not None:
        rung["log_val_bpb"] = parsed.exact_val_bpb
    return rung


def budget_verdict(walls: dict, allowed: float, standing: str = "won") -> Verdict | None:
    """over_budget when the candidate's runs spent more than `allowed` times the incumbent's
    at the same seeds. `walls` is a sequential rung's record: {"measure": "cpu_s" | "wall_s",
    "candidate": [...], "incumbent": [...]}; `standing`: how the candidate stands in the
    decision (the reason starts with it).

    The figure is the ratio of each arm's fastest run: a run's compute does not depend on
    its seed, and what else the machine did only ever adds to it (on a busy CPU even CPU time
    grows: BLAS threads spin while they wait for a core, caches are shared), so the fastest
    run of each arm is the one least touched by load. A median of per-seed ratios let one
    busy moment on two of three pairs make an unchanged trainer 1.31x "slower" (measured at
    load 8 on 2 cores)."""
    pairs = [(c, i) for c, i in zip(walls["candidate"], walls["incumbent"], strict=False)
             if isinstance(c, (int, float)) and isinstance(i, (int, float)) and i > 0]
    what = {"cpu_s": "CPU time", "wall_s": "wall time"}[walls["measure"]]
    if not pairs:
        return Verdict("over_budget", f"the {what} of the runs is unknown, so the compute "
                       "cap cannot be checked (fail closed)")
    mine, theirs = (min(side) for side in zip(*pairs, strict=True))
    ratio = mine / theirs
    if ratio <= allowed:
        return None
    runs = (f"the fastest of {len(pairs)} runs each" if len(pairs) > 1
            else "one run each, back to back")
    return Verdict("over_budget", f"{standing}, but its runs spent {ratio:.2f}x the incumbent's "
                   f"{what} at the same seeds ({runs}; "
                   f"{mine:.1f} s against {theirs:.1f} s) > judge.compute_allowance "
                   f"{allowed:g}x: compute is capped like bytes (the challenge caps training "
                   "time); make the change cheaper, or raise the allowance in autogolf.yaml "
                   "if the extra compute is intended")
