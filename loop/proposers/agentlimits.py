"""What an agent costs and when to wait: usage from its output, rate limits, backoff, budgets.

- `parse_usage(text)`: the cost and tokens an agent CLI printed, when it printed them:
  Claude Code's `--output-format json` (or `stream-json`) result object (`total_cost_usd`,
  `usage`), Codex's `exec --json` events (`turn.completed` with `usage`), aider's
  `Tokens: 2.3k sent, 450 received. Cost: $0.02 message, $0.05 session.` lines. Anything
  else is unknown (None), never 0.
- `rate_limited(text, patterns)`: the tail of a failed attempt's output names a rate limit or
  an overload (case-insensitive regular expressions, `agent.rate_limit_patterns`).
- `Limits.delay(retry)`: exponential backoff, `backoff_s * 2**retry`, capped.
- `wait(seconds, stop)`: a sleep that a stop request (a signal, the deadline) ends early.
- `Spend`: what the agent used during this `autogolf run` (a night), against the budgets.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# The `agent:` settings these are read from (the patterns: what each agent CLI prints).
from loop.settings.agent import DEFAULT_RATE_LIMIT_PATTERNS as DEFAULT_RATE_LIMIT_PATTERNS
from loop.settings.agent import Limits

TAIL_CHARS = 4000  # only the end of a failed attempt's output says why it ended
_AIDER = re.compile(r"Tokens:\s*([\d.,]+)([kKmM]?)\s+sent,\s*([\d.,]+)([kKmM]?)\s+received\."
                    r"(?:\s*Cost:\s*\$([\d.]+)\s+message(?:,\s*\$([\d.]+)\s+session)?)?")
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000}


@dataclass
class Usage:
    """What one attempt's output reported; a field is None when it was not reported."""

    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def as_row(self) -> dict:
        return {"cost_usd": self.cost_usd, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens}

    def add(self, other: Usage | None) -> Usage:
        """The sum of both; a field stays unknown only when both are unknown."""
        if other is None:
            return self
        return Usage(_plus(self.cost_usd, other.cost_usd),
                     _plus(self.input_tokens, other.input_tokens),
                     _plus(self.output_tokens, other.output_tokens))


def parse_usage(text: str) -> Usage | None:
    """The usage an agent's output reports (see the module doc), or None when it says none."""
    found = _json_usage(text) or _aider_usage(text)
    return found if found is not None and found != Usage() else None


def _json_usage(text: str) -> Usage | None:
    """Claude's result object (the last one wins) or the sum of Codex's completed turns."""
    claude, codex = None, Usage()
    for obj in _json_objects(text):
        if "total_cost_usd" in obj or obj.get("type") == "result":
            claude = _claude_usage(obj)
        elif obj.get("type") == "turn.completed" and isinstance(obj.get("usage"), dict):
            codex = codex.add(Usage(None, _int(obj["usage"].get("input_tokens")),
                                    _int(obj["usage"].get("output_tokens"))))
    return claude if claude is not None else (codex if codex != Usage() else None)


def _claude_usage(obj: dict) -> Usage:
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    inputs = [_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens",
                                           "cache_read_input_tokens")]
    known = [n for n in inputs if n is not None]
    return Usage(_float(obj.get("total_cost_usd")), sum(known) if known else None,
                 _int(usage.get("output_tokens")))


def _aider_usage(text: str) -> Usage | None:
    """aider prints one line per message; its last `session` cost is the total."""
    matches = list(_AIDER.finditer(text))
    if not matches:
        return None
    sent = sum(_count(m.group(1), m.group(2)) for m in matches)
    received = sum(_count(m.group(3), m.group(4)) for m in matches)
    session = next((m.group(6) for m in reversed(matches) if m.group(6)), None)
    costs = [float(m.group(5)) for m in matches if m.group(5)]
    cost = float(session) if session else (sum(costs) if costs else None)
    return Usage(cost, sent, received)


def _json_objects(text: str) -> list[dict]:
    """Every line that is a JSON object, and the whole text when it is one (pretty-printed)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                found.append(obj)
    if not found and text.strip().startswith("{"):
        try:
            obj = json.loads(text)
            found = [obj] if isinstance(obj, dict) else []
        except ValueError:
            pass
    return found


def rate_limited(text: str, patterns: Sequence[str]) -> str | None:
    """The first pattern found in the tail of `text` (case-insensitive), or None."""
    tail = text[-TAIL_CHARS:]
    return next((p for p in patterns if re.search(p, tail, re.IGNORECASE)), None)


def wait(seconds: float, stop: Callable[[], bool] | None, poll_s: float = 0.2) -> bool:
    """Sleep `seconds`; False as soon as `stop()` says so (then the caller gives up)."""
    end = time.monotonic() + seconds
    while True:
        if stop is not None and stop():
            return False
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(poll_s, left))


@dataclass
class Spend:
    """The agent's use during this run: wall time of every try, waits, retries, usage."""

    attempts: int = 0
    wall_s: float = 0.0
    waited_s: float = 0.0
    retries: int = 0
    usage: Usage = field(default_factory=Usage)
    unreported: int = 0  # attempts whose output reported no usage

    def add(self, wall_s: float, waited_s: float, retries: int, usage: Usage | None) -> None:
        self.attempts += 1
        self.wall_s += wall_s
        self.waited_s += waited_s
        self.retries += retries
        self.usage = self.usage.add(usage)
        self.unreported += usage is None

    def exhausted(self, limits: Limits) -> str | None:
        """Why the budget is spent, or None while some is left (an unknown cost is not)."""
        if limits.budget_s is not None and self.wall_s >= limits.budget_s:
            return (f"agent.budget_s spent: the agent ran {self.wall_s:.0f} s of its "
                    f"{limits.budget_s:g} s this run")
        cost, tokens = self.usage.cost_usd, self.usage.tokens
        if limits.budget_usd is not None and cost is not None and cost >= limits.budget_usd:
            return (f"agent.budget_usd spent: the agent reported ${cost:.2f} of its "
                    f"${limits.budget_usd:g} this run")
        if limits.budget_tokens is not None and tokens is not None and (
                tokens >= limits.budget_tokens):
            return (f"agent.budget_tokens spent: the agent reported {tokens:,} tokens of its "
                    f"{limits.budget_tokens:,} this run")
        return None


def _plus(a: float | int | None, b: float | int | None):
    return None if a is None and b is None else (a or 0) + (b or 0)


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value >= 0 else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value >= 0 else None


def _count(number: str, suffix: str) -> int:
    return int(round(float(number.replace(",", "")) * _SCALE[suffix.lower()]))
