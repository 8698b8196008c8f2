"""The `agent` proposer with small fake agents in a real session worktree: every way an agent
can end gets its own outcome, commits are undone, the prompt carries what a fresh agent needs."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from loop.config import Config, is_editable
from loop.proposers import Proposer
from loop.proposers.agent import AgentConfigError, AgentProposer
from loop.proposers.agentlimits import Limits
from loop.store.gitsession import GitSession

USER = ("-c", "user.name=Test User", "-c", "user.email=test@example.com")

DOC = "# autoresearch session\n\nGoal: lower val_bpb.\n\n## What has been tried\nNothing.\n"
BACKLOG = """# Ideas
- [I001] (untried) Higher Muon learning rate.
  knobs: MATRIX_LR=0.06
- [I002] (untried) Keep the tied embedding in fp16 in the export.
"""
HISTORY = [
    {"type": "experiment", "id": "E0001", "status": "keep", "baseline": True,
     "description": "baseline abc at breadth", "reason": "baseline",
     "rungs": {"breadth": {"val_bpb": 1.2345}}, "incumbent_before": {}},
    {"type": "experiment", "id": "E0002", "status": "discard", "idea": None,
     "description": "MATRIX_LR 0.04 -> 0.08", "reason": "at breadth: 1.2400 is not below 1.2325",
     "rungs": {"breadth": {"val_bpb": 1.2400}}, "incumbent_before": {"breadth": 1.2345}},
]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(autouse=True)
def isolated_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def session(tmp_path: Path) -> GitSession:
    root = tmp_path / "repo"
    (root / "benchmark").mkdir(parents=True)
    (root / "autoresearch.sh").write_text("MATRIX_LR=0.04\n")
    (root / "benchmark" / "train_gpt_mlx.py").write_text("print('train')\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "autoresearch.md").write_text(DOC)
    (root / "autoresearch.ideas.md").write_text(BACKLOG)
    (root / ".gitignore").write_text(".autogolf/\nlogs/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, *USER, "commit", "-q", "-m", "initial")
    return GitSession.open(root, "s1")


def fake_agent(tmp_path: Path, body: str) -> Path:
    """A bash script run as `agent PROMPT_FILE WORKTREE SUMMARY_FILE` in the worktree."""
    script = tmp_path / f"agent-{len(list(tmp_path.glob('agent-*')))}.sh"
    script.write_text("#!/usr/bin/env bash\nset -e\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def proposer(tmp_path: Path, body: str, timeout_s: float = 30, **kw) -> AgentProposer:
    script = fake_agent(tmp_path, body)
    return AgentProposer([str(script), "{prompt_file}", "{worktree}", "{summary_file}"],
                         timeout_s=timeout_s, work_dir=tmp_path / "agent", grace_s=1, **kw)


EDIT_ALLOWED = """sed -i 's/MATRIX_LR=0.04/MATRIX_LR=0.05/' autoresearch.sh
echo "MATRIX_LR 0.04 -> 0.05: a faster start" > "$3" """


# --- outcomes -----------------------------------------------------------------------------


def test_it_is_a_proposer(tmp_path: Path) -> None:
    assert isinstance(proposer(tmp_path, "true"), Proposer)


def test_an_allowed_edit_is_agent_ok_with_the_agents_summary(tmp_path: Path,
                                                             session: GitSession) -> None:
    proposal = proposer(tmp_path, EDIT_ALLOWED).propose(session.worktree, HISTORY)
    assert proposal.outcome.kind == "agent_ok" and proposal.outcome.status is None
    assert proposal.outcome.changed == ["autoresearch.sh"]
    assert proposal.description == "MATRIX_LR 0.04 -> 0.05: a faster start"
    assert session.changed_files() == ["autoresearch.sh"]


def test_a_protected_edit_is_left_for_the_forbidden_edit_check(tmp_path: Path,
                                                               session: GitSession) -> None:
    proposal = proposer(tmp_path, "echo '# x' >> pyproject.toml").propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_ok"
    assert not is_editable(Config(), proposal.outcome.changed[0])  # what the scheduler checks


def test_an_agent_past_its_timeout_is_killed_and_agent_timeout(tmp_path: Path,
                                                               session: GitSession) -> None:
    proposal = proposer(tmp_path, "echo started\nsleep 60", timeout_s=1).propose(
        session.worktree, [])
    assert proposal.outcome.kind == "agent_timeout"
    assert proposal.outcome.status == "agent_timeout"
    assert proposal.outcome.wall_s < 30  # killed, not the agent's 60 s


def test_a_non_zero_exit_is_agent_failed_with_its_last_line(tmp_path: Path,
                                                            session: GitSession) -> None:
    proposal = proposer(tmp_path, "echo 'invalid API key'\nexit 1").propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_failed"
    assert "exited 1: invalid API key" in proposal.outcome.reason


def test_doing_nothing_is_agent_no_change(tmp_path: Path, session: GitSession) -> None:
    proposal = proposer(tmp_path, "echo thinking").propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_no_change"


def test_an_agents_own_commit_is_undone_and_its_change_kept_as_a_diff(
        tmp_path: Path, session: GitSession) -> None:
    head = session.head()
    body = EDIT_ALLOWED + "\ngit " + shlex.join(USER) + " commit -qam 'agent commit'"
    proposal = proposer(tmp_path, body).propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_committed"
    assert proposal.outcome.undone_commit not in (None, head)
    assert session.head() == head
    assert git(session.worktree, "symbolic-ref", "HEAD") == f"refs/heads/{session.branch}"
    assert session.changed_files() == ["autoresearch.sh"]


def test_a_commit_that_left_no_difference_is_agent_no_change(tmp_path: Path,
                                                             session: GitSession) -> None:
    head = session.head()
    body = "git " + shlex.join(USER) + " commit -q --allow-empty -m empty"
    proposal = proposer(tmp_path, body).propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_no_change"
    assert session.head() == head


def test_changing_git_config_is_agent_touched_git(tmp_path: Path, session: GitSession) -> None:
    body = EDIT_ALLOWED + "\ngit config core.fsmonitor 'touch /tmp/pwned'"
    proposal = proposer(tmp_path, body).propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_touched_git"
    assert "config" in proposal.outcome.reason


def test_adding_a_hook_is_agent_touched_git(tmp_path: Path, session: GitSession) -> None:
    body = 'hooks="$(git rev-parse --git-common-dir)/hooks"\necho "exit 0" > "$hooks/pre-commit"'
    proposal = proposer(tmp_path, body).propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_touched_git"
    assert "pre-commit" in proposal.outcome.reason


def test_switching_branches_is_agent_touched_git_and_the_session_branch_is_restored(
        tmp_path: Path, session: GitSession) -> None:
    body = EDIT_ALLOWED + "\ngit checkout -q -b elsewhere"
    proposal = proposer(tmp_path, body).propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_touched_git"
    assert git(session.worktree, "symbolic-ref", "HEAD") == f"refs/heads/{session.branch}"


def test_a_nested_repository_is_agent_touched_git(tmp_path: Path, session: GitSession) -> None:
    proposal = proposer(tmp_path, "git init -q sub").propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_touched_git"
    assert "sub/.git" in proposal.outcome.reason


def test_ordinary_read_only_git_use_is_not_touching_git(tmp_path: Path,
                                                        session: GitSession) -> None:
    body = EDIT_ALLOWED + "\ngit status >/dev/null\ngit diff >/dev/null\ngit log -1 >/dev/null"
    proposal = proposer(tmp_path, body).propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_ok"


# --- the command and the prompt -----------------------------------------------------------


def test_placeholders_are_filled_and_the_agent_runs_in_the_worktree(
        tmp_path: Path, session: GitSession) -> None:
    seen = tmp_path / "seen.txt"
    body = f'printf "%s\\n" "$1" "$2" "$PWD" > {seen}'
    proposal = proposer(tmp_path, body).propose(session.worktree, [])
    prompt_file, worktree, cwd = seen.read_text().splitlines()
    assert Path(prompt_file) == proposal.outcome.prompt_path and Path(prompt_file).is_file()
    assert Path(worktree) == Path(cwd) == session.worktree.resolve()


def test_each_attempt_gets_its_own_folder_with_prompt_and_log(tmp_path: Path,
                                                              session: GitSession) -> None:
    agent = proposer(tmp_path, "echo hello from the agent")
    first = agent.propose(session.worktree, []).outcome
    second = agent.propose(session.worktree, []).outcome
    assert first.prompt_path.parent != second.prompt_path.parent
    assert "hello from the agent" in second.log_path.read_text()


def prompt_of(tmp_path: Path, session: GitSession, history: list[dict], **kw) -> str:
    proposal = proposer(tmp_path, "true", **kw).propose(session.worktree, history)
    return proposal.outcome.prompt_path.read_text()


def test_prompt_contains_the_session_document_and_the_backlog(tmp_path: Path,
                                                              session: GitSession) -> None:
    prompt = prompt_of(tmp_path, session, HISTORY)
    assert DOC.strip() in prompt
    assert BACKLOG.strip() in prompt


def test_prompt_contains_incumbents_and_recent_rows_with_reasons(tmp_path: Path,
                                                                 session: GitSession) -> None:
    prompt = prompt_of(tmp_path, session, HISTORY)
    assert "breadth: val_bpb 1.2345 (E0001)" in prompt
    assert "E0002 discard breadth delta=+0.0055" in prompt
    assert "at breadth: 1.2400 is not below 1.2325" in prompt


def test_prompt_shows_only_the_last_n_rows(tmp_path: Path, session: GitSession) -> None:
    rows = [dict(HISTORY[1], id=f"E{n:04d}") for n in range(1, 21)]
    prompt = prompt_of(tmp_path, session, rows, last_rows=5)
    assert "E0016 discard" in prompt and "E0015 discard" not in prompt


def test_prompt_offers_an_untried_idea_that_needs_code_first(tmp_path: Path,
                                                             session: GitSession) -> None:
    proposal = proposer(tmp_path, "true").propose(session.worktree, HISTORY)
    assert proposal.idea == "I002"
    assert "Try backlog idea [I002]: Keep the tied embedding in fp16" in \
        proposal.outcome.prompt_path.read_text()


def test_prompt_without_untried_ideas_asks_the_agent_to_choose(tmp_path: Path,
                                                               session: GitSession) -> None:
    history = HISTORY + [{"type": "experiment", "id": f"E000{n}", "idea": i, "status": "discard"}
                         for n, i in ((3, "I001"), (4, "I002"))]
    proposal = proposer(tmp_path, "true").propose(session.worktree, history)
    assert proposal.idea is None
    assert "No untried idea is queued" in proposal.outcome.prompt_path.read_text()


def test_prompt_states_the_editable_and_protected_sets(tmp_path: Path,
                                                       session: GitSession) -> None:
    prompt = prompt_of(tmp_path, session, [], editable=["autoresearch.sh"],
                       protected=["loop/**"])
    assert "Edit only files matching: `autoresearch.sh`. Never edit: `loop/**`" in prompt


def test_the_prompt_can_be_passed_inline(tmp_path: Path, session: GitSession) -> None:
    seen = tmp_path / "inline.txt"
    script = fake_agent(tmp_path, f'printf "%s" "$1" > {seen}')
    agent = AgentProposer([str(script), "{prompt}"], timeout_s=30, work_dir=tmp_path / "a")
    proposal = agent.propose(session.worktree, [])
    assert seen.read_text() == proposal.outcome.prompt_path.read_text()


def test_a_string_command_is_split_like_a_shell(tmp_path: Path) -> None:
    script = fake_agent(tmp_path, "true")
    agent = AgentProposer(f"{script} --flag 'two words'", timeout_s=1, work_dir=tmp_path)
    assert agent.command == [str(script), "--flag", "two words"]


def test_an_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="prompt_fiel"):
        AgentProposer(["true", "{prompt_fiel}"], timeout_s=1, work_dir=tmp_path)


def test_shell_variables_are_not_placeholders(tmp_path: Path) -> None:
    AgentProposer(["sh", "-c", "echo ${home}"], timeout_s=1, work_dir=tmp_path)


def test_a_command_not_on_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="not found on PATH"):
        AgentProposer(["no-such-agent-xyz"], timeout_s=1, work_dir=tmp_path)


def test_an_empty_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="non-empty"):
        AgentProposer([], timeout_s=1, work_dir=tmp_path)


def test_the_agent_inherits_the_environment_plus_our_variables(tmp_path: Path,
                                                               session: GitSession,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("FAKE_API_KEY", "k")
    seen = tmp_path / "env.txt"
    body = f'echo "$FAKE_API_KEY $AUTOGOLF_WORKTREE" > {seen}'
    proposer(tmp_path, body).propose(session.worktree, [])
    assert seen.read_text().split() == ["k", str(session.worktree.resolve())]
    assert os.environ["FAKE_API_KEY"] == "k"


def test_a_work_dir_inside_the_worktree_is_refused(tmp_path: Path, session: GitSession) -> None:
    agent = AgentProposer(["true"], timeout_s=1, work_dir=session.worktree / "agent")
    with pytest.raises(AgentConfigError, match="outside the worktree"):
        agent.propose(session.worktree, [])


# --- the idea claim -------------------------------------------------------------------------


def claiming(line: str) -> str:
    return EDIT_ALLOWED.replace('> "$3"', '> "$3"\n' + (f'echo "{line}" >> "$3"' if line else ""))


@pytest.mark.parametrize("line, idea, note", [
    ("idea: I001", "I001", "the agent says it implemented I001; suggested was I002"),
    ("idea: I002", "I002", None),
    ("idea: own", None, "the agent says it tried its own idea"),
    ("idea: I042", None, "the agent named idea I042, which is not in the backlog"),
    ("", "I002", "the agent did not say which idea; credited to the suggested I002"),
])
def test_the_experiment_is_credited_to_the_idea_the_agent_names(
        tmp_path: Path, session: GitSession, line: str, idea: str | None,
        note: str | None) -> None:
    proposal = proposer(tmp_path, claiming(line)).propose(session.worktree, HISTORY)
    assert proposal.idea == idea
    assert proposal.attempt["suggested"] == "I002"
    assert (note in proposal.note) if note else proposal.note is None
    assert proposal.description == "MATRIX_LR 0.04 -> 0.05: a faster start"  # no idea line


def test_the_prompt_asks_for_the_idea_line(tmp_path: Path, session: GitSession) -> None:
    prompt = prompt_of(tmp_path, session, [])
    assert "`idea: <id>`" in prompt and "`idea: own`" in prompt


# --- evidence and rotation in the prompt ----------------------------------------------------

TRAIN_LOG = "".join(f"step:{s}/30 train_loss:{7 - s / 10:.4f} train_time:{s * 100}ms "
                    f"step_avg:100.00ms tok_s:1000\n" for s in (1, 10, 20, 30))


def test_prompt_has_the_incumbents_training_curve_from_its_log(tmp_path: Path,
                                                               session: GitSession) -> None:
    log = tmp_path / "home" / ".autogolf" / "experiments" / "E0001" / "bench-breadth.log"
    log.parent.mkdir(parents=True)
    log.write_text(TRAIN_LOG)
    history = [dict(HISTORY[0], session="s1", rungs={"breadth": {
        "val_bpb": 1.2345, "log": ".autogolf/experiments/E0001/bench-breadth.log",
        "total_bytes": 1_000_000}})]
    prompt = prompt_of(tmp_path, session, history, home=tmp_path / "home")
    assert "## Evidence: how the incumbent and the last runs trained" in prompt
    assert ("- E0001 incumbent, keep at breadth: val_bpb 1.2345; train_loss 6.900@1 6.000@10 "
            "5.000@20 4.000@30; step 100.0 ms; roundtrip gap unknown; headroom 15,000,000 "
            "bytes") in prompt


FAMILY_BACKLOG = """# Ideas
## Schedule
- [I001] (untried) Longer warmdown (needs code).
- [I002] (untried) Cosine warmdown (needs code).
## Model
- [I003] (untried) Wider MLP (needs code).
"""


def test_a_family_that_lost_n_in_a_row_is_not_suggested(tmp_path: Path,
                                                        session: GitSession) -> None:
    (session.worktree / "autoresearch.ideas.md").write_text(
        FAMILY_BACKLOG.replace("## Schedule\n", "## Schedule\n- [I000] (untried) Linear.\n"))
    history = [{"type": "experiment", "id": "E0002", "idea": "I001", "status": "discard"},
               {"type": "experiment", "id": "E0003", "idea": "I000", "status": "crash"}]
    agent = proposer(tmp_path, "true", rotate_after_losses=2)
    proposal = agent.propose(session.worktree, history)
    prompt = proposal.outcome.prompt_path.read_text()
    assert proposal.idea == "I003"
    assert "- Schedule: 2 tested, 0 kept; last: E0002 discard, E0003 crash; 2 losses in a row: " \
        "rotate away" in prompt
    assert proposer(tmp_path, "true", rotate_after_losses=3).propose(
        session.worktree, history).idea == "I002"


def test_the_prompt_stays_bounded_with_a_huge_backlog(tmp_path: Path,
                                                      session: GitSession) -> None:
    huge = "# Ideas\n" + "".join(f"- [I{n:04d}] (untried) idea number {n} " + "x" * 200 + "\n"
                                 for n in range(1, 2000))
    (session.worktree / "autoresearch.ideas.md").write_text(huge)
    prompt = prompt_of(tmp_path, session, [])
    assert len(prompt) < 45_000 < len(huge)
    assert "more characters of autoresearch.ideas.md cut here" in prompt


# --- rate limits, backoff, budgets ----------------------------------------------------------

FAST = Limits(backoff_s=0.01, backoff_max_s=0.02, max_retries=3)


def limited_then(tmp_path: Path, failures: int, message: str = "API Error: 429 rate_limit") -> str:
    """A body that fails with `message` (leaving a stray file) `failures` times, then edits."""
    count = tmp_path / "tries.txt"
    return (f'n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}\n'
            f'if [ "$n" -lt {failures} ]; then touch stray.txt; echo "{message}" >&2; exit 1; fi\n'
            + EDIT_ALLOWED)


def test_a_rate_limited_attempt_is_retried_after_a_backoff_from_a_clean_worktree(
        tmp_path: Path, session: GitSession) -> None:
    proposal = proposer(tmp_path, limited_then(tmp_path, 2), limits=FAST).propose(
        session.worktree, [])
    assert proposal.outcome.kind == "agent_ok"
    assert proposal.outcome.changed == ["autoresearch.sh"]  # the first tries' stray file: gone
    assert (proposal.attempt["tries"], proposal.attempt["retries"]) == (3, 2)
    assert proposal.attempt["retried_logs"] == ["agent-try1.log", "agent-try2.log"]
    assert proposal.attempt["waited_s"] > 0
    assert "429" in (proposal.outcome.log_path.parent / "agent-try1.log").read_text()


def test_retries_stop_at_max_retries_and_the_reason_says_rate_limited(
        tmp_path: Path, session: GitSession) -> None:
    proposal = proposer(tmp_path, limited_then(tmp_path, 99, "Error: Overloaded"),
                        limits=FAST).propose(session.worktree, [])
    assert proposal.outcome.kind == "agent_failed" and proposal.attempt["retries"] == 3
    assert proposal.outcome.reason.startswith("rate-limited or overloaded")
    assert proposal.attempt["rate_limited"] == "overloaded"


def test_an_ordinary_failure_is_not_retried(tmp_path: Path, session: GitSession) -> None:
    proposal = proposer(tmp_path, limited_then(tmp_path, 99, "SyntaxError"),
                        limits=FAST).propose(session.worktree, [])
    assert proposal.attempt["retries"] == 0 and proposal.attempt["rate_limited"] is None


def test_a_stop_request_ends_the_backoff_wait(tmp_path: Path, session: GitSession) -> None:
    log_seen = tmp_path / "agent"

    def stop() -> bool:  # true once the first try's log says 429 (the agent then exits)
        return any("429" in p.read_text() for p in log_seen.glob("attempt-*/agent.log"))

    agent = proposer(tmp_path, limited_then(tmp_path, 99), stop=stop,
                     limits=Limits(backoff_s=3600, backoff_max_s=3600))
    proposal = agent.propose(session.worktree, [])
    assert proposal.attempt["retries"] == 0 and proposal.attempt["waited_s"] < 600


def test_once_the_time_budget_is_spent_the_agent_proposes_nothing_and_says_why(
        tmp_path: Path, session: GitSession) -> None:
    agent = proposer(tmp_path, "sleep 0.2\n" + EDIT_ALLOWED, limits=Limits(budget_s=0.1))
    assert agent.propose(session.worktree, []) is not None
    session.restore()
    assert agent.propose(session.worktree, []) is None
    assert "agent.budget_s spent" in agent.why_done()


def test_reported_cost_is_recorded_and_spends_the_cost_budget(tmp_path: Path,
                                                              session: GitSession) -> None:
    result = '{"type": "result", "total_cost_usd": 0.5, "usage": {"input_tokens": 10, ' \
             '"output_tokens": 5}}'
    agent = proposer(tmp_path, f"echo '{result}'\n" + EDIT_ALLOWED,
                     limits=Limits(budget_usd=0.4))
    proposal = agent.propose(session.worktree, [])
    assert proposal.attempt["usage"] == {"cost_usd": 0.5, "input_tokens": 10,
                                         "output_tokens": 5}
    session.restore()
    assert agent.propose(session.worktree, []) is None
    assert "agent.budget_usd spent" in agent.why_done()


def test_an_agent_that_reports_nothing_has_unknown_usage(tmp_path: Path,
                                                         session: GitSession) -> None:
    proposal = proposer(tmp_path, EDIT_ALLOWED).propose(session.worktree, [])
    assert proposal.attempt["usage"] is None
