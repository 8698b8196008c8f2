"""The agent command lines of docs/AGENT_NIGHT.md (pi, claude, codex, aider), each run as
written, and its two recipes (Claude Code, pi) run confined with the writable paths they list.

The lines are read from the document's example block, so a wrong edit there fails here. For
each, a stand-in executable with that exact name is put first on PATH: it writes the argument
list it got (and the text of any file an argument names) as JSON, makes a real edit in the
worktree (MATRIX_LR in autoresearch.sh) and writes the summary file the prompt asks for. The
proposer alone checks the exact argv and the prompt's sections for all four; one daemon run
(the pi line) measures the stand-in's edit on the real trainer at `smoke`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_e2e_real import SHORT_SMOKE, committed_copy

from loop.config import load_config
from loop.platform import blas_env
from loop.proposers.agent import AgentProposer
from loop.store.gitsession import GitSession
from loop.store.ledger import Ledger

REPO_ROOT = Path(__file__).resolve().parents[1]
AGENT_DOC = REPO_ROOT / "docs" / "AGENT_NIGHT.md"
NAMES = ("pi", "claude", "codex", "aider")
SECTIONS = ("# autogolf: one experiment for you", "## Rules", "## Idea to try",
            "## Incumbents", "## Evidence: how the incumbent and the last runs trained",
            "## What has been tried, by idea family", "## Last 12 experiments",
            "## Session document (autoresearch.md)", "## Ideas backlog (autoresearch.ideas.md)")
STAND_IN = '''#!{python}
"""Stand-in for {name}: records its argv, edits MATRIX_LR, writes the summary."""
import json, os, pathlib, re, sys
files = {{}}
for arg in sys.argv[1:]:
    for path in (arg, arg[1:] if arg.startswith("@") else None):
        if path and len(path) < 4096 and os.path.isfile(path):
            files[arg] = pathlib.Path(path).read_text()
out = pathlib.Path(os.environ["STANDIN_OUT"])
out.write_text(json.dumps({{"argv": sys.argv, "cwd": os.getcwd(), "files": files}}))
script = pathlib.Path("autoresearch.sh")
text = re.sub(r"(?m)^MATRIX_LR=0\\.04$", "MATRIX_LR=0.05", script.read_text())
script.write_text(text)
pathlib.Path(os.environ["AUTOGOLF_SUMMARY_FILE"]).write_text(
    "MATRIX_LR 0.04 -> 0.05: a faster start for the short run\\nidea: own\\n")
'''


def readme_commands() -> dict[str, list[str]]:
    """The documented example `command:` lines, by program name."""
    text = AGENT_DOC.read_text(encoding="utf-8")
    block = re.search(r"Examples \(none is required\):\n\n\s*```yaml\n(.*?)\n\s*```", text,
                      re.DOTALL)
    assert block, "AGENT_NIGHT.md: the example block (```yaml after 'Examples') is gone"
    entries = re.split(r"\n(?=\s*command:)", block.group(1))
    commands = [yaml.safe_load(entry.strip())["command"] for entry in entries]
    return {argv[0]: argv for argv in commands}


def test_the_readme_has_a_command_line_for_each_agent_cli() -> None:
    assert sorted(readme_commands()) == sorted(NAMES)


def install_stand_in(bin_dir: Path, name: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(STAND_IN.format(python=sys.executable, name=name))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def filled(argv: list[str], values: dict[str, str]) -> list[str]:
    """The README's argv with the placeholders replaced, as the daemon must pass it."""
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def received_prompt(seen: dict) -> str:
    """The prompt the stand-in got: inline in an argument, or in a file an argument names."""
    texts = [a for a in seen["argv"][1:] if a.startswith(SECTIONS[0])]
    texts += [t for t in seen["files"].values() if t.startswith(SECTIONS[0])]
    assert len(texts) == 1, f"expected the prompt once, got {len(texts)}"
    return texts[0]


@pytest.fixture
def research_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitSession:
    """A session worktree of a small repository holding the project's research files."""
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    root = tmp_path / "repo"
    for rel in ("autoresearch.sh", "autoresearch.md", "autoresearch.ideas.md",
                "benchmark/train_gpt_mlx.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, root / rel)
    (root / ".gitignore").write_text(".autogolf/\n")
    for args in (("init", "-q", "-b", "main"), ("add", "-A"),
                 ("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "s")):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return GitSession.open(root, "s1")


@pytest.mark.parametrize("name", NAMES)
def test_the_readme_command_line_reaches_the_cli_exactly_with_the_whole_prompt(
        name: str, tmp_path: Path, research_session: GitSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    install_stand_in(tmp_path / "bin", name)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_OUT", str(tmp_path / "seen.json"))
    command = readme_commands()[name]
    agent = AgentProposer(command, timeout_s=60, work_dir=tmp_path / "agent", grace_s=1)

    proposal = agent.propose(research_session.worktree, [])

    seen = json.loads((tmp_path / "seen.json").read_text())
    prompt_path = proposal.outcome.prompt_path
    prompt = prompt_path.read_text()
    values = {"prompt_file": str(prompt_path), "prompt": prompt,
              "worktree": str(research_session.worktree.resolve()),
              "summary_file": str(prompt_path.parent / "summary.txt")}
    assert Path(seen["argv"][0]).name == name
    assert seen["argv"][1:] == filled(command, values)[1:]
    assert Path(seen["cwd"]) == research_session.worktree.resolve()
    assert received_prompt(seen) == prompt
    assert all(section in prompt for section in SECTIONS)
    assert proposal.outcome.kind == "agent_ok"
    assert proposal.outcome.changed == ["autoresearch.sh"]
    assert proposal.idea is None and "its own idea" in proposal.note  # `idea: own`


@pytest.mark.slow
def test_a_readme_agents_edit_is_measured_on_the_real_trainer(tmp_path: Path, sample_dataset
                                                              ) -> None:
    """The daemon with the README's pi line: the stand-in's edit is judged at smoke."""
    command = readme_commands()["pi"]
    out = tmp_path / "out"  # where the stand-in records its argv: writable when confined
    out.mkdir()
    clone = committed_copy(REPO_ROOT, tmp_path / "clone", ladder=["smoke"],
                           smoke_iterations=SHORT_SMOKE,
                           proposer={"name": "agent"},
                           agent={"command": command, "timeout_s": 120,
                                  "sandbox": {"writable": [str(out)]}},
                           keep_rule={"max_runs": 2})  # the edit is measured; not its power
    install_stand_in(tmp_path / "bin", "pi")
    env = {**os.environ, **blas_env(), "STANDIN_OUT": str(out / "seen.json"),
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "AUTOGOLF_CACHE_ROOT": str(Path(sample_dataset.data_path).parents[2])}

    done = subprocess.run([sys.executable, "-m", "loop.ui.cli", "run", "--max-experiments", "1"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stdout + done.stderr
    rows = [r for r in Ledger(clone / ".autogolf" / "ledger.jsonl").rows()
            if r.get("type") == "experiment" and not r.get("baseline")]
    assert len(rows) == 1, done.stdout
    [row] = rows
    assert (row["proposer"], row["agent"]["outcome"]) == ("agent", "agent_ok")
    assert row["status"] in ("keep", "discard", "inconclusive"), row["reason"]
    assert isinstance(row["rungs"]["smoke"]["val_bpb"], float)  # the judge's score
    assert "+MATRIX_LR=0.05" in (clone / row["patch"]).read_text()
    assert row["description"] == "MATRIX_LR 0.04 -> 0.05: a faster start for the short run"
    seen = json.loads((out / "seen.json").read_text())
    prompt_file = clone / row["agent"]["prompt"]
    assert seen["argv"][1:] == filled(command, {"prompt_file": str(prompt_file)})[1:]
    assert received_prompt(seen) == prompt_file.read_text()


def test_the_documented_agent_settings_example_is_valid_configuration(tmp_path: Path) -> None:
    text = AGENT_DOC.read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(proposer:\n.*?)```", text, re.DOTALL)
    assert block, "AGENT_NIGHT.md: the ```yaml block with `proposer:` and `agent:` is gone"
    (tmp_path / "autogolf.yaml").write_text(block.group(1))
    cfg = load_config(tmp_path / "autogolf.yaml")
    assert cfg.agent_limits().rate_limit_patterns == load_config(tmp_path / "none.yaml"
                                                                 ).agent_limits().rate_limit_patterns
    assert (cfg.agent_budget_s, cfg.agent_rotate_after_losses) == (14400, 3)


# --------------------------------------------------------------------------- the recipes

RECIPE_STAND_IN = '''#!{python}
"""Stand-in for {name} in its recipe: writes its state as the CLI does, edits, reports."""
import json, os, pathlib, re, sys
home = pathlib.Path(os.environ["HOME"])
for rel in {state!r}:
    target = home / rel
    (target / "state.json" if target.is_dir() else target).write_text("{{}}")
script = pathlib.Path("autoresearch.sh")
script.write_text(re.sub(r"(?m)^MATRIX_LR=0\\.04$", "MATRIX_LR=0.05", script.read_text()))
summary = pathlib.Path(os.environ["AUTOGOLF_SUMMARY_FILE"])
summary.write_text("MATRIX_LR 0.04 -> 0.05\\nidea: own\\n")
args = sys.argv[1:]
if "--output-format" in args and args[args.index("--output-format") + 1] == "json":
    print(json.dumps({{"type": "result", "total_cost_usd": 0.25,
                      "usage": {{"input_tokens": 1000, "output_tokens": 200}}}}))
'''
# What each CLI writes under $HOME (folders end with /), as the recipes list them writable.
RECIPE_STATE = {"claude": [".claude/", ".claude.json"], "pi": [".pi/agent/"]}


def recipes() -> dict[str, str]:
    """The recipe blocks of docs/AGENT_NIGHT.md (```yaml starting `# recipe: NAME`), by name."""
    text = AGENT_DOC.read_text(encoding="utf-8")
    return {m.group(2): m.group(1) for m in
            re.finditer(r"```yaml\n(# recipe: (\w+)\n.*?)```", text, re.DOTALL)}


def test_there_is_a_recipe_for_claude_code_and_for_pi() -> None:
    assert sorted(recipes()) == ["claude", "pi"]


def recipe_agent(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes):
    """(config, proposer) of the recipe as written, its CLI a stand-in, $HOME a scratch one
    holding the state paths the CLI writes."""
    from loop.proposers.sandbox import choose

    home = tmp_path / "home"
    for rel in RECIPE_STATE[name]:
        path = home / rel
        if rel.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
    monkeypatch.setenv("HOME", str(home))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / name).write_text(RECIPE_STAND_IN.format(python=sys.executable, name=name,
                                                       state=RECIPE_STATE[name]))
    (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "autogolf.yaml").write_text(recipes()[name])
    cfg = load_config(tmp_path / "autogolf.yaml")
    cfg = dataclasses.replace(cfg, **changes)
    sandbox = choose(cfg.agent_sandbox_mode, cfg.agent_sandbox_network,
                     cfg.agent_sandbox_writable)
    if sandbox.tool is None:
        pytest.skip(f"no working sandbox here: {sandbox.why_none}")
    agent = AgentProposer(cfg.agent_command, cfg.agent_timeout_s, tmp_path / "agent",
                          sandbox=sandbox, limits=cfg.agent_limits(), grace_s=1)
    return cfg, agent


@pytest.mark.parametrize("name", ["claude", "pi"])
def test_a_recipe_runs_confined_writing_only_the_paths_it_lists(
        name: str, tmp_path: Path, research_session: GitSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _cfg, agent = recipe_agent(name, tmp_path, monkeypatch)
    proposal = agent.propose(research_session.worktree, [])
    log = proposal.outcome.log_path.read_text()
    assert proposal.outcome.kind == "agent_ok", log
    assert proposal.outcome.changed == ["autoresearch.sh"]
    for rel in RECIPE_STATE[name]:
        written = tmp_path / "home" / rel / ("state.json" if rel.endswith("/") else "")
        assert written.read_text() == "{}"


@pytest.mark.parametrize("name", ["claude", "pi"])
def test_a_recipes_budgets_can_trigger(name: str, tmp_path: Path) -> None:
    from loop.daemon.briefing import budget_warnings

    (tmp_path / "autogolf.yaml").write_text(recipes()[name])
    cfg = load_config(tmp_path / "autogolf.yaml")
    assert budget_warnings(cfg) == []
    assert cfg.agent_budget_s is not None  # agent time: counted whatever the CLI reports


def test_the_claude_recipes_cost_budget_stops_the_agent_once_spent(
        tmp_path: Path, research_session: GitSession, monkeypatch: pytest.MonkeyPatch) -> None:
    _cfg, agent = recipe_agent("claude", tmp_path, monkeypatch, agent_budget_usd=0.2)
    first = agent.propose(research_session.worktree, [])
    assert first.attempt["usage"]["cost_usd"] == 0.25  # --output-format json: cost reported
    assert agent.propose(research_session.worktree, []) is None
    assert "budget_usd" in agent.why_done()
