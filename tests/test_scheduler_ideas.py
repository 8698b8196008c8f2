"""The ideas backlog through the daemon (issue 8), against the fake benchmark of
tests/scheduler_helpers.py: the `ideas` proposer, proposer rotation, the backlog's evidence and
the "What has been tried" section kept in the session worktree as bookkeeping commits, and
`autogolf ideas` working on that copy. The user's checkout is never modified."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pytest
from scheduler_helpers import (
    Scripted,
    baselines,
    branch_head,
    candidates,
    checkout_state,
    commit_files,
    git,
    rows,
    run_configured,
    session_of,
    worktree,
)

from loop.backlog.bookkeeping import BOOKKEEPING_FILES
from loop.backlog.ideas import IdeasFile
from loop.config import load_config
from loop.daemon import scheduler
from loop.events import RunEvents
from loop.proposers.search import Knob, read_knobs
from loop.store.gitsession import GitSession
from loop.ui import ideas_cli

# LR 0.04 -> 0.05 wins by ~0.005 (the fake's optimum); 0.2 loses by ~0.19.
BACKLOG = """# Ideas backlog

Free text a person wrote stays as it is.

- [I001] (untried) The optimum learning rate.
  knobs: LR=0.05
- [I002] (untried) A much higher learning rate.
  knobs: LR=0.2
- [I003] (untried) Needs code: a new optimiser (no knobs, not for the ideas proposer).
"""
DOC = """# Session

Goal: lower val_bpb.

## What has been tried
<!-- autogolf:tried:start -->
Nothing yet: no experiment has finished in this workspace.
<!-- autogolf:tried:end -->

## Notes
Kept byte for byte.
"""
LR = Knob("LR", "knobs.sh", "env", "float", 0.005, 0.5, "log")


def use_proposer(repo: Path, section: str) -> None:
    """Replace `proposer: search` in the repo's autogolf.yaml (committed: a session branches
    from the user's HEAD)."""
    config = repo / "autogolf.yaml"
    commit_files(repo, {"autogolf.yaml": config.read_text().replace("proposer: search",
                                                                    section)}, "proposer")


def subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s", f"autogolf/{session_of(repo)}").splitlines()


def ideas_verb(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    ideas_cli.add_arguments(parser)
    out = io.StringIO()
    code = ideas_cli.main(parser.parse_args(argv), out=out, err=io.StringIO())
    return code, out.getvalue()


@pytest.fixture
def backlog_repo(repo: Path) -> Path:
    commit_files(repo, {"autoresearch.ideas.md": BACKLOG, "autoresearch.md": DOC}, "backlog")
    return repo


# --------------------------------------------------------------------------- ideas proposer


def test_ideas_proposer_applies_one_knob_idea_per_experiment_with_evidence_in_the_worktree(
        backlog_repo: Path) -> None:
    repo = backlog_repo
    use_proposer(repo, "proposer: ideas")
    before = checkout_state(repo)
    reason = run_configured(repo)

    assert reason == "the proposer has nothing left to propose"
    first, second = candidates(repo)
    assert [(r["id"], r["idea"], r["proposer"], r["status"]) for r in (first, second)] == [
        ("E0002", "I001", "ideas", "keep"), ("E0004", "I002", "ideas", "discard")]
    assert first["knobs"] == {"LR": 0.05} and second["knobs"] == {"LR": 0.2}
    backlog = IdeasFile.load(worktree(repo) / "autoresearch.ideas.md")
    i001, i002, i003 = backlog.ideas
    assert (i001.status, i002.status, i003.status) == ("promising", "exhausted", "untried")
    assert [(e.experiment, e.profile, e.status) for e in i001.evidence] == [
        ("E0002", "confirm", "keep")]
    assert i001.evidence[0].delta == pytest.approx(-0.005, abs=3e-4)
    assert [(e.experiment, e.profile, e.status) for e in i002.evidence] == [
        ("E0004", "breadth", "discard")]
    assert "Free text a person wrote stays as it is.\n" in backlog.text
    assert checkout_state(repo) == before  # the user's backlog is still all untried


def test_evidence_is_committed_as_bookkeeping_without_a_new_baseline(backlog_repo: Path) -> None:
    repo = backlog_repo
    use_proposer(repo, "proposer: ideas")
    run_configured(repo)

    # The breadth baseline, the confirm baseline the first winner needed, and nothing more:
    # a bookkeeping commit on top of a keep measures the same code.
    assert [(r["id"], list(r["rungs"])) for r in baselines(repo)] == [
        ("E0001", ["breadth"]), ("E0003", ["confirm"])]
    assert subjects(repo)[:3] == ["autogolf: record E0004 in the backlog",
                                  "autogolf: record E0002 in the backlog",
                                  "I001 LR 0.04 -> 0.05: The optimum learning rate."]
    assert git(worktree(repo), "status", "--porcelain") == ""
    keep = candidates(repo)[0]
    assert keep["commit"] == git(repo, "rev-parse", f"autogolf/{session_of(repo)}~2")
    assert candidates(repo)[1]["base_code"] == keep["code"]
    changed = git(repo, "diff", "--name-only", keep["commit"], branch_head(repo)).splitlines()
    assert sorted(changed) == ["autoresearch.ideas.md", "autoresearch.md"]


def test_the_tried_section_lists_kept_changes_and_dead_ends(backlog_repo: Path) -> None:
    repo = backlog_repo
    use_proposer(repo, "proposer: ideas")
    run_configured(repo)

    doc = (worktree(repo) / "autoresearch.md").read_text()
    tried = doc.split("<!-- autogolf:tried:start -->")[1].split("<!-- autogolf:tried:end -->")[0]
    kept, dead = tried.split("Dead ends")
    assert re.search(r"- E0002 \[I001\] I001 LR 0\.04 -> 0\.05.*: breadth \d\.\d{4} -> "
                     r"\d\.\d{4} \(-0\.00\d\d\); confirm", kept)
    assert re.search(r"- E0004 \[I002\] I002 LR 0\.05 -> 0\.2.* - discard: at breadth: "
                     r"val_bpb 1\.1\d+ vs incumbent \d\.\d{4}: worse by", dead)
    assert doc.endswith("## Notes\nKept byte for byte.\n")
    assert (repo / "autoresearch.md").read_text() == DOC


def test_a_scripted_proposal_that_names_an_idea_records_it_in_the_worktree(
        backlog_repo: Path) -> None:
    repo = backlog_repo
    cfg = load_config(repo / "autogolf.yaml")
    scheduler.Scheduler(repo, cfg, scheduler.StopRules(),
                        proposer=Scripted({"BONUS_BREADTH": -0.01, "idea": "I003"}),
                        out=lambda s: None).run()
    [row] = candidates(repo)
    text = (worktree(repo) / "autoresearch.ideas.md").read_text()
    assert "[I003] (exhausted)" in text
    assert re.search(r"evidence: E0002 breadth delta=\+0\.0(099|100|101) discard", text)
    assert (repo / "autoresearch.ideas.md").read_text() == BACKLOG
    assert row["idea"] == "I003"


def test_an_idea_that_cannot_be_applied_is_marked_invalid_with_the_reason(repo: Path) -> None:
    commit_files(repo, {"autoresearch.ideas.md": "- [I001] (untried) A knob nobody has.\n"
                                                 "  knobs: NOPE=1\n"
                                                 "- [I002] (untried) The optimum.\n"
                                                 "  knobs: LR=0.05\n"})
    use_proposer(repo, "proposer: ideas")
    run_configured(repo, ladder=("breadth",))

    assert [r["idea"] for r in candidates(repo)] == ["I002"]
    committed = IdeasFile(Path("backlog"), git(repo, "show", f"autogolf/{session_of(repo)}:"
                                                          "autoresearch.ideas.md"))
    i001 = committed.get("I001")
    assert i001.status == "invalid" and i001.evidence == []
    assert i001.notes[0].startswith("autogolf: cannot be applied: knob NOPE:")
    assert committed.get("I002").status == "promising"


# --------------------------------------------------------------------------- rotation


def test_rotation_takes_turns_and_skips_a_proposer_with_nothing_left(backlog_repo: Path) -> None:
    repo = backlog_repo
    use_proposer(repo, "proposer: {name: search, rotation: [search, ideas]}")
    run_configured(repo, max_experiments=6, ladder=("breadth",))

    made = [(r["proposer"], r["idea"]) for r in candidates(repo)]
    # ideas has two applicable ideas, then nothing: its third turn goes to search.
    assert made == [("search", None), ("ideas", "I001"), ("search", None), ("ideas", "I002"),
                    ("search", None), ("search", None)]
    assert all(r["status"] in ("keep", "discard", "duplicate") for r in candidates(repo))


# --------------------------------------------------------------------------- autogolf ideas


def test_ideas_verb_works_on_the_session_worktree_and_the_daemon_commits_a_persons_edit(
        backlog_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = backlog_repo
    run_configured(repo, max_experiments=1, ladder=("breadth",))
    monkeypatch.chdir(repo)
    live = worktree(repo) / "autoresearch.ideas.md"

    code, out = ideas_verb("add", "Try", "a", "longer", "warmdown", "--knobs", "LR=0.06")
    assert code == 0
    assert out.splitlines()[0] == (f"backlog: {live} (the daemon's copy in session "
                                   f"{session_of(repo)}'s worktree; --checkout for yours)")
    assert "[I004] (untried) Try a longer warmdown" in live.read_text()
    code, out = ideas_verb("--checkout")
    assert code == 0 and f"backlog: {repo / 'autoresearch.ideas.md'} (your checkout)" in out
    assert "I004" not in out

    baselines_before = len(baselines(repo))
    run_configured(repo, max_experiments=1, ladder=("breadth",))
    assert subjects(repo)[1:3] == ["autogolf: update autoresearch.ideas.md",
                                   "autogolf: record E0002 in the backlog"]
    assert "[I004] (untried)" in git(repo, "show", f"autogolf/{session_of(repo)}:"
                                                   "autoresearch.ideas.md")
    assert git(worktree(repo), "status", "--porcelain") == ""
    assert len(baselines(repo)) == baselines_before
    assert (repo / "autoresearch.ideas.md").read_text() == BACKLOG


def test_a_persons_backlog_edit_during_an_experiment_survives_its_discard(
        backlog_repo: Path) -> None:
    repo = backlog_repo

    class PersonAddsAnIdea(RunEvents):
        def rung_started(self, exp_id: str | None, profile: str, tag: str = "") -> None:
            if exp_id == "E0002":  # while the candidate's benchmark runs
                backlog = IdeasFile.load(worktree(repo) / "autoresearch.ideas.md")
                backlog.add("Added by hand while E0002 ran")
                backlog.save()

    cfg = load_config(repo / "autogolf.yaml")
    scheduler.Scheduler(repo, cfg, scheduler.StopRules(),
                        proposer=Scripted({"BONUS_BREADTH": -0.01, "idea": "I001"}),
                        out=lambda s: None, events=PersonAddsAnIdea()).run()
    [row] = candidates(repo)
    assert row["status"] == "discard"
    assert "autoresearch.ideas.md" not in (repo / row["patch"]).read_text()
    committed = git(repo, "show", f"autogolf/{session_of(repo)}:autoresearch.ideas.md")
    assert "(untried) Added by hand while E0002 ran" in committed
    assert "evidence: E0002 breadth" in committed
    assert git(worktree(repo), "status", "--porcelain") == ""


# --------------------------------------------------------------------------- history


def test_code_hash_ignores_the_bookkeeping_files_only(backlog_repo: Path) -> None:
    repo = backlog_repo
    session = GitSession.open(repo, "s1")
    before = session.code_hash(BOOKKEEPING_FILES)
    (session.worktree / "autoresearch.md").write_text(DOC + "more notes\n")
    session.commit("bookkeeping")
    assert session.code_hash(BOOKKEEPING_FILES) == before
    assert session.code_hash() != before  # without exclusions the tree differs
    (session.worktree / "knobs.sh").write_text("LR=0.05\n")
    session.commit("code")
    assert session.code_hash(BOOKKEEPING_FILES) != before



def test_search_in_a_new_session_learns_from_earlier_sessions_and_repeats_none(
        repo: Path) -> None:
    run_configured(repo, max_experiments=3, ladder=("breadth",))
    first = {r["knobs"]["LR"] for r in candidates(repo)}
    run_configured(repo, max_experiments=3, new_session=True, ladder=("breadth",))
    sessions = [r["session"] for r in rows(repo) if r.get("type") == "session"]
    later = [r for r in candidates(repo) if r["session"] == sessions[1]]

    assert len(sessions) == 2 and len(later) == 3
    assert {r["status"] for r in later} <= {"keep", "discard"}
    assert not {r["knobs"]["LR"] for r in later} & first  # old dead ends are not retried
    assert read_knobs(repo, [LR]) == {"LR": 0.04}  # the checkout was never touched
