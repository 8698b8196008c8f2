"""`proposer:` (who edits) and `agent:` (the external coding agent: its command, timeout,
sandbox, budgets and rate-limit backoff).

Also the agent's vocabulary that its code shares with this check: the command placeholders,
the sandbox modes and the agent's Limits (loop/proposers/agent.py, sandbox.py, agentlimits.py
use them from here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loop.settings.reader import Reader

PROPOSERS = ("search", "agent", "ideas")
# `{name}` in an agent's argument list is filled per attempt; `${VAR}` is left to the shell.
PLACEHOLDERS = ("prompt_file", "prompt", "worktree", "summary_file")
PLACEHOLDER_PATTERN = re.compile(r"(?<!\$)\{([a-z_]+)\}")
SANDBOX_MODES = ("auto", "bwrap", "sandbox-exec", "off")  # loop/proposers/sandbox.py
# Claude Code: "API Error: 429", "rate_limit_error", "Overloaded" (529), "usage limit reached";
# Codex: "429 Too Many Requests", "rate_limit_exceeded"; aider/litellm: "RateLimitError".
DEFAULT_RATE_LIMIT_PATTERNS = (r"rate.?limit", r"\b429\b", r"too many requests", r"overloaded",
                               r"\b529\b", r"usage limit")
_NUMBERS: dict[str, dict[str, Any]] = {
    "timeout_s": {"positive": True}, "last_rows": {"minimum": 0, "integer": True},
    "budget_s": {"positive": True}, "budget_usd": {"positive": True},
    "budget_tokens": {"positive": True, "integer": True}, "backoff_s": {"positive": True},
    "backoff_max_s": {"positive": True}, "max_retries": {"minimum": 0, "integer": True},
    "rotate_after_losses": {"minimum": 0, "integer": True},
}
_KEYS = ("command", "rate_limit_patterns", "sandbox", *_NUMBERS)


@dataclass(frozen=True)
class Limits:
    """The agent's budgets for one `autogolf run` (None: none) and its backoff settings."""

    budget_s: float | None = None
    budget_usd: float | None = None
    budget_tokens: int | None = None
    backoff_s: float = 60.0
    backoff_max_s: float = 1800.0
    max_retries: int = 5
    rate_limit_patterns: tuple[str, ...] = DEFAULT_RATE_LIMIT_PATTERNS

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        return min(self.backoff_s * 2 ** retry, self.backoff_max_s)


def unknown_placeholders(argv: Iterable[str]) -> list[str]:
    """The `{name}`s in an argument list that are not PLACEHOLDERS, sorted."""
    return sorted({name for arg in argv for name in PLACEHOLDER_PATTERN.findall(arg)
                   if name not in PLACEHOLDERS})


def placeholders_allowed() -> str:
    return ", ".join("{" + p + "}" for p in PLACEHOLDERS)


def read_proposer(reader: Reader, top: dict) -> dict[str, Any]:
    """`proposer: search` or `proposer: {name, seed, rotation}`."""
    value = top.get("proposer")
    if value is None:
        return {}
    section = reader.named(value, "proposer", ("name", "seed", "rotation"))
    kw: dict[str, Any] = {}
    reader.put(kw, "proposer", reader.choice(section, "name", "proposer.name", PROPOSERS))
    seed = reader.number(section, "seed", where="proposer", minimum=0, integer=True)
    reader.put(kw, "proposer_seed", seed)
    reader.put(kw, "proposer_rotation", _rotation(reader, section.get("rotation")))
    return kw


def _rotation(reader: Reader, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    allowed = f"a non-empty list of proposers from: {', '.join(PROPOSERS)}"
    if not isinstance(value, list) or not value:
        reader.fail("proposer.rotation", f"got {value!r}", allowed)
        return None
    bad = [i for i, name in enumerate(value) if name not in PROPOSERS]
    for i in bad:
        reader.fail(f"proposer.rotation[{i}]", f"unknown proposer {value[i]!r}", allowed)
    return None if bad else tuple(value)


def read_agent(reader: Reader, top: dict, proposers: Iterable[str]) -> dict[str, Any]:
    """The `agent:` section; `proposers` are the ones configured (a command is required
    when the agent is among them)."""
    section = reader.mapping(top.get("agent", {}), "agent", _KEYS)
    out: dict[str, Any] = {}
    reader.put(out, "agent_command", _command(reader, section))
    out.update(_sandbox(reader, section.get("sandbox")))
    for key, check in _NUMBERS.items():
        reader.put(out, f"agent_{key}", reader.number(section, key, where="agent", **check))
    reader.put(out, "agent_rate_limit_patterns", _patterns(reader, section))
    if out.get("agent_backoff_max_s", Limits.backoff_max_s) < out.get("agent_backoff_s",
                                                                        Limits.backoff_s):
        reader.fail("agent.backoff_max_s", "is below agent.backoff_s",
                    "a number >= agent.backoff_s")
    if "agent" in proposers and "command" not in section:
        reader.fail("agent.command", "missing: the agent proposer needs a command",
                    'an argument list, e.g. ["claude", "-p", "{prompt}"]')
    return out


def _sandbox(reader: Reader, value: Any) -> dict[str, Any]:
    """`agent.sandbox`: mode, network, writable (loop/proposers/sandbox.py)."""
    section = reader.mapping(value, "agent.sandbox", ("mode", "network", "writable"))
    if section.get("mode") is False:  # YAML reads a bare `off` as false
        section = {**section, "mode": "off"}
    out: dict[str, Any] = {}
    reader.put(out, "agent_sandbox_mode",
               reader.choice(section, "mode", "agent.sandbox.mode", SANDBOX_MODES))
    reader.put(out, "agent_sandbox_network",
               reader.flag(section, "network", "agent.sandbox.network",
                           "true | false (true: agent CLIs need their API)"))
    reader.put(out, "agent_sandbox_writable", _writable(reader, section.get("writable")))
    return out


def _writable(reader: Reader, paths: Any) -> tuple[str, ...] | None:
    """Absolute paths, or starting with ~ or $VAR (expanded, and checked to exist, when
    the agent proposer is built: the file is read on other machines too)."""
    if paths is None:
        return None
    allowed = "a list of absolute paths (~ allowed), e.g. [~/.claude, ~/.claude.json]"
    if not isinstance(paths, list):
        reader.fail("agent.sandbox.writable", f"got {paths!r}", allowed)
        return None
    bad = [i for i, p in enumerate(paths)
           if not isinstance(p, str) or not p.startswith(("/", "~", "$"))]
    for i in bad:
        reader.fail(f"agent.sandbox.writable[{i}]", f"got {paths[i]!r}", allowed)
    return None if bad else tuple(paths)


def _patterns(reader: Reader, section: dict) -> tuple[str, ...] | None:
    if "rate_limit_patterns" not in section:
        return None
    value, where = section["rate_limit_patterns"], "agent.rate_limit_patterns"
    allowed = "a list of regular expressions (case-insensitive), e.g. ['rate.?limit', '429']"
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        reader.fail(where, f"got {value!r}", allowed)
        return None
    for i, pattern in enumerate(value):
        try:
            re.compile(pattern)
        except re.error as exc:
            reader.fail(f"{where}[{i}]", f"{pattern!r} is not a regular expression: {exc}",
                        allowed)
            return None
    return tuple(value)


def _command(reader: Reader, section: dict) -> tuple[str, ...] | None:
    if "command" not in section:
        return None
    value = section["command"]
    allowed = "a non-empty list of strings; placeholders: " + placeholders_allowed()
    if not isinstance(value, list) or not value or not all(
            isinstance(a, str) for a in value) or not value[0].strip():
        reader.fail("agent.command", f"got {value!r}", allowed)
        return None
    unknown = unknown_placeholders(value)
    if unknown:
        shown = ", ".join("{" + n + "}" for n in unknown)
        reader.fail("agent.command", f"unknown placeholder {shown}", allowed)
        return None
    return tuple(value)
