"""pi-autoresearch's session log: where pi looks for it, and a strict reader of it.

Facts from pi-autoresearch v1.6.2 (davebcn87/pi-autoresearch, tag v1.6.2, commit 9c8cc2a8;
`extensions/pi-autoresearch/paths.ts`, `jsonl.ts`, `index.ts`), restated here, not copied:

- Two layouts. Since 1.6.0 a session's files live in `.auto/`: `log.jsonl`, `prompt.md`,
  `ideas.md`, `checks.sh`, `measure.sh`, `config.json` and `hooks/`. The legacy flat layout
  has `autoresearch.jsonl`, `autoresearch.md`, `autoresearch.ideas.md`,
  `autoresearch.checks.sh`, `autoresearch.sh`, `autoresearch.config.json`. When ANY of the
  `.auto/` files (or `.auto/hooks/`) exists, pi reads every file from `.auto/` and ignores
  the legacy ones; otherwise it reads each legacy file that exists, and writes new files
  into `.auto/`.
- Both logs have the same line layout: one JSON object per line. A line with
  `"type": "config"` (name, metricName, metricUnit, bestDirection) opens a segment: the
  first config is segment 0, and every later config that follows at least one run starts the
  next one (pi derives the segment from the config lines; a run's own `segment` field is
  not read back). A line whose `run` is a number is a run: run (1-based over the file),
  commit (7 hex), metric (pi's agent logs 0 for a crash), metrics {name: number}, status
  keep|discard|crash|checks_failed, description, timestamp (ms), segment, confidence
  (number or null), optional asi {hypothesis, rollback_reason, next_action_hint, ...}.
  `{"type": "hook", ...}` lines record hook runs. pi skips unparsable lines silently and
  reads an unknown status as keep.

This reader is stricter than pi's on purpose: a corrupt line or an unknown status is an
error naming the line (nothing is guessed, nothing is written), so an import loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loop.errors import UserError
from loop.store.statuses import PI_MEASURED, PI_STATUSES

AUTO_DIR = ".auto"
LOG, LEGACY_LOG = "log.jsonl", "autoresearch.jsonl"
# pi's session file kinds: (name under .auto/, legacy name at the root).
SESSION_FILES = {
    "log": (LOG, LEGACY_LOG),
    "prompt": ("prompt.md", "autoresearch.md"),
    "ideas": ("ideas.md", "autoresearch.ideas.md"),
    "checks": ("checks.sh", "autoresearch.checks.sh"),
    "measure": ("measure.sh", "autoresearch.sh"),
    "config": ("config.json", "autoresearch.config.json"),
}
LAYOUTS = ("auto", "legacy")
MAX_REPORTED = 5  # bad lines named in one error


class PiLogError(UserError):
    """A pi log that cannot be read as one: says which file and line, and why."""


# --------------------------------------------------------------------------- where


def auto_layout_exists(root: Path) -> bool:
    """pi's test: any `.auto/` session file (or `.auto/hooks/`) under `root`."""
    auto = Path(root) / AUTO_DIR
    return any((auto / name).exists() for name, _ in SESSION_FILES.values()) or (
        auto / "hooks").exists()


def legacy_session_exists(root: Path) -> bool:
    """Any legacy flat session file (autoresearch.md, autoresearch.sh, ...) under `root`."""
    return any((Path(root) / legacy).exists() for _, legacy in SESSION_FILES.values())


def layout_pi_reads(root: Path) -> str:
    """The layout pi 1.6 would read in `root`: "auto" once any `.auto/` file exists; else
    "legacy" where legacy session files exist (pi reads them as they are; a new `.auto/`
    log would make pi drop them and look for `.auto/prompt.md`); else "auto"."""
    if auto_layout_exists(root):
        return "auto"
    return "legacy" if legacy_session_exists(root) else "auto"


def log_path(root: Path, layout: str) -> Path:
    """The log file of `layout` under `root`."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown pi layout {layout!r}; known: {', '.join(LAYOUTS)}")
    return Path(root) / AUTO_DIR / LOG if layout == "auto" else Path(root) / LEGACY_LOG


def missing_auto_files(root: Path) -> list[str]:
    """The `.auto/` files pi needs to resume (prompt, measure script) that are absent."""
    return [f"{AUTO_DIR}/{SESSION_FILES[kind][0]}" for kind in ("prompt", "measure")
            if not (Path(root) / AUTO_DIR / SESSION_FILES[kind][0]).exists()]


def find_log(path: Path) -> tuple[Path, str]:
    """The pi log at `path` and its layout: a file as it is, or the log pi would read in a
    folder (a project root, or an `.auto/` folder itself)."""
    path = Path(path)
    if path.is_file():
        return path, "auto" if path.name == LOG and path.parent.name == AUTO_DIR else "legacy"
    if not path.is_dir():
        raise PiLogError(f"no pi-autoresearch log at {path}: give a log file or the folder "
                         f"that holds {AUTO_DIR}/{LOG} or {LEGACY_LOG}")
    if path.name == AUTO_DIR and (path / LOG).is_file():
        return path / LOG, "auto"
    candidate = log_path(path, "auto" if auto_layout_exists(path) else "legacy")
    if candidate.is_file():
        return candidate, "auto" if candidate.name == LOG else "legacy"
    raise PiLogError(f"no pi-autoresearch log in {path}: pi would read {candidate}, which "
                     "does not exist")


# --------------------------------------------------------------------------- reading


@dataclass
class PiRun:
    """One run line, with what pi derives for it (its segment and that segment's config)."""

    line: int
    segment: int
    config: dict[str, Any]
    entry: dict[str, Any]
    text: str

    @property
    def key(self) -> str:
        """Identity of this line's content (a re-import of the same line is a duplicate)."""
        return line_key(self.text)

    @property
    def from_autogolf(self) -> bool:
        """The run came from an `autogolf export` (its ledger row is the judged original)."""
        return isinstance(self.entry.get("autogolf"), dict)


@dataclass
class PiLog:
    path: Path
    runs: list[PiRun] = field(default_factory=list)
    configs: int = 0
    hooks: int = 0
    other: list[int] = field(default_factory=list)  # JSON objects of no kind pi reads
    segment: int = 0  # pi's current segment at the end of the file

    @property
    def max_run(self) -> int:
        return max((r.entry["run"] for r in self.runs), default=0)

    @property
    def next_segment(self) -> int:
        """The segment a config line appended now would open (pi's rule)."""
        return self.segment + 1 if self.runs else self.segment


def line_key(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def read_log(path: Path) -> PiLog:
    """Every run of the pi log at `path`; PiLogError naming each bad line (none is skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PiLogError(f"cannot read the pi log {path}: {exc}") from None
    log, problems = PiLog(path), []
    segment, config = 0, {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        entry, problem = _parse(line)
        if problem:
            problems.append(f"line {number}: {problem}")
        elif entry.get("type") == "config":
            segment += 1 if log.runs else 0  # pi: a config after any run starts the next
            config, log.configs = entry, log.configs + 1
        elif _is_run(entry):
            log.runs.append(PiRun(number, segment, config, entry, line))
        elif entry.get("type") == "hook":
            log.hooks += 1
        else:
            log.other.append(number)
    _raise_problems(path, problems)
    log.segment = segment
    if not log.configs and not log.runs:
        raise PiLogError(f"{path} is not a pi-autoresearch log: no config line and no run "
                         "line (pi's layout: a {\"type\": \"config\"} header, then one "
                         "{\"run\": n, ...} object per run)")
    return log


def _is_run(entry: dict) -> bool:
    return _number(entry.get("run")) is not None


def _parse(line: str) -> tuple[dict, str | None]:
    """The line's object, or a problem: not JSON, not an object, or a run pi would misread."""
    try:
        entry = json.loads(line)
    except ValueError as exc:
        return {}, f"not JSON ({exc.msg}): {line[:60]!r}"
    if not isinstance(entry, dict):
        return {}, f"a JSON {type(entry).__name__}, not an object"
    if _is_run(entry) and entry.get("status") not in PI_STATUSES:
        return {}, (f"run {entry.get('run')} has status {entry.get('status')!r}, not one of "
                    f"{', '.join(PI_STATUSES)}")
    return entry, None


def _raise_problems(path: Path, problems: list[str]) -> None:
    if not problems:
        return
    more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
    raise PiLogError(f"{path}: {len(problems)} unreadable line(s), nothing was imported or "
                     f"written: {'; '.join(problems[:MAX_REPORTED])}{more}. Fix or remove "
                     "the line(s) and run again.")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def known_metric(run: PiRun) -> float | None:
    """The run's primary metric, or None when unknown: a crash or a failed check has no
    measurement (pi's agent logs 0 there), and pi itself ignores values <= 0."""
    value = _number(run.entry.get("metric"))
    if not PI_MEASURED.get(run.entry.get("status"), True) or value is None or value <= 0:
        return None
    return value


# --------------------------------------------------------------------------- imported rows

IMPORTED = "imported"  # the ledger row type of a run brought in from pi's log


def imported_rows(rows: list[dict]) -> list[dict]:
    """The ledger's imported pi runs (never experiments: no judge measured them)."""
    return [r for r in rows if isinstance(r, dict) and r.get("type") == IMPORTED]


def imported_keys(rows: list[dict]) -> set[str]:
    return {str(r.get("key")) for r in imported_rows(rows)}


def imported_row(run: PiRun, log: PiLog, layout: str, number: int, now: str) -> dict:
    """The ledger row of one pi run: pi's own figures, marked unjudged, and the raw line."""
    entry, asi = run.entry, run.entry.get("asi")
    asi = asi if isinstance(asi, dict) else {}
    return {
        "type": IMPORTED, "source": "pi-autoresearch", "id": f"P{number:04d}",
        "timestamp": now, "judged": False, "file": str(log.path), "layout": layout,
        "line": run.line, "key": run.key, "pi_session": run.config.get("name"),
        "pi_segment": run.segment, "pi_run": entry.get("run"), "pi_status": entry["status"],
        "metric_name": run.config.get("metricName", "metric"),
        "direction": run.config.get("bestDirection", "lower"),
        "metric": known_metric(run), "metrics": _metric_map(entry.get("metrics")),
        "commit": entry.get("commit") if isinstance(entry.get("commit"), str) else None,
        "description": str(entry.get("description") or ""),
        "hypothesis": asi.get("hypothesis"), "rollback_reason": asi.get("rollback_reason"),
        "next_action_hint": asi.get("next_action_hint"),
        "run_timestamp": _iso(entry.get("timestamp")), "pi": entry,
    }


def _metric_map(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if _number(v) is not None}


def _iso(ms: Any) -> str | None:
    value = _number(ms)
    if value is None or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=timezone.utc).isoformat(timespec="seconds")
