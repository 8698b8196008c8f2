#!/usr/bin/env python3
"""The GPU check of issue 19: smoke and breadth N times each, throughput against upstream.

Started by bench/gpu_check.sh (which finds or installs a Python whose MLX sees the GPU) and
written for one run on a lent NVIDIA machine within a hard 10-minute limit, so every step
gets what is left of --budget-s and a step that no longer fits is recorded as skipped. The
results file is written whatever happens (also when nothing could be measured), to
--out/results.json and --out/results.md, with the exact command of every step.

Standard library only: the MLX side runs in children started with --python, so this file
still reports why when that Python cannot import MLX at all.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = Path(".upstream/parameter-golf/train_gpt_mlx.py")
STEP_CAPS_S = {"smoke": 180.0, "breadth": 360.0, "throughput": 300.0, "dataset": 240.0}
RESERVE_S = 10.0  # kept back for writing the results
MIN_STEP_S = 20.0  # a step with less time than this left is skipped, not started
METRIC = re.compile(r"^METRIC ([A-Za-z0-9_.]+)=(\S+)$", re.M)
TOK_S = re.compile(r"^step:\d+/\d+ train_loss:\S+ .* tok_s:(\d+)$", re.M)
DTYPE = re.compile(r"^compute_dtype:(\S+)$", re.M)
PROBE = """
import json, sys
out = {"python": sys.version.split()[0]}
try:
    import mlx.core as mx
except Exception as exc:
    out["error"] = f"cannot import mlx.core: {exc}"
else:
    out["mlx_version"] = mx.__version__
    out["default_device"] = str(mx.default_device())
    try:
        out["cuda"] = bool(mx.cuda.is_available())
    except Exception:
        out["cuda"] = False
    try:
        out["device_info"] = {k: v for k, v in mx.device_info().items()}
    except Exception as exc:
        out["device_info"] = {"error": str(exc)}
print(json.dumps(out))
"""


@dataclass
class Step:
    """One command of the check and what became of it."""

    name: str
    command: str
    status: str = "planned"  # ok, failed, timeout, skipped, dry-run
    wall_s: float | None = None
    note: str = ""
    figures: dict = field(default_factory=dict)


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S


def run_step(step: Step, cap_s: float, clock: Clock, dry_run: bool, log: Path | None,
             env: dict[str, str] | None = None) -> str:
    """Run step.command in the repo (bash), bounded by the cap and the budget; its output."""
    if dry_run:
        step.status = "dry-run"
        return ""
    timeout = min(cap_s, clock.left())
    if timeout < MIN_STEP_S:
        step.status, step.note = "skipped", f"time budget: {clock.left():.0f} s left"
        return ""
    print(f"gpu_check: {step.name}: {step.command}  (timeout {timeout:.0f} s)", flush=True)
    t0 = time.monotonic()
    try:
        # start_new_session + killpg: a timed-out benchmark takes its trainer child with it.
        proc = subprocess.Popen(["bash", "-c", step.command], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    except OSError as exc:
        step.status, step.note, step.wall_s = "failed", f"could not start: {exc}", 0.0
        return ""
    try:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            output, _ = proc.communicate()
            step.status, step.note = "timeout", f"killed after {timeout:.0f} s"
        else:
            step.status = "ok" if proc.returncode == 0 else "failed"
            if proc.returncode != 0:
                tail = " | ".join(output.strip().splitlines()[-3:])
                step.note = f"exit {proc.returncode}: {tail}"
    finally:
        step.wall_s = round(time.monotonic() - t0, 2)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
    print(f"gpu_check: {step.name}: {step.status} in {step.wall_s:.1f} s {step.note}",
          flush=True)
    return output


# ----------------------------------------------------------------------------- parsing


def benchmark_figures(output: str) -> dict:
    """METRIC lines (val_bpb, step_ms, ...) plus the trainer's last tok_s and compute dtype."""
    figures: dict = {}
    for name, value in METRIC.findall(output):
        try:
            figures[name] = float(value)
        except ValueError:
            continue  # not a number: unknown, so absent
    rates = TOK_S.findall(output)
    dtype = DTYPE.search(output)
    figures["tok_s_last"] = float(rates[-1]) if rates else None
    figures["compute_dtype"] = dtype.group(1) if dtype else None
    return figures


def spread(values: list[float]) -> dict:
    """Run-to-run spread of val_bpb: max - min, sample stdev, median absolute deviation."""
    if not values:
        return {"runs": 0, "values": [], "min": None, "max": None, "spread": None,
                "mean": None, "stdev": None, "mad": None}
    median = statistics.median(values)
    return {"runs": len(values), "values": values, "min": min(values), "max": max(values),
            "spread": max(values) - min(values), "mean": statistics.fmean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else None,
            "mad": statistics.median(abs(v - median) for v in values)}


def throughput_ratio(ours: dict | None, upstream: dict | None) -> dict:
    """Per model: tokens/s of ours over upstream's (> 1: ours is faster)."""
    if not ours or not upstream:
        return {}
    theirs = {run["model"]: run for run in upstream.get("runs", [])}
    out = {}
    for run in ours.get("runs", []):
        other = theirs.get(run["model"])
        if other and other.get("tok_s") and run.get("tok_s"):
            out[run["model"]] = run["tok_s"] / other["tok_s"]
    return out


# ----------------------------------------------------------------------------- the check


def probe(python: str) -> dict:
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True,
                              timeout=120, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{python} did not run: {exc}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"{python}: {(done.stdout + done.stderr).strip()[-500:]}"}


def nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    query = "--query-gpu=name,driver_version,memory.total,compute_cap"
    try:
        done = subprocess.run([exe, query, "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi did not run: {exc}"
    return (done.stdout or done.stderr).strip()


def plan(opts: argparse.Namespace) -> dict[str, list[Step]]:
    py = shlex.quote(opts.python)
    steps: dict[str, list[Step]] = {}
    for profile in opts.profiles:
        steps[profile] = [
            Step(f"{profile}-{i}", f"PROFILE={profile} RUN_ID=gpucheck-{profile}-{i} "
                 f"PYTHON={py} bash autoresearch.sh")
            for i in range(1, opts.runs + 1)]
    bench = (f"{py} bench/trainer_throughput.py --steps {opts.throughput_steps} "
             f"--grad-accum {opts.grad_accum} --batch-tokens {opts.batch_tokens}")
    # The 2x64 smoke model says nothing about a GPU; on the CPU it is the one that is quick.
    bench += " --only smoke" if opts.cpu else " --only baseline"
    out = shlex.quote(str(opts.out))
    steps["throughput"] = [Step("throughput-ours", f"{bench} --json {out}/throughput_ours.json")]
    upstream = REPO / opts.upstream
    if upstream.is_file():
        steps["throughput"].append(Step(
            "throughput-upstream", f"{bench} --trainer {shlex.quote(str(opts.upstream))} "
            f"--json {out}/throughput_upstream.json"))
    else:
        steps["throughput"].append(Step("throughput-upstream", "", "skipped",
                                        note=f"no upstream trainer at {opts.upstream}"))
    return steps


def ensure_dataset(opts: argparse.Namespace, clock: Clock) -> Step:
    py = shlex.quote(opts.python)
    step = Step("dataset", f"{py} -m loop.data.datasets --shell sample >/dev/null || "
                f"PYTHON={py} bash scripts/bootstrap-parameter-golf.sh --sample")
    run_step(step, STEP_CAPS_S["dataset"], clock, opts.dry_run, opts.out / "logs/dataset.log")
    return step


def run_check(opts: argparse.Namespace) -> dict:
    clock = Clock(opts.budget_s)
    started = datetime.datetime.now(datetime.timezone.utc)
    env_facts = {"probe": {} if opts.dry_run else probe(opts.python),
                 "nvidia_smi": nvidia_smi(), "install": opts.install_note or None,
                 "host_cpus": os.cpu_count(), "python_for_children": opts.python}
    for stale in opts.out.glob("throughput_*.json"):  # never report an earlier run's figures
        stale.unlink()
    steps = plan(opts)
    results = {"started_utc": started.isoformat(timespec="seconds"), "mode":
               "dry-run" if opts.dry_run else ("cpu" if opts.cpu else "gpu"),
               "invocation": opts.invocation or " ".join([sys.executable, *sys.argv]),
               "budget_s": opts.budget_s, "environment": env_facts}
    gpu = "gpu" in env_facts["probe"].get("default_device", "")
    if not opts.dry_run and not opts.cpu and not gpu:
        why = env_facts["probe"].get("error") or (
            f"MLX's default device is {env_facts['probe'].get('default_device')}")
        for step in (s for group in steps.values() for s in group if s.status == "planned"):
            step.status, step.note = "skipped", f"no GPU: {why}"
        results["stopped"] = f"no GPU: {why}"
    else:
        dataset = ensure_dataset(opts, clock)
        results["dataset_step"] = asdict(dataset)
        order = [p for p in opts.profiles if p != "breadth"] + ["throughput"] + (
            ["breadth"] if "breadth" in opts.profiles else [])
        for group in order:
            for step in steps[group]:
                if step.status != "planned":
                    continue
                if dataset.status not in ("ok", "dry-run"):
                    step.status = "skipped"
                    step.note = dataset.note if dataset.status == "skipped" else (
                        "no dataset (see logs/dataset.log)")
                    continue
                cap = STEP_CAPS_S.get(group, STEP_CAPS_S["breadth"])
                output = run_step(step, cap, clock, opts.dry_run,
                                  opts.out / "logs" / f"{step.name}.log")
                if group != "throughput" and step.status == "ok":
                    step.figures = benchmark_figures(output)
    results["steps"] = {group: [asdict(s) for s in group_steps]
                        for group, group_steps in steps.items()}
    results["spread"] = {p: spread([s.figures["val_bpb"] for s in steps[p]
                                    if "val_bpb" in s.figures]) for p in opts.profiles}
    ours, upstream = (_read_json(opts.out / f"throughput_{w}.json") for w in ("ours", "upstream"))
    results["throughput"] = {"ours": ours, "upstream": upstream,
                             "ratio_tok_s_ours_over_upstream": throughput_ratio(ours, upstream)}
    results["not_measured"] = not_measured(results, opts)
    results["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    return results


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def not_measured(results: dict, opts: argparse.Namespace) -> list[str]:
    missing = []
    for profile in opts.profiles:
        got = results["spread"][profile]["runs"]
        if got < opts.runs:
            missing.append(f"{profile}: {got} of {opts.runs} runs measured")
    if results["throughput"]["ours"] is None:
        missing.append("throughput of our trainer")
    if results["throughput"]["upstream"] is None:
        missing.append("throughput of upstream's trainer (and so the ratio)")
    return missing


# ----------------------------------------------------------------------------- report


def _num(value: object, digits: int = 4) -> str:
    return "unknown" if not isinstance(value, (int, float)) else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    env = results["environment"]
    info = env["probe"]
    lines = [f"# GPU check ({results['mode']}), {results['started_utc']}", "",
             f"- MLX {info.get('mlx_version', 'unknown')} on "
             f"{info.get('default_device', 'unknown')}, CUDA {info.get('cuda', 'unknown')}, "
             f"device {json.dumps(info.get('device_info', {}))}",
             f"- nvidia-smi: {env['nvidia_smi'] or 'not found'}",
             f"- Python for the runs: `{env['python_for_children']}` "
             f"({info.get('python', 'unknown')}); install: {env['install'] or 'not needed'}",
             f"- started as `{results['invocation']}`; budget {results['budget_s']:.0f} s; "
             f"finished {results['finished_utc']}"]
    if results.get("stopped"):
        lines.append(f"- **stopped: {results['stopped']}**")
    lines += ["", "## Run-to-run spread of val_bpb (same seed, same code)", "",
              "| profile | runs | min | max | spread (max-min) | stdev | MAD |",
              "|---|---|---|---|---|---|---|"]
    for profile, s in results["spread"].items():
        lines.append(f"| {profile} | {s['runs']} | {_num(s['min'])} | {_num(s['max'])} | "
                     f"{_num(s['spread'])} | {_num(s['stdev'])} | {_num(s['mad'])} |")
    lines += ["", "## Runs", "", "| step | status | wall s | val_bpb | step_ms | tok_s (last) "
              "| dtype | note |", "|---|---|---|---|---|---|---|---|"]
    for group, steps in results["steps"].items():
        if group == "throughput":
            continue
        for s in steps:
            f = s["figures"]
            lines.append(f"| {s['name']} | {s['status']} | {_num(s['wall_s'], 1)} | "
                         f"{_num(f.get('val_bpb'))} | {_num(f.get('step_ms'), 1)} | "
                         f"{_num(f.get('tok_s_last'), 0)} | {f.get('compute_dtype') or ''} | "
                         f"{s['note']} |")
    lines += ["", "## Trainer throughput, ours vs upstream's MLX trainer (same settings)", "",
              "| trainer | model | step ms | tokens/s | MFU % | peak MLX MiB | ours/upstream "
              "tokens/s |", "|---|---|---|---|---|---|---|"]
    ratio = results["throughput"]["ratio_tok_s_ours_over_upstream"]
    for who in ("ours", "upstream"):
        for run in (results["throughput"][who] or {}).get("runs", []):
            lines.append(f"| {who} | {run['model']} | {_num(run.get('step_ms'), 1)} | "
                         f"{_num(run.get('tok_s'), 0)} | {_num(run.get('mfu_pct'), 1)} | "
                         f"{run.get('peak_memory_mib') or 'unknown'} | "
                         f"{_num(ratio.get(run['model']), 2) if who == 'ours' else ''} |")
    lines += ["", "## Exact commands (from the repository root)", ""]
    for steps in results["steps"].values():
        for s in steps:
            if s["command"]:
                lines.append(f"- `{s['command']}` ({s['status']})")
            else:
                lines.append(f"- {s['name']}: {s['status']} ({s['note']})")
    lines += ["", "## Not measured", ""]
    lines += [f"- {item}" for item in results["not_measured"]] or ["- nothing: all measured"]
    return "\n".join(lines) + "\n"


def pack_logs(out: Path) -> None:
    """logs/ -> logs.tar.gz: one file instead of one per step (the device's copy-back takes 8)."""
    logs = out / "logs"
    if not logs.is_dir():
        return
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname="logs")
    shutil.rmtree(logs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs/results/gpu")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="total seconds for every step (default %(default)s)")
    ap.add_argument("--python", default=sys.executable, help="the Python the runs use")
    ap.add_argument("--runs", type=int, default=5, help="runs per profile")
    ap.add_argument("--profiles", default="smoke,breadth", type=lambda s: s.split(","))
    ap.add_argument("--throughput-steps", type=int, default=20)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--batch-tokens", type=int, default=16384, help="breadth's batch")
    ap.add_argument("--upstream", type=Path, default=UPSTREAM)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (to test this script)")
    ap.add_argument("--dry-run", action="store_true", help="run nothing; write the plan")
    ap.add_argument("--install-note", default="")
    ap.add_argument("--invocation", default="", help="the command line that started the check")
    ap.add_argument("--pack-logs", action="store_true",
                    help="pack logs/ into logs.tar.gz (for a copy-back limited in files)")
    opts = ap.parse_args(argv)
    bad = [p for p in opts.profiles if p not in ("smoke", "breadth", "confirm", "full")]
    if bad or opts.runs < 1 or opts.budget_s <= 0:
        ap.error(f"bad --profiles {bad} / --runs {opts.runs} / --budget-s {opts.budget_s}")
    opts.out = opts.out.resolve()
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    results = run_check(opts)
    (opts.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (opts.out / "results.md").write_text(markdown(results))
    if opts.pack_logs:
        pack_logs(opts.out)
    print(f"gpu_check: results in {opts.out}/results.json and results.md")
    for item in results["not_measured"]:
        print(f"gpu_check: not measured: {item}")
    return 1 if results.get("stopped") else 0


if __name__ == "__main__":
    sys.exit(main())
