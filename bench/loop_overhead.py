"""The daemon's own cost: time per experiment outside the benchmark, and ledger reads.

    python bench/loop_overhead.py [--experiments N] [--rows N]

1. A temporary repo whose benchmark returns instantly (`cat` of a canned trainer log) and whose
   checks are `true`; the real scheduler with the real `search` proposer runs N experiments.
   Daemon time per experiment = (wall time of the run - the benchmark and checks processes'
   own wall time) / experiments. Target: < 0.5 s.
2. The same with a 10,000-row ledger already present (a long-used workspace).
3. Reading a ledger of 10,000 rows (Ledger.rows + the scheduler's views). Target: < 1 s.
Uses the sample dataset of this repo (AUTOGOLF_CACHE_ROOT, unless already set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loop.config import load_config  # noqa: E402
from loop.daemon import scheduler  # noqa: E402
from loop.store import rows as rows_view  # noqa: E402
from loop.store.ledger import Ledger  # noqa: E402

CANNED_LOG = """\
step:1/2 train_loss:5.0000 train_time:10ms step_avg:10.00ms tok_s:1000
step:2/2 train_loss:4.9000 train_time:20ms step_avg:10.00ms tok_s:1000
step:2/2 val_loss:3.0000 val_bpb:1.2000 train_time:20ms step_avg:10.00ms
serialized_model_int8_zlib:1000000 bytes (payload:1000000 raw_torch:0)
final_int8_zlib_roundtrip val_loss:3.0000 val_bpb:1.2000 eval_time:5ms
final_int8_zlib_roundtrip_exact val_loss:3.00000000 val_bpb:1.20000000
Code size: 5000 bytes
Total submission size int8+zlib: 1005000 bytes
METRIC val_bpb=1.20000000
METRIC total_bytes=1005000
"""

CONFIG = """\
ladder: [breadth]
profiles:
  breadth: {timeout_s: 60}
benchmark: {command: "cat bench.txt"}
checks: {command: "true"}
editable: [knobs.sh]
protected: [autogolf.yaml, bench.txt]
judge: {enabled: false}  # the canned log has no model to score: this measures the loop alone
keep_rule: {enabled: false}  # nor seed effects: one run per decision, the loop's own cost
knobs:
  LR: {file: knobs.sh, kind: env, type: float, low: 0.0001, high: 10.0, scale: log}
  WD: {file: knobs.sh, kind: env, type: float, low: 0.0001, high: 10.0, scale: log}
"""


def make_repo(where: Path) -> Path:
    repo = where / "repo"
    repo.mkdir()
    for name, text in {".gitignore": ".autogolf/\n", "autogolf.yaml": CONFIG,
                       "bench.txt": CANNED_LOG, "knobs.sh": "LR=0.04\nWD=0.1\n"}.items():
        (repo / name).write_text(text)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "start"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def fake_rows(n: int, session: str = "old") -> list[dict]:
    """Rows shaped like the daemon's, with realistic sizes."""
    rung = {"val_bpb": 1.2345, "total_bytes": 15_000_000, "step_ms": 420.0, "eval_ms": 9000.0,
            "pre_quant_val_bpb": 1.23, "delta_bpb_roundtrip": 0.004, "wall_s": 201.3,
            "exit_code": 0, "timed_out": False, "log": ".autogolf/experiments/E0001/bench.log"}
    rows = [{"type": "session", "session": session, "timestamp": "2026-11-23T00:00:00+00:00"}]
    for i in range(1, n):
        rows.append({
            "type": "experiment", "id": f"E{i:04d}", "session": session,
            "timestamp": "2026-11-23T00:00:00+00:00", "proposer": "search", "idea": None,
            "description": "MATRIX_LR 0.04 -> 0.05", "knobs": {"MATRIX_LR": 0.05, "LR": 0.04},
            "rungs": {"breadth": rung, "confirm": rung}, "status": "discard",
            "reason": "at breadth: val_bpb 1.2345 vs incumbent 1.2300: worse by 0.0045",
            "margin": 0.002, "incumbent_before": {"breadth": 1.23, "confirm": 1.22},
            "base_commit": "a" * 40, "commit": None, "patch": f".autogolf/experiments/E{i:04d}",
            "diff_hash": f"{i:064x}", "dataset": "sample_sp1024:0123456789abcdef",
            "trainer_hash": "b" * 64, "manual": False, "baseline": False,
        })
    return rows


def loop_overhead(experiments: int, prefill: int) -> tuple[float, float]:
    """(seconds per experiment outside the benchmark and checks processes, total per exp)."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp))
        if prefill:
            ledger = repo / ".autogolf" / "ledger.jsonl"
            ledger.parent.mkdir()
            ledger.write_text("".join(json.dumps(r) + "\n" for r in fake_rows(prefill)))
        cfg = load_config(repo / "autogolf.yaml")
        rules = scheduler.StopRules(max_experiments=experiments, max_consecutive_failures=0)
        daemon = scheduler.Scheduler(repo, cfg, rules, new_session=True, out=lambda s: None)
        start = time.perf_counter()
        daemon.run()
        total = time.perf_counter() - start
        rows = [r for r in Ledger(repo / ".autogolf" / "ledger.jsonl").rows()
                if r.get("type") == "experiment" and r.get("session") == daemon.session]
        done = [r for r in rows if not r.get("baseline")]
        child = sum(rung.get("wall_s", 0) for r in rows for rung in r["rungs"].values())
        child += _checks_time(repo, done)
        return (total - child) / len(done), total / len(done)


def _checks_time(repo: Path, rows: list[dict]) -> float:
    # `true` costs a fork+exec (~ms); estimated by running it the same number of times.
    start = time.perf_counter()
    for _ in rows:
        subprocess.run("true", shell=True, cwd=repo)
    return time.perf_counter() - start


def ledger_read(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in fake_rows(n)))
        start = time.perf_counter()
        rows = Ledger(path).rows()
        rows_view.incumbents(rows, "old", "a" * 40, "sample_sp1024:0123456789abcdef")
        rows_view.find_duplicate(rows, "f" * 64, "a" * 40, "sample_sp1024:0123456789abcdef")
        rows_view.next_id(rows)
        elapsed = time.perf_counter() - start
        assert len(rows) == n
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("AUTOGOLF_CACHE_ROOT", str(ROOT))
    per_exp, per_exp_total = loop_overhead(args.experiments, 0)
    print(f"daemon time per experiment outside the benchmark: {per_exp:.3f} s "
          f"(target < 0.5 s; {per_exp_total:.3f} s with the instant benchmark and checks; "
          f"{args.experiments} experiments)")
    per_exp_big, _ = loop_overhead(args.experiments, args.rows)
    print(f"  the same with a {args.rows:,}-row ledger present: {per_exp_big:.3f} s")
    read = ledger_read(args.rows)
    print(f"ledger read of {args.rows:,} rows (+ incumbents, duplicate check, next id): "
          f"{read:.3f} s (target < 1 s)")
    return 0 if per_exp < 0.5 and read < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
