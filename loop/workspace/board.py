"""The conventions of a shared workspace (SPEC section 10) on top of a Storage.

Layout:

    README.md                 what this is and the rules (written by `workspace init`)
    message_board/            short markdown posts with a front-matter
    artifacts/{scripts,results,checkpoints,data}/
    LEADERBOARD.md            generated from artifacts/results/*.json

Every file a daemon writes is named `{descriptive_name}_{agent_id}.{ext}` (an agent id has no
`_`, so the owner is the text after the last `_` of the stem). A daemon writes only files
named with its own agent id, and never over an existing file (`Board.put` refuses before
anything is written). The exceptions, which belong to no agent: the README files written
once by `workspace init`, and LEADERBOARD.md, the one shared generated file that any agent
regenerates from all results (atomic replace; it holds nothing that is not in the results).

Posts that cannot reach the workspace are queued in a local outbox folder (same relative
paths) and sent, in order, by the next `flush`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

from loop.settings.workspace import AGENT_ID
from loop.workspace.storage import AlreadyExists, Storage, Unreachable, WriteRefused, clean_path

POSTS = "message_board"
SCRIPTS = "artifacts/scripts"
RESULTS = "artifacts/results"
CHECKPOINTS = "artifacts/checkpoints"
DATA = "artifacts/data"
LEADERBOARD = "LEADERBOARD.md"
FOLDERS = (POSTS, SCRIPTS, RESULTS, CHECKPOINTS, DATA)
POST_TYPES = ("status-update", "experiment-proposal", "result")
REQUIRED_RESULT_KEYS = ("agent_id", "experiment", "score")
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


# --------------------------------------------------------------------------- names


def owner_of(path: str) -> str | None:
    """The agent id a file name carries (`x_alice.md` -> alice), or None."""
    stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
    if "_" not in stem:
        return None
    descriptive, agent = stem.rsplit("_", 1)
    return agent if descriptive and AGENT_ID.fullmatch(agent) else None


def file_name(descriptive: str, agent_id: str, ext: str) -> str:
    """`{descriptive_name}_{agent_id}.{ext}` with the descriptive part made safe (no `_`)."""
    safe = _UNSAFE.sub("-", descriptive).strip("-.") or "file"
    return f"{safe}_{agent_id}.{ext}"


def stamp(now: datetime | None = None) -> str:
    """A compact UTC time for file names that sort in time order: 20261123T145900Z."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


# --------------------------------------------------------------------------- posts


def render_post(meta: dict[str, object], body: str) -> str:
    """A short markdown post: `---`, one `key: value` line per field, `---`, the body."""
    lines = ["---"]
    for key, value in meta.items():
        if value is not None:
            lines.append(f"{key}: {' '.join(str(value).split())}")
    return "\n".join([*lines, "---", "", body.strip(), ""])


def parse_post(text: str) -> tuple[dict[str, str], str]:
    """(front-matter, body); a text without front-matter gives ({}, text)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    meta: dict[str, str] = {}
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return meta, "\n".join(lines[i + 1:]).strip()
        key, sep, value = line.partition(":")
        if sep and key.strip():
            meta[key.strip()] = value.strip()
    return {}, text  # never closed: not a front-matter


# --------------------------------------------------------------------------- results


def valid_result(data: object) -> bool:
    """The required keys present; `score` a finite number, or null for an experiment that
    produced none (a crash: unknown, never 0)."""
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED_RESULT_KEYS):
        return False
    return data["score"] is None or _number(data["score"]) is not None


# Plausibility of another agent's score (issue 20, LESSONS "claims that expire"): the bounds
# autoresearch-at-home's shared protocol rejects. A val_bpb under 0.5 is below anything an
# honest 16 MB model reaches (the entries reported there were invalidated: their "distribution"
# did not sum to 1); a loss <= 0 is impossible; a gain of more than 0.1 in one kept step is
# far beyond the 0.002-0.03 steps real changes make, and is what a broken judge produces.
PLAUSIBLE_FLOOR = {"val_bpb": 0.5}
MAX_STEP_GAIN = 0.1


def implausible(score: object, metric: str | None, direction: str | None,
                before: object = None) -> str | None:
    """Why a reported score cannot be believed, or None. `before`: the incumbent's score the
    step started from (None when not given: only the absolute bounds apply)."""
    value = _number(score)
    if value is None:
        return f"no finite score ({score!r})"
    lower = (direction or "lower") != "higher"
    if lower and value <= 0:
        return f"{metric or 'score'} {value:g} <= 0 is not a loss a model can reach"
    floor = PLAUSIBLE_FLOOR.get(metric or "")
    if lower and floor is not None and value < floor:
        return f"{metric} {value:g} is under {floor:g}, below any honest result"
    start = _number(before)
    if start is not None:
        step = (start - value) if lower else (value - start)
        if step > MAX_STEP_GAIN:
            return (f"a one-step gain of {step:.4f} (from {start:g} to {value:g}) is over "
                    f"{MAX_STEP_GAIN:g}")
    return None


def result_implausible(result: dict) -> str | None:
    return implausible(result.get("score"), result.get("metric") or "val_bpb",
                       result.get("direction"), result.get("incumbent_score"))


def gain_over(baseline: object, score: object, direction: str | None) -> float | None:
    """How much better `score` is than the agent's own `baseline` (positive = better), or
    None when either is unknown. The one comparison that holds across machines."""
    a, b = _number(baseline), _number(score)
    if a is None or b is None:
        return None
    return round((b - a) if direction == "higher" else (a - b), 10)


def _number(value: object) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def render_leaderboard(results: Iterable[dict], now: datetime | None = None,
                       generated_by: str | None = None) -> str:
    """Each agent's best kept result within each (dataset, profile, metric); never across them.

    Ranked by each agent's gain over its own baseline (the same dataset, profile and protocol
    measured on its own machine): agents run on different hardware, so absolute scores are
    shown but not ranked. Only kept results count (a result JSON without a status, from
    another tool, counts as one); implausible ones are listed apart, never ranked."""
    groups: dict[tuple[str, str, str, str], dict[str, dict]] = {}
    doubtful: list[tuple[dict, str]] = []
    for result in results:
        if not valid_result(result) or result.get("status", "keep") != "keep":
            continue
        why = result_implausible(result)
        if why:
            doubtful.append((result, why))
            continue
        key = (str(result.get("dataset") or "unknown"), str(result.get("profile") or "unknown"),
               str(result.get("metric") or "score"), str(result.get("direction") or "lower"))
        best = groups.setdefault(key, {})
        agent = str(result["agent_id"])
        if agent not in best or _rank_key(result, key[3]) < _rank_key(best[agent], key[3]):
            best[agent] = result
    when = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    out = ["# Leaderboard", "",
           f"Generated from `{RESULTS}/*.json` at {when}"
           + (f" by agent `{generated_by}`" if generated_by else "") + ". Do not edit: any "
           "agent regenerates this file from the results.", "",
           "Best kept result per agent, within one dataset and profile. Ranked by the gain over "
           "the agent's own baseline (same dataset, profile and protocol, on its own machine); "
           "machines differ, so absolute scores are shown for reference, never ranked.", ""]
    if not groups:
        out.append("No results yet.")
    for key in sorted(groups):
        out += _leaderboard_group(key, groups[key])
    if doubtful:
        out += _doubtful_section(doubtful)
    return "\n".join(out).rstrip() + "\n"


def _gain(result: dict) -> float | None:
    gain = _number(result.get("gain"))
    if gain is None:
        gain = gain_over(result.get("baseline_score"), result.get("score"),
                         result.get("direction"))
    return gain


def _rank_key(result: dict, direction: str) -> tuple:
    """Known gains first, largest first; then (no baseline known) by score, for order only."""
    gain, score = _gain(result), _number(result["score"]) or 0.0
    return (gain is None, -(gain or 0.0), -score if direction == "higher" else score)


def _leaderboard_group(key: tuple[str, str, str, str], best: dict[str, dict]) -> list[str]:
    dataset, profile, metric, direction = key
    ranked = sorted(best.values(), key=lambda r: _rank_key(r, direction))
    out = [f"## dataset `{dataset}`, profile `{profile}`", "",
           f"{metric}, {direction} is better; gain = improvement over the agent's own baseline.",
           "",
           "| rank | agent | gain | score | own baseline | experiment | total_bytes | "
           "timestamp | patch |",
           "|---:|---|---:|---:|---:|---|---:|---|---|"]
    for rank, r in enumerate(ranked, start=1):
        gain, base, size = _gain(r), _number(r.get("baseline_score")), r.get("total_bytes")
        out.append(f"| {'' if gain is None else rank} | {r['agent_id']} | "
                   f"{'unknown' if gain is None else f'{gain:+.6f}'} | {r['score']:.6f} | "
                   f"{'unknown' if base is None else f'{base:.6f}'} | {r['experiment']} | "
                   f"{'' if size is None else size} | {r.get('timestamp') or ''} | "
                   f"{r.get('patch') or ''} |")
    return [*out, ""]


def _doubtful_section(doubtful: list[tuple[dict, str]]) -> list[str]:
    out = ["## Set aside as implausible", "",
           "Kept results whose score cannot be believed (a score <= 0, a val_bpb under "
           f"{PLAUSIBLE_FLOOR['val_bpb']:g}, or a one-step gain over {MAX_STEP_GAIN:g}); never "
           "ranked, never offered as ideas.", ""]
    for r, why in sorted(doubtful, key=lambda t: (str(t[0]["agent_id"]), str(t[0]["experiment"]))):
        out.append(f"- {r['agent_id']} {r['experiment']} ({r.get('profile') or '?'}): {why}")
    return [*out, ""]


# --------------------------------------------------------------------------- the board


class Board:
    """One agent's view of a workspace: safe writes, a local outbox, cached reads."""

    def __init__(self, storage: Storage, agent_id: str, outbox: Path,
                 warn: Callable[[str], None] = lambda _: None):
        if not AGENT_ID.fullmatch(agent_id or ""):
            raise WriteRefused(f"bad agent_id {agent_id!r}: letters, digits and - only")
        self.storage = storage
        self.agent_id = agent_id
        self.outbox = Path(outbox)
        self.warn = warn
        self._cache: dict[str, bytes] = {}  # others' files never change: read each once

    # ---- writing

    def check_writable(self, path: str) -> str:
        """The clean path if this agent may create it; WriteRefused (nothing written) if not."""
        rel = clean_path(path)
        owner = owner_of(rel)
        if owner != self.agent_id:
            whose = f"agent {owner!r}" if owner else "no agent"
            raise WriteRefused(f"refused to write {rel}: its name carries {whose}, not ours "
                               f"({self.agent_id!r}); name files {{name}}_{self.agent_id}.ext")
        return rel

    def put(self, path: str, data: bytes) -> str:
        """Create our file: "sent", or "queued" in the outbox when the workspace is away."""
        rel = self.check_writable(path)
        self._send_queued_quietly()
        try:
            self._create(rel, data)
            return "sent"
        except Unreachable as exc:
            self._queue(rel, data)
            self.warn(f"workspace unreachable, {rel} queued: {exc}")
            return "queued"

    def put_now(self, path: str, data: bytes) -> str:
        """Create our file now or not at all: "sent", or "skipped" when the workspace is
        away (for lease renewals: one sent later would be stale)."""
        rel = self.check_writable(path)
        try:
            self._create(rel, data)
            return "sent"
        except Unreachable as exc:
            self.warn(f"workspace unreachable, {rel} not sent: {exc}")
            return "skipped"

    def flush(self) -> int:
        """Send queued files in order; returns how many are still queued (Unreachable ends it).
        A queued file whose name is taken by other bytes is set aside (`.NAME.conflict` in the
        outbox, with a warning) so that it does not hold up the rest."""
        queued = self.queued()
        for i, rel in enumerate(queued):
            local = self.outbox / rel
            try:
                self._create(self.check_writable(rel), local.read_bytes())
            except Unreachable:
                return len(queued) - i
            except WriteRefused as exc:
                local.replace(local.with_name(f".{local.name}.conflict"))
                self.warn(f"queued {rel} not sent, kept as .{local.name}.conflict: {exc}")
                continue
            local.unlink()
        return 0

    def queued(self) -> list[str]:
        if not self.outbox.is_dir():
            return []
        files = [p for p in self.outbox.rglob("*") if p.is_file() and not p.name.startswith(".")]
        return [p.relative_to(self.outbox).as_posix()
                for p in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))]

    def regenerate_leaderboard(self) -> str:
        """Rewrite LEADERBOARD.md from every results JSON (the one shared generated file)."""
        text = render_leaderboard(self.results(), generated_by=self.agent_id)
        self.storage.replace(LEADERBOARD, text.encode())
        return text

    def _create(self, rel: str, data: bytes) -> None:
        try:
            self.storage.write_new(rel, data)
        except AlreadyExists:
            # A post sent before a crash and queued again: the same bytes are not a conflict.
            if self.storage.read(rel) != data:
                raise
        self._cache[rel] = data

    def _queue(self, rel: str, data: bytes) -> None:
        local = self.outbox / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(local)

    def _send_queued_quietly(self) -> None:
        if self.queued():
            self.flush()

    # ---- reading

    def read(self, path: str) -> bytes:
        rel = clean_path(path)
        if rel not in self._cache:
            self._cache[rel] = self.storage.read(rel)
        return self._cache[rel]

    def posts(self) -> list[dict]:
        """Every post with a front-matter, oldest first; each has `path`, `author`, `body`."""
        found = []
        for rel in self.storage.list(POSTS):
            author = owner_of(rel)
            if author is None or not rel.endswith(".md"):
                continue
            meta, body = parse_post(self._text(rel))
            if meta.get("type") in POST_TYPES:
                # The author is whoever the file name says: a post cannot speak for another.
                found.append({**meta, "author": author, "path": rel, "body": body})
        return sorted(found, key=lambda p: (p.get("timestamp", ""), p["path"]))

    def results(self) -> list[dict]:
        """Every valid results JSON (with `path`); others' bad files are skipped with a warning."""
        found = []
        for rel in self.storage.list(RESULTS):
            if not rel.endswith(".json") or owner_of(rel) is None:
                continue
            try:
                data = json.loads(self._text(rel))
            except ValueError:
                data = None
            if valid_result(data) and data["agent_id"] == owner_of(rel):
                found.append({**data, "path": rel})
            else:
                self.warn(f"workspace: {rel} is not a valid results file; skipped")
        return found

    def agents(self) -> list[str]:
        """Every agent id that owns a file in the workspace."""
        return sorted({a for a in map(owner_of, self.storage.list()) if a})

    def _text(self, rel: str) -> str:
        return self.read(rel).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- init


README = """\
# Shared autogolf workspace

Several autogolf daemons (agents), each with its own `agent_id`, share this workspace.

- `message_board/`: short markdown posts with a front-matter (`type`: status-update,
  experiment-proposal - a claim, so others skip it - or result; `agent_id`, `timestamp`,
  `experiment`, `diff_hash`, `incumbent`, `profile`, `dataset`).
- `artifacts/scripts/`: kept patches; `artifacts/results/`: results JSON; `artifacts/checkpoints/`
  and `artifacts/data/`: large files (their size is said in the post that announces them).
- `LEADERBOARD.md`: generated from `artifacts/results/*.json`, best per agent, grouped by
  dataset and profile, ranked by each agent's gain over its own baseline (machines differ:
  absolute scores are shown, not ranked); results from different datasets or profiles are
  never compared, implausible ones are set aside.

Rules:
- every file an agent writes is named `{descriptive_name}_{agent_id}.{ext}`;
- never modify or overwrite another agent's file; build on it by copying;
- post a status-update when you join and stop; post a claim (with `lease_expires`) before
  starting an experiment and a result after every one; read the board before
  choosing the next experiment: others' claims are skipped, others' kept patches become
  credited ideas in the local backlog.
- The only files without an agent id: these README files, and LEADERBOARD.md, which any
  agent regenerates (atomic replace) from the results.
"""

FOLDER_READMES = {
    POSTS: "Posts: `{stamp}-{kind}-{experiment}_{agent_id}.md`, a front-matter between `---` "
           "lines, then a short body. Never edit another agent's post. A claim "
           "(experiment-proposal) holds until its `lease_expires` (renewal posts push it on; "
           "15 minutes from `timestamp` when it has none); the agent's result post releases "
           "it.\n",
    SCRIPTS: "Kept patches: `{experiment}-patch_{agent_id}.diff` (git diff against the "
             "incumbent named in the result post). Copy one to build on it.\n",
    RESULTS: "Results JSON: `{experiment}-{profile}_{agent_id}.json` with `agent_id`, "
             "`experiment`, `score` (required), `timestamp`, `model`, `test_samples`, `notes`, "
             "and autogolf's `metric`, `direction`, `profile`, `total_bytes`, `dataset`, "
             "`commit`, `patch`, `status`, `reason`, `incumbent_score`, `baseline_score` (the "
             "agent's own baseline) and `gain` over it. `score` is null when nothing was "
             "measured.\n",
    CHECKPOINTS: "Large model files, named `{name}_{agent_id}.{ext}`; announce the size in a "
                 "post.\n",
    DATA: "Shared data files, named `{name}_{agent_id}.{ext}`; announce the size in a post.\n",
}


def init_layout(storage: Storage) -> list[str]:
    """Create the README files of the layout (never over existing ones); returns new paths."""
    created = []
    files = {"README.md": README, **{f"{d}/README.md": t for d, t in FOLDER_READMES.items()}}
    for rel, text in files.items():
        try:
            storage.write_new(rel, f"# {rel.rsplit('/', 1)[0]}\n\n{text}".encode()
                              if "/" in rel else text.encode())
            created.append(rel)
        except AlreadyExists:
            pass
    if not storage.exists(LEADERBOARD):
        storage.replace(LEADERBOARD, render_leaderboard([]).encode())
        created.append(LEADERBOARD)
    return created
