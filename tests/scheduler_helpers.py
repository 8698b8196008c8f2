"""Shared helpers for tests that drive the daemon against the FAKE benchmark.

Each test builds a small git repo whose benchmark is `fakebench.py`: it prints the trainer's
log lines (SPEC section 3, so the daemon's own parser reads them) and METRIC lines at once,
with val_bpb = 1.0 + 0.1 * ln(LR / 0.05)^2 - BONUS_<PROFILE> + seeded noise of +-0.0001,
knobs read from `knobs.sh`. `MODE=crash|hang|nan|mismatch|nometric` makes it fail one way.
Most tests drive the scheduler in-process with a scripted proposer (so the outcome of every
experiment is known); the kill tests run a real process (`driver.py`) and SIGKILL it at a
stage. The fixtures `cache_root` and `repo` are offered to every test module by
tests/conftest.py; `make_fake_repo` builds such a repository anywhere, so several
repositories (several daemons) can live in one test. Used by test_scheduler, test_faults,
test_progress and others: add helpers here; do not rewrite what others added.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loop.config import load_config
from loop.daemon import scheduler
from loop.proposers import Proposal, Proposer
from loop.store.ledger import Ledger

TESTS_DIR = Path(__file__).resolve().parent

FAKEBENCH_SOURCE = '''\
"""Fake benchmark: the trainer's log lines and METRIC lines, at once (see test_scheduler)."""
import hashlib, math, os, random, sys, time

knobs = dict(l.strip().split("=", 1) for l in open("knobs.sh") if "=" in l)
profile, run_id = os.environ.get("PROFILE", "breadth"), os.environ.get("RUN_ID", "")
if os.environ.get("FAKE_RUNS"):
    with open(os.environ["FAKE_RUNS"], "a") as f:
        f.write(f"{run_id} {sorted(knobs.items())}\\n")
if os.environ.get("FAKE_BLOCK") == run_id:
    with open(os.path.join(os.environ["FAKE_SIGNAL_DIR"], run_id), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
mode = knobs.get("MODE", "ok")
bonus = float(knobs.get("BONUS_" + profile.upper(), "0"))
noise = random.Random(f"{profile}:{sorted(knobs.items())}").uniform(-1e-4, 1e-4)
# NOISE=<sd>: run-to-run noise like an Apple GPU's, different for every RUN_ID (test_noise).
noise += random.Random(run_id).gauss(0.0, float(knobs.get("NOISE", "0")))
# The judge's seed (AUTOGOLF_JUDGE_SEED, the sequential rule): SEED_SD=<sd> is the seed's own
# effect (the same for every code at that seed), SEED_X=<sd> the code's interaction with it.
seed = os.environ.get("AUTOGOLF_JUDGE_SEED", "1337")
noise += random.Random(f"seed:{seed}").gauss(0.0, float(knobs.get("SEED_SD", "0")))
interaction = random.Random(f"{seed}:{sorted(knobs.items())}")
noise += interaction.gauss(0.0, float(knobs.get("SEED_X", "0")))
bpb = 1.0 + 0.1 * math.log(float(knobs.get("LR", "0.05")) / 0.05) ** 2 - bonus + noise
# The frozen protocol (loop/judge/protocol.py): each field a knob; the daemon's overrides win, as in
# autoresearch.sh. Scoring fewer val tokens "improves" the score: the drift a daemon must catch.
overrides = os.environ.get("AUTOGOLF_PROTOCOL_OVERRIDES", "").split()
overrides = dict(pair.split("=", 1) for pair in overrides)
protocol = {"SEED": seed, "TOKENIZER_SHA256": "a" * 64, "VAL_SHA256": "b" * 64,
            "VAL_TOKENS": "16384", "VAL_MAX_TOKENS": "16384", "ITERATIONS": "4",
            "TRAIN_BATCH_TOKENS": "2048", "TRAIN_SEQ_LEN": "128", "MAX_WALLCLOCK_SECONDS": "0"}
protocol = {k: overrides.get(k, knobs.get(k, v)) for k, v in protocol.items()}
bpb -= 0.05 * (protocol["VAL_MAX_TOKENS"] != "16384")
for key, value in protocol.items():
    print(f"{key.lower()}:{value}")
# BPB=<value> prints that score; ARTIFACT=<path> "exports" a copy of a real trainer artifact
# (test_verify: the daemon re-evaluates it with loop/judge/verify.py).
bpb = float(knobs.get("BPB", bpb))
if "ARTIFACT" in knobs:
    import shutil
    os.makedirs("logs/autoresearch", exist_ok=True)
    artifact = f"logs/autoresearch/{run_id}_mlx_model.int8.ptz"
    shutil.copy(knobs["ARTIFACT"], artifact)
    print(f"artifact_path:{artifact}")
size, code, n = int(knobs.get("SIZE", "1000000")), 5000, 4
lag = float(knobs.get("LAG", "0"))  # LAG=<nats>: a training curve behind the baseline's
for step in range(1, n + 1):
    loss = "nan" if mode == "nan" and step == 3 else f"{5.0 - step * 0.1 + lag:.4f}"
    print(f"step:{step}/{n} train_loss:{loss} train_time:{step * 10}ms step_avg:10.00ms "
          "tok_s:1000", flush=True)
    if mode == "nan" and step == 3:
        sys.exit(3)
    if (mode == "crash" or knobs.get("CRASH_SEED") == seed) and step == 2:
        sys.exit("RuntimeError: fake crash")
    if mode == "hang":
        time.sleep(60)
if mode == "tamper":  # the worktree is .autogolf/worktrees/<session>/: reach the ledger
    with open("../../ledger.jsonl", "a") as ledger:
        ledger.write('{"type": "experiment", "id": "E9999", "status": "keep"}\\n')
print(f"step:{n}/{n} val_loss:3.0000 val_bpb:{bpb + 0.001:.4f} train_time:40ms step_avg:10.00ms")
print(f"serialized_model_int8_zlib:{size} bytes (payload:{size} raw_torch:0)")
print(f"final_int8_zlib_roundtrip val_loss:3.0000 val_bpb:{bpb:.4f} eval_time:5ms")
print(f"final_int8_zlib_roundtrip_exact val_loss:3.00000000 val_bpb:{bpb:.8f}")
print(f"Code size: {code} bytes")
print(f"Total submission size int8+zlib: {size + code} bytes")
if mode != "nometric":
    print(f"METRIC val_bpb={bpb - 0.01 if mode == 'mismatch' else bpb:.8f}")
    print(f"METRIC total_bytes={size + code}")
    print("METRIC step_ms=10.0")
'''

CHECKS_SOURCE = '''\
import os, sys, time
if os.environ.get("FAKE_BLOCK") == "checks":
    with open(os.path.join(os.environ["FAKE_SIGNAL_DIR"], "checks"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
if "CHECKS=tamper" in open("knobs.sh").read():  # the checks are editable code too
    with open("../../ledger.jsonl", "a") as ledger:
        ledger.write('{"type": "experiment", "id": "E9999", "status": "keep"}\\n')
sys.exit(1 if "CHECKS=fail" in open("knobs.sh").read() else 0)
'''

CONFIG = """\
min_improvement: 0.002
artifact_cap_bytes: 16000000
dataset: sample
ladder: [breadth, confirm]
profiles:
  breadth: {timeout_s: 30}
  confirm: {timeout_s: 30}
  full: {timeout_s: 30}
benchmark: {command: "$PYTHON fakebench.py"}
checks: {command: "$PYTHON checks.py", timeout_s: 30}
editable: [knobs.sh, notes.md]
protected: [fakebench.py, checks.py, autogolf.yaml, driver.py]
proposer: search
knobs:
  LR: {file: knobs.sh, kind: env, type: float, low: 0.005, high: 0.5, scale: log}
noise: {fixed: {breadth: 0.0, confirm: 0.0}, runs: 1}
stop: {max_consecutive_failures: 3}
# The fake benchmark prints a trainer's lines but writes no model: nothing for the judge to
# score (tests/test_judge_*.py and the real-trainer tests run with the judge on).
judge: {enabled: false}
# Its scores ignore the seed unless SEED_SD is set, so paired differences never vary and the
# sequential rule could not decide: these tests exercise the margin rule, and the sequential
# rule's own tests (test_scheduler.py, test_sealed_judge.py, test_e2e_real.py) switch it on.
keep_rule: {enabled: false}
"""

# Runs the scheduler in its own process with a scripted proposer, so a test can SIGKILL it
# at a chosen point: PAUSE_AT=propose|commit|record announces itself in FAKE_SIGNAL_DIR and
# sleeps there (FAKE_BLOCK does the same inside the fake benchmark or checks).
DRIVER_SOURCE = '''\
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, os.environ["TESTS_DIR"])
from loop.store import gitsession
from loop.store import ledger
from loop.daemon import scheduler
from loop.config import load_config
from scheduler_helpers import Scripted

def pause(tag):
    Path(os.environ["FAKE_SIGNAL_DIR"], tag).write_text(str(os.getpid()))
    time.sleep(120)

point = os.environ.get("PAUSE_AT")
if point == "before_commit":
    real_commit = gitsession.GitSession.commit
    def commit(self, message):
        pause("before_commit")
        return real_commit(self, message)
    gitsession.GitSession.commit = commit
if point == "commit":
    real_commit = gitsession.GitSession.commit
    def commit(self, message):
        sha = real_commit(self, message)
        pause("commit")
        return sha
    gitsession.GitSession.commit = commit
if point == "record":
    real_append = ledger.Ledger.append
    def append(self, row):
        real_append(self, row)
        if row.get("type") == "experiment" and not row.get("baseline"):
            pause("record")
    ledger.Ledger.append = append

repo, steps, limit = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
proposer = Scripted(*steps, pause_in_propose=point == "propose")
rules = scheduler.StopRules(max_experiments=limit, max_consecutive_failures=3)
scheduler.Scheduler(repo, load_config(repo / "autogolf.yaml"), rules, proposer=proposer).run()
'''


class Scripted(Proposer):
    """A proposer whose proposals are given: each step sets knobs in knobs.sh, or edits any
    file when given {"file": path, "text": content}, or is a function(worktree) -> Proposal."""

    name = "scripted"

    def __init__(self, *steps: dict, pause_in_propose: bool = False):
        self.steps = list(steps)
        self.pause_in_propose = pause_in_propose

    def propose(self, worktree: Path, history: list[dict]) -> Proposal | None:
        if not self.steps:
            return None
        step = self.steps.pop(0)
        if callable(step):
            return step(worktree)
        if "file" in step:
            (worktree / step["file"]).write_text(step["text"])
            return Proposal(f"edit {step['file']}", None)
        step = dict(step)
        idea = step.pop("idea", None)
        path = worktree / "knobs.sh"
        knobs = dict(line.split("=", 1) for line in path.read_text().split())
        knobs.update({k: str(v) for k, v in step.items()})
        path.write_text("".join(f"{k}={v}\n" for k, v in knobs.items()))
        if self.pause_in_propose:
            Path(os.environ["FAKE_SIGNAL_DIR"], "propose").write_text(str(os.getpid()))
            time.sleep(120)
        return Proposal(" ".join(f"{k}={v}" for k, v in step.items()), dict(knobs), idea)


# --------------------------------------------------------------------------- fixtures


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def cache_root(sample_dataset) -> Path:
    """Where the sample data lives (the repo's own data/, shared, never copied)."""
    return Path(sample_dataset.data_path).parents[2]


@pytest.fixture
def repo(tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = make_fake_repo(tmp_path / "repo", extra_files={"driver.py": DRIVER_SOURCE})
    signals = tmp_path / "signals"
    signals.mkdir()
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(cache_root))
    monkeypatch.setenv("FAKE_RUNS", str(tmp_path / "runs.txt"))
    monkeypatch.setenv("FAKE_SIGNAL_DIR", str(signals))
    monkeypatch.setenv("TESTS_DIR", str(TESTS_DIR))
    yield root
    for pid_file in signals.iterdir():  # a paused child a test left behind
        try:
            psutil.Process(int(pid_file.read_text())).kill()
        except (psutil.Error, ValueError):
            pass


def run_daemon(repo: Path, *steps: dict, ladder: tuple[str, ...] | None = None,
               max_experiments: int | None = None, **cfg_changes) -> str:
    cfg = load_config(repo / "autogolf.yaml")
    if ladder:
        cfg_changes["ladder"] = ladder
    cfg = dataclasses.replace(cfg, **cfg_changes)
    rules = scheduler.StopRules(max_experiments=max_experiments,
                                max_consecutive_failures=cfg.max_consecutive_failures,
                                stop_file=repo / cfg.stop_file)
    daemon = scheduler.Scheduler(repo, cfg, rules, proposer=Scripted(*steps), out=lambda s: None)
    return daemon.run()


def rows(repo: Path) -> list[dict]:
    return Ledger(repo / ".autogolf" / "ledger.jsonl").rows()


def candidates(repo: Path) -> list[dict]:
    return [r for r in rows(repo) if r.get("type") == "experiment" and not r.get("baseline")]


def baselines(repo: Path) -> list[dict]:
    return [r for r in rows(repo) if r.get("type") == "experiment" and r.get("baseline")]


def session_of(repo: Path) -> str:
    return [r for r in rows(repo) if r.get("type") == "session"][-1]["session"]


def worktree(repo: Path) -> Path:
    return repo / ".autogolf" / "worktrees" / session_of(repo)


def branch_head(repo: Path) -> str:
    return git(repo, "rev-parse", f"autogolf/{session_of(repo)}")


def fake_runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def cli(repo: Path, *args: str, timeout: float = 60, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "loop.ui.cli", *args], cwd=repo, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert proc.poll() is None, f"daemon exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path.name} never reached"
        time.sleep(0.05)
    return int(path.read_text())


# A change that wins at breadth by 0.01 (far over the 0.002 margin) and its confirm variants.
WIN_BOTH = {"BONUS_BREADTH": 0.01, "BONUS_CONFIRM": 0.01}
WIN_BREADTH_LOSE_CONFIRM = {"BONUS_BREADTH": 0.01, "BONUS_CONFIRM": -0.01}


# --------------------------------------------------------------------------- resume


def start_driver(repo: Path, steps: list[dict], limit: int, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "driver.py", str(repo), json.dumps(steps), str(limit)], cwd=repo,
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_at(repo: Path, tmp_path: Path, steps: list[dict], tag: str, **env: str) -> int:
    """Start the daemon, SIGKILL it when it reaches `tag`; returns the paused process's pid."""
    proc = start_driver(repo, steps, 1, **env)
    paused = wait_for(tmp_path / "signals" / tag, proc)
    proc.kill()
    proc.wait()
    return paused


def resume(repo: Path) -> None:
    proc = start_driver(repo, [{"BONUS_BREADTH": -0.03}], 1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def assert_recovered(repo: Path, exp_id: str, status: str) -> None:
    ids = [r["id"] for r in rows(repo) if r.get("type") == "experiment"]
    assert len(ids) == len(set(ids)), f"duplicated rows: {ids}"
    assert next(r for r in rows(repo) if r.get("id") == exp_id)["status"] == status
    assert git(worktree(repo), "status", "--porcelain") == ""
    assert candidates(repo)[-1]["description"] == "BONUS_BREADTH=-0.03"  # and it went on


def make_fake_repo(root: Path, config: str = CONFIG,
                   extra_files: dict[str, str] | None = None) -> Path:
    """A committed git repository at `root` whose benchmark is the fake one (see
    test_scheduler); the caller sets AUTOGOLF_CACHE_ROOT (the `cache_root` fixture's path)."""
    root.mkdir(parents=True)
    files = {
        ".gitignore": ".autogolf/\nlogs/\n", "autogolf.yaml": config, "notes.md": "notes\n",
        "fakebench.py": FAKEBENCH_SOURCE, "checks.py": CHECKS_SOURCE,
        "knobs.sh": "LR=0.04\nBONUS_BREADTH=0\nBONUS_CONFIRM=0\nMODE=ok\n",
        **(extra_files or {}),
    }
    for name, text in files.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


# --------------------------------------------------------------------------- real proposers


def commit_files(repo: Path, files: dict[str, str], message: str = "more files") -> None:
    """Write files into the user's checkout and commit them (a session branches from there)."""
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def run_configured(repo: Path, max_experiments: int | None = None, new_session: bool = False,
                   **cfg_changes) -> str:
    """The daemon with the proposer(s) autogolf.yaml configures, plus `cfg_changes`."""
    cfg = dataclasses.replace(load_config(repo / "autogolf.yaml"), **cfg_changes)
    rules = scheduler.StopRules(max_experiments=max_experiments,
                                max_consecutive_failures=cfg.max_consecutive_failures,
                                stop_file=repo / cfg.stop_file)
    return scheduler.Scheduler(repo, cfg, rules, new_session=new_session,
                               out=lambda s: None).run()


def checkout_state(repo: Path) -> tuple[str, ...]:
    """What the daemon must never change in the user's checkout: head, branch, status and
    every tracked file's content (as git hashes it)."""
    return (git(repo, "rev-parse", "HEAD"), git(repo, "branch", "--show-current"),
            git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored=no"),
            git(repo, "ls-files", "-s"),
            git(repo, "hash-object", *git(repo, "ls-files").splitlines()))
