"""Fault injection (issue 6): whatever the night brings, no row is lost and nothing lingers.

Every test seeds the ledger with a normal run first (a session, the baseline E0001 and a
stop row; the ladder is breadth only, to keep the tests short), injects one fault, and ends
with `fault.done(...)`, which checks what must hold after every fault: the ledger bytes from
before are an exact prefix of the bytes after (never overwritten or truncated), no earlier
row is lost, the expected rows are there, ids are unique, and no process started for the
test is still alive (psutil). With AUTOGOLF_FAULT_REPORT=<file> each test appends
{fault, survived, rows_lost} to that file;
bench/fault_matrix.py runs this module that way and prints the counts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest
from scheduler_helpers import (
    WIN_BOTH,
    Scripted,
    branch_head,
    candidates,
    cli,
    git,
    kill_at,
    resume,
    rows,
    run_daemon,
    session_of,
    worktree,
)

from loop.config import load_config
from loop.daemon import scheduler
from loop.events import RunEvents
from loop.proposers import Proposal
from loop.store.ledger import Ledger

# A benchmark that misbehaves on demand (FAULT=... in knobs.sh), else runs fakebench.py.
# Every process it starts writes its pid into FAKE_SIGNAL_DIR, so the repo fixture's
# teardown can kill a survivor even when a test fails.
FAULTBENCH_SOURCE = '''\
import os, runpy, signal, subprocess, sys, time
knobs = dict(l.strip().split("=", 1) for l in open("knobs.sh") if "=" in l)
fault = knobs.get("FAULT", "none")
signals = os.environ["FAKE_SIGNAL_DIR"]

def note(tag, pid):
    with open(os.path.join(signals, f"{tag}-{pid}"), "w") as f:
        f.write(str(pid))

def step(n, total, loss="4.0000"):
    print(f"step:{n}/{total} train_loss:{loss} train_time:{n * 10}ms step_avg:10.00ms "
          "tok_s:1000", flush=True)

if fault == "stubborn":  # parent and forked child both ignore SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        note("child", os.getpid())
        time.sleep(120)
        os._exit(0)
    note("parent", os.getpid())
    step(1, 4)
    time.sleep(120)
elif fault == "hog":  # a child holding 300 MB
    code = ("import os, sys, time; x = b'\\\\1' * (300 << 20); "
            "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)")
    subprocess.Popen([sys.executable, "-c", code, os.path.join(signals, "hog")])
    note("parent", os.getpid())
    step(1, 4)
    time.sleep(120)
elif fault == "nan":  # diverges, then does not stop by itself
    note("parent", os.getpid())
    step(1, 4)
    step(2, 4, loss="nan")
    time.sleep(120)
elif fault == "slow":  # 1000 steps of 0.1 s: far past any test timeout
    note("parent", os.getpid())
    for n in range(1, 1001):
        step(n, 1000)
        time.sleep(0.1)
else:
    runpy.run_path("fakebench.py", run_name="__main__")
'''

FAST = {"kill_grace_s": 0.5}  # stopped children get SIGKILL half a second after SIGTERM


# --------------------------------------------------------------------------- fixtures


def survivors(signals: Path) -> list[int]:
    """Live processes (not zombies, not us) started for this test: they carry its env."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if (process.environ().get("FAKE_SIGNAL_DIR") == str(signals)
                    and process.status() != psutil.STATUS_ZOMBIE):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


class FaultCheck:
    """Snapshot before a fault (`inject`), the invariants after it (`done`)."""

    def __init__(self, name: str, repo: Path, signals: Path) -> None:
        self.name, self.repo, self.signals = name, repo, signals
        self.ledger = repo / ".autogolf" / "ledger.jsonl"
        self.before = b""
        self.injected = False
        self.survived = False
        self.rows_lost = 0

    def inject(self) -> None:
        self.before = self.ledger.read_bytes() if self.ledger.exists() else b""
        self.injected = True

    def lost(self, expect_ids: tuple[str, ...] = ()) -> int:
        after = self.ledger.read_bytes() if self.ledger.exists() else b""
        kept_lines = set(after.splitlines())
        gone = [line for line in self.before.splitlines() if line not in kept_lines]
        ids = {r.get("id") for r in Ledger(self.ledger).rows()}
        return len(gone) + len([i for i in expect_ids if i not in ids])

    def done(self, *expect_ids: str) -> None:
        """Assert the invariants; the fault counts as survived only if they all hold."""
        after = self.ledger.read_bytes()
        assert after.startswith(self.before), "the ledger was overwritten or truncated"
        self.rows_lost = self.lost(expect_ids)
        assert self.rows_lost == 0, f"{self.rows_lost} rows lost"
        exp_ids = [r["id"] for r in Ledger(self.ledger).rows() if r.get("type") == "experiment"]
        assert len(exp_ids) == len(set(exp_ids)), f"duplicated rows: {exp_ids}"
        deadline = time.monotonic() + 5  # a SIGKILLed process needs a moment to be reaped
        while survivors(self.signals) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert survivors(self.signals) == [], "a process started for the test survived"
        self.survived = True

    def report(self) -> None:
        path = os.environ.get("AUTOGOLF_FAULT_REPORT")
        if not path or not self.injected:
            return
        if not self.survived:
            self.rows_lost = self.lost()
        with open(path, "a") as f:
            f.write(json.dumps({"fault": self.name, "survived": self.survived,
                                "rows_lost": self.rows_lost}) + "\n")


@pytest.fixture
def frepo(repo: Path) -> Path:
    """The fake repo with the fault benchmark, seeded with one normal run."""
    (repo / "faultbench.py").write_text(FAULTBENCH_SOURCE)
    config = repo / "autogolf.yaml"
    text = config.read_text().replace("fakebench.py", "faultbench.py")
    config.write_text(text.replace("ladder: [breadth, confirm]", "ladder: [breadth]")
                      + "limits: {kill_grace_s: 0.5, min_free_disk_mb: 1}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fault benchmark")
    run_daemon(repo)  # the baseline E0001, then the proposer has nothing: a stop row
    return repo


@pytest.fixture
def fault(request: pytest.FixtureRequest, frepo: Path, tmp_path: Path):
    check = FaultCheck(request.node.name, frepo, tmp_path / "signals")
    yield check
    check.report()


def last_row(repo: Path) -> dict:
    return rows(repo)[-1]


def with_timeout(repo: Path, profile: str, seconds: float) -> dict:
    profiles = dict(load_config(repo / "autogolf.yaml").profiles)
    profiles[profile] = dataclasses.replace(profiles[profile], timeout_s=seconds)
    return profiles


# --------------------------------------------------------------------------- the benchmark


def test_a_hanging_benchmark_is_a_timeout(frepo, fault):
    fault.inject()
    run_daemon(frepo, {"MODE": "hang"},
               profiles=with_timeout(frepo, "breadth", 2), **FAST)
    row = candidates(frepo)[-1]
    assert row["status"] == "timeout" and row["rungs"]["breadth"]["wall_s"] < 30  # hang: 60 s
    fault.done(row["id"])


def test_a_benchmark_whose_child_ignores_sigterm_leaves_no_process(frepo, fault):
    fault.inject()
    run_daemon(frepo, {"FAULT": "stubborn"},
               profiles=with_timeout(frepo, "breadth", 1.5), **FAST)
    row = candidates(frepo)[-1]
    assert row["status"] == "timeout"
    assert len(list(fault.signals.glob("child-*"))) == 1  # the child did start
    fault.done(row["id"])


def test_a_benchmark_past_the_memory_limit_is_stopped_as_oom(frepo, fault):
    fault.inject()
    run_daemon(frepo, {"FAULT": "hog"}, max_memory_mb=200, **FAST)
    row = candidates(frepo)[-1]
    assert row["status"] == "crash"
    assert "oom: " in row["reason"] and "limits.max_memory_mb 200" in row["reason"]
    assert row["rungs"]["breadth"]["early_abort"].startswith("oom: ")
    assert not row["rungs"]["breadth"]["timed_out"]  # stopped by the watchdog, not the timeout
    fault.done(row["id"])


def test_a_machine_under_the_available_memory_floor_stops_the_benchmark(frepo, fault):
    floor = psutil.virtual_memory().total // (1024 * 1024) + 1
    fault.inject()
    run_daemon(frepo, {"FAULT": "hog"}, min_available_memory_mb=floor, **FAST)
    row = candidates(frepo)[-1]
    assert row["status"] == "crash" and "limits.min_available_memory_mb" in row["reason"]
    fault.done(row["id"])


def test_a_nan_loss_stops_the_run_at_once_as_diverged(frepo, fault):
    fault.inject()
    run_daemon(frepo, {"FAULT": "nan"}, **FAST)
    row = candidates(frepo)[-1]
    assert (row["status"], row["reason"]) == (
        "crash", "at breadth: diverged: train_loss nan at step 2/4")
    assert not row["rungs"]["breadth"]["timed_out"]
    fault.done(row["id"])


def test_a_run_projected_past_its_timeout_is_stopped_early(frepo, fault):
    fault.inject()
    run_daemon(frepo, {"FAULT": "slow"},
               profiles=with_timeout(frepo, "breadth", 20), **FAST)
    row = candidates(frepo)[-1]
    assert row["status"] == "timeout" and "projected" in row["reason"]
    assert not row["rungs"]["breadth"]["timed_out"]  # stopped early, not at the 20 s timeout
    fault.done(row["id"])


def test_a_missing_trainer_is_named_by_the_checks_and_the_benchmark(frepo, fault):
    fault.inject()
    run_daemon(frepo, {"LR": 0.042},
               checks_command="$PYTHON -m py_compile benchmark/train_gpt_mlx.py")
    checks = candidates(frepo)[-1]
    assert checks["status"] == "checks_failed"
    assert "benchmark/train_gpt_mlx.py" in checks["reason"]
    config = frepo / "autogolf.yaml"
    config.write_text(config.read_text().replace("$PYTHON faultbench.py",
                                                 "$PYTHON benchmark/train_gpt_mlx.py"))
    done = cli(frepo, "bench", "--profile", "breadth")
    manual = last_row(frepo)
    assert done.returncode == 1 and manual["status"] == "crash"
    assert "benchmark/train_gpt_mlx.py" in manual["reason"] and "missing" in manual["reason"]
    fault.done(checks["id"], manual["id"])


# --------------------------------------------------------------------------- pre-flight


def test_free_disk_under_the_floor_stops_before_any_experiment(frepo, fault, tmp_path):
    fault.inject()
    reason = run_daemon(frepo, {"LR": 0.042}, min_free_disk_mb=10**9)
    assert reason.startswith("pre-flight: only ") and "min_free_disk_mb" in reason
    assert (last_row(frepo)["type"], last_row(frepo)["reason"]) == ("stop", reason)
    assert "0.042" not in (tmp_path / "runs.txt").read_text()  # nothing was benchmarked
    fault.done()


@pytest.fixture
def private_data(frepo: Path, tmp_path: Path, cache_root: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the sample dataset the test may damage (the shared one stays intact)."""
    root = tmp_path / "cache"
    for sub in ("data/datasets/sample_sp1024", "data/tokenizers"):
        shutil.copytree(cache_root / sub, root / sub)
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(root))
    return root


@pytest.mark.parametrize("damage, needle", [
    ("edit", "changed since the daemon started"),
    ("delete", "missing or incomplete"),
])
def test_a_dataset_changed_during_the_run_stops_it(frepo, fault, private_data, damage, needle):
    shard = next((private_data / "data/datasets/sample_sp1024").glob("*train*.bin"))

    def damaging(tree: Path) -> Proposal:
        if damage == "edit":
            data = bytearray(shard.read_bytes())
            data[-1] ^= 1
            shard.write_bytes(bytes(data))
        else:
            shard.unlink()
        (tree / "notes.md").write_text("damaged the data\n")
        return Proposal("notes", None)

    fault.inject()
    reason = run_daemon(frepo, damaging, {"LR": 0.042})
    assert reason.startswith("pre-flight: ") and needle in reason
    assert last_row(frepo)["type"] == "stop"
    assert [r["description"] for r in candidates(frepo)][-1] == "notes"  # 0.042 never ran
    fault.done()


class StrayEdit(RunEvents):
    """Someone edits the daemon's worktree between two experiments."""

    def __init__(self, repo: Path):
        self.repo = repo

    def recorded(self, row: dict) -> None:
        if not row.get("baseline"):
            (worktree(self.repo) / "stray.txt").write_text("not the daemon's\n")


def test_a_worktree_changed_behind_the_daemons_back_stops_the_run(frepo, fault):
    cfg = dataclasses.replace(load_config(frepo / "autogolf.yaml"))
    daemon = scheduler.Scheduler(frepo, cfg, scheduler.StopRules(),
                                 proposer=Scripted({"LR": 0.042}), out=lambda s: None,
                                 events=StrayEdit(frepo))
    fault.inject()
    reason = daemon.run()
    assert reason.startswith("pre-flight: the daemon's worktree") and "stray.txt" in reason
    assert last_row(frepo)["reason"] == reason
    fault.done(candidates(frepo)[-1]["id"])


# --------------------------------------------------------------------------- corrupt inputs


def test_a_malformed_config_is_refused_naming_the_file_and_line(frepo, fault):
    config = frepo / "autogolf.yaml"
    config.write_text(config.read_text() + "ladder: [breadth\n")
    fault.inject()
    done = cli(frepo, "run", "--max-experiments", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "autogolf.yaml" in done.stderr and "line" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    fault.done()


def test_a_corrupt_ledger_line_is_reported_with_its_number_and_the_rest_read(frepo, fault):
    ledger = frepo / ".autogolf" / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:2] + [b'{"type": "experiment", "id": \n'] + lines[2:]))
    fault.inject()
    status = cli(frepo, "status")
    assert status.returncode == 0 and "line 3" in status.stderr
    assert "E0001" in status.stdout and "last stop" in status.stdout  # rows around it read
    done = cli(frepo, "run", "--max-experiments", "1")
    assert done.returncode == 0, done.stderr
    assert "line 3" in done.stdout + done.stderr
    fault.done("E0001", candidates(frepo)[-1]["id"])
    assert candidates(frepo)[-1]["id"] == "E0002"


def test_a_torn_ledger_write_is_kept_and_the_next_row_starts_on_its_own_line(frepo, fault):
    ledger = frepo / ".autogolf" / "ledger.jsonl"
    with ledger.open("ab") as f:
        f.write(b'{"type": "experiment", "id": "E0099", "sta')  # power lost mid-write
    fault.inject()
    run_daemon(frepo, {"LR": 0.042})
    reader = Ledger(ledger)
    assert reader.rows()[-2]["description"] == "LR=0.042"
    assert any("line 4: not valid JSON" in p for p in reader.problems)
    fault.done(candidates(frepo)[-1]["id"])


def test_a_half_written_patch_breaks_neither_show_nor_resume(frepo, fault):
    run_daemon(frepo, {"LR": 0.041})
    patch = frepo / ".autogolf" / "experiments" / "E0002" / "patch.diff"
    text = patch.read_text()
    patch.write_text(text[: len(text) // 2])
    fault.inject()
    show = cli(frepo, "show", "2")
    assert show.returncode == 0, show.stderr
    assert "does not match" in show.stdout and "E0002/patch.diff" in show.stdout
    run_daemon(frepo, {"LR": 0.042})
    fault.done(candidates(frepo)[-1]["id"])


class TruncatesPatch(RunEvents):
    """Damages the candidate's saved patch while the confirm baseline runs."""

    def __init__(self, repo: Path):
        self.repo = repo

    def experiment_started(self, exp_id: str, proposer: str, idea: str | None,
                           description: str) -> None:
        if proposer == "baseline" and description.endswith(" at confirm"):
            for path in (self.repo / ".autogolf" / "experiments").glob("*/patch.diff"):
                path.write_text(path.read_text()[:40])


def test_a_patch_damaged_before_it_is_reapplied_abandons_only_that_candidate(frepo, fault):
    cfg = dataclasses.replace(load_config(frepo / "autogolf.yaml"), ladder=("breadth", "confirm"))
    daemon = scheduler.Scheduler(frepo, cfg, scheduler.StopRules(max_experiments=2),
                                 proposer=Scripted(WIN_BOTH, {"LR": 0.042}),
                                 out=lambda s: None, events=TruncatesPatch(frepo))
    fault.inject()
    daemon.run()
    damaged, after = candidates(frepo)[-2:]
    assert damaged["status"] == "interrupted" and "could not be re-applied" in damaged["reason"]
    assert after["description"] == "LR=0.042"  # the loop went on
    assert git(worktree(frepo), "status", "--porcelain") == ""
    fault.done(damaged["id"], after["id"])


# --------------------------------------------------------------------------- daemon killed


def assert_kept_commits_intact(repo: Path) -> None:
    head = branch_head(repo)
    for row in candidates(repo):
        if row["status"] == "keep":
            git(repo, "merge-base", "--is-ancestor", row["commit"], head)


@pytest.mark.parametrize("tag, env", [
    ("checks", {"FAKE_BLOCK": "checks"}),
    ("E0002-breadth", {"FAKE_BLOCK": "E0002-breadth"}),
    ("before_commit", {"PAUSE_AT": "before_commit"}),
    ("commit", {"PAUSE_AT": "commit"}),
    ("record", {"PAUSE_AT": "record"}),
])
def test_sigkill_of_the_daemon_then_restart_loses_nothing(frepo, fault, tmp_path, tag, env):
    fault.inject()
    kill_at(frepo, tmp_path, [WIN_BOTH], tag, **env)
    resume(frepo)
    row = next(r for r in rows(frepo) if r.get("id") == "E0002")
    assert row["status"] == ("keep" if tag in ("before_commit", "commit", "record")
                             else "interrupted")
    assert git(worktree(frepo), "status", "--porcelain") == ""
    assert_kept_commits_intact(frepo)
    assert candidates(frepo)[-1]["description"] == "BONUS_BREADTH=-0.03"
    fault.done("E0002")


# --------------------------------------------------------------------------- stop records


def stop_by_signal(tree: Path) -> Proposal:
    os.kill(os.getpid(), signal.SIGTERM)  # the daemon's handler only notes it
    (tree / "notes.md").write_text("signalled\n")
    return Proposal("notes", None)


def explode(tree: Path) -> Proposal:
    raise RuntimeError("proposer blew up")


def touch_stop_file(tree: Path) -> Proposal:
    (tree.parents[2] / ".autogolf" / "STOP").touch()  # tree = <repo>/.autogolf/worktrees/S
    (tree / "notes.md").write_text("asked to stop\n")
    return Proposal("notes", None)


# name: (StopRules settings, config changes, proposals, what the stop row says)
STOPS = {
    "max_experiments": ({"max_experiments": 1}, {}, [{"LR": 0.042}, {"LR": 0.043}],
                        "reached --max-experiments 1"),
    "consecutive_failures": ({}, {}, [{"MODE": "crash", "LR": 0.04 + i / 1000}
                                      for i in range(4)], "3 consecutive failures"),
    "signal": ({}, {}, [stop_by_signal, {"LR": 0.043}], "stopped by SIGTERM"),
    "stop_file": ({}, {}, [touch_stop_file, {"LR": 0.043}], "stop file .autogolf/STOP found"),
    "preflight": ({}, {"min_free_disk_mb": 10**9}, [{"LR": 0.042}], "pre-flight: only "),
    "exhausted": ({}, {}, [], "the proposer has nothing left to propose"),
    "awake_budget": ({"hours": 1e-9}, {}, [{"LR": 0.042}], "of awake time"),
    "deadline": ({"deadline": 0.0}, {}, [{"LR": 0.042}], "time limit"),
    "error": ({}, {}, [explode], "error: RuntimeError: proposer blew up"),
}


@pytest.mark.parametrize("name", list(STOPS))
def test_every_stop_reason_leaves_a_stop_row(frepo, fault, name):
    rules_kw, cfg_kw, steps, needle = STOPS[name]
    cfg = dataclasses.replace(load_config(frepo / "autogolf.yaml"), **cfg_kw)
    rules = scheduler.StopRules(max_consecutive_failures=3, stop_file=frepo / cfg.stop_file,
                                **rules_kw)
    daemon = scheduler.Scheduler(frepo, cfg, rules, proposer=Scripted(*steps),
                                 out=lambda s: None)
    fault.inject()
    if name == "error":
        with pytest.raises(RuntimeError):
            daemon.run()
    else:
        daemon.run()
    last = last_row(frepo)
    assert last["type"] == "stop" and needle in last["reason"]
    assert last["session"] == session_of(frepo)
    fault.done()
