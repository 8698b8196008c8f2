"""`autogolf report` and `autogolf export --format pi`: the ledger for people and for pi.

`autogolf report [--ledger PATH] [--out DIR] [--open]` writes `index.html` and `summary.md`
(default `.autogolf/report/`) and prints their paths. A missing or empty ledger is a user
error: one line on stderr, exit 2.

`autogolf export --format pi [--out autoresearch.jsonl] [--profile P] [--force]` writes the
ledger in pi-autoresearch's `autoresearch.jsonl` layout (`--out -` writes to stdout). An
existing file is never overwritten without `--force`: it may be pi's own history.

Schema followed (one JSON object per line; pi-autoresearch's field names):

    {"type": "config", "name": str, "metricName": "val_bpb", "metricUnit": "bpb",
     "bestDirection": "lower",
     "autogolf": {"session", "profile", "dataset", "branch", "base_commit", "ladder"}}
    {"run": int, "commit": str | null, "metric": float | null, "metrics": {str: float},
     "status": "keep" | "discard" | "crash" | "checks_failed", "description": str,
     "timestamp": int (ms since the epoch, UTC) | null, "segment": int,
     "confidence": float | null,
     "autogolf": {"id", "status", "reason", "profile", "baseline", "idea", "commit",
                  "base_commit", "dataset", "patch", "wall_s"}}

- One segment per (session, dataset), numbered from 0 in ledger order, each opened by its
  config line; `run` counts from 1 over the whole file.
- pi has one metric per session, so one profile is exported (`--profile`, default the first
  rung of the first session's ladder): a row is exported when it has that rung, or when it
  failed before any benchmark and that profile is its session's first rung. Manual runs
  (`autogolf bench`) are never compared with the loop and are not exported.
- `metric`: val_bpb at that profile; null when unknown or when the run failed (a failed
  run's numbers are not results). `metrics`: the other METRIC values of that rung, empty
  for a failed run.
- `commit`: the first 7 hex digits of the kept commit, else of the incumbent the run was
  based on (what pi records for a discarded run); null when neither is known.
- `status`: keep -> keep (baselines too); discard, duplicate -> discard; crash, timeout,
  interrupted, invalid_metric, metric_mismatch -> crash (no usable measurement);
  checks_failed, forbidden_edit, over_cap -> checks_failed (a gate blocked the keep).
  Our own status is kept in `autogolf.status`.
- `confidence`: pi's definition, |best improvement| / MAD of the segment's metric values
  so far, where improvement = the segment's first metric - the best kept metric; null
  with fewer than three known metrics or a MAD of 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import webbrowser
from pathlib import Path
from typing import Any

from loop.backlog.ideas import IdeasError, IdeasFile
from loop.config import ConfigError, load_config
from loop.store.gitsession import main_checkout
from loop.store.ledger import Ledger
from loop.store.statuses import STATUSES as STATUS_TABLE
from loop.ui import report

IDEAS_FILE = "autoresearch.ideas.md"

PI_STATUS = {name: s.pi for name, s in STATUS_TABLE.items()}
BOOKKEEPING = frozenset({"val_bpb", "wall_s", "exit_code", "timed_out", "log"})


# --------------------------------------------------------------------------- shared


def repo_root(start: Path) -> Path:
    """The main checkout around `start` (also from a daemon worktree); `start` otherwise."""
    return main_checkout(start) or start.resolve()


def _error(message: str) -> int:
    print(f"autogolf: error: {message}", file=sys.stderr)
    return 2


def _read_ledger(path: Path) -> list[dict] | str:
    """The ledger's rows, or a message saying why there is nothing to report."""
    if not path.is_file():
        return (f"no ledger at {path}: run `autogolf run` or `autogolf bench` first, "
                "or point --ledger at one")
    ledger = Ledger(path)
    rows = ledger.rows()
    for problem in ledger.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not report.experiments(rows):
        return f"the ledger {path} has no experiments yet: nothing to report"
    return rows


def _ledger_path(args: argparse.Namespace, repo: Path) -> Path:
    return Path(args.ledger) if args.ledger else repo / ".autogolf" / "ledger.jsonl"


# --------------------------------------------------------------------------- report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `autogolf report`."""
    parser.add_argument("--ledger", metavar="PATH",
                        help="ledger file (default: .autogolf/ledger.jsonl)")
    parser.add_argument("--out", metavar="DIR",
                        help="folder for index.html and summary.md (default: .autogolf/report)")
    parser.add_argument("--open", action="store_true",
                        help="open the page in the default browser")


def load_ideas(repo: Path) -> list | None:
    """The backlog's ideas, or None (with a warning) when it cannot be read."""
    try:
        backlog = IdeasFile.load(repo / IDEAS_FILE, missing_ok=True)
    except IdeasError as exc:
        print(f"warning: ideas left out of the report: {exc}", file=sys.stderr)
        return None
    return backlog.ideas


def _settings(repo: Path) -> dict:
    """The report's settings from autogolf.yaml: the artifact cap and the keep rule per
    profile; the default cap (and no keep rule) when the config cannot be read."""
    try:
        cfg = load_config(repo / "autogolf.yaml")
    except ConfigError as exc:
        print(f"warning: autogolf.yaml: {exc}; using the {report.CAP_BYTES:,}-byte cap",
              file=sys.stderr)
        return {"cap_bytes": report.CAP_BYTES}
    return {"cap_bytes": cfg.artifact_cap_bytes, "max_pooled_dof": cfg.keep_max_pooled_dof,
            "rules": {p: cfg.sequential_rule(p) for p in cfg.profiles}}


def main(args: argparse.Namespace) -> int:
    """`autogolf report`."""
    repo = repo_root(Path.cwd())
    ledger = _ledger_path(args, repo)
    rows = _read_ledger(ledger)
    if isinstance(rows, str):
        return _error(rows)
    out = Path(args.out) if args.out else repo / ".autogolf" / "report"
    # Patch paths in rows are relative to the repo the ledger belongs to.
    owner = ledger.resolve().parent.parent if ledger.parent.name == ".autogolf" else repo
    index = report.build_report(rows, out, ideas=load_ideas(owner), repo=owner,
                                **_settings(owner))
    print(index)
    print(index.parent / "summary.md")
    if args.open:
        webbrowser.open(index.resolve().as_uri())
    return 0


# --------------------------------------------------------------------------- export


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `autogolf export`."""
    parser.add_argument("--format", choices=["pi"], default="pi",
                        help="pi: pi-autoresearch's autoresearch.jsonl layout")
    parser.add_argument("--out", metavar="PATH", default="autoresearch.jsonl",
                        help="output file, relative to the repo root; - for stdout "
                             "(default: autoresearch.jsonl)")
    parser.add_argument("--profile", metavar="P",
                        help="profile to export (default: the first rung of the ladder)")
    parser.add_argument("--ledger", metavar="PATH",
                        help="ledger file (default: .autogolf/ledger.jsonl)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def export_main(args: argparse.Namespace) -> int:
    """`autogolf export --format pi`."""
    repo = repo_root(Path.cwd())
    rows = _read_ledger(_ledger_path(args, repo))
    if isinstance(rows, str):
        return _error(rows)
    profile = args.profile or default_profile(rows)
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in pi_records(rows, profile))
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out) if Path(args.out).is_absolute() else repo / args.out
    if out.exists() and not args.force:
        return _error(f"{out} exists (it may be pi-autoresearch's own log): pass --force to "
                      "overwrite it, or --out another path")
    out.write_text(text, encoding="utf-8")
    print(out)
    return 0


def default_profile(rows: list[dict]) -> str:
    """The first rung of the first session's ladder; else the first profile measured."""
    for header in report.session_headers(rows).values():
        ladder = header.get("ladder")
        if isinstance(ladder, list) and ladder:
            return str(ladder[0])
    for row in report.loop_experiments(rows):
        for profile in report.rungs(row):
            return profile
    return "breadth"


def pi_records(rows: list[dict], profile: str) -> list[dict[str, Any]]:
    """Config lines and run lines, segment by segment (see the module docstring)."""
    headers = report.session_headers(rows)
    segments: dict[tuple[str, str], list[dict]] = {}
    for row in report.loop_experiments(rows):
        if _exported(row, profile, headers):
            key = (str(row.get("session") or report.UNKNOWN),
                   str(row.get("dataset") or report.UNKNOWN))
            segments.setdefault(key, []).append(row)
    records: list[dict[str, Any]] = []
    run = 0
    for number, ((session, dataset), members) in enumerate(segments.items()):
        records.append(_config(headers.get(session, {}), session, dataset, profile))
        values: list[float] = []
        kept: list[float] = []
        for row in members:
            run += 1
            record = _run(row, profile, run, number)
            if record["metric"] is not None:
                values.append(record["metric"])
                if record["status"] == "keep":
                    kept.append(record["metric"])
            record["confidence"] = confidence(values, kept)
            records.append(record)
    return records


def _exported(row: dict, profile: str, headers: dict[str, dict]) -> bool:
    if profile in report.rungs(row):
        return True
    ladder = headers.get(str(row.get("session")), {}).get("ladder")
    first = ladder[0] if isinstance(ladder, list) and ladder else None
    return not report.rungs(row) and first == profile


def _config(header: dict, session: str, dataset: str, profile: str) -> dict[str, Any]:
    return {"type": "config", "name": f"autogolf {session} ({profile})",
            "metricName": "val_bpb", "metricUnit": "bpb", "bestDirection": "lower",
            "autogolf": {"session": session, "profile": profile, "dataset": dataset,
                         "branch": header.get("branch"),
                         "base_commit": header.get("base_commit"),
                         "ladder": header.get("ladder")}}


def _run(row: dict, profile: str, run: int, segment: int) -> dict[str, Any]:
    status = str(row.get("status") or report.UNKNOWN)
    commit = row.get("commit") or row.get("base_commit")
    stamp = report.parse_time(row.get("timestamp"))
    rung = report.rungs(row).get(profile, {})
    return {
        "run": run,
        "commit": commit[:7] if isinstance(commit, str) and commit else None,
        "metric": report.trusted_val_bpb(row, profile),
        "metrics": _metrics(rung) if status not in report.FAILED else {},
        "status": PI_STATUS.get(status, "crash"),
        "description": str(row.get("description") or ""),
        "timestamp": int(stamp.timestamp() * 1000) if stamp else None,
        "segment": segment,
        "confidence": None,
        # pi shows these: what the run tried, and why a discarded one was rolled back.
        "asi": {"hypothesis": str(row.get("description") or ""),
                "rollback_reason": None if status == "keep" else row.get("reason")},
        "autogolf": {"id": row.get("id"), "status": status, "reason": row.get("reason"),
                     "profile": profile, "baseline": bool(row.get("baseline")),
                     "idea": row.get("idea"), "commit": row.get("commit"),
                     "base_commit": row.get("base_commit"), "dataset": row.get("dataset"),
                     "patch": row.get("patch"), "wall_s": report.number(rung.get("wall_s"))},
    }


def _metrics(rung: dict) -> dict[str, float]:
    # The original value, not a float copy: byte counts stay integers.
    return {name: value for name, value in rung.items()
            if name not in BOOKKEEPING and report.number(value) is not None}


def confidence(values: list[float], kept: list[float]) -> float | None:
    """pi's confidence: |first - best kept| / MAD(values); None when it cannot be known."""
    if len(values) < 3 or not kept:
        return None
    middle = statistics.median(values)
    mad = statistics.median(abs(v - middle) for v in values)
    if mad <= 0 or values[0] == min(kept):
        return None  # no improvement yet: pi writes null, not 0.0 (its table shows "0.0x")
    return round(abs(values[0] - min(kept)) / mad, 4)
