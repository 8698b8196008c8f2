"""`autogolf ideas`: list with evidence, filter, add, mark; bad input is exit 2, file intact."""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import pytest

from loop.backlog.ideas import IdeasFile
from loop.ui import ideas_cli

BACKLOG = """# Ideas

## Optimiser
- [I001] (untried) Higher Muon learning rate.
  knobs: MATRIX_LR=0.06
- [I002] (exhausted) Lower Muon learning rate.
  knobs: MATRIX_LR=0.03
  evidence: E0004 breadth delta=+0.0021 discard
- [I3] (untried) a malformed one
"""


def run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="autogolf ideas")
    ideas_cli.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse refuses a bad choice itself, with exit 2
        return int(e.code), "", ""
    out, err = io.StringIO(), io.StringIO()
    code = ideas_cli.main(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def backlog(tmp_path: Path) -> Path:
    path = tmp_path / "autoresearch.ideas.md"
    path.write_text(BACKLOG)
    return path


def test_list_shows_ids_statuses_knobs_and_evidence(backlog: Path) -> None:
    code, out, _ = run("--file", str(backlog))
    assert code == 0
    assert "I001   untried    Higher Muon learning rate." in out
    assert "knobs: MATRIX_LR=0.06" in out
    assert "evidence: E0004 breadth delta=+0.0021 discard" in out


def test_list_reports_malformed_entries_with_line_numbers(backlog: Path) -> None:
    _, out, _ = run("--file", str(backlog))
    assert "autoresearch.ideas.md:9: bad idea id [I3]" in out


def test_list_filters_by_status(backlog: Path) -> None:
    _, out, _ = run("--file", str(backlog), "--status", "exhausted")
    assert "I002   exhausted" in out and "I001   untried" not in out
    assert "1 of 3 ideas are exhausted" in out


def test_list_subcommand_accepts_the_status_filter_too(backlog: Path) -> None:
    _, out, _ = run("--file", str(backlog), "list", "--status", "untried")
    assert "I001   untried" in out and "I002   exhausted" not in out


def test_add_appends_an_idea_and_prints_its_id(backlog: Path) -> None:
    code, out, _ = run("--file", str(backlog), "add", "Try", "ROPE_BASE", "20000",
                       "--knobs", "ROPE_BASE=20000")
    assert code == 0 and "added I004" in out
    idea = IdeasFile.load(backlog).get("I004")
    assert (idea.text, idea.knobs) == ("Try ROPE_BASE 20000", {"ROPE_BASE": 20000})


def test_add_creates_a_missing_backlog(tmp_path: Path) -> None:
    path = tmp_path / "new.md"
    assert run("--file", str(path), "add", "first idea")[0] == 0
    assert path.read_text() == "# Ideas backlog\n\n- [I001] (untried) first idea\n"


def test_add_with_bad_knobs_is_exit_2_and_writes_nothing(backlog: Path) -> None:
    code, _, err = run("--file", str(backlog), "add", "x", "--knobs", "MATRIX_LR=fast")
    assert code == 2 and "not a number" in err
    assert backlog.read_text() == BACKLOG


def test_add_with_a_missing_patch_file_is_exit_2(backlog: Path) -> None:
    code, _, err = run("--file", str(backlog), "add", "x", "--patch", "nope.patch")
    assert code == 2 and "nope.patch not found" in err
    assert backlog.read_text() == BACKLOG


def test_mark_sets_the_status_and_note(backlog: Path) -> None:
    code, out, _ = run("--file", str(backlog), "mark", "I001", "invalid", "--note", "no knob")
    assert code == 0 and "I001: untried -> invalid" in out
    idea = IdeasFile.load(backlog).get("I001")
    assert (idea.status, idea.notes) == ("invalid", ["no knob"])


def test_mark_an_unknown_id_is_exit_2_with_a_message(backlog: Path) -> None:
    code, _, err = run("--file", str(backlog), "mark", "I042", "invalid")
    assert code == 2 and "no idea I042" in err
    assert backlog.read_text() == BACKLOG


def test_mark_a_bad_status_is_exit_2(backlog: Path) -> None:
    assert run("--file", str(backlog), "mark", "I001", "done")[0] == 2
    assert backlog.read_text() == BACKLOG


def test_a_missing_backlog_is_exit_2_for_listing(tmp_path: Path) -> None:
    code, _, err = run("--file", str(tmp_path / "none.md"))
    assert code == 2 and "no ideas backlog" in err


def test_default_file_is_the_main_checkouts_backlog_even_from_a_worktree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                                  "--allow-empty", "-m", "start"],
                 ["worktree", "add", "-q", str(tmp_path / "wt"), "-b", "session"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    assert ideas_cli.default_path(tmp_path / "wt") == repo.resolve() / "autoresearch.ideas.md"
