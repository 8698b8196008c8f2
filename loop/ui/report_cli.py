"""`autogolf report` and `autogolf export --format pi`: the ledger for people and for pi.

`autogolf report [--ledger PATH] [--out DIR] [--open]` writes `index.html` and `summary.md`
(default `.autogolf/report/`) and prints their paths. A missing or empty ledger is a user
error: one line on stderr, exit 2.

`autogolf export --format pi [--layout auto|legacy] [--out PATH] [--profile P]
[--append | --force]` writes the ledger as pi-autoresearch's session log, where pi will read
it (`loop/store/pilog.py` has the facts, from pi v1.6.2):

- the layout pi reads in this repo, by pi's own rule: `.auto/log.jsonl` once any `.auto/`
  session file exists (pi >= 1.6 then ignores the flat files), else `autoresearch.jsonl`
  where the flat session files are (this repo's `autoresearch.md` and `autoresearch.sh`: a new
  `.auto/log.jsonl` would make pi drop them and look for `.auto/prompt.md` and
  `.auto/measure.sh`), else `.auto/log.jsonl`. `--layout` forces one (with a warning when pi
  would then miss the session document or the measure script); `--out` names any file,
  `-` writes to stdout;
- an existing log is pi's history: without `--append` or `--force` nothing is written.
  `--append` adds after pi's lines the runs the log lacks (by our experiment id), in new
  segments, so pi keeps its own runs and reads ours as re-initialised segments; `--force`
  overwrites, and is refused while the log holds pi runs that `autogolf import` has not yet
  brought into the ledger (nothing is lost either way).

Schema followed (one JSON object per line; pi-autoresearch's field names):

    {"type": "config", "name": str, "metricName": "val_bpb", "metricUnit": "bpb",
     "bestDirection": "lower",
     "autogolf": {"session", "profile", "dataset", "branch", "base_commit", "ladder"}}
    {"run": int, "commit": str | null, "metric": float | null, "metrics": {str: float},
     "status": "keep" | "discard" | "crash" | "checks_failed", "description": str,
     "timestamp": int (ms since the epoch, UTC) | null, "segment": int,
     "confidence": float | null, "asi": {"hypothesis": str, "rollback_reason": str | null},
     "autogolf": {"id", "status", "reason", "profile", "baseline", "idea", "commit",
                  "base_commit", "dataset", "patch", "wall_s"}}

- One segment per (session, dataset), numbered from 0 in ledger order, each opened by its
  config line; `run` counts from 1 over the whole file (both continue the existing log's
  numbering with `--append`).
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
import os
import statistics
import sys
import webbrowser
from pathlib import Path
from typing import Any

from loop.backlog.ideas import IdeasError, IdeasFile
from loop.config import Config, ConfigError, load_config
from loop.store import pilog
from loop.store.files import atomic_write
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
        cap = Config().artifact_cap_bytes
        print(f"warning: autogolf.yaml: {exc}; using the default {cap:,}-byte cap",
              file=sys.stderr)
        return {"cap_bytes": cap}
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
                        help="pi: pi-autoresearch's session log")
    parser.add_argument("--layout", choices=list(pilog.LAYOUTS),
                        help="auto: .auto/log.jsonl (pi >= 1.6); legacy: autoresearch.jsonl "
                             "(default: the one pi would read in this repo)")
    parser.add_argument("--out", metavar="PATH",
                        help="output file, relative to the repo root; - for stdout "
                             "(default: the layout's log file)")
    parser.add_argument("--profile", metavar="P",
                        help="profile to export (default: the first rung of the ladder)")
    parser.add_argument("--ledger", metavar="PATH",
                        help="ledger file (default: .autogolf/ledger.jsonl)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true",
                      help="add the runs the existing log lacks, after pi's own")
    mode.add_argument("--force", action="store_true",
                      help="overwrite an existing log (refused while it holds pi runs "
                           "that `autogolf import` has not brought into the ledger)")


def export_main(args: argparse.Namespace) -> int:
    """`autogolf export --format pi`."""
    repo = repo_root(Path.cwd())
    rows = _read_ledger(_ledger_path(args, repo))
    if isinstance(rows, str):
        return _error(rows)
    profile = args.profile or default_profile(rows)
    if args.out == "-":
        sys.stdout.write(_lines(pi_records(rows, profile)))
        return 0
    layout = args.layout or pilog.layout_pi_reads(repo)
    out = _out_path(args.out, repo, layout)
    try:
        text = _export_text(out, rows, profile, args)
    except pilog.PiLogError as exc:
        return _error(str(exc))
    if args.append and out.exists():
        _append(out, text)
    else:
        atomic_write(out, text)
    _warn_layout(repo, out, layout)
    print(out)
    return 0


def _out_path(out: str | None, repo: Path, layout: str) -> Path:
    if not out:
        return pilog.log_path(repo, layout)
    return Path(out) if Path(out).is_absolute() else repo / out


def _export_text(out: Path, rows: list[dict], profile: str, args: argparse.Namespace) -> str:
    """What to write at `out`; PiLogError where writing would lose pi's history."""
    if not out.exists():
        return _lines(pi_records(rows, profile))
    if args.append:
        log = pilog.read_log(out)
        done = {r.entry["autogolf"].get("id") for r in log.runs if r.from_autogolf}
        return _lines(pi_records(rows, profile, exclude=done, first_run=log.max_run + 1,
                                 first_segment=log.next_segment))
    if not args.force:
        raise pilog.PiLogError(f"{out} exists (it may be pi-autoresearch's own log): pass "
                               "--append to add our runs after it, --force to overwrite it, "
                               "or --out another path")
    _refuse_unimported(out, rows)
    return _lines(pi_records(rows, profile))


def _refuse_unimported(out: Path, rows: list[dict]) -> None:
    if out.stat().st_size == 0:
        return
    keys = pilog.imported_keys(rows)
    fresh = [r for r in pilog.read_log(out).runs if not r.from_autogolf and r.key not in keys]
    if fresh:
        raise pilog.PiLogError(f"{out} holds {len(fresh)} pi run(s) the ledger does not have "
                               f"(first: line {fresh[0].line}): run `autogolf import --format "
                               f"pi {out}` first, or --append instead of --force")


def _append(out: Path, text: str) -> None:
    """Add `text` after the log's last line (pi's history is never rewritten)."""
    with out.open("rb+") as handle:
        if handle.seek(0, 2) > 0:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                text = "\n" + text  # a last line without its newline stays a line of its own
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def _warn_layout(repo: Path, out: Path, layout: str) -> None:
    if layout == "auto" and out.parent == repo / pilog.AUTO_DIR:
        missing = pilog.missing_auto_files(repo)
        if missing and pilog.legacy_session_exists(repo):
            print(f"warning: pi reads only .auto/ now and will not see the root's "
                  f"autoresearch.md / autoresearch.sh: {', '.join(missing)} missing",
                  file=sys.stderr)


def _lines(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)


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


def pi_records(rows: list[dict], profile: str, *, exclude: set | frozenset = frozenset(),
               first_run: int = 1, first_segment: int = 0) -> list[dict[str, Any]]:
    """Config lines and run lines, segment by segment (see the module docstring); rows whose
    id is in `exclude` are left out, runs are numbered from `first_run` and segments from
    `first_segment` (to continue an existing log)."""
    headers = report.session_headers(rows)
    segments: dict[tuple[str, str], list[dict]] = {}
    for row in report.loop_experiments(rows):
        if row.get("id") not in exclude and _exported(row, profile, headers):
            key = (str(row.get("session") or report.UNKNOWN),
                   str(row.get("dataset") or report.UNKNOWN))
            segments.setdefault(key, []).append(row)
    records: list[dict[str, Any]] = []
    run = first_run - 1
    for number, ((session, dataset), members) in enumerate(segments.items(), first_segment):
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
