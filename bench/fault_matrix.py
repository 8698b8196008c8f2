"""The fault matrix of issue 6: inject every fault of tests/test_faults.py, count the outcome.

    python bench/fault_matrix.py [-k EXPR]

Runs tests/test_faults.py with AUTOGOLF_FAULT_REPORT set; each test records the fault it
injected, whether the daemon survived it (every invariant held: the ledger bytes from before
are a prefix of the bytes after, the expected rows are there, ids are unique, no process
left alive) and how many rows were lost. Prints one line per fault, then the totals.
Exit status 0 only when every injected fault was survived with no row lost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_faults(extra: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="autogolf-faults-") as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = {**os.environ, "AUTOGOLF_FAULT_REPORT": str(report)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_faults.py", *extra]
        subprocess.run(command, cwd=ROOT, env=env, check=False)
        if not report.exists():
            return []
        return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", help="only the faults whose test name matches (pytest -k)")
    args = parser.parse_args(argv)
    records = run_faults(["-k", args.k] if args.k else [])
    print(f"\n{'fault':<90} {'survived':<9} rows lost")
    for rec in records:
        print(f"{rec['fault']:<90} {'yes' if rec['survived'] else 'NO':<9} {rec['rows_lost']}")
    injected = len(records)
    survived = sum(1 for r in records if r["survived"])
    lost = sum(r["rows_lost"] for r in records)
    print(f"\nfaults injected: {injected}   survived: {survived}   rows lost: {lost}")
    return 0 if injected and survived == injected and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
