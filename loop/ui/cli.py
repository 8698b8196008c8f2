"""`autogolf`: the verbs a researcher uses (run, bench, status, show, doctor, ideas, report).

Every error a user can cause (bad config, no git commits, a lock held, a missing dataset)
ends as one line on stderr that says what is wrong and how to fix it, exit code 2, no
traceback. The work itself lives in loop.daemon.scheduler; this module parses and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections import Counter
from pathlib import Path

import psutil

from loop.config import Config, ConfigError, load_config
from loop.daemon import awake, nightcost, scheduler
from loop.daemon.lock import LockHeld
from loop.daemon.session import Paths, read_state
from loop.daemon.stoprules import deadline_from
from loop.data import datasets
from loop.data.datasets import DatasetError
from loop.errors import UserError
from loop.measure.logparse import parse_progress
from loop.proposers.search import KnobError
from loop.repo import find_repo, repo_config
from loop.store import rows as rows_view
from loop.store.gitsession import GitError
from loop.store.ledger import Ledger
from loop.ui import doctor as doctor_checks
from loop.ui import endsummary, evidence, ideas_cli, import_cli, report_cli, show
from loop.ui.bench import judge_lines, manual_bench
from loop.ui.progress import LiveStatus
from loop.workspace import cli as workspace_cli

USER_ERRORS = (UserError, ConfigError, DatasetError, LockHeld, GitError, KnobError)
LAST_ROWS = 15
LOG_TAIL = 15


# --------------------------------------------------------------------------- helpers


def _with_ladder(cfg: Config, ladder: str | None) -> Config:
    if not ladder:
        return cfg
    rungs = tuple(p.strip() for p in ladder.split(",") if p.strip())
    unknown = [p for p in rungs if p not in cfg.profiles]
    if not rungs or unknown:
        raise UserError(f"--ladder {ladder!r}: unknown profile(s) {', '.join(unknown) or '(none)'}"
                        f"; known: {', '.join(cfg.profiles)}")
    return dataclasses.replace(cfg, ladder=rungs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of hours > 0, got {text!r}")
    return value


def _fmt(value: object) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        value = int(value)  # METRIC values are floats; byte and token counts read as ints
    if isinstance(value, float):
        return f"{value:.8f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def _rows(paths: Paths) -> list[dict]:
    ledger = Ledger(paths.ledger)
    rows = ledger.rows()
    for problem in ledger.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    repo = find_repo(Path.cwd())
    cfg = _with_ladder(repo_config(repo, args.config), args.ladder)
    rules = scheduler.StopRules(
        max_experiments=args.max_experiments,
        # --until is a wall-clock deadline; --hours counts awake time (loop.daemon.awake).
        deadline=deadline_from(args.until, None),
        hours=args.hours,
        max_consecutive_failures=cfg.max_consecutive_failures,
        stop_file=repo / cfg.stop_file,
    )
    if args.dry_run:
        plan = scheduler.Scheduler(repo, cfg, rules, new_session=args.new_session,
                                   resume=args.resume, out=lambda _line: None).plan()
        print("\n".join(plan))
        return 0
    live = LiveStatus(sys.stdout, sys.stdout.isatty())  # one status line, or plain log lines
    daemon = scheduler.Scheduler(repo, cfg, rules, new_session=args.new_session,
                                 resume=args.resume, out=live.log, events=live)
    try:
        with awake.keep_awake():  # caffeinate on macOS while the loop runs; no-op elsewhere
            daemon.run()
    finally:
        live.close()
    summary = endsummary.end_of_run_summary(Ledger(daemon.paths.ledger).rows(), daemon.session)
    print(summary)
    endsummary.notify("autogolf run stopped", summary.splitlines()[0])
    return 1 if daemon.fatal else 0  # a stop rule is a normal end; a broken baseline is not


# --------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    repo = find_repo(Path.cwd(), require_commit=False)  # a manual run needs no history
    cfg = repo_config(repo, args.config)
    if args.profile not in cfg.profiles:
        raise UserError(f"unknown profile {args.profile!r}; known: {', '.join(cfg.profiles)}")
    live = LiveStatus(sys.stdout, sys.stdout.isatty())
    print(f"autogolf bench: profile {args.profile} on {repo} (the current checkout)", flush=True)
    live.rung_started(None, args.profile)
    try:
        row = manual_bench(repo, cfg, args.profile, on_line=live.output_line,
                                     out=live.log)
    finally:
        live.close()
    _print_metrics(row, args.profile)
    return 0 if row["status"] == "keep" else 1


def _print_metrics(row: dict, profile: str) -> None:
    rung = (row.get("rungs") or {}).get(profile, {})
    print(f"\n{row['id']}  {profile}  {row['status']}: {row.get('reason')}")
    for line in judge_lines(rung):
        print(f"  {line}")
    names = ["val_bpb"] + sorted(k for k in rung if k not in ("val_bpb", "log")
                                 and not isinstance(rung[k], dict))
    width = max(len(n) for n in names)
    for name in names:
        print(f"  {name:<{width}}  {_fmt(rung.get(name))}")
    if rung.get("log"):
        print(f"log: {rung['log']}")


# --------------------------------------------------------------------------- adopt


def cmd_adopt(args: argparse.Namespace) -> int:
    from loop.ui import adopt

    repo = find_repo(Path.cwd(), require_commit=False)
    cfg = repo_config(repo, args.config)
    return adopt.adopt(repo, cfg, Path(args.path).resolve(), yes=args.yes, profile=args.profile)


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    paths = Paths(find_repo(Path.cwd(), require_commit=False))
    rows = _rows(paths)
    names = rows_view.sessions(rows)
    session = args.session or (names[-1] if names else None)
    if session is None:
        print("no session yet: start one with `autogolf run`")
    else:
        _print_session(rows, session)
        _print_resolution(paths, rows, session)
        _print_fidelity(rows_view.session_experiments(rows, session))
    _print_night_cost(paths, rows, session)
    _print_running(paths)
    manual = [r for r in rows if r.get("type") == "experiment" and r.get("manual")]
    if manual:
        print(f"manual runs: {len(manual)} (last {manual[-1]['id']}; `autogolf show ID`)")
    return 0


def _print_night_cost(paths: Paths, rows: list[dict], session: str | None) -> None:
    """Run times measured here, projected over a night: for the session's own ladder and
    dataset, or before any session for autogolf.yaml's (after `autogolf bench`)."""
    header = _header(rows, session) if session else {}
    try:
        cfg = load_config(paths.repo / "autogolf.yaml")
    except (ConfigError, OSError):
        cfg = Config()
    ladder = tuple(header.get("ladder") or cfg.ladder)
    dataset = header.get("dataset") or _configured_dataset_id(paths, cfg)
    print("\n".join(nightcost.night_lines(rows, cfg, ladder, dataset, session)))


def _configured_dataset_id(paths: Paths, cfg: Config) -> str | None:
    try:
        info = datasets.resolve(cfg.dataset, datasets.cache_root(paths.repo))
        return datasets.dataset_id(info)
    except (DatasetError, OSError):
        return None  # every dataset's runs count then; `doctor` says what is missing


def _header(rows: list[dict], session: str) -> dict:
    return next((r for r in rows if r.get("type") == "session" and r.get("session") == session),
                {})


def _print_fidelity(exps: list[dict]) -> None:
    """How well the cheap rung predicts the next (issue 16: short proxies mislead)."""
    fidelity = evidence.proxy_fidelity(exps)
    if fidelity is not None:
        print(fidelity.text())


def _print_resolution(paths: Paths, rows: list[dict], session: str) -> None:
    """Per profile, what the sequential rule's run cap can confirm with the spread measured
    so far this session (issue 16), and each keep's score re-measured at fresh seeds."""
    exps = rows_view.session_experiments(rows, session)
    kept = evidence.refreshed(exps)
    if kept:
        print("kept scores (selected runs are optimistic; re-measured as the next incumbent):")
        print("\n".join(f"  {k.text()}" for k in kept))
    try:
        cfg = load_config(paths.repo / "autogolf.yaml")
    except (ConfigError, OSError):
        return
    ladder = _header(rows, session).get("ladder") or cfg.ladder
    found = evidence.resolution(exps, {p: cfg.sequential_rule(p) for p in ladder},
                                cfg.keep_max_pooled_dof)
    if found:
        print("what each profile can resolve (sequential rule, this session's spread):")
        print("\n".join(f"  {r.text(cfg.min_improvement)}" for r in found))


def _print_session(rows: list[dict], session: str) -> None:
    exps = rows_view.session_experiments(rows, session)
    print(f"session {session}  (branch autogolf/{session})")
    known = rows_view.incumbents(rows, session)
    profiles = _profiles(rows, session, exps)
    print("incumbents:")
    for profile in profiles:
        inc = known.get(profile)
        where = f"  {inc['id']}  commit {str(inc['commit'])[:10]}" if inc else ""
        print(f"  {profile:<8} {_fmt(inc['val_bpb']) if inc else 'unknown':<12}{where}")
    _print_margins(exps, profiles)
    candidates = [r for r in exps if not r.get("baseline")]
    counts = Counter(r.get("status") for r in candidates)
    summary = ", ".join(f"{status} {n}" for status, n in counts.most_common()) or "none yet"
    print(f"experiments: {len(candidates)} ({summary}); baselines: {len(exps) - len(candidates)}")
    stop = next((r for r in reversed(rows) if r.get("type") == "stop"
                 and r.get("session") == session), None)
    if stop:
        print(f"last stop: {stop.get('timestamp')}  {stop.get('reason')}")
    _print_table(exps[-LAST_ROWS:], profiles)


def _print_margins(exps: list[dict], profiles: list[str]) -> None:
    """The margin of the latest decision per profile and where its noise came from."""
    lines = []
    for profile in profiles:
        row = next((r for r in reversed(exps) if profile in (r.get("noise") or {})), None)
        cal = next((r["calibration"] for r in reversed(exps)
                    if (r.get("calibration") or {}).get("profile") == profile), None)
        if row is not None:
            info = row["noise"][profile]
            lines.append(f"  {profile:<8} {_fmt(info.get('margin')):<12}  {row['id']}: "
                         f"{info.get('source')}, spread {_fmt(info.get('spread'))}")
        elif cal is not None:
            lines.append(f"  {profile:<8} {_fmt(cal.get('margin')):<12}  calibrated from "
                         f"{cal.get('runs')} runs, spread {_fmt(cal.get('spread'))}")
    if lines:
        print("margins (latest decision):")
        print("\n".join(lines))


def _profiles(rows: list[dict], session: str, exps: list[dict]) -> list[str]:
    header = next((r for r in rows if r.get("type") == "session" and r.get("session") == session),
                  {})
    profiles = list(header.get("ladder") or [])
    for row in exps:
        profiles += [p for p in row.get("rungs") or {} if p not in profiles]
    return profiles


def _print_table(rows: list[dict], profiles: list[str]) -> None:
    if not rows:
        return
    print(f"last {len(rows)} rows:")
    head = f"  {'id':<6} {'status':<15}" + "".join(f" {p:>10}" for p in profiles)
    print(head + "  description")
    for row in rows:
        rungs = row.get("rungs") or {}
        scores = "".join(
            f" {_score(rungs.get(p)):>10}" for p in profiles
        )
        what = "(baseline)" if row.get("baseline") else row.get("description", "")
        print(f"  {row.get('id', '?'):<6} {row.get('status', '?'):<15}{scores}  {what}")


def _score(rung: dict | None) -> str:
    if not rung:
        return "-"
    value = rung.get("val_bpb")
    return "unknown" if value is None else f"{value:.4f}"


def _print_running(paths: Paths) -> None:
    state = read_state(paths.state) or {}
    exp = state.get("experiment")
    alive = isinstance(state.get("pid"), int) and psutil.pid_exists(state["pid"])
    stage = state.get("stage", "?")
    if not exp:
        if alive and stage == "idle":
            print(f"daemon running (pid {state['pid']}), between experiments")
        return
    if not alive:
        print(f"unfinished: {exp['id']} stopped during {stage}; `autogolf run` resumes it")
        return
    current = (state.get("nested") or exp)
    print(f"running: {exp['id']} ({exp.get('description') or 'proposing'})  stage {stage}"
          f"  pid {state['pid']}")
    if ":" in stage:
        log = paths.experiment(current["id"]) / f"bench-{stage.split(':', 1)[1]}.log"
        lines = _tail(log, 200)
        steps = [p for p in map(parse_progress, lines) if p]
        if steps:
            step, total = steps[-1]
            print(f"  progress: step {step}/{total} ({100 * step // max(total, 1)}%)")
        for line in lines[-5:]:
            print(f"  | {line}")


# --------------------------------------------------------------------------- show


def cmd_show(args: argparse.Namespace) -> int:
    paths = Paths(find_repo(Path.cwd(), require_commit=False))
    exp_id = rows_view.normalise_id(args.id)
    ledger = _rows(paths)
    rows = [r for r in ledger if r.get("type") == "experiment" and r.get("id") == exp_id]
    if not rows:
        raise UserError(f"no experiment {exp_id} in {paths.rel(paths.ledger)}; "
                        "`autogolf status` lists the last ones")
    row = rows[-1]
    show.show(row, ledger, paths.repo)
    patch = paths.repo / row["patch"] if row.get("patch") else None
    if patch and patch.is_file():
        print("\n".join(show.patch_lines(row, patch.read_text(errors="replace"))))
    for profile, rung in (row.get("rungs") or {}).items():
        if rung.get("log"):
            print(f"\nlog tail ({profile}, {rung['log']}; the trainer's own lines: its val_bpb "
                  "is on its printout slice of train tokens, not the judge's holdout):")
            for line in _tail(paths.repo / rung["log"], LOG_TAIL):
                print(f"  | {line}")
    return 0


# --------------------------------------------------------------------------- doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    return doctor_checks.report(args)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autogolf", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    run = verbs.add_parser("run", help="the unattended loop (continues the latest session "
                                       "while your HEAD, data, ladder and settings are its own)")
    run.add_argument("--max-experiments", type=_positive_int, metavar="N",
                     help="stop after N experiments (baselines not counted)")
    run.add_argument("--until", metavar="HH:MM", help="start no experiment after this local time")
    run.add_argument("--hours", type=_positive_float, metavar="H",
                     help="start no experiment after H hours of awake time (sleep not counted)")
    which = run.add_mutually_exclusive_group()
    which.add_argument("--new-session", action="store_true",
                       help="start a new session (branch from your HEAD) in any case")
    which.add_argument("--resume", action="store_true",
                       help="continue the latest session even if your HEAD, the dataset, the "
                            "ladder or a setting that shapes results changed since it began")
    run.add_argument("--dry-run", action="store_true",
                     help="say what `run` would do (proposer, session, warnings, what a night "
                          "costs) and exit without running")
    run.add_argument("--ladder", metavar="A,B",
                     help="profiles to climb, e.g. smoke or breadth,confirm")
    run.add_argument("--config", metavar="PATH", help="config file (default: autogolf.yaml)")
    run.set_defaults(func=cmd_run)

    bench = verbs.add_parser("bench", help="one manual run of one profile on the current checkout")
    bench.add_argument("--profile", default="breadth", help="smoke, breadth, confirm or full")
    bench.add_argument("--config", metavar="PATH", help="config file (default: autogolf.yaml)")
    bench.set_defaults(func=cmd_bench)

    adopt = verbs.add_parser("adopt", help="check a trainer with one judged smoke run, then "
                             "install it at benchmark/train_gpt_mlx.py")
    adopt.add_argument("path", help="the trainer file (upstream's train_gpt_mlx.py, a port of "
                       "a record, your own)")
    adopt.add_argument("--yes", action="store_true",
                       help="add the load_for_eval adopt proposes (shown as a diff first)")
    adopt.add_argument("--profile", default="smoke", help="the profile of the check run")
    adopt.add_argument("--config", metavar="PATH", help="config file (default: autogolf.yaml)")
    adopt.set_defaults(func=cmd_adopt)

    status = verbs.add_parser("status", help="incumbents, counts, the running experiment, rows")
    status.add_argument("--session", help="a session name (default: the latest)")
    status.set_defaults(func=cmd_status)

    show = verbs.add_parser("show", help="one experiment: diff, metrics, decision, log tail")
    show.add_argument("id", help="experiment id, e.g. E0007 or 7")
    show.set_defaults(func=cmd_show)

    doctor = verbs.add_parser("doctor", help="check MLX, data, git, disk, BLAS, the agent")
    doctor_checks.add_arguments(doctor)
    doctor.set_defaults(func=cmd_doctor)

    ideas = verbs.add_parser("ideas", help="the ideas backlog with tested outcomes; add, mark")
    ideas_cli.add_arguments(ideas)
    ideas.set_defaults(func=ideas_cli.main)

    workspace = verbs.add_parser("workspace", help="shared workspace: init PATH, status")
    workspace_cli.add_arguments(workspace)
    workspace.set_defaults(func=workspace_cli.main)

    report = verbs.add_parser("report", help="a readable summary with a val_bpb chart")
    report_cli.add_arguments(report)
    report.set_defaults(func=report_cli.main)

    export = verbs.add_parser("export", help="the ledger as pi-autoresearch's session log")
    report_cli.add_export_arguments(export)
    export.set_defaults(func=report_cli.export_main)

    imports = verbs.add_parser("import", help="a pi-autoresearch log's runs, marked unjudged")
    import_cli.add_arguments(imports)
    imports.set_defaults(func=import_cli.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split())  # one line, whatever the module wrote
        print(f"autogolf: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autogolf: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `autogolf status | head`: the reader left early, which is not an error; point
        # stdout at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
