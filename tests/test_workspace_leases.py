"""Claims as leases, a result for every experiment, status updates, plausibility (issue 20).

Daemons run against the FAKE benchmark (tests/scheduler_helpers.py) on a shared workspace: a
folder, or the hf-bucket backend's local stand-in (tests/test_workspace.py's `shared`). The
SIGKILL test runs a real daemon process (driver.py) on a folder workspace and kills it in the
middle of its benchmark. Lease times are short, set through the config; nothing depends on
timing luck: waits poll with generous deadlines, and "later than the lease" is a clock jump.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import yaml
from scheduler_helpers import (
    CONFIG,
    DRIVER_SOURCE,
    TESTS_DIR,
    Scripted,
    make_fake_repo,
    start_driver,
)
from test_workspace import LOSE, WIN, Workspace, backlog, candidates, files_of, run_agent

from loop.config import load_config
from loop.daemon import scheduler
from loop.workspace import board as wb
from loop.workspace import lease
from loop.workspace.dirstore import DirStore

DEADLINE_S = 60.0  # generous: the machine running the tests may be busy


@pytest.fixture(autouse=True)
def fake_env(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(cache_root))
    monkeypatch.delenv("AUTOGOLF_AGENT_ID", raising=False)
    monkeypatch.delenv("FAKE_RUNS", raising=False)


@pytest.fixture(params=["dir", "hf-bucket"])
def shared(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    return Workspace(request.param, tmp_path, monkeypatch)


def wait_until(condition: Callable[[], object], what: str, deadline_s: float = DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)
    return value


def posts_of(ws: Workspace, agent: str, kind: str | None = None) -> list[dict]:
    """An agent's posts (front-matter + path), oldest first; `kind`: claim, renew, result..."""
    found = []
    for path in files_of(ws, agent):
        if path.startswith(wb.POSTS) and (kind is None or f"-{kind}" in path):
            meta, body = wb.parse_post(ws.text(path))
            found.append({**meta, "path": path, "body": body})
    return sorted(found, key=lambda p: p["timestamp"])


def results_of(ws: Workspace, agent: str) -> list[dict]:
    return [json.loads(ws.text(p)) for p in files_of(ws, agent) if p.startswith(wb.RESULTS)]


def lease_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("autogolf-lease")]


def daemon_for(ws: Workspace, repo: Path, agent: str, *steps, out: list[str] | None = None,
               **ws_kw) -> scheduler.Scheduler:
    cfg = dataclasses.replace(load_config(repo / "autogolf.yaml"), ladder=("breadth",),
                              workspace=ws.config(agent, **ws_kw))
    rules = scheduler.StopRules(max_experiments=len(steps), max_consecutive_failures=5)
    return scheduler.Scheduler(repo, cfg, rules, proposer=Scripted(*steps),
                               out=(out.append if out is not None else lambda s: None))


# --------------------------------------------------------------------------- leases


def test_a_claim_carries_a_lease_renewed_while_the_experiment_runs(shared, tmp_path):
    alice = make_fake_repo(tmp_path / "alice")
    daemon = daemon_for(shared, alice, "alice", LOSE, lease_s=2.0, renew_every_s=0.1)
    real_checks = daemon._checks

    def slow_checks(exp):  # the experiment goes on until a renewal was posted
        wait_until(lambda: posts_of(shared, "alice", "renew"), "a lease renewal")
        return real_checks(exp)

    daemon._checks = slow_checks
    shared.running = "alice"
    daemon.run()

    [claim] = posts_of(shared, "alice", "claim")
    renewals = posts_of(shared, "alice", "renew")
    [result] = posts_of(shared, "alice", "result")
    assert claim["lease_s"] == "2" and claim["type"] == "experiment-proposal"
    assert lease.parse_time(claim["lease_expires"]) == (
        lease.parse_time(claim["timestamp"]) + timedelta(seconds=2))
    assert renewals and all(r["type"] == "experiment-proposal" for r in renewals)
    assert all(r["experiment"] == claim["experiment"] for r in renewals)
    expiries = [lease.parse_time(p["lease_expires"]) for p in [claim, *renewals]]
    assert expiries == sorted(expiries)  # each renewal pushes the expiry on
    # Renewals stopped with the result (the thread joined before the result was posted).
    assert all(r["timestamp"] <= result["timestamp"] for r in renewals)
    assert not lease_threads()
    count = len(posts_of(shared, "alice", "renew"))
    time.sleep(0.5)  # five renewal periods: a thread left running would have posted again
    assert len(posts_of(shared, "alice", "renew")) == count


def test_a_live_claim_blocks_others_and_an_expired_one_does_not(shared, tmp_path, monkeypatch):
    alice = make_fake_repo(tmp_path / "alice")
    bob = make_fake_repo(tmp_path / "bob")
    daemon = daemon_for(shared, alice, "alice", LOSE, lease_s=600.0)

    def die(exp):  # alice's run ends with an error mid-experiment: no result is posted
        raise RuntimeError("disk on fire")

    daemon._checks = die
    shared.running = "alice"
    with pytest.raises(RuntimeError):
        daemon.run()
    assert not lease_threads()  # left() stopped the renewals
    assert not posts_of(shared, "alice", "result")
    [left] = posts_of(shared, "alice", "status-left")
    assert "disk on fire" in left["reason"]

    run_agent(shared, bob, "bob", LOSE)  # the lease holds: bob skips the change
    [skipped] = candidates(bob)
    assert skipped["status"] == "duplicate" and skipped["rungs"] == {}
    assert skipped["reason"].startswith("claimed by agent alice (E0002, lease held until")

    later = lease.utc_now() + timedelta(seconds=601)
    monkeypatch.setattr(lease, "utc_now", lambda: later)
    run_agent(shared, bob, "bob", LOSE)  # the lease has expired: bob measures it
    assert candidates(bob)[-1]["status"] == "discard"
    assert candidates(bob)[-1]["rungs"]["breadth"]["val_bpb"] is not None


def test_a_machine_local_failure_releases_the_claim_for_others(shared, tmp_path):
    alice = make_fake_repo(tmp_path / "alice")
    bob = make_fake_repo(tmp_path / "bob")
    # Alice's machine fails the checks for its own reasons; the change itself is fine.
    cfg = dataclasses.replace(load_config(alice / "autogolf.yaml"), ladder=("breadth",),
                              checks_command="exit 3", workspace=shared.config("alice"))
    shared.running = "alice"
    scheduler.Scheduler(alice, cfg, scheduler.StopRules(max_experiments=1),
                        proposer=Scripted(WIN), out=lambda s: None).run()
    assert candidates(alice)[0]["status"] == "checks_failed"

    run_agent(shared, bob, "bob", WIN)
    assert candidates(bob)[0]["status"] == "keep"  # measured by bob, not skipped


def test_a_judged_result_keeps_blocking_after_its_lease(shared, tmp_path, monkeypatch):
    alice = make_fake_repo(tmp_path / "alice")
    bob = make_fake_repo(tmp_path / "bob")
    run_agent(shared, alice, "alice", LOSE, lease_s=1.0)
    later = lease.utc_now() + timedelta(hours=1)
    monkeypatch.setattr(lease, "utc_now", lambda: later)
    run_agent(shared, bob, "bob", LOSE)
    assert candidates(bob)[0]["reason"].startswith("measured by agent alice (E0002, discard)")


# --------------------------------------------------------------------------- SIGKILL


@pytest.fixture
def signals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "signals"
    folder.mkdir()
    monkeypatch.setenv("FAKE_SIGNAL_DIR", str(folder))
    monkeypatch.setenv("TESTS_DIR", str(TESTS_DIR))
    yield folder
    for pid_file in folder.iterdir():  # a paused benchmark a failed test left behind
        try:
            psutil.Process(int(pid_file.read_text())).kill()
        except (psutil.Error, ValueError):
            pass


def driver_repo(root: Path, agent: str, share: Path, lease_s: float, renew_s: float) -> Path:
    config = CONFIG.replace("ladder: [breadth, confirm]", "ladder: [breadth]") + yaml.safe_dump(
        {"workspace": {"agent_id": agent, "path": str(share), "lease_s": lease_s,
                       "renew_every_s": renew_s}})
    return make_fake_repo(root, config=config, extra_files={"driver.py": DRIVER_SOURCE})


def test_a_daemon_killed_mid_experiment_loses_its_lease_and_another_takes_the_change(
        tmp_path, monkeypatch, signals):
    ws = Workspace("dir", tmp_path, monkeypatch)
    alice = driver_repo(tmp_path / "alice", "alice", ws.root, lease_s=3.0, renew_s=0.3)
    bob = make_fake_repo(tmp_path / "bob")

    # A real daemon process: its first candidate (E0002) blocks inside the benchmark.
    proc = start_driver(alice, [LOSE], 1, FAKE_BLOCK="E0002-breadth")
    try:
        bench_pid = int(wait_until(lambda: (signals / "E0002-breadth").exists()
                                   and (signals / "E0002-breadth").read_text(),
                                   "alice's benchmark started"))
        # Renewed while the benchmark runs, with no call from the loop.
        wait_until(lambda: len(posts_of(ws, "alice", "renew")) >= 2, "two lease renewals")
    finally:
        proc.kill()  # SIGKILL: no handler, no result, no status-update
        proc.wait(timeout=DEADLINE_S)
    psutil.Process(bench_pid).kill()
    (signals / "E0002-breadth").unlink()
    assert not posts_of(ws, "alice", "result") and not posts_of(ws, "alice", "status-left")

    claims = posts_of(ws, "alice", "claim") + posts_of(ws, "alice", "renew")
    expiry = max(lease.parse_time(p["lease_expires"]) for p in claims)
    wait_until(lambda: lease.utc_now() > expiry, "alice's lease expired", 3.0 + DEADLINE_S)
    assert len(posts_of(ws, "alice", "renew")) == len(claims) - 1  # nothing renews a dead one

    run_agent(ws, bob, "bob", LOSE)
    [taken] = candidates(bob)
    assert taken["status"] == "discard" and taken["rungs"]["breadth"]["val_bpb"] is not None

    # Alice restarts: the row recovered for E0002 is published, releasing the claim for good.
    restart = start_driver(alice, [{"BONUS_BREADTH": -0.03}], 1)
    out, _ = restart.communicate(timeout=DEADLINE_S * 2)
    assert restart.returncode == 0, out
    released = [p for p in posts_of(ws, "alice", "result") if p["experiment"] == "E0002"]
    assert [p["status"] for p in released] == ["interrupted"]


# --------------------------------------------------------------------------- every result


def test_every_finished_experiment_posts_a_result_and_results_json(shared, tmp_path):
    alice = make_fake_repo(tmp_path / "alice")
    steps = ({"MODE": "crash"}, {"CHECKS": "fail"}, LOSE, WIN)
    shared.running = "alice"
    daemon_for(shared, alice, "alice", *steps).run()
    rows = candidates(alice)
    assert [r["status"] for r in rows] == ["crash", "checks_failed", "discard", "keep"]
    assert [r["workspace"] for r in rows] == ["sent"] * 4

    posts = {p["experiment"]: p for p in posts_of(shared, "alice", "result")}
    records = {r["experiment"]: r for r in results_of(shared, "alice")}
    for row in rows:
        assert posts[row["id"]]["status"] == row["status"]
        assert posts[row["id"]]["reason"] == " ".join(row["reason"].split())
        record = records[row["id"]]
        assert record["status"] == row["status"] and record["reason"] == row["reason"]
    # No score is unknown (null), never 0; the tokens the trainer scored are test_samples.
    crash, checks = records[rows[0]["id"]], records[rows[1]["id"]]
    assert crash["score"] is None and crash["profile"] == "breadth"
    assert checks["score"] is None and checks["profile"] is None
    for row in rows[2:]:
        assert records[row["id"]]["score"] == row["rungs"]["breadth"]["val_bpb"]
        assert records[row["id"]]["test_samples"] == 16384  # fakebench's val_tokens
        assert records[row["id"]]["incumbent_score"] == row["incumbent_before"]["breadth"]


def test_with_publish_every_experiment_off_only_keeps_get_results_json(shared, tmp_path):
    alice = make_fake_repo(tmp_path / "alice")
    run_agent(shared, alice, "alice", LOSE, WIN, publish_every_experiment=False)
    lose, win = candidates(alice)
    assert {p["experiment"] for p in posts_of(shared, "alice", "result")} == {lose["id"], win["id"]}
    assert [r["experiment"] for r in results_of(shared, "alice")] == [win["id"]]


def test_the_gain_is_over_the_agents_own_baseline(shared, tmp_path):
    alice = make_fake_repo(tmp_path / "alice")
    run_agent(shared, alice, "alice", WIN)
    [record] = results_of(shared, "alice")
    [post] = posts_of(shared, "alice", "result")
    baseline = next(r for r in scheduler_rows(alice) if r.get("baseline"))
    base = baseline["rungs"]["breadth"]["val_bpb"]
    assert record["baseline_score"] == base
    assert record["gain"] == pytest.approx(base - record["score"])
    assert float(post["gain"]) == pytest.approx(record["gain"])


def scheduler_rows(repo: Path) -> list[dict]:
    from loop.store.ledger import Ledger

    return [r for r in Ledger(repo / ".autogolf" / "ledger.jsonl").rows()
            if r.get("type") == "experiment"]


# --------------------------------------------------------------------------- status updates


def test_a_daemon_posts_a_status_update_when_it_joins_and_when_it_stops(shared, tmp_path):
    alice = make_fake_repo(tmp_path / "alice")
    run_agent(shared, alice, "alice", WIN, LOSE)
    [joined] = posts_of(shared, "alice", "status-joined")
    [left] = posts_of(shared, "alice", "status-left")
    assert joined["type"] == left["type"] == "status-update"
    assert joined["event"] == "joined" and joined["proposer"] == "search"
    assert joined["profile"] == "breadth" and joined["dataset"] == candidates(alice)[0]["dataset"]
    assert "Plan: proposer" in joined["body"]
    assert left["event"] == "left" and left["reason"] == "reached --max-experiments 2"
    assert left["experiments"] == "1 discard, 1 keep"
    assert joined["session"] == left["session"] == candidates(alice)[0]["session"]
    assert joined["timestamp"] < left["timestamp"]


# --------------------------------------------------------------------------- plausibility


def offer(ws: Workspace, agent: str, exp: str, score: float, incumbent: float,
          patch_text: str) -> None:
    """Another agent's kept result with a patch, written straight into the workspace."""
    patch = f"{wb.SCRIPTS}/{exp}-patch_{agent}.diff"
    ws.store.write_new(patch, patch_text.encode())
    meta = {"type": "result", "agent_id": agent, "timestamp": "2026-01-01T00:00:00+00:00",
            "experiment": exp, "description": f"{agent}'s change", "status": "keep",
            "score": score, "incumbent_score": incumbent, "metric": "val_bpb", "patch": patch}
    ws.store.write_new(f"{wb.POSTS}/x-result-{exp}_{agent}.md",
                       wb.render_post(meta, "kept").encode())


def test_implausible_results_of_others_never_become_ideas(shared, tmp_path):
    alice = make_fake_repo(tmp_path / "alice")
    diff = "--- a/notes.md\n+++ b/notes.md\n@@ -1 +1 @@\n-notes\n+more notes\n"
    offer(shared, "mallory", "E1", 0.3, 1.2, diff)  # under the val_bpb floor
    offer(shared, "eve", "E2", 1.0, 1.25, diff)  # a one-step jump of 0.25
    offer(shared, "carol", "E3", 1.19, 1.2, diff)  # believable
    out: list[str] = []
    shared.running = "alice"
    daemon_for(shared, alice, "alice", LOSE, out=out).run()
    texts = [i.text for i in backlog(alice).ideas]
    assert [t for t in texts if "credit: agent" in t] == [
        next(t for t in texts if "agent carol" in t)]
    warned = [line for line in out
              if line.startswith("warning: workspace:") and "implausible" in line]
    assert len(warned) == 2
    assert any("mallory" in w and "under 0.5" in w for w in warned)
    assert any("eve" in w and "one-step gain of 0.2500" in w for w in warned)


# --------------------------------------------------------------------------- the renewer


def test_the_renewer_survives_a_failing_renewal_and_stops_cleanly():
    calls: list[int] = []
    warnings: list[str] = []

    def renew(stopped):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("share went away")

    renewer = lease.Renewer(renew, 0.01, warnings.append, name="autogolf-lease-test").start()
    wait_until(lambda: len(calls) >= 3, "renewals after a failed one")
    assert renewer.stop() and not renewer.alive
    assert warnings == ["workspace: lease renewal failed: OSError: share went away"]
    done = len(calls)
    time.sleep(0.1)
    assert len(calls) == done


def test_a_claim_without_a_lease_holds_for_the_conventional_15_minutes():
    stamped = lease.parse_time("2026-01-01T10:00:00Z")
    assert lease.claim_expiry({"timestamp": "2026-01-01T10:00:00Z"}) == (
        stamped + timedelta(minutes=15))
    assert lease.claim_expiry({"timestamp": "x", "lease_expires": "2026-01-01T10:05:00+00:00"}) \
        == stamped + timedelta(minutes=5)
    assert lease.claim_expiry({"timestamp": "not a time"}) is None


def test_a_queued_renewal_is_never_sent_late(tmp_path):
    board = wb.Board(DirStore(tmp_path / "unmounted"), "alice", tmp_path / "outbox")
    assert board.put_now("message_board/r_alice.md", b"renewal") == "skipped"
    assert board.queued() == []


@pytest.mark.parametrize("score, bob_status", [(0.2, "keep"), (1.0, "duplicate")])
def test_only_a_plausible_judged_result_of_another_agent_blocks_the_change(
        shared, tmp_path, score, bob_status):
    alice = make_fake_repo(tmp_path / "alice")
    bob = make_fake_repo(tmp_path / "bob")
    cfg = dataclasses.replace(load_config(alice / "autogolf.yaml"), ladder=("breadth",),
                              checks_command="exit 3", workspace=shared.config("alice"))
    scheduler.Scheduler(alice, cfg, scheduler.StopRules(max_experiments=1),
                        proposer=Scripted(WIN), out=lambda s: None).run()
    [claim] = posts_of(shared, "alice", "claim")  # names the change: diff hash, incumbent
    meta = {k: claim[k] for k in ("diff_hash", "incumbent", "dataset", "experiment")}
    meta.update(type="result", agent_id="mallory", timestamp=claim["timestamp"],
                status="keep", score=score, incumbent_score=1.01, metric="val_bpb")
    shared.store.write_new(f"{wb.POSTS}/x-result-E9_mallory.md",
                           wb.render_post(meta, "kept").encode())
    run_agent(shared, bob, "bob", WIN)
    assert candidates(bob)[0]["status"] == bob_status
