"""What `autogolf run` says before its first experiment (and `run --dry-run` alone).

The proposer that will edit (and for an agent, whether its budgets can trigger), changes in
your checkout that the loop will not use, and a warning when the dataset is the offline
sample while the ladder climbs above `smoke`. The session line comes from
loop.daemon.continuity, the costs from loop.daemon.nightcost.
"""

from __future__ import annotations

from pathlib import Path

from loop.config import Config, is_editable
from loop.data.datasets import DatasetInfo
from loop.store.gitsession import GitError, changed_files

DEMO_PROFILES = ("smoke",)  # what the offline sample is good for


def proposer_line(cfg: Config) -> str:
    """Which proposer edits, in words (a rotation names each in turn)."""
    names = cfg.proposer_rotation or (cfg.proposer,)
    described = [_describe(name, cfg) for name in names]
    if len(described) == 1:
        return f"proposer: {described[0]}"
    return "proposers in turn: " + "; ".join(described)


def _describe(name: str, cfg: Config) -> str:
    if name == "search":
        return (f"search (the built-in knob search, strategy {cfg.search_strategy}; no agent, "
                "no tokens)")
    if name == "ideas":
        return "ideas (the backlog's untried ideas that carry knobs or a patch)"
    program = Path(cfg.agent_command[0]).name if cfg.agent_command else "(no agent.command)"
    budgets = [f"{label} {value:g}" for label, value in (
        ("budget_s", cfg.agent_budget_s), ("budget_usd", cfg.agent_budget_usd),
        ("budget_tokens", cfg.agent_budget_tokens)) if value is not None]
    return (f"agent ({program}, {cfg.agent_timeout_s:g} s per attempt; "
            f"{', '.join(budgets) or 'no budget'})")


def budget_warnings(cfg: Config) -> list[str]:
    """Budgets in cost or tokens that the agent command as written can never spend: the CLI
    reports its usage only in some output forms (loop/proposers/agentlimits.py)."""
    if "agent" not in (cfg.proposer, *cfg.proposer_rotation) or not cfg.agent_command:
        return []
    program, args = Path(cfg.agent_command[0]).name, list(cfg.agent_command[1:])
    reports_cost, reports_tokens = _reports_usage(program, args)
    out = []
    if cfg.agent_budget_usd is not None and not reports_cost:
        out.append(f"agent.budget_usd cannot trigger: {program} as configured reports no cost "
                   f"autogolf reads ({_usage_hint(program)}); agent.budget_s always does")
    if cfg.agent_budget_tokens is not None and not reports_tokens:
        out.append(f"agent.budget_tokens cannot trigger: {program} as configured reports no "
                   f"tokens autogolf reads ({_usage_hint(program)}); agent.budget_s always does")
    return out


def _reports_usage(program: str, args: list[str]) -> tuple[bool, bool]:
    """(cost, tokens) the CLI prints in a form loop.proposers.agentlimits parses."""
    if program == "claude":
        json_out = any(a in ("json", "stream-json") and i > 0 and args[i - 1] == "--output-format"
                       for i, a in enumerate(args)) or any(
            a in ("--output-format=json", "--output-format=stream-json") for a in args)
        return json_out, json_out
    if program == "codex":
        return False, "--json" in args
    if program == "aider":
        return True, True
    return False, False


def _usage_hint(program: str) -> str:
    return {"claude": "add `--output-format json`",
            "codex": "codex reports tokens with `--json`, never a cost"}.get(
        program, "only claude --output-format json, codex --json and aider are read")


def uncommitted_editable(repo: Path, cfg: Config) -> list[str]:
    """Editable files with uncommitted changes in your checkout: the loop never sees them."""
    try:
        changed = changed_files(repo, timeout=30)
    except GitError:
        return []
    return [p for p in changed if is_editable(cfg, p)]


def uncommitted_warning(repo: Path, cfg: Config) -> str | None:
    changed = uncommitted_editable(repo, cfg)
    if not changed:
        return None
    shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
    return (f"your checkout has uncommitted changes to {shown}: the loop does not use them (a "
            "session branches from your last commit); commit them, then run again")


def sample_warning(info: DatasetInfo, ladder: tuple[str, ...]) -> str | None:
    """The offline sample with a ladder above smoke: a demo, said before the night starts."""
    above = [p for p in ladder if p not in DEMO_PROFILES]
    if info.kind != "sample" or not above:
        return None
    tokens = (info.manifest() or {}).get("train_tokens")
    size = f"{tokens:,} train tokens" if isinstance(tokens, int) else "a few million tokens"
    return (f"the dataset is the offline sample ({size} of CPython's documentation): a demo "
            f"of the machinery. At {', '.join(above)} its results say little about FineWeb "
            "(the training data repeats); for a demo use `--ladder smoke`, for research point "
            "`dataset:` in autogolf.yaml at your FineWeb folder")
