"""`autogolf import --format pi PATH`: what a pi-autoresearch session tried, into our ledger.

PATH is a pi log file, an `.auto/` folder, or a project root (then the log pi itself would
read there: `.auto/log.jsonl` once any `.auto/` file exists, else `autoresearch.jsonl`; see
`loop/store/pilog.py`). Each run becomes one ledger row of type `imported`:

- never an experiment: no judge scored it, so it is never an incumbent, never a keep, never
  a search trial and never credited to an idea of our backlog; pi's status is kept as
  `pi_status`, its metric as `metric` (null for a crash or a failed check, where pi logs 0)
  with `metric_name`, and the line itself as `pi`;
- the agent prompt lists these rows under their own heading ("tried in pi, not judged
  here"), so our agent does not repeat pi's dead ends;
- runs that came from `autogolf export` (they carry an `autogolf` field) are skipped: the
  ledger already holds them as judged; a line imported before (same content) is skipped too,
  so importing the same log again adds only pi's new runs;
- a corrupt line, an unknown status or a file that is no pi log is an error naming the
  line: nothing is written (exit 2). pi's file is only ever read;
- the rows are appended under `.autogolf/lock`: while a daemon runs (it fingerprints the
  ledger around each agent run) the import is refused, not slipped in behind it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loop.daemon.lock import DaemonLock, LockHeld
from loop.store import pilog
from loop.store.ledger import Ledger
from loop.store.rows import utc_now
from loop.ui.report_cli import repo_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `autogolf import`."""
    parser.add_argument("path", metavar="PATH",
                        help="pi log file, .auto/ folder, or project root")
    parser.add_argument("--format", choices=["pi"], default="pi",
                        help="pi: pi-autoresearch's log (.auto/log.jsonl or autoresearch.jsonl)")
    parser.add_argument("--ledger", metavar="PATH",
                        help="ledger file (default: .autogolf/ledger.jsonl)")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what would be imported; write nothing")


def main(args: argparse.Namespace) -> int:
    """`autogolf import --format pi PATH`."""
    repo = repo_root(Path.cwd())
    ledger = Ledger(Path(args.ledger) if args.ledger else repo / ".autogolf" / "ledger.jsonl")
    try:
        path, layout = pilog.find_log(Path(args.path))
        log = pilog.read_log(path)
    except pilog.PiLogError as exc:
        print(f"autogolf: error: {exc}", file=sys.stderr)
        return 2
    rows = ledger.rows()
    for problem in ledger.problems:
        print(f"warning: {problem}", file=sys.stderr)
    new, skipped = new_rows(log, layout, rows)
    if new and not args.dry_run:
        try:
            _append(ledger, new)
        except LockHeld as exc:
            print(f"autogolf: error: {exc} The import changes the ledger, which a running "
                  "daemon checks for tampering: import after it stops.", file=sys.stderr)
            return 2
    print(_summary(log, new, skipped, ledger.path, args.dry_run))
    return 0


def _append(ledger: Ledger, rows: list[dict]) -> None:
    """Append under the daemon's lock (a daemon running now would see its ledger change)."""
    with DaemonLock(ledger.path.parent / "lock"):
        for row in rows:
            ledger.append(row)


def new_rows(log: pilog.PiLog, layout: str, rows: list[dict]) -> tuple[list[dict], dict]:
    """The rows to append for `log`'s runs the ledger lacks, and what was skipped why."""
    known = pilog.imported_keys(rows)
    number = len(pilog.imported_rows(rows))
    now, new = utc_now(), []
    skipped = {"autogolf's own": 0, "already imported": 0}
    for run in log.runs:
        if run.from_autogolf:
            skipped["autogolf's own"] += 1
        elif run.key in known:
            skipped["already imported"] += 1
        else:
            number += 1
            known.add(run.key)
            new.append(pilog.imported_row(run, log, layout, number, now))
    return new, skipped


def _summary(log: pilog.PiLog, new: list[dict], skipped: dict, ledger: Path,
             dry_run: bool) -> str:
    verb = "would import" if dry_run else "imported"
    parts = [f"{verb} {len(new)} pi run(s) from {log.path} into {ledger} (marked imported, "
             "never judged here)"]
    parts += [f"skipped {n} {why} run(s)" for why, n in skipped.items() if n]
    if log.hooks:
        parts.append(f"{log.hooks} hook line(s) not runs")
    if log.other:
        parts.append(f"{len(log.other)} line(s) of no kind pi reads, left out (lines "
                     f"{', '.join(map(str, log.other[:5]))})")
    return "; ".join(parts)
