"""Does pi-autoresearch's own code read our export, and find it where we put it?

    python bench/pi_reader_check.py --pi PATH/TO/pi-autoresearch [--ledger LEDGER] [--json]

PATH is a checkout of pi-autoresearch (tested: v1.6.2, commit 9c8cc2a8). The check exports
a ledger (default: the test fixture with every status) into two fresh repos, one with this
repo's flat session files (autoresearch.md, autoresearch.sh) and one with a `.auto/` session,
then runs pi's own `sessionFilePath` (paths.ts) and `reconstructJsonlState` (jsonl.ts) on
each under node and compares with what we wrote: the log path pi picks (and that pi still
finds the session document and the measure script beside it), its session name, the
number of runs, each run's status, metric (pi reads our null as 0, which it treats as no
value), run number (1..N: pi numbers its next run N+1) and segment, and pi's current
segment. It then appends two pi-style runs and checks that `autogolf import` brings back
exactly those. It also reads the hand-written pi fixture of the tests with pi's code and
ours, so the facts that fixture was written from are checked against pi itself.

Needs node: >= 22.6 loads pi's TypeScript directly (--experimental-strip-types); an older
node needs the `typescript` npm package where node resolves it (NODE_PATH), whose `tsc`
command strips the types first (its command line, the same in typescript 5.6+ and 7.x: 7.x
has no JavaScript transpile API). Without node, or without either, it says so and exits 3
(skipped); a mismatch exits 1. pi's code is loaded from PATH, never copied into this repo.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loop.store import pilog  # noqa: E402
from loop.ui import import_cli, report_cli  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "ledger_all_statuses.jsonl"
PI_FIXTURE = ROOT / "tests" / "fixtures" / "pi_1_6_2_auto_log.jsonl"
SKIPPED = 3
# Our driver: loads pi's two modules (as .ts, or stripped to .mjs) and prints what pi sees.
DRIVER = """
import * as fs from "node:fs";
const [jsonl, paths, root] = process.argv.slice(2);
const { reconstructJsonlState } = await import(jsonl);
const { sessionFilePath } = await import(paths);
const log = sessionFilePath(root, "log");
const state = reconstructJsonlState(fs.existsSync(log) ? fs.readFileSync(log, "utf-8") : "");
const found = (kind) => fs.existsSync(sessionFilePath(root, kind));
console.log(JSON.stringify({ log, name: state.name, currentSegment: state.currentSegment,
  prompt: found("prompt"), measure: found("measure"),
  results: state.results.map((r) => [r.run, r.status, r.metric, r.segment]) }));
"""
# Where node finds the `typescript` package (CommonJS resolution honours NODE_PATH).
FIND_TSC = """
const { createRequire } = require("node:module");
const pkg = createRequire(process.cwd() + "/")
  .resolve("typescript/package.json", { paths: [process.cwd(), ...module.paths] });
console.log(JSON.stringify({ pkg, version: require(pkg).version }));
"""
# tsc's options for a type-free ES module (--noCheck: pi's imports of node's types are not
# ours to resolve; typescript >= 5.6).
TSC_FLAGS = ("--module", "esnext", "--target", "es2022", "--noCheck", "--skipLibCheck")


class Skip(Exception):
    pass


def node_version(node: str) -> tuple[int, ...]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    return tuple(int(p) for p in out.stdout.strip().lstrip("v").split(".")[:2])


def pi_modules(pi: Path, node: str, work: Path) -> tuple[list[str], Path, Path]:
    """node's flags and the two module files to import (pi's .ts, or stripped copies)."""
    ext = pi / "extensions" / "pi-autoresearch"
    jsonl, paths = ext / "jsonl.ts", ext / "paths.ts"
    if not (jsonl.is_file() and paths.is_file()):
        raise Skip(f"{pi} is not a pi-autoresearch checkout (no {jsonl})")
    if node_version(node) >= (22, 6):
        return ["--experimental-strip-types", "--no-warnings"], jsonl, paths
    tsc, version = find_tsc(node)
    out = work / "pi-js"
    done = subprocess.run([node, str(tsc), *TSC_FLAGS, "--outDir", str(out), str(jsonl),
                           str(paths)], capture_output=True, text=True)
    out_j, out_p = out / "jsonl.js", out / "paths.js"
    if done.returncode or not (out_j.is_file() and out_p.is_file()):
        why = (done.stdout + done.stderr).strip().splitlines() or ["no output"]
        raise Skip(f"typescript {version}'s tsc could not strip pi's types: {why[0]}")
    (out / "package.json").write_text('{"type": "module"}\n')  # the .js files are ES modules
    return [], out_j, out_p


def find_tsc(node: str) -> tuple[Path, str]:
    """The `tsc` script of the typescript package node resolves, and its version."""
    done = subprocess.run([node, "-e", FIND_TSC], capture_output=True, text=True)
    if done.returncode:
        raise Skip("node < 22.6 and no `typescript` package for node: install one (npm "
                   "install --prefix DIR typescript) and set NODE_PATH=DIR/node_modules")
    found = json.loads(done.stdout)
    return Path(found["pkg"]).parent / "bin" / "tsc", found["version"]


def what_pi_sees(node: str, flags: list[str], modules: tuple[Path, Path], root: Path) -> dict:
    driver = root.parent / "driver.mjs"
    driver.write_text(DRIVER)
    out = subprocess.run([node, *flags, str(driver), *(m.as_uri() for m in modules), str(root)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def make_repo(base: Path, name: str, ledger: Path, session: str) -> Path:
    repo = base / name
    (repo / ".autogolf").mkdir(parents=True)
    shutil.copy(ledger, repo / ".autogolf" / "ledger.jsonl")
    if session == "legacy":
        for flat in ("autoresearch.md", "autoresearch.sh"):
            shutil.copy(ROOT / flat, repo / flat)
    else:
        (repo / ".auto").mkdir()
        (repo / ".auto" / "prompt.md").write_text("# a pi session\n")
        (repo / ".auto" / "measure.sh").write_text("echo METRIC val_bpb=2.0\n")
    return repo


def in_repo(repo: Path, func, args: argparse.Namespace) -> int:
    """Run an autogolf verb in `repo`, its printed paths kept out of this report."""
    here = Path.cwd()
    os.chdir(repo)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return func(args)
    finally:
        os.chdir(here)


def export(repo: Path) -> Path:
    parser = argparse.ArgumentParser()
    report_cli.add_export_arguments(parser)
    assert in_repo(repo, report_cli.export_main, parser.parse_args([])) == 0
    return pilog.log_path(repo, pilog.layout_pi_reads(repo))


def compare(seen: dict, out: Path) -> list[str]:
    """Differences between what pi reconstructed and what we wrote."""
    ours = [json.loads(line) for line in out.read_text().splitlines()]
    runs = [r for r in ours if "run" in r]
    wanted = [[r["run"], r["status"], r["metric"] if r["metric"] is not None else 0,
               r["segment"]] for r in runs]
    problems = []
    if Path(seen["log"]) != out:
        problems.append(f"pi reads {seen['log']}, we wrote {out}")
    if not (seen["prompt"] and seen["measure"]):
        problems.append("pi no longer finds the session document or the measure script")
    if [r[0] for r in seen["results"]] != list(range(1, len(seen["results"]) + 1)):
        problems.append("run numbers are not 1..N (pi numbers its next run N+1)")
    if seen["results"] != wanted:
        problems.append(f"runs differ: pi {seen['results'][:3]}..., ours {wanted[:3]}...")
    if seen["name"] != [r for r in ours if r.get("type") == "config"][-1]["name"]:
        problems.append(f"session name {seen['name']!r}")
    if seen["currentSegment"] != runs[-1]["segment"]:
        problems.append(f"pi's current segment {seen['currentSegment']}")
    return problems


def pi_appends(out: Path, seen: dict) -> None:
    """Two runs as pi's log_experiment writes them (compact JSON, pi's key order)."""
    run, segment = len(seen["results"]), seen["currentSegment"]
    lines = [{"run": run + 1, "commit": "abcdef1", "metric": 1.95, "metrics": {},
              "status": "discard", "description": "pi: tried in pi", "timestamp": 1,
              "segment": segment, "confidence": None, "asi": {"hypothesis": "h"}},
             {"run": run + 2, "commit": "abcdef1", "metric": 0, "metrics": {},
              "status": "crash", "description": "pi: crashed in pi", "timestamp": 2,
              "segment": segment, "confidence": None}]
    with out.open("a") as handle:
        handle.writelines(json.dumps(x, separators=(",", ":")) + "\n" for x in lines)


def import_back(repo: Path, out: Path) -> list[str]:
    parser = argparse.ArgumentParser()
    import_cli.add_arguments(parser)
    assert in_repo(repo, import_cli.main, parser.parse_args([str(repo)])) == 0
    rows = pilog.imported_rows([json.loads(x) for x in
                                (repo / ".autogolf" / "ledger.jsonl").read_text().splitlines()])
    got = [(r["description"], r["metric"]) for r in rows]
    want = [("pi: tried in pi", 1.95), ("pi: crashed in pi", None)]
    return [] if got == want else [f"imported {got}, wanted {want}"]


def fixture_check(node: str, flags: list[str], modules: tuple, work: Path) -> dict:
    """Our reader and pi's on the hand-written pi 1.6.2 fixture: the same runs and segments."""
    repo = work / "fixture"
    (repo / ".auto").mkdir(parents=True)
    shutil.copy(PI_FIXTURE, repo / ".auto" / "log.jsonl")
    seen = what_pi_sees(node, flags, modules, repo)
    ours = [[r.entry["run"], r.entry["status"], r.entry["metric"], r.segment]
            for r in pilog.read_log(PI_FIXTURE).runs]
    problems = [] if seen["results"] == ours else [f"pi {seen['results']} vs ours {ours}"]
    return {"log": ".auto/log.jsonl", "runs": len(ours), "segments": seen["currentSegment"] + 1,
            "problems": problems}


def check(pi: Path, ledger: Path, node: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        flags, *modules = pi_modules(pi, node, work)
        results = {"pi-fixture": fixture_check(node, flags, tuple(modules), work)}
        for session in ("legacy", "auto"):
            repo = make_repo(work, session, ledger, session)
            out = export(repo)
            seen = what_pi_sees(node, flags, tuple(modules), repo)
            problems = compare(seen, out)
            pi_appends(out, seen)
            problems += import_back(repo, out)
            results[session] = {"log": str(out.relative_to(repo)), "runs": len(seen["results"]),
                                "segments": seen["currentSegment"] + 1, "problems": problems}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pi", required=True, type=Path, help="pi-autoresearch checkout")
    parser.add_argument("--ledger", type=Path, default=FIXTURE)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    node = shutil.which("node")
    try:
        if node is None:
            raise Skip("node is not installed")
        results = check(args.pi, args.ledger, node)
    except Skip as exc:
        print(f"skipped: {exc}")
        return SKIPPED
    if args.json:
        print(json.dumps(results))
    for session, r in results.items():
        verdict = "ok" if not r["problems"] else "; ".join(r["problems"])
        print(f"{session}: pi read {r['log']}: {r['runs']} runs in {r['segments']} "
              f"segment(s): {verdict}")
    return 1 if any(r["problems"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
