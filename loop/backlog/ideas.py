"""The ideas backlog (`autoresearch.ideas.md`, SPEC 8).

The backlog is Markdown a person edits by hand, so the file is the source of truth and this
module never re-renders it: `IdeasFile` keeps every original line (with its line ending) and
an edit replaces or inserts single lines, so an unchanged document saves byte-identical and an
edit changes only the lines it means to. The format (docs/DESIGN.md):

    - [I003] (untried) Shorter warmdown: linear decay over the last 10% of steps.
      knobs: WARMDOWN_FRAC=0.1
      patch: ideas/patches/I003.patch
      source: records/track_10min_16mb/2026-03-18_FP16Embed_WD3600 (val_bpb 1.2197)
      evidence: E0012 breadth delta=-0.0031 keep
      note: tried twice, the second time with a longer run

An idea is a top-level list item whose text starts with `[ID]` and `(status)`; its indented
lines belong to it (`knobs:`, `patch:`, `source:`, `evidence:`, `note:` are data, anything
else is more of its text). Everything else is free text. An item that looks like an idea
but is not a valid one (bad id or status, a duplicate id, a bad data line) is reported with
its line number and left exactly as written; it is never offered to a proposer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from loop.store.files import atomic_write
from loop.store.statuses import STATUSES as EXPERIMENT_STATUSES
from loop.store.statuses import names_where

STATUSES = ("untried", "promising", "exhausted", "invalid")
DATA_KEYS = ("knobs", "patch", "source", "evidence", "note")

# What an experiment's final status says about the idea it tested. Statuses not listed
# (duplicate, interrupted, the agent_* outcomes) say nothing about the idea itself: the
# evidence line is still written, the idea's status is left alone.
STATUS_AFTER = {name: s.idea_after for name, s in EXPERIMENT_STATUSES.items() if s.idea_after}
# Rows that tested nothing: the idea may be tried again.
UNTESTED = names_where(tests_idea=False)
# Rows that get no evidence line at all: the daemon was stopped before anything happened.
NOT_RECORDED = names_where(tests_idea=False, says_about_change=False)

_ID = re.compile(r"I\d{3,}")
_EXPERIMENT = re.compile(r"E\d+")
# A top-level bullet whose text starts with `[...]`, but not a task-list box (`- [ ]`,
# `- [x]`) and not a link (`- [text](url)`): those are a person's free text.
_ITEM = re.compile(
    r"^[-*+][ \t]+\[(?P<id>[^\]\n]*)\](?!\()(?:[ \t]*\((?P<status>[^)\n]*)\))?(?P<text>.*)$"
)
_CHECKBOX = re.compile(r"[ xX]")
_DATA = re.compile(r"^(?P<indent>[ \t]+)(?P<key>knobs|patch|source|evidence|note):(?P<value>.*)$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")
_HEADING = re.compile(r"^[ ]{0,3}#{2,6}[ \t]+(.+?)[ \t#]*$")
_KNOB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[-+]?\d+")
_EVIDENCE = re.compile(
    r"(?P<exp>E\d+)\s+(?P<profile>\S+)\s+delta=(?P<delta>\S+)\s+(?P<status>\S+)(?:\s+(?P<extra>.*))?"
)


class IdeasError(ValueError):
    """Bad input to the backlog (unknown id, bad status, unreadable file); says which."""


class IdeasConflict(IdeasError):
    """The file changed on disk between load and save (a person edited it meanwhile)."""


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Evidence:
    experiment: str
    profile: str
    delta: float | None  # None = not measured ("n/a")
    status: str
    line: int


@dataclass
class Idea:
    id: str
    status: str
    text: str
    line: int  # 1-based line of the list item
    end: int  # 1-based last line that belongs to it
    knobs: dict[str, float | int] = field(default_factory=dict)
    patch: str | None = None
    source: str | None = None  # where the idea comes from (a record, a paper), as written
    evidence: list[Evidence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def applicable(self) -> bool:
        """Carries something the `ideas` proposer can apply without a coding agent."""
        return bool(self.knobs or self.patch)


# --------------------------------------------------------------------------------- parsing


def parse_knobs(text: str) -> dict[str, float | int]:
    """`NAME=value NAME2=value` -> {NAME: number}; IdeasError naming the bad entry."""
    knobs: dict[str, float | int] = {}
    entries = text.split()
    if not entries:
        raise IdeasError("empty knobs list (expected NAME=number ...)")
    for entry in entries:
        name, sep, literal = entry.partition("=")
        if not sep or not _KNOB_NAME.fullmatch(name):
            raise IdeasError(f"bad knobs entry {entry!r} (expected NAME=number)")
        if name in knobs:
            raise IdeasError(f"knob {name} is set twice")
        knobs[name] = _number(name, literal)
    return knobs


def _number(name: str, literal: str) -> float | int:
    if _INT.fullmatch(literal):
        return int(literal)
    try:
        value = float(literal)
    except ValueError:
        raise IdeasError(f"knob {name}: {literal!r} is not a number") from None
    if not math.isfinite(value):
        raise IdeasError(f"knob {name}: {literal!r} is not a finite number")
    return value


def format_knobs(knobs: dict[str, float | int]) -> str:
    return " ".join(f"{name}={value}" for name, value in knobs.items())


def _split_lines(text: str) -> list[str]:
    """Lines with their endings, split on `\\n` only (what editors and line numbers count)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _body(line: str) -> str:
    """The line without its ending (`\\n` or `\\r\\n`)."""
    if line.endswith("\n"):
        line = line[:-1]
    return line[:-1] if line.endswith("\r") else line


def _is_idea_item(body: str) -> re.Match[str] | None:
    match = _ITEM.match(body)
    if match is None or _CHECKBOX.fullmatch(match.group("id")):
        return None
    return match


def _item_end(lines: list[str], start: int) -> int:
    """Index of the last line of the list item at `start`: indented lines follow it, blank
    lines only when an indented line follows them (a loose item, as in Markdown)."""
    last, j = start, start + 1
    while j < len(lines):
        body = _body(lines[j])
        if body.strip():
            if body[0] not in " \t":
                break
            last = j
            j += 1
            continue
        k = j
        while k < len(lines) and not _body(lines[k]).strip():
            k += 1
        if k == len(lines) or _body(lines[k])[:1] not in (" ", "\t"):
            break
        j = k
    return last


def _parse_idea(lines: list[str], start: int, end: int, match: re.Match[str]) -> Idea:
    ident, status = match.group("id").strip(), match.group("status")
    idea = Idea(id=ident, status=(status or "").strip(), text=match.group("text").strip(),
                line=start + 1, end=end + 1)
    if not _ID.fullmatch(ident):
        idea.problems.append(Problem(idea.line, f"bad idea id [{ident}]: ids look like [I001]"))
    if status is None:
        idea.problems.append(Problem(idea.line, f"[{ident}] has no (status) after its id; "
                                                f"use one of {', '.join(STATUSES)}"))
    elif idea.status not in STATUSES:
        idea.problems.append(Problem(idea.line, f"[{ident}] has status ({idea.status}); "
                                                f"use one of {', '.join(STATUSES)}"))
    texts = [idea.text] if idea.text else []
    for index in range(start + 1, end + 1):
        body = _body(lines[index])
        data = _DATA.match(body)
        if data:
            _add_data(idea, data.group("key"), data.group("value").strip(), index + 1)
        elif body.strip():
            texts.append(body.strip())
    idea.text = " ".join(texts)
    return idea


def _add_data(idea: Idea, key: str, value: str, lineno: int) -> None:
    def problem(message: str) -> None:
        idea.problems.append(Problem(lineno, f"[{idea.id}] {message}"))

    if key == "knobs":
        try:
            knobs = parse_knobs(value)
        except IdeasError as e:
            return problem(f"bad knobs line: {e}")
        for name in knobs.keys() & idea.knobs.keys():
            return problem(f"bad knobs line: knob {name} is set twice")
        idea.knobs.update(knobs)
    elif key == "patch":
        if not value:
            return problem("empty patch line (expected a path)")
        if idea.patch is not None:
            return problem("has more than one patch line")
        idea.patch = value
    elif key == "source":
        if not value:
            return problem("empty source line (expected where the idea comes from)")
        if idea.source is not None:
            return problem("has more than one source line")
        idea.source = value
    elif key == "evidence":
        evidence = _parse_evidence(value, lineno)
        if evidence is None:
            return problem(f"bad evidence line {value!r} (expected: E0012 breadth "
                           "delta=-0.0031 keep)")
        idea.evidence.append(evidence)
    else:
        idea.notes.append(value)


def _parse_evidence(value: str, lineno: int) -> Evidence | None:
    match = _EVIDENCE.fullmatch(value)
    if match is None:
        return None
    literal = match.group("delta")
    if literal == "n/a":
        delta = None
    else:
        try:
            delta = float(literal)
        except ValueError:
            return None
    return Evidence(match.group("exp"), match.group("profile"), delta, match.group("status"),
                    lineno)


def parse(lines: list[str]) -> tuple[list[Idea], list[Problem]]:
    """All idea-like items (valid or not) in file order, and every problem found."""
    ideas: list[Idea] = []
    in_fence = False
    index = 0
    while index < len(lines):
        body = _body(lines[index])
        if _FENCE.match(body):  # an example of the format inside a code block is not an idea
            in_fence = not in_fence
        match = None if in_fence else _is_idea_item(body)
        if match is None:
            index += 1
            continue
        end = _item_end(lines, index)
        ideas.append(_parse_idea(lines, index, end, match))
        index = end + 1
    _flag_duplicates(ideas)
    problems = sorted((p for idea in ideas for p in idea.problems), key=lambda p: p.line)
    return ideas, problems


def _flag_duplicates(ideas: list[Idea]) -> None:
    first: dict[str, Idea] = {}
    for idea in ideas:
        if not _ID.fullmatch(idea.id):
            continue
        if idea.id not in first:
            first[idea.id] = idea
            continue
        original = first[idea.id]
        idea.problems.append(Problem(idea.line, f"duplicate id [{idea.id}] (first used on "
                                                f"line {original.line}); give it a new id"))
        if not any("is used again" in p.message for p in original.problems):
            original.problems.append(Problem(original.line, f"id [{idea.id}] is used again on "
                                                            f"line {idea.line}"))


# --------------------------------------------------------------------------------- the file


class IdeasFile:
    """A backlog document that remembers every original line; edits touch only their lines."""

    def __init__(self, path: Path, text: str = "", *, existed: bool = True):
        self.path = Path(path)
        self._loaded = text if existed else None  # what is on disk, for conflict detection
        self.lines = _split_lines(text)
        self.ideas: list[Idea] = []
        self.problems: list[Problem] = []
        self._reparse()

    @classmethod
    def load(cls, path: Path | str, *, missing_ok: bool = False) -> IdeasFile:
        """Read the backlog; with `missing_ok` an absent file is an empty backlog."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if missing_ok:
                return cls(path, "", existed=False)
            raise IdeasError(f"no ideas backlog at {path}") from None
        except OSError as e:
            raise IdeasError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise IdeasError(f"{path} is not UTF-8 text (byte {e.start}); fix the file "
                             "encoding") from None
        return cls(path, text)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def get(self, idea_id: str) -> Idea | None:
        """The first idea with this id, or None."""
        return next((idea for idea in self.ideas if idea.id == idea_id), None)

    def untried(self) -> list[Idea]:
        """Valid ideas with status untried, in file order."""
        return [idea for idea in self.ideas if idea.status == "untried" and idea.valid]

    def next_id(self) -> str:
        numbers = [int(m.group(1)) for idea in self.ideas
                   if (m := re.fullmatch(r"I(\d+)", idea.id))]
        return f"I{max(numbers, default=0) + 1:03d}"

    # ---- edits

    def add(self, text: str, knobs: dict[str, float | int] | str | None = None,
            patch: str | None = None) -> str:
        """Append a new untried idea at the end of the file; return its id."""
        title = " ".join(str(text).split())  # one line: a newline could fake a data line
        if not title:
            raise IdeasError("an idea needs some text")
        if isinstance(knobs, str):
            knobs = parse_knobs(knobs)
        if patch is not None and (not patch.strip() or "\n" in patch):
            raise IdeasError(f"bad patch path {patch!r}")
        idea_id = self.next_id()
        nl = self._newline()
        new = [f"- [{idea_id}] (untried) {title}{nl}"]
        if knobs:
            new.append(f"  knobs: {format_knobs(knobs)}{nl}")
        if patch:
            new.append(f"  patch: {patch.strip()}{nl}")
        self._end_last_line()
        if self.lines and not self._ends_with_idea() and _body(self.lines[-1]).strip():
            new.insert(0, nl)  # a blank line between free text and the new list item
        self.lines.extend(new)
        self._reparse()
        return idea_id

    def mark(self, idea_id: str, status: str, note: str | None = None) -> None:
        """Set an idea's status (only the `(status)` text of its line changes), add a note."""
        if status not in STATUSES:
            raise IdeasError(f"bad status {status!r}: use one of {', '.join(STATUSES)}")
        idea = self._require(idea_id)
        index = idea.line - 1
        match = _is_idea_item(_body(self.lines[index]))
        assert match is not None  # the parse found an idea on this line
        if match.group("status") is None:
            start = end = match.end("id") + 1  # just after `]`
            replacement = f" ({status})"
        else:
            start, end = match.span("status")
            replacement = status
        line = self.lines[index]
        self.lines[index] = line[:start] + replacement + line[end:]
        if note is not None:
            self._insert_data(idea, "note", " ".join(note.split()))
        self._reparse()

    def add_evidence(self, idea_id: str, experiment_id: str, profile: str | None,
                     delta: float | None, status: str) -> bool:
        """Append `evidence: E0012 breadth delta=-0.0031 keep` to the idea; False when that
        experiment at that profile is already recorded (a resumed daemon may call twice)."""
        if not _EXPERIMENT.fullmatch(experiment_id or ""):
            raise IdeasError(f"bad experiment id {experiment_id!r} (expected E0012)")
        profile = profile or "-"
        for word, what in ((profile, "profile"), (status, "status")):
            if not word or len(word.split()) != 1:
                raise IdeasError(f"bad {what} {word!r} for evidence")
        if delta is not None and not math.isfinite(delta):
            delta = None  # unknown is unknown, never a number
        idea = self._require(idea_id)
        if any(e.experiment == experiment_id and e.profile == profile for e in idea.evidence):
            return False
        shown = "n/a" if delta is None else f"{delta:+.4f}"
        self._insert_data(idea, "evidence", f"{experiment_id} {profile} delta={shown} {status}")
        self._reparse()
        return True

    def save(self) -> None:
        """Write atomically (tmp + rename); IdeasConflict if the file changed since load."""
        current = read_or_none(self.path)
        if current != self._loaded:
            raise IdeasConflict(f"{self.path} changed on disk since it was read; "
                                "reload and try again")
        atomic_write(self.path, self.text)
        self._loaded = self.text

    # ---- helpers

    def _require(self, idea_id: str) -> Idea:
        if not _ID.fullmatch(idea_id or ""):
            raise IdeasError(f"bad idea id {idea_id!r}: ids look like I001")
        matches = [idea for idea in self.ideas if idea.id == idea_id]
        if not matches:
            known = ", ".join(i.id for i in self.ideas if _ID.fullmatch(i.id)) or "none"
            raise IdeasError(f"no idea {idea_id} in {self.path} (ideas: {known})")
        if len(matches) > 1:
            lines = ", ".join(str(i.line) for i in matches)
            raise IdeasError(f"idea {idea_id} is defined more than once (lines {lines}) in "
                             f"{self.path}; give one of them a new id first")
        return matches[0]

    def _insert_data(self, idea: Idea, key: str, value: str) -> None:
        """A `key: value` line after the idea's last line, indented like its other lines."""
        index = idea.end  # 0-based position right after the item's last line
        indent = "  "
        for line in self.lines[idea.line:idea.end]:
            body = _body(line)
            if body.strip():
                indent = body[: len(body) - len(body.lstrip())]
                break
        if index == len(self.lines):
            self._end_last_line()
        self.lines.insert(index, f"{indent}{key}: {value}{self._newline()}")

    def _newline(self) -> str:
        crlf = sum(1 for line in self.lines if line.endswith("\r\n"))
        return "\r\n" if crlf * 2 > len(self.lines) else "\n"

    def _end_last_line(self) -> None:
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += self._newline()

    def _ends_with_idea(self) -> bool:
        return bool(self.ideas) and self.ideas[-1].end == len(self.lines)

    def _reparse(self) -> None:
        self.ideas, self.problems = parse(self.lines)


def read_or_none(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None


def families(backlog: IdeasFile) -> dict[str, str]:
    """Idea id -> its family: the nearest Markdown heading above it below the title (`## ...`
    or deeper; headings inside code blocks do not count). Ideas under no such heading have no
    family and are left out."""
    lines, found = backlog.lines, {}
    starts = {idea.line - 1: idea.id for idea in backlog.ideas}
    heading, in_fence = None, False
    for index, line in enumerate(lines):
        body = _body(line)
        if _FENCE.match(body):
            in_fence = not in_fence
        elif not in_fence and (m := _HEADING.match(body)):
            heading = m.group(1).strip()
        if index in starts and heading:
            found.setdefault(starts[index], heading)
    return found


# ------------------------------------------------------------------- what the daemon records


def tested_ideas(rows: Iterable[dict]) -> set[str]:
    """Ids of ideas an experiment row already tested (an interrupted row tested nothing)."""
    return {row["idea"] for row in rows
            if isinstance(row, dict) and row.get("idea") and row.get("status") not in UNTESTED}


def row_delta(row: dict) -> tuple[str | None, float | None]:
    """(profile, val_bpb - incumbent) at the last rung the experiment reached."""
    rungs = row.get("rungs") or {}
    if not rungs:
        return None, None
    profile = list(rungs)[-1]
    value = (rungs[profile] or {}).get("val_bpb")
    before = (row.get("incumbent_before") or {}).get(profile)
    if isinstance(value, (int, float)) and isinstance(before, (int, float)):
        return profile, float(value) - float(before)
    return profile, None


def record_experiment(path: Path | str, row: dict, *, attempts: int = 3) -> bool:
    """After an experiment that tested an idea: append its evidence line and move the idea's
    status (STATUS_AFTER). Re-reads the file right before writing so a person's concurrent
    edit is kept. False when there is nothing to record (no idea, no file, unknown id)."""
    idea_id, status = row.get("idea"), row.get("status")
    if not idea_id or not status or status in NOT_RECORDED or not Path(path).exists():
        return False
    profile, delta = row_delta(row)
    for attempt in range(attempts):
        backlog = IdeasFile.load(path)
        if len([i for i in backlog.ideas if i.id == idea_id]) != 1:
            return False  # deleted or made ambiguous by a person meanwhile: theirs to fix
        changed = backlog.add_evidence(idea_id, row["id"], profile, delta, status)
        new_status = STATUS_AFTER.get(status)
        if new_status and backlog.get(idea_id).status != new_status:
            backlog.mark(idea_id, new_status)
            changed = True
        if not changed:
            return False
        try:
            backlog.save()
            return True
        except IdeasConflict:
            if attempt == attempts - 1:
                raise
    return False
