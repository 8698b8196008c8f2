"""The `agent` proposer through the daemon (issue 8), with small fake agents (bash scripts run
as `agent PROMPT_FILE SUMMARY_FILE` in the session worktree) against the fake benchmark of
tests/scheduler_helpers.py: every way an agent can end is its own ledger status, the worktree
is restored after every outcome that is not a keep, an agent's own commit is undone and its
change validated, git tampering stops the run, and the user's checkout is never modified."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from scheduler_helpers import (
    FAKEBENCH_SOURCE,
    branch_head,
    candidates,
    checkout_state,
    commit_files,
    git,
    rows,
    run_configured,
    worktree,
)

from loop.config import ConfigError, load_config
from loop.errors import UserError
from loop.proposers.registry import make_proposer

EDIT_ALLOWED = """sed -i 's/^LR=0.04$/LR=0.05/' knobs.sh
echo "LR 0.04 -> 0.05: closer to the optimum" > "$2" """
EDIT_PROTECTED = "echo 'print(\"METRIC val_bpb=0.1\")' > fakebench.py"
COMMIT_ITSELF = """sed -i 's/^LR=0.04$/LR=0.05/' knobs.sh
git -c user.name=agent -c user.email=agent@example.com commit -qam 'agent: LR 0.05'"""
PLANT_HOOK = """hooks="$(git rev-parse --git-common-dir)/hooks"
mkdir -p "$hooks"
printf '#!/bin/sh\\nexit 0\\n' > "$hooks/post-checkout"
sed -i 's/^LR=0.04$/LR=0.05/' knobs.sh"""
DOC = """# Session
Goal: lower val_bpb with one small change at a time.

## What has been tried
<!-- autogolf:tried:start -->
<!-- autogolf:tried:end -->
"""
BACKLOG = """# Ideas
- [I001] (untried) Replace the optimiser (needs code).
"""


def fake_agent(tmp_path: Path, body: str) -> str:
    script = tmp_path / f"agent-{len(list(tmp_path.glob('agent-*')))}.sh"
    script.write_text("#!/usr/bin/env bash\nset -e\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def run_agent(repo: Path, tmp_path: Path, body: str, max_experiments: int = 1,
              timeout_s: float = 30, sandbox: str = "auto", **cfg) -> str:
    """The daemon with `proposer: agent` and the fake agent `body` (a bash script), confined
    when this machine can (`sandbox`: agent.sandbox.mode); `cfg`: other Config fields."""
    return run_configured(repo, max_experiments=max_experiments, proposer="agent",
                          agent_command=(fake_agent(tmp_path, body), "{prompt_file}",
                                         "{summary_file}"),
                          agent_timeout_s=timeout_s, kill_grace_s=1, ladder=("breadth",),
                          agent_sandbox_mode=sandbox, **cfg)


def assert_restored(repo: Path) -> None:
    assert git(worktree(repo), "status", "--porcelain", "--untracked-files=all") == ""
    assert (worktree(repo) / "knobs.sh").read_text().startswith("LR=0.04\n")
    assert (worktree(repo) / "fakebench.py").read_text() == FAKEBENCH_SOURCE


@pytest.fixture
def checkout(repo: Path):
    """The repo; after the test, its checkout must be exactly as before the daemon ran."""
    before = checkout_state(repo)
    yield repo
    assert checkout_state(repo) == before


# --------------------------------------------------------------------------- outcomes


def test_an_agent_edit_of_an_allowed_file_is_measured_and_kept(checkout: Path,
                                                               tmp_path: Path) -> None:
    run_agent(checkout, tmp_path, EDIT_ALLOWED)
    [row] = candidates(checkout)
    assert (row["proposer"], row["status"]) == ("agent", "keep")
    assert row["description"] == "LR 0.04 -> 0.05: closer to the optimum"
    assert row["agent"]["outcome"] == "agent_ok" and row["agent"]["undone_commit"] is None
    assert "breadth" in row["rungs"]
    assert "+LR=0.05" in git(checkout, "show", row["commit"])


def test_an_agent_edit_of_a_protected_file_is_forbidden_and_restored(checkout: Path,
                                                                     tmp_path: Path) -> None:
    run_agent(checkout, tmp_path, EDIT_PROTECTED)
    [row] = candidates(checkout)
    assert row["status"] == "forbidden_edit" and "fakebench.py" in row["reason"]
    assert row["rungs"] == {}
    assert "METRIC val_bpb=0.1" in (checkout / row["patch"]).read_text()
    assert_restored(checkout)


@pytest.mark.parametrize("body, status, reason", [
    ("sed -i 's/^LR=0.04$/LR=0.05/' knobs.sh\nsleep 30", "agent_timeout",
     "ran past its 1 s timeout"),
    ("sed -i 's/^LR=0.04$/LR=0.05/' knobs.sh\necho 'invalid API key' >&2\nexit 1", "agent_failed",
     "exited 1: invalid API key"),
    ("echo 'nothing to do'", "agent_no_change", "changed no file"),
])
def test_an_agent_that_leaves_nothing_to_validate_gets_its_own_status(
        checkout: Path, tmp_path: Path, body: str, status: str, reason: str) -> None:
    run_agent(checkout, tmp_path, body, timeout_s=1)
    [row] = candidates(checkout)
    assert (row["proposer"], row["status"], row["rungs"]) == ("agent", status, {})
    assert reason in row["reason"]
    assert not any(r.startswith("E0002") for r in
                   (tmp_path / "runs.txt").read_text().split("\n"))  # never benchmarked
    assert_restored(checkout)


def test_agent_failures_count_towards_the_consecutive_failures_stop(checkout: Path,
                                                                   tmp_path: Path) -> None:
    reason = run_agent(checkout, tmp_path, "exit 1", max_experiments=10)
    assert [r["status"] for r in candidates(checkout)] == ["agent_failed"] * 3
    assert "3 consecutive failures" in reason


def test_an_agents_own_commit_is_undone_and_its_change_validated(checkout: Path,
                                                                 tmp_path: Path) -> None:
    start = git(checkout, "rev-parse", "HEAD")
    run_agent(checkout, tmp_path, COMMIT_ITSELF, sandbox="off")  # confined, git is read-only
    [row] = candidates(checkout)
    undone = row["agent"]["undone_commit"]
    assert row["agent"]["outcome"] == "agent_committed" and undone
    assert row["status"] == "keep" and f"commit {undone[:10]} was undone" in row["reason"]
    assert row["base_commit"] == start and git(checkout, "rev-parse", f"{row['commit']}^") == start
    assert "Autogolf-Experiment: E0002" in git(checkout, "log", "-1", "--format=%B", row["commit"])
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", undone,
                               branch_head(checkout)], cwd=checkout)
    assert ancestor.returncode == 1  # the agent's commit is not on the session branch


def test_an_agent_that_touches_git_stops_the_run(checkout: Path, tmp_path: Path) -> None:
    reason = run_agent(checkout, tmp_path, PLANT_HOOK, max_experiments=3,
                       sandbox="off")  # unconfined: what the git check is for
    [row] = candidates(checkout)
    assert row["status"] == "agent_touched_git" and "hooks/post-checkout" in row["reason"]
    assert "agent_touched_git" in reason and "hooks" in reason
    assert rows(checkout)[-1]["type"] == "stop"
    assert git(worktree(checkout), "status", "--porcelain") == ""


def test_a_stop_signal_ends_a_running_agent_and_records_interrupted(checkout: Path,
                                                                    tmp_path: Path) -> None:
    def signal_when_the_agent_runs() -> None:  # the marker is in the (writable) worktree
        deadline = time.monotonic() + 30
        while not list(checkout.glob(".autogolf/worktrees/*/agent-started")) and (
                time.monotonic() < deadline):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_the_agent_runs, daemon=True).start()
    reason = run_agent(checkout, tmp_path, "sed -i 's/^LR=0.04$/LR=0.05/' knobs.sh\n"
                       "touch agent-started\nsleep 30", max_experiments=3)
    [row] = candidates(checkout)
    assert row["status"] == "interrupted" and "while the agent worked" in row["reason"]
    assert reason == "stopped by SIGTERM"
    assert row["agent"]["wall_s"] < 25  # the agent was stopped, not waited for (sleep 30)
    assert_restored(checkout)


def test_rate_limits_are_waited_out_not_counted_toward_the_failure_stop(checkout: Path,
                                                                        tmp_path: Path) -> None:
    # The count lives in the attempt folder (beside the summary file, $2): writable when
    # the agent is confined, and the same folder for every retry of one attempt.
    count = '"$(dirname "$2")/tries.txt"'
    body = (f'n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}\n'
            f'if [ "$n" -lt 4 ]; then echo "API Error: 529 Overloaded" >&2; exit 1; fi\n'
            + EDIT_ALLOWED)  # 4 overloads in a row: more than max_consecutive_failures (3)
    run_agent(checkout, tmp_path, body, agent_backoff_s=0.01, agent_backoff_max_s=0.05)
    [row] = candidates(checkout)
    assert row["status"] == "keep" and row["agent"]["retries"] == 4
    assert row["agent"]["rate_limited"] == "overloaded"  # the first default pattern found


def test_the_stop_file_ends_a_wait_after_a_rate_limit(checkout: Path, tmp_path: Path) -> None:
    body = ('touch "$(dirname "$2")/ran"\n'  # the attempt folder: writable when confined
            'echo "API Error: 429 rate_limit_error" >&2; exit 1')
    stop_file = checkout / ".autogolf" / "STOP"

    def stop_when_the_agent_ran() -> None:
        deadline = time.monotonic() + 60
        while not list(checkout.glob(".autogolf/agent/*/ran")) and (
                time.monotonic() < deadline):
            time.sleep(0.05)
        stop_file.touch()

    threading.Thread(target=stop_when_the_agent_ran, daemon=True).start()
    started = time.monotonic()
    run_agent(checkout, tmp_path, body, max_experiments=3, agent_backoff_s=120,
              agent_max_retries=1)
    [row] = candidates(checkout)
    assert time.monotonic() - started < 60  # not the 120 s backoff
    assert row["status"] == "interrupted" and "stop file" in row["reason"]
    assert row["agent"]["retries"] == 0
    assert not stop_file.exists()  # consumed, as at any other stop


def test_a_spent_agent_budget_ends_the_run_with_a_stop_row_saying_so(checkout: Path,
                                                                    tmp_path: Path) -> None:
    reason = run_agent(checkout, tmp_path, "sleep 0.3\nexit 1", max_experiments=5,
                       agent_budget_s=0.2)
    assert [r["status"] for r in candidates(checkout)] == ["agent_failed"]
    assert reason.startswith("the proposer has nothing left to propose (agent.budget_s spent")
    assert rows(checkout)[-1] == {**rows(checkout)[-1], "type": "stop", "reason": reason}


# --------------------------------------------------------------------------- the prompt


def test_the_prompt_has_the_doc_backlog_incumbents_rows_and_an_untried_idea(
        repo: Path, tmp_path: Path) -> None:
    commit_files(repo, {"autoresearch.md": DOC, "autoresearch.ideas.md": BACKLOG})
    checkout = repo
    run_agent(checkout, tmp_path, "exit 1", max_experiments=2)
    first, second = candidates(checkout)
    prompt = (checkout / second["agent"]["prompt"]).read_text()
    breadth = rows(checkout)[1]["rungs"]["breadth"]["val_bpb"]  # the baseline
    assert "Goal: lower val_bpb with one small change at a time." in prompt
    assert "- [I001] (untried) Replace the optimiser (needs code)." in prompt
    assert f"- breadth: val_bpb {breadth:.4f} (E0001)" in prompt
    assert "- E0002 agent_failed [I001]: " in prompt and "the agent exited 1" in prompt
    assert first["idea"] == "I001"
    assert "Try backlog idea [I001]" in (checkout / first["agent"]["prompt"]).read_text()


def test_an_agent_without_a_command_is_a_user_error(repo: Path) -> None:
    cfg = load_config(repo / "autogolf.yaml")
    with pytest.raises(UserError, match="agent: command"):
        make_proposer(dataclasses.replace(cfg, proposer="agent"), repo)


# --------------------------------------------------------------------------- configuration


def config_problems(tmp_path: Path, text: str) -> str:
    path = tmp_path / "autogolf.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    return str(refused.value)


@pytest.mark.parametrize("text, needle", [
    ("agent: {command: []}\n", "agent.command: got []"),
    ("agent: {command: ['']}\n", "agent.command: got ['']"),
    ("agent: {command: claude}\n", "agent.command: got 'claude'"),
    ("agent: {command: [claude, '{prompt_fil}']}\n", "agent.command: unknown placeholder "
                                                      "{prompt_fil}"),
    ("proposer: agent\n", "agent.command: missing"),
    ("proposer: {name: search, rotation: [search, agent]}\n", "agent.command: missing"),
    ("proposer: {rotation: [search, gpt]}\n", "proposer.rotation[1]: unknown proposer 'gpt'"),
    ("proposer: {rotation: []}\n", "proposer.rotation: got []"),
    ("agent: {command: [x], timeout_s: 0}\n", "agent.timeout_s: got 0"),
    ("agent: {command: [x], last_row: 3}\n", "agent.last_row: unknown key"),
])
def test_bad_agent_and_rotation_settings_are_refused_naming_the_key(tmp_path: Path, text: str,
                                                                    needle: str) -> None:
    assert needle in config_problems(tmp_path, text)


def test_agent_and_rotation_settings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "autogolf.yaml"
    path.write_text("proposer: {name: search, rotation: [ideas, search, agent], seed: 3}\n"
                    "agent: {command: [claude, -p, '{prompt}', '${HOME}'], timeout_s: 60, "
                    "last_rows: 5}\n")
    cfg = load_config(path)
    assert cfg.proposer_rotation == ("ideas", "search", "agent") and cfg.proposer_seed == 3
    assert cfg.agent_command == ("claude", "-p", "{prompt}", "${HOME}")
    assert (cfg.agent_timeout_s, cfg.agent_last_rows) == (60, 5)


def test_budget_backoff_and_rotation_settings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "autogolf.yaml"
    path.write_text("agent: {command: [claude], budget_s: 3600, budget_usd: 5, "
                    "budget_tokens: 2000000, backoff_s: 30, backoff_max_s: 600, max_retries: 4, "
                    "rate_limit_patterns: [quota, '\\b429\\b'], rotate_after_losses: 2}\n")
    limits = load_config(path).agent_limits()
    assert (limits.budget_s, limits.budget_usd, limits.budget_tokens) == (3600, 5, 2_000_000)
    assert (limits.backoff_s, limits.backoff_max_s, limits.max_retries) == (30, 600, 4)
    assert limits.rate_limit_patterns == ("quota", r"\b429\b")
    assert load_config(path).agent_rotate_after_losses == 2


@pytest.mark.parametrize("text, needle", [
    ("agent: {command: [x], budget_s: 0}\n", "agent.budget_s: got 0"),
    ("agent: {command: [x], budget_tokens: 1.5}\n", "agent.budget_tokens"),
    ("agent: {command: [x], max_retries: -1}\n", "agent.max_retries"),
    ("agent: {command: [x], backoff_s: 60, backoff_max_s: 10}\n",
     "agent.backoff_max_s: is below agent.backoff_s"),
    ("agent: {command: [x], rate_limit_patterns: ['(']}\n",
     "agent.rate_limit_patterns[0]: '(' is not a regular expression"),
    ("agent: {command: [x], rate_limit_patterns: 429}\n", "agent.rate_limit_patterns: got 429"),
    ("agent: {command: [x], rotate_after_losses: -2}\n", "agent.rotate_after_losses"),
    ("agent: {command: [x], budget_sec: 5}\n", "agent.budget_sec: unknown key"),
])
def test_bad_budget_and_backoff_settings_are_refused_naming_the_key(tmp_path: Path, text: str,
                                                                    needle: str) -> None:
    assert needle in config_problems(tmp_path, text)
