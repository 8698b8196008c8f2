"""Sessions follow your checkout: `run` continues the latest session only while your HEAD, the
dataset, the ladder and the settings that shape results are the ones it started with, and says
why it starts a new one (loop/daemon/continuity.py); what it says before the first experiment
(loop/daemon/briefing.py) and `run --dry-run`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from scheduler_helpers import (
    Scripted,
    cli,
    commit_files,
    git,
    rows,
    run_daemon,
    session_of,
    worktree,
)

from loop.config import Config, load_config
from loop.daemon import briefing, continuity, scheduler
from loop.data import datasets


def headers(repo: Path) -> list[dict]:
    return [r for r in rows(repo) if r.get("type") == "session"]


def said(repo: Path, resume: bool = False, **cfg_changes) -> list[str]:
    """What `run` prints when it starts, for a run of no experiment."""
    lines: list[str] = []
    cfg = dataclasses.replace(load_config(repo / "autogolf.yaml"), **cfg_changes)
    scheduler.Scheduler(repo, cfg, scheduler.StopRules(max_experiments=0), resume=resume,
                        proposer=Scripted(), out=lines.append).run()
    return lines


# --------------------------------------------------------------------------- the rule itself


def start(**changes) -> continuity.Start:
    base = continuity.Start("a" * 40, "sample_sp1024:abc", ("breadth", "confirm"),
                            continuity.shaping_settings(Config()))
    return dataclasses.replace(base, **changes)


def header_of(now: continuity.Start, name: str = "s1") -> dict:
    return {"type": "session", "session": name, **now.header_fields()}


def test_the_latest_session_continues_when_nothing_that_shapes_results_changed():
    decision = continuity.decide([header_of(start())], start())
    assert decision.session == "s1" and decision.differences == ()


@pytest.mark.parametrize(("changed", "phrase"), [
    ({"checkout_head": "b" * 40}, "your checkout's HEAD moved (aaaaaaaaaa -> bbbbbbbbbb)"),
    ({"dataset": "fineweb10B_sp1024:def"}, "the dataset changed"),
    ({"ladder": ("smoke",)}, "the ladder changed (breadth -> confirm to smoke)"),
    ({"settings": continuity.shaping_settings(Config(min_improvement=0.005))},
     "min_improvement 0.002 -> 0.005"),
])
def test_a_change_in_what_shapes_results_starts_a_new_session_saying_what(changed, phrase):
    decision = continuity.decide([header_of(start())], start(**changed))
    assert decision.session is None
    assert phrase in decision.why and "--resume would continue it" in decision.why


def test_resume_continues_anyway_naming_what_differs():
    decision = continuity.decide([header_of(start())], start(ladder=("smoke",)), resume=True)
    assert decision.session == "s1"
    assert "--resume" in decision.why and "the ladder changed" in decision.why


def test_new_session_always_starts_one():
    assert continuity.decide([header_of(start())], start(), new_session=True).session is None


def test_a_session_whose_settings_were_not_recorded_is_not_continued_silently():
    old = {"type": "session", "session": "s0", "base_commit": "a" * 40,
           "dataset": "sample_sp1024:abc", "ladder": ["breadth", "confirm"]}
    decision = continuity.decide([old], start())
    assert decision.session is None and "settings were not recorded" in decision.why


def test_settings_that_do_not_shape_results_do_not_split_a_session():
    quieter = Config(proposer="ideas", agent_timeout_s=60, max_consecutive_failures=9,
                     min_free_disk_mb=1)
    assert continuity.shaping_settings(quieter) == continuity.shaping_settings(Config())


def test_the_margin_rules_noise_settings_shape_results_only_when_it_decides():
    sequential = Config(noise_k=3.0)
    assert continuity.shaping_settings(sequential) == continuity.shaping_settings(Config())
    margin = Config(keep_rule_enabled=False)
    assert (continuity.shaping_settings(dataclasses.replace(margin, noise_k=3.0))
            != continuity.shaping_settings(margin))


# --------------------------------------------------------------------------- the daemon


def test_a_commit_in_your_checkout_starts_a_new_session_from_it(repo):
    run_daemon(repo, {"LR": 0.041}, ladder=("breadth",))
    first = session_of(repo)
    commit_files(repo, {"knobs.sh": "LR=0.03\nBONUS_BREADTH=0\nBONUS_CONFIRM=0\nMODE=ok\n"},
                 "my own change")
    lines = said(repo, ladder=("breadth",))
    assert session_of(repo) != first
    assert any(line.startswith(f"new session {session_of(repo)}") and "HEAD moved" in line
               for line in lines)
    assert "LR=0.03" in (worktree(repo) / "knobs.sh").read_text()  # built on your commit
    assert headers(repo)[-1]["checkout_head"] == git(repo, "rev-parse", "HEAD")


def test_the_same_checkout_continues_its_session(repo):
    run_daemon(repo, {"LR": 0.041}, ladder=("breadth",))
    lines = said(repo, ladder=("breadth",))
    assert len(headers(repo)) == 1
    assert any(line.startswith("continuing session") for line in lines)


def test_another_ladder_starts_a_new_session(repo):
    run_daemon(repo, {"LR": 0.041}, ladder=("breadth", "confirm"))
    lines = said(repo, ladder=("breadth",))
    assert len(headers(repo)) == 2
    assert any("the ladder changed" in line for line in lines)


def test_resume_continues_the_session_after_a_commit(repo):
    run_daemon(repo, {"LR": 0.041}, ladder=("breadth",))
    commit_files(repo, {"notes.md": "more notes\n"})
    lines = said(repo, resume=True, ladder=("breadth",))
    assert len(headers(repo)) == 1
    assert any(line.startswith("continuing session") and "--resume" in line for line in lines)


def test_run_warns_at_start_about_uncommitted_changes_to_editable_files(repo):
    (repo / "knobs.sh").write_text("LR=0.02\nBONUS_BREADTH=0\nBONUS_CONFIRM=0\nMODE=ok\n")
    (repo / "scratch.txt").write_text("not editable: not mentioned\n")
    warning = next(line for line in said(repo) if "uncommitted" in line)
    assert warning.startswith("warning: your checkout has uncommitted changes to knobs.sh:")
    assert "scratch.txt" not in warning and "commit them" in warning


def test_a_clean_checkout_gets_no_uncommitted_warning(repo):
    assert not any("uncommitted" in line for line in said(repo))


def test_run_says_which_proposer_edits(repo):
    assert said(repo)[0] == ("proposer: search (the built-in knob search, strategy random; no "
                             "agent, no tokens)")


def test_dry_run_says_what_run_would_do_and_writes_nothing(repo):
    run_daemon(repo, {"LR": 0.041}, ladder=("breadth",))
    before = (repo / ".autogolf" / "ledger.jsonl").read_text()
    commit_files(repo, {"notes.md": "more notes\n"})
    done = cli(repo, "run", "--dry-run", "--ladder", "breadth")
    assert done.returncode == 0, done.stderr
    assert "would start a new session: since session" in done.stdout
    assert "HEAD moved" in done.stdout and "proposer: search" in done.stdout
    assert (repo / ".autogolf" / "ledger.jsonl").read_text() == before


def test_resume_and_new_session_together_are_refused(repo):
    done = cli(repo, "run", "--resume", "--new-session", "--dry-run")
    assert done.returncode == 2 and "not allowed with" in done.stderr


# --------------------------------------------------------------------------- warnings


def test_the_sample_above_smoke_is_called_a_demo(sample_dataset):
    warning = briefing.sample_warning(sample_dataset, ("breadth", "confirm"))
    assert warning is not None and "offline sample" in warning and "demo" in warning
    assert "--ladder smoke" in warning and "dataset:" in warning


def test_the_sample_at_smoke_is_what_it_is_for(sample_dataset):
    assert briefing.sample_warning(sample_dataset, ("smoke",)) is None


def test_real_data_gets_no_demo_warning(tmp_path):
    folder = tmp_path / "datasets" / "fineweb10B_sp1024"
    folder.mkdir(parents=True)
    info = datasets.DatasetInfo("fineweb10B_sp1024", "real", folder, tmp_path / "t.model",
                                tmp_path / "manifest.json", 1024)
    assert briefing.sample_warning(info, ("breadth", "confirm")) is None


CLAUDE = ("claude", "-p", "{prompt}", "--permission-mode", "acceptEdits")


@pytest.mark.parametrize(("command", "budget", "expected"), [
    (CLAUDE, {"agent_budget_usd": 5.0}, "agent.budget_usd cannot trigger: claude"),
    ((*CLAUDE, "--output-format", "json"), {"agent_budget_usd": 5.0}, None),
    (("codex", "exec", "--json", "{prompt}"), {"agent_budget_usd": 5.0},
     "agent.budget_usd cannot trigger: codex"),
    (("codex", "exec", "--json", "{prompt}"), {"agent_budget_tokens": 10}, None),
    (("pi", "--print", "@{prompt_file}"), {"agent_budget_tokens": 10},
     "agent.budget_tokens cannot trigger: pi"),
    (("pi", "--print", "@{prompt_file}"), {"agent_budget_s": 3600.0}, None),
])
def test_a_budget_the_agent_command_can_never_spend_is_warned_about(command, budget, expected):
    cfg = Config(proposer="agent", agent_command=command, **budget)
    warnings = briefing.budget_warnings(cfg)
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith(expected)
