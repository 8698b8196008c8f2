"""Several daemons, one shared workspace (SPEC section 10), against the FAKE benchmark.

Two temporary clones (agents alice and bob) share one workspace, a folder or the hf-bucket
backend's local stand-in; each daemon runs in this process with a scripted proposer (see
tests/scheduler_helpers.py), so every outcome is known in advance: val_bpb = 1.0 +
0.1 * ln(LR / 0.05)^2 - BONUS_BREADTH (+-1e-4), the incumbent LR=0.04.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from scheduler_helpers import Scripted, git, make_fake_repo
from test_workspace_storage import FakeBucketApi

from loop.backlog.ideas import IdeasFile
from loop.config import ConfigError, load_config
from loop.daemon import scheduler
from loop.store.ledger import Ledger
from loop.ui import cli
from loop.workspace import board as wb
from loop.workspace import hfbucket
from loop.workspace.dirstore import DirStore
from loop.workspace.hfbucket import HfBucketStore
from loop.workspace.settings import WorkspaceConfig

LOSE = {"LR": 0.2}  # far from the optimum: discarded
WIN = {"LR": 0.05}  # the optimum: kept (0.005 better than the incumbent)
BONUS = {"BONUS_BREADTH": 0.01}  # kept on any incumbent


@pytest.fixture(autouse=True)
def fake_env(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample data (tests/conftest.py's `cache_root`); no agent id from the environment."""
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(cache_root))
    monkeypatch.delenv("AUTOGOLF_AGENT_ID", raising=False)
    monkeypatch.delenv("FAKE_RUNS", raising=False)


class Workspace:
    """One shared workspace under test: a folder, or a bucket on the stand-in."""

    def __init__(self, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.kind = kind
        if kind == "dir":
            self.root = tmp_path / "shared"
            self.root.mkdir()
            self.store = DirStore(self.root)
        else:
            self.api = FakeBucketApi("team/golf")
            monkeypatch.setattr(hfbucket, "make_api", lambda: self.api)
            self.store = HfBucketStore("team/golf", api=self.api)
        wb.init_layout(self.store)
        self.writes: list[tuple[str, str]] = []  # (agent running, path written)
        self.running: str | None = None
        self._record_writes(monkeypatch)

    def config(self, agent: str, **kw) -> WorkspaceConfig:
        if self.kind == "dir":
            return WorkspaceConfig(agent, "dir", path=str(self.root), **kw)
        return WorkspaceConfig(agent, "hf-bucket", bucket="team/golf", **kw)

    def text(self, path: str) -> str:
        return self.store.read(path).decode()

    def _record_writes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cls = type(self.store)
        for name in ("write_new", "replace"):
            real = getattr(cls, name)

            def spy(store, path, data, _real=real):
                self.writes.append((self.running, path))
                return _real(store, path, data)

            monkeypatch.setattr(cls, name, spy)


@pytest.fixture(params=["dir", "hf-bucket"])
def shared(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    return Workspace(request.param, tmp_path, monkeypatch)


def run_with(repo: Path, workspace: WorkspaceConfig, *steps: dict) -> str:
    """The daemon on the breadth rung with the scripted steps, one experiment each."""
    cfg = dataclasses.replace(load_config(repo / "autogolf.yaml"), ladder=("breadth",),
                              workspace=workspace)
    rules = scheduler.StopRules(max_experiments=len(steps), max_consecutive_failures=3)
    return scheduler.Scheduler(repo, cfg, rules, proposer=Scripted(*steps),
                               out=lambda s: None).run()


def run_agent(ws: Workspace, repo: Path, agent: str, *steps: dict, **kw) -> str:
    ws.running = agent
    try:
        return run_with(repo, ws.config(agent, **kw), *steps)
    finally:
        ws.running = None


def candidates(repo: Path) -> list[dict]:
    return [r for r in Ledger(repo / ".autogolf" / "ledger.jsonl").rows()
            if r.get("type") == "experiment" and not r.get("baseline")]


def baselines(repo: Path) -> list[dict]:
    return [r for r in Ledger(repo / ".autogolf" / "ledger.jsonl").rows()
            if r.get("type") == "experiment" and r.get("baseline")]


def backlog(repo: Path) -> IdeasFile:
    session = [r for r in Ledger(repo / ".autogolf" / "ledger.jsonl").rows()
               if r.get("type") == "session"][-1]["session"]
    return IdeasFile.load(repo / ".autogolf" / "worktrees" / session / "autoresearch.ideas.md",
                          missing_ok=True)


def files_of(ws: Workspace, agent: str) -> list[str]:
    return [p for p in ws.store.list() if wb.owner_of(p) == agent]


def leaderboard_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in text.splitlines()
            if re.match(r"\| \d+ \|", ln)]


# --------------------------------------------------------------------------- two daemons


def test_two_daemons_share_one_workspace(shared: Workspace, tmp_path: Path):
    alice = make_fake_repo(tmp_path / "alice")
    bob = make_fake_repo(tmp_path / "bob")

    run_agent(shared, alice, "alice", LOSE, WIN, BONUS)
    # Bob proposes alice's discarded change, then her kept one (both measured and judged by
    # her: results that keep blocking), then his own.
    run_agent(shared, bob, "bob", LOSE, WIN, {"BONUS_BREADTH": 0.02})
    run_agent(shared, alice, "alice", {"LR": 0.03})  # alice reads the board again

    a_rows, b_rows = candidates(alice), candidates(bob)
    assert [r["status"] for r in a_rows] == ["discard", "keep", "keep", "discard"]
    assert [r["status"] for r in b_rows] == ["duplicate", "duplicate", "keep"]

    # Judged results honoured: no benchmark for bob's duplicates; the reason names the agent.
    assert b_rows[0]["rungs"] == {} and b_rows[1]["rungs"] == {}
    assert b_rows[0]["reason"].startswith(f"measured by agent alice ({a_rows[0]['id']}, discard)")
    assert b_rows[1]["reason"].startswith(f"measured by agent alice ({a_rows[1]['id']}, keep)")
    assert "workspace" not in b_rows[0]  # nothing posted for a skipped change
    assert [r["workspace"] for r in a_rows] == ["sent"] * 4
    assert b_rows[2]["workspace"] == "sent"

    # Both boards complete: a claim, a result post and a results JSON per measured experiment,
    # a patch per keep, a status-update when each run joined and left; each file named and
    # signed by its own agent.
    for agent, rows, runs in (("alice", a_rows, 2), ("bob", b_rows, 1)):
        measured = [r for r in rows if r["status"] != "duplicate"]
        kept = [r for r in rows if r["status"] == "keep"]
        files = files_of(shared, agent)
        posts = [p for p in files if p.startswith(wb.POSTS)]
        assert len([p for p in posts if "-claim-" in p]) == len(measured)
        assert len([p for p in posts if "-result-" in p]) == len(measured)
        assert len([p for p in posts if "-status-joined-" in p]) == runs
        assert len([p for p in posts if "-status-left-" in p]) == runs
        assert len([p for p in files if p.startswith(wb.RESULTS)]) == len(measured)
        assert len([p for p in files if p.startswith(wb.SCRIPTS)]) == len(kept)
        for path in posts:
            meta, _ = wb.parse_post(shared.text(path))
            assert meta["agent_id"] == agent and meta["dataset"] == rows[0]["dataset"]
        for path in (p for p in files if p.endswith(".json")):
            assert json.loads(shared.text(path))["agent_id"] == agent
    unowned = {p for p in shared.store.list() if wb.owner_of(p) is None}
    assert unowned == {"README.md", "LEADERBOARD.md"} | {f"{d}/README.md" for d in wb.FOLDERS}

    # No file of one written by the other (every write during a run, seen at the storage).
    for running, path in shared.writes:
        if running is not None:
            assert wb.owner_of(path) in (running, None), (running, path)
            assert wb.owner_of(path) is not None or path == wb.LEADERBOARD

    # Results JSON: the required and our fields.
    record = json.loads(shared.text(next(p for p in files_of(shared, "bob")
                                         if p.endswith(".json"))))
    assert record["experiment"] == b_rows[2]["id"]
    assert record["score"] == b_rows[2]["rungs"]["breadth"]["val_bpb"]
    assert record["metric"] == "val_bpb" and record["direction"] == "lower"
    assert record["profile"] == "breadth" and record["dataset"] == b_rows[2]["dataset"]
    assert record["commit"] == b_rows[2]["commit"] and record["total_bytes"] == 1005000
    assert shared.text(record["patch"]) == (bob / b_rows[2]["patch"]).read_text()

    # The leaderboard: best per agent, ranked by the gain over each one's own baseline.
    best_a = min(r["rungs"]["breadth"]["val_bpb"] for r in a_rows if r["status"] == "keep")
    best_b = b_rows[2]["rungs"]["breadth"]["val_bpb"]
    base_a, base_b = (baselines(repo)[0]["rungs"]["breadth"]["val_bpb"] for repo in (alice, bob))
    rows = leaderboard_rows(shared.text(wb.LEADERBOARD))
    expected = sorted([("alice", base_a - best_a, best_a), ("bob", base_b - best_b, best_b)],
                      key=lambda t: -t[1])
    assert [(r[1], float(r[2]), float(r[3])) for r in rows] == [
        (a, round(g, 6), round(s, 6)) for a, g, s in expected]
    assert record["baseline_score"] == base_b and record["gain"] == pytest.approx(base_b - best_b)
    assert "dataset `sample" in shared.text(wb.LEADERBOARD)

    # Kept patches become credited ideas on the other side, once each.
    offered = [i for i in backlog(bob).ideas if "agent alice" in i.text]
    assert len(offered) == 2
    for idea in offered:
        assert idea.status == "untried" and Path(idea.patch).is_file()
        assert Path(idea.patch).parent == bob / ".autogolf" / "workspace-patches"
    kept_patches = {(alice / r["patch"]).read_text() for r in a_rows if r["status"] == "keep"}
    assert {Path(i.patch).read_text() for i in offered} == kept_patches
    [to_alice] = [i for i in backlog(alice).ideas if "agent bob" in i.text]
    assert b_rows[2]["id"] in to_alice.text
    run_agent(shared, bob, "bob", {"LR": 0.045})  # syncs again: nothing offered twice
    assert len([i for i in backlog(bob).ideas if "agent alice" in i.text]) == 2


def test_publish_every_experiment_posts_discards_too(shared: Workspace, tmp_path: Path):
    alice = make_fake_repo(tmp_path / "alice")
    run_agent(shared, alice, "alice", LOSE, publish_every_experiment=True)
    [row] = candidates(alice)
    assert row["status"] == "discard" and row["workspace"] == "sent"
    files = files_of(shared, "alice")
    assert len([p for p in files if "-result-" in p]) == 1
    [result_file] = [p for p in files if p.startswith(wb.RESULTS)]
    assert json.loads(shared.text(result_file))["status"] == "discard"
    assert not [p for p in files if p.startswith(wb.SCRIPTS)]  # only kept patches published
    assert leaderboard_rows(shared.text(wb.LEADERBOARD)) == []  # a discard never ranks


def test_a_result_of_an_interrupted_experiment_releases_its_claim(shared, tmp_path: Path):
    alice = make_fake_repo(tmp_path / "alice")
    bob = make_fake_repo(tmp_path / "bob")

    def stop_after_proposing(worktree: Path):
        proposal = Scripted(LOSE).propose(worktree, [])
        daemon_signal.append("SIGTERM")
        return proposal

    daemon_signal: list[str] = []
    cfg = dataclasses.replace(load_config(alice / "autogolf.yaml"), ladder=("breadth",),
                              workspace=shared.config("alice"))
    daemon = scheduler.Scheduler(alice, cfg, scheduler.StopRules(max_experiments=1),
                                 proposer=Scripted(stop_after_proposing), out=lambda s: None)
    real_checks = daemon._checks

    def checks_then_signal(exp):
        daemon.stops.note_signal("SIGTERM")
        return real_checks(exp)

    daemon._checks = checks_then_signal
    daemon.run()
    [row] = candidates(alice)
    assert row["status"] == "interrupted" and row["workspace"] == "sent"
    run_agent(shared, bob, "bob", LOSE)
    assert candidates(bob)[0]["status"] == "discard"  # measured by bob, not skipped


# --------------------------------------------------------------------------- unreachable


def test_unreachable_workspace_queues_posts_and_sends_them_later(tmp_path: Path, monkeypatch):
    ws = Workspace("dir", tmp_path, monkeypatch)
    alice = make_fake_repo(tmp_path / "alice")
    share = tmp_path / "shared"
    share.rename(tmp_path / "unmounted")  # the network folder goes away

    run_agent(ws, alice, "alice", WIN)

    [row] = candidates(alice)
    assert row["status"] == "keep" and row["workspace"] == "queued"  # the loop went on
    outbox = alice / ".autogolf" / "workspace-outbox"
    queued = sorted(p.relative_to(outbox).as_posix() for p in outbox.rglob("*") if p.is_file())
    # status-update (joined), claim, result, results JSON, kept patch, status-update (left)
    assert len(queued) == 6 and all(wb.owner_of(p) == "alice" for p in queued)
    assert not share.exists()  # nothing created in place of the missing share

    (tmp_path / "unmounted").rename(share)  # back
    run_agent(ws, alice, "alice", BONUS)

    assert not [p for p in outbox.rglob("*") if p.is_file()]
    board = ws.store.list()
    assert set(queued) <= set(board)
    assert candidates(alice)[1]["workspace"] == "sent"
    results = [json.loads(ws.text(p)) for p in ws.store.list(wb.RESULTS) if p.endswith(".json")]
    assert sorted(r["experiment"] for r in results) == [row["id"], candidates(alice)[1]["id"]]
    [best] = leaderboard_rows(ws.text(wb.LEADERBOARD))  # regenerated from both results
    assert [best[1], best[3], best[5]] == ["alice", f"{min(r['score'] for r in results):.6f}",
                                           candidates(alice)[1]["id"]]


def test_hf_workspace_down_queues_then_sends(tmp_path: Path, monkeypatch):
    ws = Workspace("hf-bucket", tmp_path, monkeypatch)
    alice = make_fake_repo(tmp_path / "alice")
    ws.api.reachable = False
    run_agent(ws, alice, "alice", WIN)
    assert candidates(alice)[0]["workspace"] == "queued"
    ws.api.reachable = True
    run_agent(ws, alice, "alice", BONUS)
    assert len([p for p in ws.api.files if "-claim-" in p]) == 2
    assert not list((alice / ".autogolf" / "workspace-outbox").rglob("*.md"))


def test_a_refused_write_is_recorded_and_the_loop_goes_on(shared: Workspace, tmp_path: Path,
                                                          monkeypatch):
    alice = make_fake_repo(tmp_path / "alice")
    monkeypatch.setattr(wb, "file_name", lambda d, a, e: f"{d}_mallory.{e}")
    run_agent(shared, alice, "alice", WIN, BONUS)
    rows = candidates(alice)
    assert [r["status"] for r in rows] == ["keep", "keep"]
    assert all(r["workspace"].startswith("error: refused to write") for r in rows)
    assert not files_of(shared, "mallory")


# --------------------------------------------------------------------------- config, CLI


def write_config(tmp_path: Path, section: object) -> Path:
    path = tmp_path / "autogolf.yaml"
    path.write_text(yaml.safe_dump({"workspace": section}))
    return path


def test_config_reads_the_workspace_section(tmp_path: Path):
    cfg = load_config(write_config(tmp_path, {"agent_id": "mac-1", "path": "/mnt/team"}))
    assert cfg.workspace == WorkspaceConfig("mac-1", "dir", path="/mnt/team")
    cfg = load_config(write_config(tmp_path, {"agent_id": "a", "backend": "hf-bucket",
                                              "bucket": "team/golf",
                                              "publish_every_experiment": True}))
    assert cfg.workspace.bucket == "team/golf" and cfg.workspace.publish_every_experiment
    assert load_config(write_config(tmp_path, None)).workspace is None


def test_config_reads_the_lease_times_with_defaults(tmp_path: Path):
    ws = load_config(write_config(tmp_path, {"agent_id": "a", "path": "x"})).workspace
    assert ws.lease_s == 900 and ws.renew_interval_s == 300 and ws.publish_every_experiment
    ws = load_config(write_config(tmp_path, {"agent_id": "a", "path": "x", "lease_s": 2.5,
                                             "renew_every_s": 0.5})).workspace
    assert ws.lease_s == 2.5 and ws.renew_interval_s == 0.5


@pytest.mark.parametrize("section, key", [
    ({"agent_id": "al_ice", "path": "x"}, "workspace.agent_id"),
    ({"path": "x"}, "workspace.agent_id"),
    ({"agent_id": "a", "backend": "s3", "path": "x"}, "workspace.backend"),
    ({"agent_id": "a"}, "workspace.path"),
    ({"agent_id": "a", "backend": "hf-bucket"}, "workspace.bucket"),
    ({"agent_id": "a", "path": "x", "publish_every_experiment": "yes"},
     "workspace.publish_every_experiment"),
    ({"agent_id": "a", "path": "x", "colour": "red"}, "workspace.colour"),
    ("shared", "workspace"),
    ({"agent_id": "a", "path": "x", "lease_s": 0}, "workspace.lease_s"),
    ({"agent_id": "a", "path": "x", "lease_s": "15m"}, "workspace.lease_s"),
    ({"agent_id": "a", "path": "x", "lease_s": True}, "workspace.lease_s"),
    ({"agent_id": "a", "path": "x", "lease_s": 60, "renew_every_s": 60},
     "workspace.renew_every_s"),
    ({"agent_id": "a", "path": "x", "renew_every_s": -1}, "workspace.renew_every_s"),
])
def test_config_refuses_a_bad_workspace_section_naming_the_key(tmp_path, section, key):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, section))
    assert any(p.split(": ", 2)[1] == key for p in err.value.problems), err.value.problems


def test_agent_id_from_the_environment_overrides_the_config(shared, tmp_path, monkeypatch):
    alice = make_fake_repo(tmp_path / "alice")
    monkeypatch.setenv("AUTOGOLF_AGENT_ID", "mac-2")
    run_agent(shared, alice, "alice", WIN)
    assert files_of(shared, "mac-2") and not files_of(shared, "alice")
    monkeypatch.setenv("AUTOGOLF_AGENT_ID", "bad_id")
    with pytest.raises(ConfigError, match="AUTOGOLF_AGENT_ID"):
        run_agent(shared, alice, "alice", BONUS)


def test_cli_init_then_status(tmp_path: Path, capsys, monkeypatch):
    path = tmp_path / "team"
    assert cli.main(["workspace", "init", str(path)]) == 0
    assert (path / "README.md").is_file() and (path / "LEADERBOARD.md").is_file()
    assert all((path / d / "README.md").is_file() for d in wb.FOLDERS)
    assert "created" in capsys.readouterr().out
    assert cli.main(["workspace", "init", str(path)]) == 0
    assert "already initialised" in capsys.readouterr().out

    alice = make_fake_repo(tmp_path / "alice")
    run_with(alice, WorkspaceConfig("alice", "dir", path=str(path)), LOSE, WIN)
    monkeypatch.chdir(alice)
    (alice / "autogolf.yaml").write_text((alice / "autogolf.yaml").read_text() + yaml.safe_dump(
        {"workspace": {"agent_id": "alice", "path": str(path)}}))
    assert cli.main(["workspace", "status"]) == 0
    out = capsys.readouterr().out
    assert "agents: alice" in out and "(this agent: alice)" in out
    assert "experiment-proposal" in out and "result" in out and "keep" in out
    assert "| 1 | alice |" in out
    git(alice, "status")  # the checkout is still a fine git repository


def test_cli_status_without_a_workspace_says_how_to_add_one(tmp_path, capsys, monkeypatch):
    repo = make_fake_repo(tmp_path / "r")
    monkeypatch.chdir(repo)
    assert cli.main(["workspace", "status"]) == 2
    assert "no `workspace:` section" in capsys.readouterr().err
    assert cli.main(["workspace", "status", str(tmp_path / "not-mounted")]) == 2
    assert "not reachable" in capsys.readouterr().err


def test_unexpected_workspace_errors_never_stop_the_loop(shared: Workspace, tmp_path: Path,
                                                         monkeypatch):
    from loop.workspace.hook import WorkspaceHook

    alice = make_fake_repo(tmp_path / "alice")

    def boom(*_args, **_kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(wb.Board, "posts", boom)
    monkeypatch.setattr(WorkspaceHook, "_publish_result", boom)
    run_agent(shared, alice, "alice", WIN, BONUS)
    rows = candidates(alice)
    assert [r["status"] for r in rows] == ["keep", "keep"]
    assert [r["workspace"] for r in rows] == ["error: RuntimeError: boom"] * 2


def test_hf_backend_without_huggingface_hub_is_refused_at_start(tmp_path: Path):
    from loop.workspace.hfbucket import client_available

    if client_available():
        pytest.skip("huggingface_hub is installed here")
    alice = make_fake_repo(tmp_path / "alice")
    with pytest.raises(ConfigError, match=r"pip install 'autogolf\[hf\]'"):
        run_with(alice, WorkspaceConfig("alice", "hf-bucket", bucket="team/golf"), WIN)
    assert not (alice / ".autogolf" / "ledger.jsonl").exists()
