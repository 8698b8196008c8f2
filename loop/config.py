"""Load and validate `autogolf.yaml`: every problem is refused at start.

A missing file means the defaults below (which `autogolf.yaml` in the repo restates with
comments). Unknown keys, wrong types and impossible values are all collected and raised
together in one ConfigError whose lines each name the key path (`profiles.breadth.timeout_s`)
and what is allowed; a YAML syntax error names the file, line and column.

`Config` is the data: one frozen value of every setting. Each section's keys, defaults and
checks belong to a module of loop/settings (runs, dataset, paths, agent, knobs, keep, judge,
workspace); this module parses the YAML, hands each section to its reader and resolves what
depends on the machine (the device class of per-device timeouts). It imports nothing of the
daemon above it: the features import their settings from loop/settings, not the reverse (the
one exception, loop.judge.sequential, imports only the standard library).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from loop.settings.agent import DEFAULT_RATE_LIMIT_PATTERNS, Limits, read_agent, read_proposer
from loop.settings.dataset import read_dataset
from loop.settings.judge import read_judge
from loop.settings.keep import (
    DEFAULT_KEEP_MAX_RUNS,
    DEFAULT_NOISE,
    DEFAULT_NOISE_RUNS,
    SequentialRule,
    read_keep,
    sequential_rule,
)
from loop.settings.knobs import (
    DEFAULT_SEARCH_STRATEGY,
    Knob,
    default_knobs,
    read_knobs,
    read_search,
)
from loop.settings.paths import DEFAULT_EDITABLE, DEFAULT_PROTECTED, read_globs
from loop.settings.paths import glob_match as glob_match
from loop.settings.paths import is_editable as is_editable
from loop.settings.reader import Reader
from loop.settings.runs import DEVICE_CLASSES, ProfileConfig, default_profiles, read_runs
from loop.settings.workspace import WorkspaceConfig, read_workspace

__all__ = ["Config", "ConfigError", "ProfileConfig", "glob_match", "is_editable", "load_config"]

# The top-level keys, in the order a refusal lists them.
_TOP_KEYS = (
    "metric", "min_improvement", "artifact_cap_bytes", "dataset", "ladder", "full_every_keeps",
    "profiles", "benchmark", "checks", "editable", "protected", "proposer", "knobs", "noise",
    "stop", "limits", "agent", "workspace", "protocol", "verify", "judge", "keep_rule",
    "search", "device",
)  # fmt: skip


class ConfigError(Exception):
    """The configuration is unusable; `problems` holds one line per problem, key named."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


@dataclass(frozen=True)
class Config:
    metric: str = "val_bpb"
    direction: str = "lower"
    min_improvement: float = 0.002
    artifact_cap_bytes: int = 16_000_000
    dataset: Any = "sample"  # a key of loop.data.datasets.DATASETS, or a DatasetFolder
    ladder: tuple[str, ...] = ("breadth", "confirm")  # rungs, cheap first
    full_every_keeps: int = 0  # run `full` after every Nth keep (0 = only on request)
    profiles: dict[str, ProfileConfig] = field(default_factory=default_profiles)
    device: str = "auto"  # whose timeouts apply: auto (ask MLX) or one of DEVICE_CLASSES
    device_class: str | None = None  # what `device` resolved to; None = no timeout needed it
    benchmark_command: str = "bash autoresearch.sh"  # the daemon sets PROFILE
    checks_command: str = "bash autoresearch.checks.sh"
    checks_timeout_s: float = 120.0
    editable: tuple[str, ...] = DEFAULT_EDITABLE
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    proposer: str = "search"
    proposer_seed: int = 0
    proposer_rotation: tuple[str, ...] = ()  # when given, experiments take these in turn
    agent_command: tuple[str, ...] = ()  # argument list with {prompt_file} etc. (issue 8)
    agent_timeout_s: float = 900.0
    agent_last_rows: int = 12  # ledger rows shown in the agent's prompt
    # Issue 18 (loop/proposers/sandbox.py): how the agent is contained, `agent: sandbox:`.
    agent_sandbox_mode: str = "auto"  # auto | bwrap | sandbox-exec | off
    agent_sandbox_network: bool = True  # agent CLIs need their API
    agent_sandbox_writable: tuple[str, ...] = ()  # extra writable paths (~ expanded at start)
    # Issue 18: budgets per `autogolf run` (None: none), backoff after a rate limit, rotation.
    agent_budget_s: float | None = None  # agent wall time, all tries summed
    agent_budget_usd: float | None = None  # cost the agent CLI reports (unknown: not counted)
    agent_budget_tokens: int | None = None  # tokens the agent CLI reports
    agent_backoff_s: float = 60.0  # first wait after a rate limit; doubled per retry
    agent_backoff_max_s: float = 1800.0  # the longest single wait
    agent_max_retries: int = 5  # retries of one attempt after rate limits
    agent_rate_limit_patterns: tuple[str, ...] = DEFAULT_RATE_LIMIT_PATTERNS  # regexes
    agent_rotate_after_losses: int = 3  # an idea family that lost N in a row is left (0: never)
    knobs: tuple[Knob, ...] = field(default_factory=default_knobs)
    search_strategy: str = DEFAULT_SEARCH_STRATEGY  # local | random | tpe
    search_storage: str | None = None  # an Optuna storage URL; None = SQLite under .autogolf/
    noise_k: float = 2.0
    noise: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NOISE))
    # Issue 7 (loop/judge/noise.py, loop/judge/protocol.py, loop/judge/verify.py).
    noise_runs: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_NOISE_RUNS))
    noise_recalibrate_every_keeps: int = 3  # re-measure the incumbent after N keeps
    noise_rerun_close: int = 2  # extra runs of a candidate that wins by less than the margin
    # Issue 16 (loop/judge/sequential.py): the sequential keep rule, `keep_rule:` section.
    # The sequential keep rule (loop/judge/sequential.py) decides instead of the calibrated
    # margin when enabled: paired runs at the judge's seeds until the evidence decides.
    keep_rule_enabled: bool = True
    keep_alpha: float = 0.02  # false-keep rate allowed per decision
    keep_beta: float = 0.30  # miss rate allowed at the gain a profile can resolve
    keep_min_runs: int = 2  # pairs before the first look (one run never decides)
    keep_max_runs: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_KEEP_MAX_RUNS))
    keep_max_pooled_dof: float = 10.0  # earlier decisions' weight in the spread, in dof
    keep_futility: float = 0.30  # miss level of the look after the first pair (0 = none)
    keep_curtail: float = 0.03  # stop a candidate whose chance of a keep is under this
    keep_prune: bool = True  # stop a candidate run clearly behind the incumbent's curve
    keep_promote_inconclusive: bool = True  # an undecided candidate leaning to a win climbs
    protocol_allow_change: tuple[str, ...] = ()  # loop.judge.protocol.ALLOWABLE fields
    verify_enabled: bool = False  # re-evaluate a kept artifact with loop/judge/verify.py
    verify_tolerance: float = 0.001  # |trainer val_bpb - trusted val_bpb| allowed
    # Issue 15 (loop/judge/score.py): the judge scores every artifact on held-out tokens.
    # Off only for fake benchmarks that write no artifact (the scheduler's own tests).
    judge_enabled: bool = True
    judge_claim_tolerance: float = 2e-4  # |printed val_bpb - judge's score of the same tokens|
    # Issue 24 (loop/measure/seal.py): the judged code runs sealed; false is an explicit
    # opt-out, said at start and stored on every row.
    judge_sealed: bool = True
    # Compute is a cap like bytes: a kept candidate's run may take at most this many times
    # the incumbent's wall time at the same seeds (`over_budget` otherwise).
    judge_compute_allowance: float = 1.25
    max_consecutive_failures: int = 5
    stop_file: str = ".autogolf/STOP"
    # Not in DESIGN.md's first cut; for the runner, watchdog and pre-flight (issue 6).
    kill_grace_s: float = 10.0  # SIGTERM -> SIGKILL grace for a child being stopped
    max_memory_mb: int = 0  # the benchmark tree's RSS limit (0 = no limit)
    min_available_memory_mb: int = 0  # stop the benchmark when the machine has less free
    min_free_disk_mb: int = 2048  # pre-flight floor before each experiment
    workspace: WorkspaceConfig | None = None  # shared collaboration workspace (issue 10)

    def agent_limits(self) -> Limits:
        """The agent's budgets and backoff (loop.proposers.agentlimits)."""
        return Limits(self.agent_budget_s, self.agent_budget_usd, self.agent_budget_tokens,
                      self.agent_backoff_s, self.agent_backoff_max_s, self.agent_max_retries,
                      self.agent_rate_limit_patterns)

    def sequential_rule(self, profile: str) -> SequentialRule:
        """The keep rule of `profile` (issue 16) from the `keep_rule:` settings."""
        return sequential_rule(self, profile)


def load_config(path: Path, device: str | None = None) -> Config:
    """The configuration in `path` (defaults when the file does not exist).

    Profile timeouts given per device class are resolved here, so `profiles[p].timeout_s`
    is the one for this machine: the class is `device` when given (a DEVICE_CLASSES name),
    else the file's `device:`, else (auto) what MLX trains on, asked only when needed.
    """
    path = Path(path)
    if device is not None and device not in DEVICE_CLASSES:
        raise ConfigError(f"device {device!r} is not one of {', '.join(DEVICE_CLASSES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from exc
    data = _parse_yaml(text, path)
    if data is None:
        return Config()
    kwargs, problems = _read(data)
    if problems:
        lines = [f"{path}: {p}" for p in problems]
        header = f"{path}: {len(lines)} problem(s) in the configuration:"
        raise ConfigError("\n  ".join([header, *lines]), lines)
    return _resolve_timeouts(Config(**kwargs), device)


def _resolve_timeouts(cfg: Config, device: str | None) -> Config:
    if not any(p.by_device for p in cfg.profiles.values()):
        return cfg  # one timeout per profile: no need to know the device
    if device is None:
        from loop.platform import device_class

        device = cfg.device if cfg.device != "auto" else device_class()
    profiles = {name: ProfileConfig(name, p.timeout_for(device), p.by_device)
                for name, p in cfg.profiles.items()}
    return replace(cfg, profiles=profiles, device_class=device)


def _read(data: Any) -> tuple[dict[str, Any], list[str]]:
    """Config keyword arguments from the parsed YAML, and the problems found (key named)."""
    reader = Reader()
    top = reader.mapping(data, "(top level)", _TOP_KEYS)
    kw: dict[str, Any] = read_runs(reader, top)
    profiles = kw["profiles"]
    reader.put(kw, "dataset", read_dataset(reader, top))
    kw.update(read_keep(reader, top, profiles))
    kw.update(read_globs(reader, top))
    kw.update(read_proposer(reader, top))
    proposers = (kw.get("proposer"), *kw.get("proposer_rotation", ()))
    kw.update(read_agent(reader, top, proposers))
    probe = Config(**{k: v for k, v in kw.items() if k in ("editable", "protected")})
    reader.put(kw, "knobs", read_knobs(reader, top, probe))
    kw.update(read_search(reader, top))
    kw.update(read_judge(reader, top))
    reader.put(kw, "workspace", read_workspace(reader, top.get("workspace")))
    return kw, reader.problems


# YAML: a SafeLoader that refuses a key given twice


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            continue  # unhashable keys are left to the validation to refuse
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise ConfigError(f"{path}: {where}: not valid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
