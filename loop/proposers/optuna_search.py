"""The `search` proposer's model-based strategies (`tpe`, `random`) on Optuna.

Every configuration the ledger measured is a trial of an Optuna study kept in a storage
(SQLite under .autogolf/ by default, or any Optuna storage URL that several daemons share).
One study per (dataset, profile, protocol, code lineage): results measured on other data,
another profile, another evaluation protocol or after an agent's code change never mix.

A proposal starts from the incumbent's configuration: a few knobs (1-3) are left to the
sampler and the rest are fixed at the incumbent's values (Optuna's PartialFixedSampler), so
a keep is a small, explainable step, and the sampler chooses the step from everything the
study has seen. Sampling happens in an in-memory copy of the stored study, so a candidate
that is refused before running (already measured, an invalid model shape, an artifact
predicted over the cap) leaves nothing behind in the shared storage; the chosen candidate is
stored as a RUNNING trial (other daemons see it as pending and never propose it too) and is
finished when its ledger row arrives.

What a trial records: its value is the rung's val_bpb; an artifact over the cap is a
constraint violation (Optuna's constraints, > 0 = infeasible); a run that measured nothing
(crash, timeout) is FAIL. Each rung of the ladder is reported to its own profile's study, and
the first rung's study - the one proposals are drawn from, since every candidate has that
score - also carries the higher rungs' scores as intermediate values (step = rung index).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import socket
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loop.proposers.base import Proposal, Proposer
from loop.proposers.search import (
    PROPOSAL_DIGITS,
    Knob,
    KnobError,
    _experiment_rows,
    canonical,
    checked_knobs,
    config_key,
    fixed_shape_of,
    format_value,
    measured_keys,
    read_knobs,
    snap,
    visible_knobs,
    write_knob,
)
from loop.proposers.shape import SHAPE_DEFAULTS, SizeModel, shape_refusal, size_model

STRATEGIES = ("tpe", "random")
STORAGE_FILE = "optuna.db"             # under .autogolf/
MOVE_COUNTS = ((1, 0.5), (2, 0.3), (3, 0.2))  # how many knobs one proposal moves, with odds
MAX_ATTEMPTS = 64                      # samples tried before saying there is nothing new
TPE_STARTUP_TRIALS = 6                 # random proposals before the model takes over
SQLITE_TIMEOUT_S = 60                  # two daemons on one SQLite file wait for the lock
CAP_CONSTRAINT = "artifact_cap"        # Optuna constraint: total_bytes / cap - 1 (> 0 = over)


class SearchStorageError(ValueError):
    """The study storage cannot be used; the message names `search.storage`."""


def default_storage(home: Path) -> str:
    """The SQLite file under the repository's .autogolf/ (created on first use)."""
    return f"sqlite:///{(Path(home) / STORAGE_FILE).resolve()}"


def _optuna() -> Any:
    import optuna  # imported late: `autogolf --help` and the local strategy do not need it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_storage(url: str) -> Any:
    """An Optuna storage at `url`, connected now: a bad or unreachable URL fails at start."""
    optuna = _optuna()
    for attempt in range(3):  # two daemons creating the schema at once: one retries
        try:
            return _connect(optuna, url)
        except Exception as exc:  # SQLAlchemy/driver errors have no common base worth naming
            if attempt == 2 or not _is_race(exc):
                raise SearchStorageError(
                    f"search.storage: cannot use {_redact(url)!r}: {type(exc).__name__}: "
                    f"{_first_line(exc)} (fix the URL or the server, or remove search.storage "
                    f"for the default SQLite file under .autogolf/)") from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _connect(optuna: Any, url: str) -> Any:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(url, **kwargs)
    storage.get_all_studies()  # a round trip: the server answers and the schema is there
    return storage


def _is_race(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("already exists", "locked", "duplicate", "unique"))


def _redact(url: str) -> str:
    """The URL without its password (it may be printed or logged)."""
    head, sep, tail = url.partition("://")
    if "@" not in tail:
        return url
    creds, _, host = tail.rpartition("@")
    if ":" not in creds:
        return url
    return f"{head}{sep}{creds.split(':', 1)[0]}:***@{host}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def distribution(knob: Knob) -> Any:
    """The Optuna distribution of a knob's declared range."""
    dists = _optuna().distributions
    log = knob.scale == "log"
    if knob.type == "int":
        return dists.IntDistribution(int(knob.low), int(knob.high), log=log,
                                     step=int(knob.step or 1))
    return dists.FloatDistribution(knob.low, knob.high, log=log, step=knob.step)


def protocol_digest(rung: dict) -> str | None:
    """A short fingerprint of the evaluation protocol a rung ran under (None: not recorded)."""
    proto = rung.get("protocol") if isinstance(rung, dict) else None
    if not isinstance(proto, dict):
        return None
    text = json.dumps(proto, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def row_key(row: dict) -> str:
    """A row's identity across ledgers (ids repeat between machines; timestamps do not)."""
    return f"{row.get('session')}/{row.get('id')}/{row.get('timestamp')}"


def _lineage(history: Sequence[dict]) -> str:
    """Which code the knob rows measured: the commit of the last kept change that was not a
    knob configuration (an agent's edit), or `start`. Rows before it are another study."""
    rows = [r for r in history if isinstance(r, dict) and r.get("type", "experiment") ==
            "experiment"]
    for row in reversed(rows):
        if row.get("status") == "keep" and row.get("knobs") is None:
            return str(row.get("commit") or row.get("id"))[:12]
    return "start"


class ModelSearchProposer(Proposer):
    """Optuna ask/tell over the declared knobs, from the incumbent's configuration."""

    name = "search"

    def __init__(self, knobs: Sequence[Knob], *, strategy: str = "tpe",
                 storage: str, ladder: Sequence[str],
                 cap_bytes: int, seed: int = 0) -> None:
        if strategy not in STRATEGIES:
            raise KnobError(f"search.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
        self.knobs = checked_knobs(knobs)
        if not ladder:
            raise KnobError("the search proposer needs a ladder (its first rung is the target)")
        self.strategy, self.seed = strategy, seed
        self.ladder, self.cap_bytes = tuple(ladder), int(cap_bytes)
        self.storage_url = storage
        self.storage = open_storage(storage)
        self._studies: dict[str, Any] = {}
        self._pending: dict[str, tuple[str, int]] = {}  # row config key -> (study, trial no.)
        self.last_refusals: list[str] = []  # why the last proposal's other samples were refused
        self._lineage = "start"  # the code lineage of the last history seen
        self._movable: tuple[Knob, ...] = self.knobs  # not overridden by the first rung

    # ---- the Proposer interface

    def after_verdict(self, row: dict) -> None:
        """Each finished row becomes a trial of the study at once (propose also catches up)."""
        self.observe(row)

    def propose(self, worktree: Path, history: list[dict]) -> Proposal | None:
        current = read_knobs(worktree, self.knobs)
        fixed_shape = fixed_shape_of(worktree, self.knobs)
        # Knobs the first rung's profile overrides are never moved (a wasted run: issue 26).
        self._movable = visible_knobs(worktree, self.knobs, self.ladder[0])
        if not self._movable:
            self.last_refusals = [f"every knob is overridden by the {self.ladder[0]} profile"]
            return None
        self._lineage = _lineage(history)
        self.sync(history, self._lineage)
        self._fail_unmatched()
        target = self._target_study(history)
        trials = target.get_trials(deepcopy=False) if target is not None else []
        taken = measured_keys(history, self.knobs) | self._trial_keys(trials)
        config = self._sample(current, trials, taken, fixed_shape, size_model(history),
                              len(history))
        if config is None:
            return None
        for knob in self.knobs:
            if canonical(config[knob.name]) != canonical(current[knob.name]):
                write_knob(worktree, knob, config[knob.name])
        if target is not None:
            self._reserve(target, config)
        return Proposal(self._describe(current, config), dict(config))

    def observe(self, row: dict) -> None:
        """Report a finished ledger row to the studies at once (propose also catches up)."""
        if row.get("status") == "keep" and row.get("knobs") is None:
            self._lineage = _lineage([row])  # an agent's kept edit: a new study from here
        self.sync([row], self._lineage)

    # ---- studies

    @staticmethod
    def study_name(dataset: object, profile: str, digest: str | None, lineage: str) -> str:
        """One study per dataset, profile, protocol and code lineage (never mixed)."""
        return f"autogolf:{dataset or 'unknown'}:{profile}:{digest or 'unknown'}:{lineage}"

    def _study(self, name: str) -> Any:
        if name not in self._studies:
            study = _create_study(self.storage, name)
            self._fail_stale(study)
            self._studies[name] = study
        return self._studies[name]

    def _target_study(self, history: Sequence[dict]) -> Any:
        """The first rung's study under the incumbent's protocol (its latest baseline, else
        the latest row measured there); None before anything was measured."""
        profile = self.ladder[0]
        rows = [r for r in _experiment_rows(list(history)) if not r.get("manual")
                and isinstance((r.get("rungs") or {}).get(profile), dict)]
        chosen = next((r for r in reversed(rows) if r.get("baseline")), None) or \
            (rows[-1] if rows else None)
        if chosen is None:
            return None
        digest = protocol_digest(chosen["rungs"][profile])
        return self._study(self.study_name(chosen.get("dataset"), profile, digest,
                                           _lineage(history)))

    def sync(self, history: Sequence[dict], lineage: str | None = None) -> None:
        """Make every measured row a trial of its study (dataset, profile, protocol), once.
        `lineage` (the code the rows measured) is found in `history` unless given."""
        lineage = lineage or _lineage(history)
        rows = [r for r in _experiment_rows(list(history)) if not r.get("manual")]
        by_study: dict[str, list[tuple[dict, str]]] = {}
        for row in rows:
            if config_key(row.get("knobs"), self.knobs) is None:
                continue
            for profile, rung in (row.get("rungs") or {}).items():
                if profile in self.ladder and isinstance(rung, dict):
                    name = self.study_name(row.get("dataset"), profile,
                                           protocol_digest(rung), lineage)
                    by_study.setdefault(name, []).append((row, profile))
        for name, items in by_study.items():
            study = self._study(name)
            known = {t.user_attrs.get("row") for t in study.get_trials(deepcopy=False)}
            for row, profile in items:
                if row_key(row) not in known:
                    self._record(study, row, profile)
                    known.add(row_key(row))

    def _record(self, study: Any, row: dict, profile: str) -> None:
        """One row's result at one rung as a finished trial (or the pending one, finished)."""
        optuna = _optuna()
        rung = row["rungs"][profile]
        value = rung.get("val_bpb")
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        config = {k.name: row["knobs"][k.name] for k in self.knobs}
        user = {"row": row_key(row), "status": row.get("status"), "profile": profile,
                "baseline": bool(row.get("baseline")), "config": config,
                "description": row.get("description"), "total_bytes": rung.get("total_bytes")}
        constraints = {CAP_CONSTRAINT: self._violation(row, rung)}
        steps = self._rung_scores(row) if profile == self.ladder[0] else {}
        pending = self._pending.pop(self._pending_key(study, config), None)
        if pending is not None:
            self._finish_pending(study, pending[1], value if ok else None, user, constraints,
                                 steps)
            return
        params, dists = self._params(config)
        if params is None:
            return  # a value outside today's declared range: not a point of this space
        state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(
            state=state, value=float(value) if ok else None, params=params, distributions=dists,
            user_attrs=user, constraints=constraints, intermediate_values=steps))

    def _finish_pending(self, study: Any, number: int, value: float | None, user: dict,
                        constraints: dict[str, float], steps: dict[int, float]) -> None:
        optuna = _optuna()
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            self.storage.get_study_id_from_name(study.study_name), number)
        trial = optuna.trial.Trial(study, trial_id)
        for key, val in user.items():
            trial.set_user_attr(key, val)
        for key, val in constraints.items():
            trial.set_constraint(key, val)
        for step, score in steps.items():
            trial.report(score, step)
        if value is None:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(number, value)

    def _violation(self, row: dict, rung: dict) -> float:
        """> 0 when the artifact was over the cap (how far, as a fraction of the cap)."""
        total = rung.get("total_bytes")
        if isinstance(total, (int, float)) and not isinstance(total, bool):
            return float(total) / self.cap_bytes - 1.0
        return 1.0 if row.get("status") == "over_cap" else 0.0  # no size said: no violation

    def _rung_scores(self, row: dict) -> dict[int, float]:
        scores = {}
        for i, profile in enumerate(self.ladder):
            value = ((row.get("rungs") or {}).get(profile) or {}).get("val_bpb")
            if isinstance(value, (int, float)) and math.isfinite(value):
                scores[i] = float(value)
        return scores

    def _params(self, config: dict) -> tuple[dict | None, dict]:
        dists = {k.name: distribution(k) for k in self.knobs}
        params = {}
        for knob in self.knobs:
            try:
                value = float(config[knob.name])
            except (KeyError, TypeError, ValueError):
                return None, dists  # measured before this knob was declared
            if not knob.low <= value <= knob.high:
                return None, dists
            params[knob.name] = int(value) if knob.type == "int" else value
        return params, dists

    def _reserve(self, study: Any, config: dict) -> None:
        """The chosen candidate as a RUNNING trial: pending for every daemon on the storage."""
        optuna = _optuna()
        params, dists = self._params(config)
        ticket = uuid.uuid4().hex  # finds our trial among others added at the same moment
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, params=params, distributions=dists,
            user_attrs={"config": dict(config), "host": socket.gethostname(),
                        "pid": os.getpid(), "strategy": self.strategy, "ticket": ticket}))
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        number = next(t.number for t in running if t.user_attrs.get("ticket") == ticket)
        self._pending[self._pending_key(study, config)] = (study.study_name, number)

    def _fail_unmatched(self) -> None:
        """A reserved candidate whose row measured nothing at the first rung (duplicate,
        failed checks, a proposal the daemon refused): FAIL, so no daemon waits on it."""
        optuna = _optuna()
        for name, number in self._pending.values():
            with contextlib.suppress(Exception):  # already finished elsewhere: nothing to do
                self._study(name).tell(number, state=optuna.trial.TrialState.FAIL)
        self._pending.clear()

    def _pending_key(self, study: Any, config: dict) -> str:
        return f"{study.study_name}|{config_key(config, self.knobs)}"

    def _fail_stale(self, study: Any) -> None:
        """RUNNING trials left by a daemon of this host that is gone (killed mid-experiment)."""
        host = socket.gethostname()
        optuna = _optuna()
        for trial in study.get_trials(deepcopy=False,
                                      states=(optuna.trial.TrialState.RUNNING,)):
            pid = trial.user_attrs.get("pid")
            if trial.user_attrs.get("host") == host and isinstance(pid, int) and \
                    not _alive(pid):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)

    def _trial_keys(self, trials: Sequence[Any]) -> set:
        """Configurations the study holds, finished or pending (other daemons' too)."""
        keys = set()
        for trial in trials:
            config = trial.user_attrs.get("config") or trial.params
            key = config_key(config, self.knobs)
            if key is not None:
                keys.add(key)
        return keys

    # ---- sampling

    def _sampler(self, fixed: dict, n_history: int) -> Any:
        optuna = _optuna()
        seed = int(hashlib.sha256(f"{self.seed}:{n_history}".encode()).hexdigest()[:8], 16)
        if self.strategy == "random":
            base = optuna.samplers.RandomSampler(seed=seed)
        else:
            base = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, multivariate=True,
                constant_liar=True)  # feasibility: the trials' constraints (Optuna >= 5)
        return optuna.samplers.PartialFixedSampler(fixed, base) if fixed else base

    def _sample(self, current: dict, trials: Sequence[Any], taken: set, fixed_shape: dict,
                sizes: SizeModel, n_history: int) -> dict | None:
        """A new configuration near the incumbent, valid and predicted under the cap."""
        optuna = _optuna()
        rng = random.Random(f"{self.seed}:{n_history}:{config_key(current, self.knobs)}")
        dists = {k.name: distribution(k) for k in self.knobs}
        scratch = optuna.create_study(direction="minimize")  # in memory: refusals stay here
        scratch.add_trials([c for c in (self._copy(t, dists) for t in trials) if c is not None])
        self.last_refusals = []
        for attempt in range(MAX_ATTEMPTS):
            moving = self._moving(rng)
            fixed = {k.name: self._param_value(k, current[k.name])
                     for k in self.knobs if k.name not in moving}
            scratch.sampler = self._sampler(fixed, n_history * MAX_ATTEMPTS + attempt)
            config = self._tidy(scratch.ask(dists).params, current, moving)
            problem = self._refusal(config, current, taken, fixed_shape, sizes)
            if problem is None:
                return config
            self.last_refusals.append(problem)
            taken = taken | {config_key(config, self.knobs)}
        return None

    def _copy(self, trial: Any, dists: dict) -> Any:
        """A stored trial in today's search space (None when a value lies outside it)."""
        optuna = _optuna()
        state = trial.state
        if state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING):
            return None  # FAIL/WAITING teach the sampler nothing; their configs stay taken
        params, _ = self._params(trial.user_attrs.get("config") or trial.params)
        if params is None:
            return None
        return optuna.trial.create_trial(
            state=state, value=trial.value if state.is_finished() else None, params=params,
            distributions=dists, constraints=dict(trial.constraints) or None)

    def _moving(self, rng: random.Random) -> set[str]:
        counts, weights = zip(*MOVE_COUNTS, strict=True)
        n = min(rng.choices(counts, weights=weights, k=1)[0], len(self._movable))
        return {k.name for k in rng.sample(self._movable, n)}

    @staticmethod
    def _param_value(knob: Knob, value: float | int) -> float | int:
        """The incumbent's value as a fixed parameter, inside the knob's distribution."""
        clamped = min(max(float(value), knob.low), knob.high)
        clamped = snap(knob, clamped)
        return int(round(clamped)) if knob.type == "int" else clamped

    def _tidy(self, params: dict, current: dict, moving: set[str]) -> dict:
        """Readable values (3 significant digits, on the knob's grid); unmoved knobs exactly
        as the incumbent has them."""
        config = dict(current)
        for knob in self.knobs:
            if knob.name not in moving:
                continue
            value = params[knob.name]
            if knob.type == "int":
                config[knob.name] = int(value)
            else:
                rounded = float(f"{float(value):.{PROPOSAL_DIGITS}g}")
                config[knob.name] = min(max(snap(knob, rounded), knob.low), knob.high)
        return config

    def _refusal(self, config: dict, current: dict, taken: set, fixed_shape: dict,
                 sizes: SizeModel) -> str | None:
        key = config_key(config, self.knobs)
        if key == config_key(current, self.knobs):
            return "the incumbent itself"
        if key in taken:
            return "already measured or pending"
        if all(config.get(n) == current.get(n) for n in SHAPE_DEFAULTS):
            return None  # the incumbent's own shape: a move of other knobs changes no size
        return shape_refusal(config, fixed_shape, sizes, self.cap_bytes)

    def _describe(self, current: dict, config: dict) -> str:
        moves = [f"{k.name} {format_value(k, current[k.name])} -> {format_value(k, config[k.name])}"
                 for k in self.knobs
                 if canonical(config[k.name]) != canonical(current[k.name])]
        return ", ".join(moves) + f" ({self.strategy})"


def _create_study(storage: Any, name: str) -> Any:
    """Load or create; two daemons creating one study at once: the loser loads it."""
    optuna = _optuna()
    for attempt in range(3):
        try:
            return optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                       load_if_exists=True)
        except (optuna.exceptions.DuplicatedStudyError, KeyError):
            time.sleep(0.2 * (attempt + 1))
    return optuna.load_study(storage=storage, study_name=name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
