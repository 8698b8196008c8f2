"""Load and validate `autogolf.yaml` (SPEC section 6): every problem is refused at start.

A missing file means the defaults below (which `autogolf.yaml` in the repo restates with
comments). Unknown keys, wrong types and impossible values are all collected and raised
together in one ConfigError whose lines each name the key path (`profiles.breadth.timeout_s`)
and what is allowed; a YAML syntax error names the file, line and column.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from loop.judge.sequential import SequentialRule
from loop.proposers.agent import PLACEHOLDER_PATTERN as _PLACEHOLDER
from loop.proposers.agent import PLACEHOLDERS as AGENT_PLACEHOLDERS
from loop.proposers.agentlimits import DEFAULT_RATE_LIMIT_PATTERNS, Limits
from loop.proposers.sandbox import MODES as SANDBOX_MODES
from loop.proposers.search import KNOB_KINDS, KNOB_SCALES, KNOB_TYPES, Knob
from loop.workspace.settings import WorkspaceConfig, read_workspace

DIRECTIONS = ("lower", "higher")
PROPOSERS = ("search", "agent", "ideas")
# How the `search` proposer chooses (loop/proposers/model.py; bench/search_efficiency.py).
SEARCH_STRATEGIES = ("local", "random", "tpe")
DEFAULT_SEARCH_STRATEGY = "random"  # the best of bench/search_efficiency.py (docs/BENCHMARKS.md)
# Optuna storage URL schemes (SQLAlchemy dialects, optionally `+driver`).
_STORAGE_URL = re.compile(r"(sqlite|postgresql|mysql|mariadb|oracle|mssql)(\+[a-z0-9_]+)?://.*")
# Where a knob lives when its entry does not say (DESIGN.md, "The benchmark harness").
KNOB_DEFAULT_FILES = {"env": "autoresearch.sh", "const": "benchmark/train_gpt_mlx.py"}
# Seed hacking (LESSONS.md): changing the seed is the cheapest fake improvement. Frozen.
FROZEN_KNOBS = ("SEED",)

_METRIC_NAME = re.compile(r"[A-Za-z0-9_.]+")  # SPEC section 4 METRIC grammar
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")

# SPEC section 1: what proposers may edit, and what they may never edit.
DEFAULT_EDITABLE: tuple[str, ...] = (
    "autoresearch.sh",
    "autoresearch.checks.sh",
    "autoresearch.md",
    "autoresearch.ideas.md",
    "benchmark/train_gpt_mlx.py",
    "scripts/extract_parameter_golf_metrics.py",
)
DEFAULT_PROTECTED: tuple[str, ...] = (
    "pyproject.toml",
    "autogolf.yaml",
    "benchmark/UPSTREAM_COMMIT.txt",
    "scripts/bootstrap-parameter-golf.sh",
    "scripts/run-pi-autoresearch.sh",
    "scripts/tmux-pi-autoresearch.sh",
    "loop/**",
    "tests/**",
    "README.md",
    "Justfile",
    ".upstream/**",
    ".autogolf/**",
    "logs/**",
    "data/**",
    "**/*.model",
    "**/*.vocab",
)
# Protected whatever the configuration says: the daemon's own state, its code (the judge)
# and its configuration (the keep rule). A proposer editing these could grade itself.
ALWAYS_PROTECTED: tuple[str, ...] = (".git/**", ".autogolf/**", "autogolf.yaml", "loop/**")

DEFAULT_TIMEOUTS = {"smoke": 300.0, "breadth": 900.0, "confirm": 2700.0, "full": 14400.0}
# Device classes a profile timeout can be given for (`timeout_s: {default: 900, cuda: 300}`);
# `device: auto` asks MLX which one this machine trains on (loop.platform.device_class).
DEVICE_CLASSES = ("cpu", "metal", "cuda")
DEVICES = ("auto", *DEVICE_CLASSES)
DEFAULT_NOISE = {"smoke": 0.0, "breadth": 0.004, "confirm": 0.002, "full": 0.001}
# Calibration runs of the incumbent per profile (1 = none: the fixed noise is used). The
# CPU smoke profile is deterministic, and `full` takes hours: neither is calibrated.
DEFAULT_NOISE_RUNS = {"smoke": 1, "breadth": 5, "confirm": 5, "full": 1}
# Issue 16 (loop/judge/sequential.py): the cap on paired runs per decision at each profile.
DEFAULT_KEEP_MAX_RUNS = {"smoke": 6, "breadth": 10, "confirm": 6, "full": 2}
# name: (kind, type, low, high, scale[, step]); all live in autoresearch.sh's knob block.
DEFAULT_KNOBS: dict[str, tuple] = {
    "MATRIX_LR": ("env", "float", 0.005, 0.2, "log"),
    "SCALAR_LR": ("env", "float", 0.005, 0.2, "log"),
    "TIED_EMBED_LR": ("env", "float", 0.005, 0.3, "log"),
    "WARMDOWN_FRAC": ("env", "float", 0.05, 0.6, "linear"),
    "QK_GAIN_INIT": ("env", "float", 0.5, 4.0, "log"),
    "LOGIT_SOFTCAP": ("env", "float", 10.0, 100.0, "log"),
    "MUON_MOMENTUM": ("env", "float", 0.85, 0.99, "linear"),
    "BETA2": ("env", "float", 0.9, 0.999, "linear"),
    "TIED_EMBED_INIT_STD": ("env", "float", 0.001, 0.05, "log"),
    # Model shape: the search predicts a proposal's artifact size and never runs one over the
    # cap (loop/proposers/shape.py). MODEL_DIM stays a multiple of NUM_HEADS (8) x 2 x 4.
    "NUM_LAYERS": ("env", "int", 4, 14, "linear"),
    "MODEL_DIM": ("env", "int", 256, 768, "linear", 64),
    "MLP_MULT": ("env", "int", 1, 4, "linear"),
    "NUM_KV_HEADS": ("env", "int", 1, 8, "log"),
    # Record techniques (trainer switches, off at the low end) that move neither the
    # parameter count nor the bytes per parameter upward, so the size prediction still holds.
    "MLP_LEAKY_SLOPE": ("env", "float", 0.0, 0.9, "linear"),
    "ROPE_DIMS": ("env", "int", 0, 64, "linear", 8),
    "LN_SCALE": ("env", "int", 0, 1, "linear"),
    "SMEAR_GATE": ("env", "int", 0, 1, "linear"),
    "ORTHO_INIT": ("env", "int", 0, 1, "linear"),
    "PARALLEL_RESID": ("env", "int", 0, 1, "linear"),
    "MUON_WD": ("env", "float", 0.0, 0.1, "linear"),
    "LR_FLOOR": ("env", "float", 0.0, 0.3, "linear"),
    "SWA_START_LR": ("env", "float", 0.0, 1.0, "linear"),
    "BLOCK_QUANT_BITS": ("env", "int", 5, 8, "linear"),
    "CLIP_SEARCH": ("env", "int", 0, 1, "linear"),
    "EXPORT_LZMA": ("env", "int", 0, 1, "linear"),
}


class ConfigError(Exception):
    """The configuration is unusable; `problems` holds one line per problem, key named."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


@dataclass(frozen=True)
class ProfileConfig:
    """One profile. timeout_s is the timeout on this machine's device class (resolved when
    the configuration is loaded); by_device holds the per-class values it was chosen from."""

    name: str
    timeout_s: float
    by_device: dict[str, float] = field(default_factory=dict, compare=False)

    def timeout_for(self, device: str) -> float:
        """The timeout on `device` (a DEVICE_CLASSES name): its own value, else the default."""
        return self.by_device.get(device, self.by_device.get("default", self.timeout_s))


def _default_profiles() -> dict[str, ProfileConfig]:
    return {name: ProfileConfig(name, t) for name, t in DEFAULT_TIMEOUTS.items()}


def _default_knobs() -> tuple[Knob, ...]:
    return tuple(Knob(name, KNOB_DEFAULT_FILES[spec[0]], *spec)
                 for name, spec in DEFAULT_KNOBS.items())


@dataclass(frozen=True)
class Config:
    metric: str = "val_bpb"
    direction: str = "lower"
    min_improvement: float = 0.002
    artifact_cap_bytes: int = 16_000_000
    dataset: Any = "sample"  # a key of loop.data.datasets.DATASETS, or a DatasetFolder
    ladder: tuple[str, ...] = ("breadth", "confirm")  # rungs, cheap first
    full_every_keeps: int = 0  # run `full` after every Nth keep (0 = only on request)
    profiles: dict[str, ProfileConfig] = field(default_factory=_default_profiles)
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
    knobs: tuple[Knob, ...] = field(default_factory=_default_knobs)
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
    keep_beta: float = 0.10  # miss rate allowed at the gain a profile can resolve
    keep_min_runs: int = 2  # pairs before the first look (one run never decides)
    keep_max_runs: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_KEEP_MAX_RUNS))
    keep_max_pooled_dof: float = 10.0  # earlier decisions' weight in the spread, in dof
    keep_futility: float = 0.10  # miss level of the look after the first pair (0 = none)
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
        return SequentialRule(self.min_improvement, self.keep_alpha, self.keep_beta,
                              self.keep_max_runs.get(profile, 10), self.keep_min_runs,
                              self.keep_futility)


def is_editable(cfg: Config, relpath: str) -> bool:
    """True when a proposer may change `relpath`: an editable glob matches and no protected
    one (nor ALWAYS_PROTECTED) does. Paths outside the repository are never editable."""
    path = _normalise(relpath)
    if path is None:
        return False
    if any(glob_match(g, path) for g in (*cfg.protected, *ALWAYS_PROTECTED)):
        return False
    return any(glob_match(g, path) for g in cfg.editable)


def glob_match(pattern: str, relpath: str) -> bool:
    """Match a repo-relative posix path: `*`/`?`/`[..]` stay inside one path segment, `**`
    spans any number of segments (also none), and a trailing `/` means everything under."""
    return _glob_regex(pattern).fullmatch(relpath) is not None


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
    problems: list[str] = []
    kwargs = _Reader(problems).read(data)
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


# ----------------------------------------------------------------------------------------
# YAML


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


# ----------------------------------------------------------------------------------------
# Validation: one method per section; each returns Config keyword arguments and appends
# "key.path: problem (allowed: ...)" lines to `problems` instead of stopping at the first.

_TOP_KEYS = (
    "metric", "min_improvement", "artifact_cap_bytes", "dataset", "ladder", "full_every_keeps",
    "profiles", "benchmark", "checks", "editable", "protected", "proposer", "knobs", "noise",
    "stop", "limits", "agent", "workspace", "protocol", "verify", "judge", "keep_rule",
    "search", "device",
)  # fmt: skip


_AGENT_NUMBERS: dict[str, dict[str, Any]] = {
    "timeout_s": {"positive": True}, "last_rows": {"minimum": 0, "integer": True},
    "budget_s": {"positive": True}, "budget_usd": {"positive": True},
    "budget_tokens": {"positive": True, "integer": True}, "backoff_s": {"positive": True},
    "backoff_max_s": {"positive": True}, "max_retries": {"minimum": 0, "integer": True},
    "rotate_after_losses": {"minimum": 0, "integer": True},
}
_AGENT_KEYS = ("command", "rate_limit_patterns", "sandbox", *_AGENT_NUMBERS)


class _Reader:
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def read(self, data: Any) -> dict[str, Any]:
        top = self.mapping(data, "(top level)", _TOP_KEYS)
        kw: dict[str, Any] = {}
        kw.update(self.metric(top))
        self.put(kw, "min_improvement", self.number(top, "min_improvement", minimum=0))
        cap = self.number(top, "artifact_cap_bytes", minimum=1, integer=True)
        self.put(kw, "artifact_cap_bytes", cap)
        self.put(kw, "dataset", self.dataset(top))
        kw.update(self.profiles(top))
        self.put(kw, "device", self.choice(top, "device", "device", DEVICES))
        profiles = kw.get("profiles", _default_profiles())
        self.put(kw, "ladder", self.ladder(top, profiles))
        every = self.number(top, "full_every_keeps", minimum=0, integer=True)
        self.put(kw, "full_every_keeps", every)  # `full` is always defined (a default profile)
        kw.update(self.commands(top))
        kw.update(self.globs(top))
        kw.update(self.proposer(top))
        kw.update(self.agent(top, kw))
        probe = Config(**{k: v for k, v in kw.items() if k in ("editable", "protected")})
        self.put(kw, "knobs", self.knobs(top, probe))
        kw.update(self.search(top))
        kw.update(self.noise(top, profiles))
        kw.update(self.keep_rule(top, profiles))
        kw.update(self.protocol(top))
        kw.update(self.verify(top))
        kw.update(self.judge(top))
        kw.update(self.stop(top))
        kw.update(self.limits(top))
        self.put(kw, "workspace", read_workspace(top.get("workspace"), self.fail))
        return kw

    # --- sections -----------------------------------------------------------------------

    def metric(self, top: dict) -> dict[str, Any]:
        value = top.get("metric")
        if value is None:
            return {}
        if isinstance(value, str):  # `metric: val_bpb` is shorthand for the name alone
            value = {"name": value}
        section = self.mapping(value, "metric", ("name", "direction"))
        kw: dict[str, Any] = {}
        self.put(kw, "metric", self.string(section, "name", "metric.name", _METRIC_NAME))
        self.put(kw, "direction", self.choice(section, "direction", "metric.direction", DIRECTIONS))
        # The judge scores val_bpb itself (lower is better); a keep never rests on a figure
        # the judged code prints, so another metric or direction cannot be honoured: refused.
        if kw.get("metric", "val_bpb") != "val_bpb":
            self.fail("metric.name", f"got {kw['metric']!r}: the keep rule judges val_bpb only",
                      "val_bpb")
        if kw.get("direction", "lower") != "lower":
            self.fail("metric.direction", f"got {kw['direction']!r}: val_bpb is better when "
                      "lower", "lower")
        return kw

    def dataset(self, top: dict) -> Any:
        """A name (`sample`, `fineweb`) or a folder anywhere on disk: `{path: ..., tokenizer:
        ...}` or a path (loop.data.datasets.DatasetFolder); its files are checked at start."""
        if "dataset" not in top:
            return None
        from loop.data.datasets import DatasetError, DatasetFolder, from_setting

        known = _known_datasets()
        allowed = (f"one of {', '.join(known)}, or a folder: {{path: /data/fineweb10B_sp1024, "
                   "tokenizer: /data/tokenizers/fineweb_1024_bpe.model}")
        try:
            value = from_setting(top["dataset"])
        except DatasetError as exc:
            self.fail("dataset", exc.problem.removeprefix("dataset: "), allowed)
            return None
        if not isinstance(value, DatasetFolder) and value not in known:
            self.fail("dataset", f"unknown dataset {value!r}", allowed)
            return None
        return value

    def profiles(self, top: dict) -> dict[str, Any]:
        if "profiles" not in top:
            return {}
        section = self.mapping(top["profiles"], "profiles", None)
        profiles = _default_profiles()  # entries given here override or add to the defaults
        for name, value in section.items():
            where = f"profiles.{name}"
            if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
                self.fail(where, "bad profile name", "letters, digits, _ and -")
                continue
            entry = self.mapping(value, where, ("timeout_s",))
            if isinstance(entry.get("timeout_s"), dict):
                profile = self.device_timeouts(name, entry["timeout_s"], f"{where}.timeout_s")
                if profile is not None:
                    profiles[name] = profile
                continue
            timeout = self.number(entry, "timeout_s", where=where, positive=True)
            if timeout is not None:
                profiles[name] = ProfileConfig(name, timeout)
        return {"profiles": profiles}

    def device_timeouts(self, name: str, value: dict, where: str) -> ProfileConfig | None:
        """`timeout_s: {default: 900, cuda: 300}`: a default and any device class's own."""
        section = self.mapping(value, where, ("default", *DEVICE_CLASSES))
        values = {key: self.number(section, key, where=where, positive=True,
                                   required=key == "default") for key in section}
        if "default" not in section:
            self.fail(f"{where}.default", "missing", "a number > 0, the timeout on any "
                      "device class not listed")
        if "default" not in section or any(v is None for v in values.values()):
            return None
        return ProfileConfig(name, values["default"], values)

    def ladder(self, top: dict, profiles: dict[str, ProfileConfig]) -> tuple[str, ...] | None:
        if "ladder" not in top:
            return None
        rungs = top["ladder"]
        allowed = f"a non-empty list of profiles from: {', '.join(profiles)}"
        if not isinstance(rungs, list) or not rungs:
            self.fail("ladder", f"got {rungs!r}", allowed)
            return None
        for i, rung in enumerate(rungs):
            if not isinstance(rung, str) or rung not in profiles:
                self.fail(f"ladder[{i}]", f"unknown profile {rung!r}", allowed)
        if len(set(map(str, rungs))) != len(rungs):
            self.fail("ladder", "a profile appears twice", "each rung once")
        return tuple(rungs)

    def commands(self, top: dict) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        bench = self.mapping(top.get("benchmark", {}), "benchmark", ("command",))
        self.put(kw, "benchmark_command", self.command(bench, "benchmark.command"))
        checks = self.mapping(top.get("checks", {}), "checks", ("command", "timeout_s"))
        self.put(kw, "checks_command", self.command(checks, "checks.command"))
        timeout = self.number(checks, "timeout_s", where="checks", positive=True)
        self.put(kw, "checks_timeout_s", timeout)
        return kw

    def globs(self, top: dict) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        for key in ("editable", "protected"):
            if key in top:
                self.put(kw, key, self.glob_list(top[key], key))
        return kw

    def proposer(self, top: dict) -> dict[str, Any]:
        value = top.get("proposer")
        if value is None:
            return {}
        if isinstance(value, str):  # `proposer: search` is shorthand for the name alone
            value = {"name": value}
        section = self.mapping(value, "proposer", ("name", "seed", "rotation"))
        kw: dict[str, Any] = {}
        self.put(kw, "proposer", self.choice(section, "name", "proposer.name", PROPOSERS))
        seed = self.number(section, "seed", where="proposer", minimum=0, integer=True)
        self.put(kw, "proposer_seed", seed)
        self.put(kw, "proposer_rotation", self.rotation(section.get("rotation")))
        return kw

    def rotation(self, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        allowed = f"a non-empty list of proposers from: {', '.join(PROPOSERS)}"
        if not isinstance(value, list) or not value:
            self.fail("proposer.rotation", f"got {value!r}", allowed)
            return None
        bad = [i for i, name in enumerate(value) if name not in PROPOSERS]
        for i in bad:
            self.fail(f"proposer.rotation[{i}]", f"unknown proposer {value[i]!r}", allowed)
        return None if bad else tuple(value)

    def agent(self, top: dict, kw: dict[str, Any]) -> dict[str, Any]:
        section = self.mapping(top.get("agent", {}), "agent", _AGENT_KEYS)
        out: dict[str, Any] = {}
        self.put(out, "agent_command", self.agent_command(section))
        out.update(self.agent_sandbox(section.get("sandbox")))
        for key, check in _AGENT_NUMBERS.items():
            self.put(out, f"agent_{key}", self.number(section, key, where="agent", **check))
        self.put(out, "agent_rate_limit_patterns", self.patterns(section))
        if out.get("agent_backoff_max_s", 1800.0) < out.get("agent_backoff_s", 60.0):
            self.fail("agent.backoff_max_s", "is below agent.backoff_s",
                      "a number >= agent.backoff_s")
        wanted = "agent" in (kw.get("proposer"), *kw.get("proposer_rotation", ()))
        if wanted and "command" not in section:
            self.fail("agent.command", "missing: the agent proposer needs a command",
                      'an argument list, e.g. ["claude", "-p", "{prompt}"]')
        return out

    def agent_sandbox(self, value: Any) -> dict[str, Any]:
        """`agent.sandbox`: mode, network, writable (loop/proposers/sandbox.py)."""
        section = self.mapping(value, "agent.sandbox", ("mode", "network", "writable"))
        if section.get("mode") is False:  # YAML reads a bare `off` as false
            section = {**section, "mode": "off"}
        out: dict[str, Any] = {}
        self.put(out, "agent_sandbox_mode",
                 self.choice(section, "mode", "agent.sandbox.mode", SANDBOX_MODES))
        if "network" in section:
            if isinstance(section["network"], bool):
                out["agent_sandbox_network"] = section["network"]
            else:
                self.fail("agent.sandbox.network", f"got {section['network']!r}",
                          "true | false (true: agent CLIs need their API)")
        self.put(out, "agent_sandbox_writable", self.writable_paths(section.get("writable")))
        return out

    def writable_paths(self, paths: Any) -> tuple[str, ...] | None:
        """Absolute paths, or starting with ~ or $VAR (expanded, and checked to exist, when
        the agent proposer is built: the file is read on other machines too)."""
        if paths is None:
            return None
        allowed = "a list of absolute paths (~ allowed), e.g. [~/.claude, ~/.claude.json]"
        if not isinstance(paths, list):
            self.fail("agent.sandbox.writable", f"got {paths!r}", allowed)
            return None
        bad = [i for i, p in enumerate(paths)
               if not isinstance(p, str) or not p.startswith(("/", "~", "$"))]
        for i in bad:
            self.fail(f"agent.sandbox.writable[{i}]", f"got {paths[i]!r}", allowed)
        return None if bad else tuple(paths)
    def patterns(self, section: dict) -> tuple[str, ...] | None:
        if "rate_limit_patterns" not in section:
            return None
        value, where = section["rate_limit_patterns"], "agent.rate_limit_patterns"
        allowed = "a list of regular expressions (case-insensitive), e.g. ['rate.?limit', '429']"
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            self.fail(where, f"got {value!r}", allowed)
            return None
        for i, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                self.fail(f"{where}[{i}]", f"{pattern!r} is not a regular expression: {exc}",
                          allowed)
                return None
        return tuple(value)

    def agent_command(self, section: dict) -> tuple[str, ...] | None:
        if "command" not in section:
            return None
        value = section["command"]
        allowed = ('a non-empty list of strings; placeholders: '
                   + ", ".join("{" + p + "}" for p in AGENT_PLACEHOLDERS))
        if not isinstance(value, list) or not value or not all(
                isinstance(a, str) for a in value) or not value[0].strip():
            self.fail("agent.command", f"got {value!r}", allowed)
            return None
        unknown = sorted({name for arg in value for name in _PLACEHOLDER.findall(arg)
                          if name not in AGENT_PLACEHOLDERS})
        if unknown:
            shown = ", ".join("{" + n + "}" for n in unknown)
            self.fail("agent.command", f"unknown placeholder {shown}", allowed)
            return None
        return tuple(value)

    def knobs(self, top: dict, globs: Config) -> tuple[Knob, ...] | None:
        if "knobs" not in top:
            return None
        if top["knobs"] is None:
            return ()
        section = self.mapping(top["knobs"], "knobs", None)
        knobs = (self.knob(name, spec, globs) for name, spec in section.items())
        return tuple(k for k in knobs if k is not None)

    def search(self, top: dict) -> dict[str, Any]:
        section = self.mapping(top.get("search", {}), "search", ("strategy", "storage"))
        kw: dict[str, Any] = {}
        self.put(kw, "search_strategy",
                 self.choice(section, "strategy", "search.strategy", SEARCH_STRATEGIES))
        storage = section.get("storage")
        if storage is not None and not (isinstance(storage, str)
                                        and _STORAGE_URL.fullmatch(storage.strip())):
            self.fail("search.storage", f"got {storage!r}",
                      "an Optuna storage URL, e.g. sqlite:///.autogolf/optuna.db or "
                      "postgresql://user:password@host/db; leave it out for the default")
        elif storage is not None:
            kw["search_storage"] = storage.strip()
        return kw

    def knob(self, name: Any, spec: Any, globs: Config) -> Knob | None:
        where = f"knobs.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            self.fail(where, "a knob name must be an identifier", "[A-Za-z_][A-Za-z0-9_]*")
            return None
        if name.upper() in FROZEN_KNOBS:
            self.fail(where, "the seed is frozen (a new seed is noise, not progress)", "no SEED")
            return None
        entry = self.mapping(spec, where, ("file", "kind", "type", "low", "high", "scale",
                                           "step"))
        before = len(self.problems)
        kind = self.choice(entry, "kind", f"{where}.kind", KNOB_KINDS) or "env"
        type_ = self.choice(entry, "type", f"{where}.type", KNOB_TYPES) or "float"
        scale = self.choice(entry, "scale", f"{where}.scale", KNOB_SCALES) or "linear"
        file = entry.get("file", KNOB_DEFAULT_FILES[kind])
        low = self.number(entry, "low", where=where, required=True)
        high = self.number(entry, "high", where=where, required=True)
        step = self.number(entry, "step", where=where, positive=True)
        if len(self.problems) > before or low is None or high is None:
            return None
        if not isinstance(file, str) or not is_editable(globs, file):
            self.fail(f"{where}.file", f"{file!r} is not an editable file", "a path in `editable`")
            return None
        problem = _range_problem(low, high, type_, scale)
        if problem:
            self.fail(where, problem, "low < high; low > 0 for log; whole bounds for int")
            return None
        try:
            return Knob(name, file, kind, type_, low, high, scale, step)
        except ValueError as exc:  # the proposer's own checks (KnobError)
            self.fail(where, str(exc), "see loop/proposers/search.py")
            return None

    def noise(self, top: dict, profiles: dict[str, ProfileConfig]) -> dict[str, Any]:
        keys = ("k", "fixed", "runs", "recalibrate_every_keeps", "rerun_close")
        section = self.mapping(top.get("noise", {}), "noise", keys)
        kw: dict[str, Any] = {}
        self.put(kw, "noise_k", self.number(section, "k", where="noise", minimum=0))
        self.put(kw, "noise_runs", self.noise_runs(section, profiles))
        for key in keys[3:]:
            number = self.number(section, key, where="noise", minimum=0, integer=True)
            self.put(kw, f"noise_{key}", number)
        if "fixed" in section:
            fixed = dict(DEFAULT_NOISE)
            for name, value in self.mapping(section["fixed"], "noise.fixed", None).items():
                if name not in profiles:
                    allowed = f"one of {', '.join(profiles)}"
                    self.fail(f"noise.fixed.{name}", "unknown profile", allowed)
                    continue
                number = self.number({name: value}, name, where="noise.fixed", minimum=0)
                if number is not None:
                    fixed[name] = number
            kw["noise"] = fixed
        return kw

    def noise_runs(self, section: dict, profiles: dict[str, ProfileConfig]
                   ) -> dict[str, int] | None:
        """`runs: 5` (every profile) or `runs: {breadth: 5, ...}` (the rest keep defaults)."""
        if "runs" not in section:
            return None
        value = section["runs"]
        if not isinstance(value, dict):
            number = self.number(section, "runs", where="noise", minimum=1, integer=True)
            return None if number is None else {name: number for name in profiles}
        runs = {**DEFAULT_NOISE_RUNS, **{name: 1 for name in profiles
                                         if name not in DEFAULT_NOISE_RUNS}}
        for name, count in value.items():
            if name not in profiles:
                self.fail(f"noise.runs.{name}", "unknown profile", f"one of {', '.join(profiles)}")
                continue
            number = self.number({name: count}, name, where="noise.runs", minimum=1, integer=True)
            if number is not None:
                runs[name] = number
        return runs

    def keep_rule(self, top: dict, profiles: dict[str, ProfileConfig]) -> dict[str, Any]:
        """`keep_rule:` alpha, beta, min_runs, max_runs (one number or per profile),
        max_pooled_dof (loop/judge/sequential.py)."""
        keys = ("enabled", "alpha", "beta", "min_runs", "max_runs", "max_pooled_dof",
                "promote_inconclusive", "futility", "prune")
        section = self.mapping(top.get("keep_rule", {}), "keep_rule", keys)
        kw: dict[str, Any] = {}
        for key, field_name in (("enabled", "keep_rule_enabled"),
                                ("promote_inconclusive", "keep_promote_inconclusive"),
                                ("prune", "keep_prune")):
            if key not in section:
                continue
            if isinstance(section[key], bool):
                kw[field_name] = section[key]
            else:
                self.fail(f"keep_rule.{key}", f"got {section[key]!r}", "true | false")
        for key in ("alpha", "beta"):
            rate = self.number(section, key, where="keep_rule", positive=True)
            if rate is not None and not rate < 0.5:
                self.fail(f"keep_rule.{key}", f"got {rate!r}", "a rate in (0, 0.5), e.g. "
                          + ("0.02" if key == "alpha" else "0.10"))
                rate = None
            self.put(kw, f"keep_{key}", rate)
        self.put(kw, "keep_max_pooled_dof", self.number(section, "max_pooled_dof",
                                                        where="keep_rule", positive=True))
        futility = self.number(section, "futility", where="keep_rule")
        if futility is not None and not 0 <= futility < 0.5:
            self.fail("keep_rule.futility", f"got {futility!r}", "a rate in [0, 0.5), e.g. "
                      "0.10 (0: no futility look)")
            futility = None
        self.put(kw, "keep_futility", futility)
        self.put(kw, "keep_min_runs", self.number(section, "min_runs", where="keep_rule",
                                                  minimum=2, integer=True))
        self.put(kw, "keep_max_runs", self.keep_max_runs(section, profiles))
        first_look = kw.get("keep_min_runs", 2)
        caps = kw.get("keep_max_runs") or {n: DEFAULT_KEEP_MAX_RUNS.get(n, 10) for n in profiles}
        given = section.get("max_runs")
        for name, cap in caps.items():
            if cap < first_look:
                where = ("keep_rule.max_runs" if given is not None and not isinstance(given, dict)
                         else f"keep_rule.max_runs.{name}")
                told = given is not None and (not isinstance(given, dict) or name in given)
                self.fail(where, f"got {cap}{'' if told else ' (the default)'} < min_runs "
                          f"{first_look}", "max_runs >= min_runs")
                break
        return kw

    def keep_max_runs(self, section: dict, profiles: dict[str, ProfileConfig]
                      ) -> dict[str, int] | None:
        """`max_runs: 10` (every profile) or `max_runs: {breadth: 8, ...}` (the rest keep
        their defaults; a profile with no default gets 10)."""
        if "max_runs" not in section:
            return None
        value = section["max_runs"]
        if not isinstance(value, dict):
            number = self.number(section, "max_runs", where="keep_rule", minimum=2,
                                 integer=True)
            return None if number is None else {name: number for name in profiles}
        runs = {name: DEFAULT_KEEP_MAX_RUNS.get(name, 10) for name in profiles}
        for name, count in value.items():
            if name not in profiles:
                self.fail(f"keep_rule.max_runs.{name}", "unknown profile",
                          f"one of {', '.join(profiles)}")
                continue
            number = self.number({name: count}, name, where="keep_rule.max_runs", minimum=2,
                                 integer=True)
            if number is not None:
                runs[name] = number
        return runs

    def protocol(self, top: dict) -> dict[str, Any]:
        from loop.judge.protocol import ALLOWABLE

        section = self.mapping(top.get("protocol", {}), "protocol", ("allow_change",))
        if "allow_change" not in section:
            return {}
        fields = section["allow_change"] or []
        allowed = f"a list of: {', '.join(ALLOWABLE)} (never the seed, data or tokenizer)"
        if not isinstance(fields, list):
            self.fail("protocol.allow_change", f"got {fields!r}", allowed)
            return {}
        for i, name in enumerate(fields):
            if name not in ALLOWABLE:
                self.fail(f"protocol.allow_change[{i}]", f"got {name!r}", allowed)
        return {"protocol_allow_change": tuple(f for f in fields if f in ALLOWABLE)}

    def verify(self, top: dict) -> dict[str, Any]:
        section = self.mapping(top.get("verify", {}), "verify", ("enabled", "tolerance"))
        kw: dict[str, Any] = {}
        if "enabled" in section:
            if isinstance(section["enabled"], bool):
                kw["verify_enabled"] = section["enabled"]
            else:
                self.fail("verify.enabled", f"got {section['enabled']!r}", "true | false")
        self.put(kw, "verify_tolerance",
                 self.number(section, "tolerance", where="verify", positive=True))
        return kw

    def judge(self, top: dict) -> dict[str, Any]:
        section = self.mapping(top.get("judge", {}), "judge",
                               ("enabled", "claim_tolerance", "sealed", "compute_allowance"))
        kw: dict[str, Any] = {}
        for key in ("enabled", "sealed"):
            if key not in section:
                continue
            if isinstance(section[key], bool):
                kw[f"judge_{key}"] = section[key]
            else:
                self.fail(f"judge.{key}", f"got {section[key]!r}", "true | false")
        self.put(kw, "judge_claim_tolerance",
                 self.number(section, "claim_tolerance", where="judge", positive=True))
        self.put(kw, "judge_compute_allowance",
                 self.number(section, "compute_allowance", where="judge", minimum=1))
        return kw

    def stop(self, top: dict) -> dict[str, Any]:
        keys = ("max_consecutive_failures", "stop_file")
        section = self.mapping(top.get("stop", {}), "stop", keys)
        kw: dict[str, Any] = {}
        failures = self.number(section, keys[0], where="stop", minimum=1, integer=True)
        self.put(kw, keys[0], failures)
        if "stop_file" in section:
            stop_file = section["stop_file"]
            if not isinstance(stop_file, str) or _normalise(stop_file) is None:
                self.fail("stop.stop_file", f"got {stop_file!r}", "a path inside the repository")
            else:
                kw["stop_file"] = stop_file
        return kw

    def limits(self, top: dict) -> dict[str, Any]:
        keys = ("kill_grace_s", "max_memory_mb", "min_available_memory_mb", "min_free_disk_mb")
        section = self.mapping(top.get("limits", {}), "limits", keys)
        kw: dict[str, Any] = {}
        self.put(kw, keys[0], self.number(section, keys[0], where="limits", minimum=0))
        for key in keys[1:]:
            self.put(kw, key, self.number(section, key, where="limits", minimum=0, integer=True))
        return kw

    # --- value checks -----------------------------------------------------------------

    def fail(self, where: str, problem: str, allowed: str) -> None:
        self.problems.append(f"{where}: {problem} (allowed: {allowed})")

    @staticmethod
    def put(kw: dict[str, Any], key: str, value: Any) -> None:
        if value is not None:  # None = absent or invalid: keep the default
            kw[key] = value

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...] | None) -> dict:
        """`value` as a dict (empty when invalid); unknown keys reported with a suggestion."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {type(value).__name__}", "key: value pairs")
            return {}
        if allowed is None:
            return value
        for key in value:
            if key not in allowed:
                path = str(key) if where == "(top level)" else f"{where}.{key}"
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.fail(path, f"unknown key{hint}", ", ".join(allowed))
        return {k: v for k, v in value.items() if k in allowed}

    def number(
        self,
        section: dict,
        key: str,
        *,
        where: str = "",
        minimum: float | None = None,
        positive: bool = False,
        integer: bool = False,
        required: bool = False,
    ) -> float | int | None:
        path = f"{where}.{key}" if where else key
        if key not in section:
            if required:
                self.fail(path, "missing", "a number")
            return None
        value = section[key]
        kind = "a whole number" if integer else "a number"
        if positive:
            kind += " > 0"
        elif minimum is not None:
            kind += f" >= {minimum:g}"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (not integer or float(value).is_integer())
        ok = ok and (not positive or value > 0) and (minimum is None or value >= minimum)
        if not ok:
            self.fail(path, f"got {value!r}", kind)
            return None
        return int(value) if integer else value

    def string(self, section: dict, key: str, where: str, pattern: re.Pattern) -> str | None:
        if key not in section:
            return None
        value = section[key]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.fail(where, f"got {value!r}", f"text matching {pattern.pattern}")
            return None
        return value

    def choice(self, section: dict, key: str, where: str, allowed: tuple[str, ...]) -> str | None:
        if key not in section:
            return None
        if section[key] not in allowed:
            self.fail(where, f"got {section[key]!r}", " | ".join(allowed))
            return None
        return section[key]

    def command(self, section: dict, where: str) -> str | None:
        if "command" not in section:
            return None
        value = section["command"]
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"got {value!r}", "a non-empty shell command")
            return None
        return value

    def glob_list(self, value: Any, where: str) -> tuple[str, ...] | None:
        allowed = "a list of repo-relative globs, e.g. [autoresearch.sh, 'benchmark/*.py']"
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {type(value).__name__}", allowed)
            return None
        globs = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip() or _normalise(item) is None:
                self.fail(f"{where}[{i}]", f"got {item!r}", allowed)
                continue
            try:
                _glob_regex(item)
            except re.error as exc:
                self.fail(f"{where}[{i}]", f"bad glob {item!r} ({exc})", allowed)
                continue
            globs.append(item)
        return tuple(globs)


# ----------------------------------------------------------------------------------------
# Paths and globs


def _normalise(relpath: str) -> str | None:
    """A clean repo-relative posix path, or None if it is absolute or climbs out (`..`)."""
    # Posix, as git reports paths: a backslash is part of a file name, not a separator.
    if not relpath or relpath.startswith("/"):
        return None
    parts = [p for p in PurePosixPath(relpath).parts if p != "."]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    if pattern.startswith("./"):
        pattern = pattern[2:]
    if pattern.endswith("/"):
        pattern += "**"
    regex = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex.append("(?:.*/)?")  # zero or more whole segments
            i += 3
        elif pattern.startswith("**", i):
            regex.append(".*")
            i += 2
        elif pattern[i] == "*":
            regex.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            regex.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise re.error("unclosed [")
            body = pattern[i + 1 : end]
            regex.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            regex.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(regex))


def _range_problem(low: float, high: float, type_: str, scale: str) -> str | None:
    if not low < high:
        return f"low {low!r} >= high {high!r}"
    if scale == "log" and low <= 0:
        return f"low {low!r} with scale: log"
    if type_ == "int" and not (float(low).is_integer() and float(high).is_integer()):
        return f"type: int with fractional bounds {low!r}, {high!r}"
    return None


def _known_datasets() -> tuple[str, ...]:
    try:
        from loop.data.datasets import DATASETS
    except ImportError:  # data modules not installed: the two documented names
        return ("sample", "fineweb")
    return tuple(DATASETS)
