"""The workspace's storage backends and board conventions (loop.workspace), unit by unit.

The hf-bucket backend runs against `FakeBucketApi`, a local stand-in with the HfApi bucket
methods the backend calls (the hub is unreachable in tests).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from loop.workspace import board as wb
from loop.workspace.dirstore import TEMP_PREFIX, DirStore
from loop.workspace.hfbucket import HfBucketStore
from loop.workspace.storage import AlreadyExists, Unreachable, WriteRefused


class FakeBucketApi:
    """The HfApi bucket calls, over a dict; `reachable = False` makes every call fail."""

    def __init__(self, bucket_id: str = "team/golf"):
        self.bucket_id = bucket_id
        self.files: dict[str, bytes] = {}
        self.reachable = True
        self.calls: list[str] = []

    def _enter(self, name: str, bucket_id: str) -> None:
        self.calls.append(name)
        if not self.reachable:
            raise ConnectionError("hub unreachable (stand-in)")
        assert bucket_id == self.bucket_id, bucket_id

    def list_bucket_tree(self, bucket_id, prefix=None, recursive=False):
        self._enter("list_bucket_tree", bucket_id)
        base = (prefix.rstrip("/") + "/") if prefix else ""
        seen_dirs = set()
        for path in sorted(self.files):
            if not path.startswith(base):
                continue
            rest = path[len(base):]
            if recursive or "/" not in rest:
                yield SimpleNamespace(type="file", path=path, size=len(self.files[path]))
            elif rest.split("/", 1)[0] not in seen_dirs:
                seen_dirs.add(rest.split("/", 1)[0])
                yield SimpleNamespace(type="directory", path=base + rest.split("/", 1)[0])

    def get_bucket_paths_info(self, bucket_id, paths):
        self._enter("get_bucket_paths_info", bucket_id)
        return [SimpleNamespace(type="file", path=p, size=len(self.files[p]))
                for p in paths if p in self.files]

    def download_bucket_files(self, bucket_id, files, raise_on_missing_files=False):
        self._enter("download_bucket_files", bucket_id)
        for remote, local in files:
            if remote not in self.files:
                if raise_on_missing_files:
                    raise FileNotFoundError(remote)
                continue
            Path(local).write_bytes(self.files[remote])

    def batch_bucket_files(self, bucket_id, add=None, delete=None):
        self._enter("batch_bucket_files", bucket_id)
        for source, dest in add or []:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            self.files[dest] = data
        for path in delete or []:
            self.files.pop(path, None)


@pytest.fixture(params=["dir", "hf-bucket"])
def store(request, tmp_path: Path):
    if request.param == "dir":
        (tmp_path / "ws").mkdir()
        return DirStore(tmp_path / "ws")
    return HfBucketStore("hf://buckets/team/golf", api=FakeBucketApi())


# --------------------------------------------------------------------------- storage


def test_write_new_read_list_exists(store):
    store.write_new("message_board/a_alice.md", b"hello")
    store.write_new("artifacts/results/r_alice.json", b"{}")
    assert store.read("message_board/a_alice.md") == b"hello"
    assert store.exists("message_board/a_alice.md")
    assert not store.exists("message_board/b_alice.md")
    assert store.list() == ["artifacts/results/r_alice.json", "message_board/a_alice.md"]
    assert store.list("message_board") == ["message_board/a_alice.md"]
    assert store.list("artifacts/scripts") == []


def test_write_new_never_overwrites(store):
    store.write_new("x_alice.md", b"first")
    with pytest.raises(AlreadyExists, match="never overwritten"):
        store.write_new("x_alice.md", b"second")
    assert store.read("x_alice.md") == b"first"


def test_replace_is_allowed_for_the_shared_generated_file(store):
    store.replace("LEADERBOARD.md", b"v1")
    store.replace("LEADERBOARD.md", b"v2")
    assert store.read("LEADERBOARD.md") == b"v2"


def test_read_of_a_missing_file_is_file_not_found(store):
    with pytest.raises(FileNotFoundError):
        store.read("message_board/none_alice.md")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside_alice.md", "a/../../b_alice.md", ""])
def test_paths_outside_the_workspace_are_refused(store, bad):
    with pytest.raises(WriteRefused):
        store.write_new(bad, b"x")


def test_dir_store_leaves_no_temporary_file_and_hides_them(tmp_path: Path):
    root = tmp_path / "ws"
    (root / "message_board").mkdir(parents=True)
    (root / "message_board" / f"{TEMP_PREFIX}half").write_bytes(b"half-written")
    store = DirStore(root)
    store.write_new("message_board/p_alice.md", b"done")
    assert store.list() == ["message_board/p_alice.md"]  # the half-written file is invisible
    names = sorted(os.listdir(root / "message_board"))
    assert names == [f"{TEMP_PREFIX}half", "p_alice.md"]


def test_dir_store_concurrent_writers_of_one_name_one_wins(tmp_path: Path):
    (tmp_path / "ws").mkdir()
    store = DirStore(tmp_path / "ws")
    outcomes: list[str] = []

    def write(data: bytes) -> None:
        try:
            store.write_new("race_alice.md", data)
            outcomes.append("ok")
        except AlreadyExists:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(bytes([65 + i]) * 1000,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7
    assert len(set(store.read("race_alice.md"))) == 1  # one writer's bytes, whole


def test_dir_store_on_a_missing_folder_is_unreachable_and_creates_nothing(tmp_path: Path):
    store = DirStore(tmp_path / "not-mounted")
    with pytest.raises(Unreachable, match="not reachable"):
        store.write_new("message_board/p_alice.md", b"x")
    with pytest.raises(Unreachable):
        store.list()
    assert not (tmp_path / "not-mounted").exists()


def test_hf_store_failures_read_as_unreachable():
    api = FakeBucketApi()
    api.reachable = False
    store = HfBucketStore("team/golf", api=api)
    with pytest.raises(Unreachable, match="hf-bucket team/golf.*ConnectionError"):
        store.write_new("p_alice.md", b"x")
    with pytest.raises(Unreachable):
        store.list()


def test_hf_store_uses_the_bucket_api_calls():
    api = FakeBucketApi()
    store = HfBucketStore("team/golf", api=api)
    store.write_new("message_board/p_alice.md", b"x")
    assert store.read("message_board/p_alice.md") == b"x"
    assert {"get_bucket_paths_info", "batch_bucket_files", "download_bucket_files"} <= set(
        api.calls)


# --------------------------------------------------------------------------- naming, posts


@pytest.mark.parametrize("path, owner", [
    ("message_board/20261123T1-claim-E0001_alice.md", "alice"),
    ("artifacts/results/s-E0001-breadth_bob-2.json", "bob-2"),
    ("README.md", None), ("LEADERBOARD.md", None), ("_alice.md", None), ("x_a_b.md", "b"),
])
def test_owner_of_reads_the_agent_id_after_the_last_underscore(path, owner):
    assert wb.owner_of(path) == owner


def test_file_name_makes_the_descriptive_part_safe():
    assert wb.file_name("E0001 patch_v2/x", "alice", "diff") == "E0001-patch-v2-x_alice.diff"
    assert wb.owner_of(wb.file_name("a_b_c", "bob", "md")) == "bob"


def test_post_front_matter_round_trips():
    meta = {"type": "result", "agent_id": "alice", "experiment": "E0003",
            "description": "LR 0.04\n-> 0.05", "patch": None}
    text = wb.render_post(meta, "Result: kept.")
    parsed, body = wb.parse_post(text)
    assert parsed == {"type": "result", "agent_id": "alice", "experiment": "E0003",
                      "description": "LR 0.04 -> 0.05"}
    assert body == "Result: kept."
    assert wb.parse_post("no front matter") == ({}, "no front matter")


# --------------------------------------------------------------------------- the board


def board_for(store, agent: str, tmp_path: Path) -> wb.Board:
    return wb.Board(store, agent, tmp_path / f"outbox-{agent}")


def test_board_refuses_paths_without_our_agent_id_before_writing(store, tmp_path):
    alice = board_for(store, "alice", tmp_path)
    for path in ("message_board/post_bob.md", "message_board/post.md", "LEADERBOARD.md",
                 "README.md"):
        with pytest.raises(WriteRefused, match="refused to write"):
            alice.put(path, b"x")
    assert store.list() == []


def test_board_refuses_to_overwrite_another_agents_file(store, tmp_path):
    bob = board_for(store, "bob", tmp_path)
    bob.put("message_board/post_bob.md", b"bob's words")
    alice = board_for(store, "alice", tmp_path)
    with pytest.raises(WriteRefused, match="agent 'bob', not ours"):
        alice.put("message_board/post_bob.md", b"alice's words")
    assert store.read("message_board/post_bob.md") == b"bob's words"


def test_board_refuses_to_overwrite_its_own_file_with_other_bytes(store, tmp_path):
    alice = board_for(store, "alice", tmp_path)
    assert alice.put("message_board/post_alice.md", b"v1") == "sent"
    assert alice.put("message_board/post_alice.md", b"v1") == "sent"  # a re-send: same bytes
    with pytest.raises(AlreadyExists):
        alice.put("message_board/post_alice.md", b"v2")


def test_board_queues_when_unreachable_and_sends_later_in_order(tmp_path):
    root = tmp_path / "ws"
    alice = wb.Board(DirStore(root), "alice", tmp_path / "outbox")
    assert alice.put("message_board/1-claim_alice.md", b"one") == "queued"
    assert alice.put("artifacts/results/r_alice.json", b"{}") == "queued"
    assert not root.exists()
    assert alice.queued() == ["message_board/1-claim_alice.md", "artifacts/results/r_alice.json"]
    root.mkdir()  # the share is back
    assert alice.flush() == 0
    assert alice.queued() == []
    assert DirStore(root).read("message_board/1-claim_alice.md") == b"one"
    assert alice.put("message_board/2-result_alice.md", b"two") == "sent"


def test_board_put_sends_the_queue_first(tmp_path):
    api = FakeBucketApi()
    alice = wb.Board(HfBucketStore("team/golf", api=api), "alice", tmp_path / "outbox")
    api.reachable = False
    alice.put("message_board/1_alice.md", b"one")
    api.reachable = True
    alice.put("message_board/2_alice.md", b"two")
    assert sorted(api.files) == ["message_board/1_alice.md", "message_board/2_alice.md"]


def test_board_posts_take_the_author_from_the_file_name(store, tmp_path):
    store.write_new("message_board/p_bob.md", wb.render_post(
        {"type": "result", "agent_id": "alice", "timestamp": "t"}, "x").encode())
    store.write_new("message_board/notes_bob.md", b"no front matter")
    [post] = board_for(store, "carol", tmp_path).posts()
    assert post["author"] == "bob" and post["agent_id"] == "alice"


def test_board_results_skip_invalid_or_misattributed_files(store, tmp_path):
    good = {"agent_id": "bob", "experiment": "E1", "score": 1.2}
    store.write_new("artifacts/results/a_bob.json", json.dumps(good).encode())
    store.write_new("artifacts/results/b_bob.json", json.dumps({**good, "score": "x"}).encode())
    store.write_new("artifacts/results/c_bob.json", json.dumps({**good, "agent_id": "eve"})
                    .encode())
    store.write_new("artifacts/results/d_bob.json", b"{not json")
    warnings: list[str] = []
    board = wb.Board(store, "carol", tmp_path / "o", warn=warnings.append)
    assert [r["path"] for r in board.results()] == ["artifacts/results/a_bob.json"]
    assert len(warnings) == 3


def test_bad_agent_id_is_refused(store, tmp_path):
    with pytest.raises(WriteRefused, match="bad agent_id"):
        wb.Board(store, "al_ice", tmp_path)


# --------------------------------------------------------------------------- leaderboard


def result(agent, score, dataset="sample:1", profile="breadth", exp="E1", **kw):
    return {"agent_id": agent, "experiment": exp, "score": score, "dataset": dataset,
            "profile": profile, "metric": "val_bpb", "direction": "lower", **kw}


def table(section: str) -> list[list[str]]:
    """The leaderboard rows of one section: [rank, agent, gain, score, own baseline, ...]."""
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in section.splitlines()
            if ln.startswith("| ") and "rank" not in ln]


def test_leaderboard_best_per_agent_grouped_by_dataset_and_profile():
    text = wb.render_leaderboard([
        result("alice", 1.10, exp="E2", baseline_score=1.2),
        result("alice", 1.05, exp="E3", baseline_score=1.2),
        result("bob", 1.07, baseline_score=1.1), result("bob", 0.90, profile="confirm"),
        result("carol", 1.0, dataset="fineweb:2"),
    ])
    sections = text.split("## ")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "dataset `fineweb:2`, profile `breadth`",
        "dataset `sample:1`, profile `breadth`",
        "dataset `sample:1`, profile `confirm`"]
    assert [r[:6] for r in table(sections[1])] == [
        ["1", "alice", "+0.150000", "1.050000", "1.200000", "E3"],
        ["2", "bob", "+0.030000", "1.070000", "1.100000", "E1"]]
    assert "carol" not in sections[1] and "0.900000" not in sections[1]


def test_leaderboard_ranks_by_gain_over_own_baseline_not_by_absolute_score():
    # bob's machine scores lower in absolute terms, but alice's change gained more.
    text = wb.render_leaderboard([result("alice", 1.30, baseline_score=1.35),
                                  result("bob", 1.10, baseline_score=1.11)])
    assert [(r[1], r[2], r[3]) for r in table(text)] == [
        ("alice", "+0.050000", "1.300000"), ("bob", "+0.010000", "1.100000")]


def test_leaderboard_lists_a_result_without_a_baseline_unranked_after_the_others():
    text = wb.render_leaderboard([result("alice", 1.00), result("bob", 1.20, gain=0.01)])
    assert [(r[0], r[1], r[2], r[4]) for r in table(text)] == [
        ("1", "bob", "+0.010000", "unknown"), ("", "alice", "unknown", "unknown")]


def test_leaderboard_sets_implausible_results_aside():
    text = wb.render_leaderboard([result("alice", 1.05, baseline_score=1.1),
                                  result("mallory", 0.3, baseline_score=1.1),
                                  result("eve", 1.0, incumbent_score=1.2, exp="E7")])
    assert [r[1] for r in table(text)] == ["alice"]
    aside = text.split("## Set aside as implausible")[1]
    assert "mallory E1" in aside and "under 0.5" in aside
    assert "eve E7" in aside and "one-step gain of 0.2000" in aside


@pytest.mark.parametrize("score, before, metric, direction, why", [
    (0.0, None, "val_bpb", "lower", "<= 0"),
    (-1.0, None, "loss", "lower", "<= 0"),
    (0.49, None, "val_bpb", "lower", "under 0.5"),
    (1.0, 1.11, "val_bpb", "lower", "one-step gain of 0.1100"),
    (2.0, 1.8, "acc", "higher", "one-step gain of 0.2000"),
    (None, None, "val_bpb", "lower", "no finite score"),
    (float("nan"), None, "val_bpb", "lower", "no finite score"),
    ("0.2", "1.0", "val_bpb", "lower", "under 0.5"),  # a post's front-matter is text
])
def test_implausible_scores_are_named_with_the_reason(score, before, metric, direction, why):
    assert why in wb.implausible(score, metric, direction, before)


@pytest.mark.parametrize("score, before, metric, direction", [
    (1.0, 1.09, "val_bpb", "lower"),  # a gain of 0.09: large but possible
    (1.2, None, "val_bpb", "lower"),
    (0.3, None, "loss", "lower"),  # the 0.5 floor is val_bpb's, not every metric's
    (1.5, 1.0, "val_bpb", "lower"),  # a loss, however large, is not a suspicious gain
    ("1.2", "1.21", "val_bpb", "lower"),
])
def test_plausible_scores_pass(score, before, metric, direction):
    assert wb.implausible(score, metric, direction, before) is None


def test_a_result_with_a_null_score_is_valid_and_never_ranked():
    crash = result("alice", None, status="crash")
    assert wb.valid_result(crash)
    assert not wb.valid_result(result("alice", float("inf")))
    assert not wb.valid_result({"agent_id": "a", "experiment": "E1"})  # score key required
    assert table(wb.render_leaderboard([crash])) == []


def test_init_layout_creates_readmes_once(store):
    created = wb.init_layout(store)
    assert "README.md" in created and "LEADERBOARD.md" in created
    assert {f"{d}/README.md" for d in wb.FOLDERS} <= set(created)
    assert "{descriptive_name}_{agent_id}.{ext}" in store.read("README.md").decode()
    store.replace("README.md", b"edited by a person")
    assert wb.init_layout(store) == []
    assert store.read("README.md") == b"edited by a person"


def test_a_conflicting_queued_file_is_set_aside_and_the_rest_is_sent(tmp_path: Path):
    root = tmp_path / "ws"
    warnings: list[str] = []
    alice = wb.Board(DirStore(root), "alice", tmp_path / "outbox", warn=warnings.append)
    alice.put("message_board/1_alice.md", b"queued one")
    alice.put("message_board/2_alice.md", b"queued two")
    root.mkdir()
    DirStore(root).write_new("message_board/1_alice.md", b"different bytes")
    assert alice.flush() == 0
    assert DirStore(root).read("message_board/1_alice.md") == b"different bytes"
    assert DirStore(root).read("message_board/2_alice.md") == b"queued two"
    assert (tmp_path / "outbox" / "message_board" / ".1_alice.md.conflict").is_file()
    assert alice.queued() == [] and "not sent" in warnings[-1]


def test_leaderboard_ranks_only_kept_results():
    text = wb.render_leaderboard([result("alice", 1.00, status="discard"),
                                  result("alice", 1.05, exp="E2", status="keep"),
                                  result("bob", 1.02)])  # no status: another tool's file
    assert [(r[1], r[3]) for r in table(text)] == [("bob", "1.020000"), ("alice", "1.050000")]
