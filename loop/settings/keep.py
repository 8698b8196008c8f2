"""The keep rule's settings: `metric:`, `min_improvement:`, `artifact_cap_bytes:`, `noise:`
(the calibrated margin, loop/judge/noise.py) and `keep_rule:` (the sequential test,
loop/judge/sequential.py, which checks its own values: they are built here and handed to it).
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from loop.judge.sequential import SequentialRule  # pure: the standard library only
from loop.settings.reader import Reader

DIRECTIONS = ("lower", "higher")
_METRIC_NAME = re.compile(r"[A-Za-z0-9_.]+")  # the METRIC grammar of the benchmark contract
DEFAULT_NOISE = {"smoke": 0.0, "breadth": 0.004, "confirm": 0.002, "full": 0.001}
# Calibration runs of the incumbent per profile (1 = none: the fixed noise is used). The
# CPU smoke profile is deterministic, and `full` takes hours: neither is calibrated.
DEFAULT_NOISE_RUNS = {"smoke": 1, "breadth": 5, "confirm": 5, "full": 1}
# The cap on paired runs per decision at each profile (a profile with none: 10).
DEFAULT_KEEP_MAX_RUNS = {"smoke": 6, "breadth": 10, "confirm": 6, "full": 2}
KEEP_MAX_RUNS_FALLBACK = 10
_NOISE_KEYS = ("k", "fixed", "runs", "recalibrate_every_keeps", "rerun_close")
_KEEP_KEYS = ("enabled", "alpha", "beta", "min_runs", "max_runs", "max_pooled_dof",
              "promote_inconclusive", "futility", "curtail", "prune")
# keep_rule key -> the SequentialRule field it sets (the rule's own checks decide them).
_RULE_FIELDS = {"alpha": "keep_alpha", "beta": "keep_beta", "futility": "keep_futility",
                "curtail": "keep_curtail"}


class KeepRuleSettings(Protocol):
    """The Config fields a profile's SequentialRule is built from."""

    min_improvement: float
    keep_alpha: float
    keep_beta: float
    keep_min_runs: int
    keep_max_runs: dict[str, int]
    keep_futility: float
    keep_curtail: float


def sequential_rule(cfg: KeepRuleSettings, profile: str) -> SequentialRule:
    """The keep rule of `profile` from the `keep_rule:` settings (and min_improvement)."""
    cap = cfg.keep_max_runs.get(profile, KEEP_MAX_RUNS_FALLBACK)
    return SequentialRule(cfg.min_improvement, cfg.keep_alpha, cfg.keep_beta, cap,
                          cfg.keep_min_runs, cfg.keep_futility, cfg.keep_curtail)


def read_keep(reader: Reader, top: dict, profiles: dict[str, Any]) -> dict[str, Any]:
    """The Config fields of this module's sections; `profiles` are the configured ones."""
    kw = _metric(reader, top)
    reader.put(kw, "min_improvement", reader.number(top, "min_improvement", minimum=0))
    cap = reader.number(top, "artifact_cap_bytes", minimum=1, integer=True)
    reader.put(kw, "artifact_cap_bytes", cap)
    kw.update(_noise(reader, top, profiles))
    kw.update(_keep_rule(reader, top, profiles))
    return kw


def _metric(reader: Reader, top: dict) -> dict[str, Any]:
    value = top.get("metric")
    if value is None:
        return {}
    section = reader.named(value, "metric", ("name", "direction"))
    kw: dict[str, Any] = {}
    reader.put(kw, "metric", reader.string(section, "name", "metric.name", _METRIC_NAME))
    reader.put(kw, "direction",
               reader.choice(section, "direction", "metric.direction", DIRECTIONS))
    # The judge scores val_bpb itself (lower is better); a keep never rests on a figure
    # the judged code prints, so another metric or direction cannot be honoured: refused.
    if kw.get("metric", "val_bpb") != "val_bpb":
        reader.fail("metric.name", f"got {kw['metric']!r}: the keep rule judges val_bpb only",
                    "val_bpb")
    if kw.get("direction", "lower") != "lower":
        reader.fail("metric.direction", f"got {kw['direction']!r}: val_bpb is better when "
                    "lower", "lower")
    return kw


def _noise(reader: Reader, top: dict, profiles: dict[str, Any]) -> dict[str, Any]:
    section = reader.mapping(top.get("noise", {}), "noise", _NOISE_KEYS)
    kw: dict[str, Any] = {}
    reader.put(kw, "noise_k", reader.number(section, "k", where="noise", minimum=0))
    reader.put(kw, "noise_runs", reader.per_profile(section, "runs", "noise", profiles,
                                                    DEFAULT_NOISE_RUNS, 1, minimum=1,
                                                    integer=True))
    for key in _NOISE_KEYS[3:]:
        number = reader.number(section, key, where="noise", minimum=0, integer=True)
        reader.put(kw, f"noise_{key}", number)
    if "fixed" in section:
        fixed = dict(DEFAULT_NOISE)
        for name, value in reader.mapping(section["fixed"], "noise.fixed", None).items():
            if name not in profiles:
                reader.fail(f"noise.fixed.{name}", "unknown profile",
                            f"one of {', '.join(profiles)}")
                continue
            number = reader.number({name: value}, name, where="noise.fixed", minimum=0)
            if number is not None:
                fixed[name] = number
        kw["noise"] = fixed
    return kw


def _keep_rule(reader: Reader, top: dict, profiles: dict[str, Any]) -> dict[str, Any]:
    """`keep_rule:`: enabled, alpha, beta, futility, curtail, min_runs, max_runs (one number
    or per profile), max_pooled_dof, promote_inconclusive, prune."""
    section = reader.mapping(top.get("keep_rule", {}), "keep_rule", _KEEP_KEYS)
    kw: dict[str, Any] = {}
    for key, field_name in (("enabled", "keep_rule_enabled"),
                            ("promote_inconclusive", "keep_promote_inconclusive"),
                            ("prune", "keep_prune")):
        reader.put(kw, field_name, reader.flag(section, key, f"keep_rule.{key}"))
    for key, field_name in _RULE_FIELDS.items():
        if key in section and _rule_accepts(reader, key, **{key: section[key]}):
            kw[field_name] = section[key]
    reader.put(kw, "keep_max_pooled_dof", reader.number(section, "max_pooled_dof",
                                                        where="keep_rule", positive=True))
    reader.put(kw, "keep_min_runs", reader.number(section, "min_runs", where="keep_rule",
                                                  minimum=2, integer=True))
    reader.put(kw, "keep_max_runs", reader.per_profile(
        section, "max_runs", "keep_rule", profiles, DEFAULT_KEEP_MAX_RUNS,
        KEEP_MAX_RUNS_FALLBACK, minimum=2, integer=True))
    _check_run_caps(reader, section, kw, profiles)
    return kw


def _check_run_caps(reader: Reader, section: dict, kw: dict[str, Any],
                    profiles: dict[str, Any]) -> None:
    """Each profile's cap on runs with the first look, as the rule checks them (the first
    profile refused is named)."""
    first_look = kw.get("keep_min_runs", 2)
    caps = kw.get("keep_max_runs") or {n: DEFAULT_KEEP_MAX_RUNS.get(n, KEEP_MAX_RUNS_FALLBACK)
                                       for n in profiles}
    given = section.get("max_runs")
    for name, cap in caps.items():
        one_number = given is not None and not isinstance(given, dict)
        told = one_number or (isinstance(given, dict) and name in given)
        where = "keep_rule.max_runs" if one_number else f"keep_rule.max_runs.{name}"
        note = "" if told else " (the default)"
        if not _rule_accepts(reader, "max_runs", where=where, note=note, max_runs=cap,
                             min_runs=first_look):
            return


def _rule_accepts(reader: Reader, key: str, where: str | None = None, note: str = "",
                  **values: Any) -> bool:
    """True when SequentialRule takes `values` (the rest at its defaults); else its problem
    ("name: got X; allowed: Y") is reported at `where` (keep_rule.<key>), `note` after X."""
    try:
        SequentialRule(0.0, **values)
    except (ValueError, TypeError) as exc:
        problem, _, allowed = str(exc).partition("; allowed: ")
        problem = problem.removeprefix(f"{key}: ")
        got = f"got {values[key]!r}"
        if note and problem.startswith(got):
            problem = got + note + problem[len(got):]
        reader.fail(where or f"keep_rule.{key}", problem, allowed or "see keep_rule in "
                    "autogolf.yaml")
        return False
    return True
