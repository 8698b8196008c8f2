"""Whether `autogolf run` continues the latest session or starts a new one, and why.

A session's results compare with each other because everything that shapes them stayed the
same: the code it branched from (your checkout's HEAD when it began), the dataset (its id
hashes its content), the ladder, and the settings that decide a keep (`shaping_settings`).
So `run` continues the latest session only while all of these are what the session started
with, and otherwise starts a new session from your current HEAD and says what changed.
`--resume` continues anyway (naming what differs); `--new-session` always starts one.

The session's header row records these facts (`checkout_head`, `dataset`, `ladder`,
`settings`); a header written before they were recorded cannot be compared and starts a new
session (`--resume` continues it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from loop.config import Config

# Config fields that decide what is kept (besides the dataset and the ladder). Every
# `judge_*` and `keep_*` field is added by prefix, so the judge's and the keep rule's own
# settings are covered as they grow.
_SHAPING_FIELDS = ("metric", "direction", "min_improvement", "artifact_cap_bytes",
                   "benchmark_command", "protocol_allow_change", "verify_enabled",
                   "verify_tolerance")
_SHAPING_PREFIXES = ("judge_", "keep_")
# The calibrated margin's settings decide only when the sequential rule is off.
_MARGIN_FIELDS = ("noise_k", "noise", "noise_runs", "noise_recalibrate_every_keeps",
                  "noise_rerun_close")


@dataclass(frozen=True)
class Start:
    """What a session is built from, as it is now."""

    checkout_head: str  # the sha of your checkout's HEAD
    dataset: str  # loop.data.datasets.dataset_id
    ladder: tuple[str, ...]
    settings: dict[str, Any]  # shaping_settings(cfg)

    def header_fields(self) -> dict[str, Any]:
        """What a new session's header row records, to be compared with later."""
        return {"checkout_head": self.checkout_head, "dataset": self.dataset,
                "ladder": list(self.ladder), "settings": self.settings}


@dataclass(frozen=True)
class Decision:
    """`session`: the one to continue, or None for a new one; `why`: one line for the user;
    `differences`: what changed since the latest session began (empty when nothing did)."""

    session: str | None
    why: str
    differences: tuple[str, ...] = ()


def shaping_settings(cfg: Config) -> dict[str, Any]:
    """The settings of `cfg` that shape results, as JSON values (see _SHAPING_FIELDS)."""
    names = list(_SHAPING_FIELDS)
    names += [f.name for f in dataclasses.fields(cfg) if f.name.startswith(_SHAPING_PREFIXES)]
    if not cfg.keep_rule_enabled:
        names += _MARGIN_FIELDS
    return {name: _json_value(getattr(cfg, name)) for name in names if hasattr(cfg, name)}


def _json_value(value: Any) -> Any:
    """Tuples as lists, dataclasses as dicts: what the header row reads back as."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def differences(header: dict, now: Start) -> list[str]:
    """What differs between a session's header row and `now`, one phrase each."""
    found = []
    then_head = header.get("checkout_head") or header.get("base_commit")
    if then_head != now.checkout_head:
        found.append(f"your checkout's HEAD moved ({_short(then_head)} -> "
                     f"{_short(now.checkout_head)})")
    if header.get("dataset") != now.dataset:
        found.append(f"the dataset changed ({header.get('dataset')} -> {now.dataset})")
    if list(header.get("ladder") or []) != list(now.ladder):
        found.append(f"the ladder changed ({' -> '.join(header.get('ladder') or ['?'])} to "
                     f"{' -> '.join(now.ladder)})")
    settings = header.get("settings")
    if not isinstance(settings, dict):
        found.append("its settings were not recorded (an earlier autogolf started it)")
    else:
        changed = sorted(k for k in set(settings) | set(now.settings)
                         if settings.get(k) != now.settings.get(k))
        if changed:
            found.append("settings that shape results changed: " + ", ".join(
                f"{k} {_shown(settings.get(k))} -> {_shown(now.settings.get(k))}"
                for k in changed[:4]) + (f" (+{len(changed) - 4} more)" if len(changed) > 4
                                         else ""))
    return found


def decide(rows: list[dict], now: Start, *, new_session: bool = False,
           resume: bool = False) -> Decision:
    """Continue the latest session, or start a new one; `why` says which and why."""
    headers = [r for r in rows if r.get("type") == "session" and r.get("session")]
    if not headers:
        return Decision(None, "the first session in this repository")
    latest = headers[-1]
    name = latest["session"]
    if new_session:
        return Decision(None, "--new-session")
    found = tuple(differences(latest, now))
    if not found:
        return Decision(name, "same HEAD, dataset, ladder and settings", found)
    if resume:
        return Decision(name, f"--resume, although {'; '.join(found)}: the session keeps "
                              "building on its own branch", found)
    return Decision(None, f"since session {name} began {'; '.join(found)} (--resume would "
                          "continue it)", found)


def _short(sha: object) -> str:
    return str(sha)[:10] if sha else "unknown"


def _shown(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, separators=(",", ":"))
