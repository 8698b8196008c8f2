"""`autogolf ideas`: review the backlog with each idea's evidence; add and mark ideas.

    autogolf ideas [--status S]                       list (the default)
    autogolf ideas add TEXT [--knobs "A=1 B=2"] [--patch PATH]
    autogolf ideas mark ID STATUS [--note TEXT]

Which backlog: once a daemon session exists, the daemon's live copy in the latest session's
worktree (`.autogolf/worktrees/<session>/autoresearch.ideas.md`; the daemon commits edits made
there before its next proposal); before that, the one at the root of the main checkout (also
when run inside a daemon worktree). `--checkout` forces the checkout's file, `--file` names
one. The first output line says which file. A bad id, status or knobs list is one line on
stderr and exit 2; the file is then not written. Malformed entries are listed with their
line numbers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from loop.backlog.ideas import STATUSES, Idea, IdeasError, IdeasFile, parse_knobs
from loop.store.gitsession import main_checkout
from loop.store.ledger import Ledger

IDEAS_FILE = "autoresearch.ideas.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options and sub-verbs of `autogolf ideas` on a parser the main CLI created."""
    parser.add_argument("--file", type=Path, default=None,
                        help=f"the backlog (default: the latest session worktree's {IDEAS_FILE}, "
                             "else the checkout's)")
    parser.add_argument("--checkout", action="store_true",
                        help=f"use {IDEAS_FILE} of your checkout, not the session worktree's")
    parser.add_argument("--status", choices=STATUSES, default=None,
                        help="list only ideas with this status")
    verbs = parser.add_subparsers(dest="ideas_command", metavar="{list,add,mark}")
    listing = verbs.add_parser("list", help="list ideas with status and evidence (default)")
    listing.add_argument("--status", choices=STATUSES, default=argparse.SUPPRESS,
                         help="list only ideas with this status")
    add = verbs.add_parser("add", help="append a new untried idea")
    add.add_argument("text", nargs="+", help="what to try and why (one line)")
    add.add_argument("--knobs", default=None, help='knob settings, e.g. "MATRIX_LR=0.05 B=2"')
    add.add_argument("--patch", default=None,
                     help="a patch file (relative to the backlog's folder) the idea applies")
    mark = verbs.add_parser("mark", help="set an idea's status")
    mark.add_argument("id", help="idea id, e.g. I003")
    mark.add_argument("status", choices=STATUSES)
    mark.add_argument("--note", default=None, help="a note line to add under the idea")


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the verb; 0 on success, 2 on a problem the user can fix (message on stderr)."""
    out, err = out or sys.stdout, err or sys.stderr
    path, where = (args.file, "--file") if args.file is not None else backlog_path(
        Path.cwd(), checkout=getattr(args, "checkout", False))
    command = getattr(args, "ideas_command", None) or "list"
    out.write(f"backlog: {path} ({where})\n")
    try:
        if command == "add":
            return _add(path, args, out)
        if command == "mark":
            return _mark(path, args, out)
        return _list(path, args.status, out)
    except IdeasError as e:
        print(f"autogolf ideas: error: {e}", file=err)
        return 2


def backlog_path(start: Path, checkout: bool = False) -> tuple[Path, str]:
    """The backlog to work on and a few words saying which it is: the latest session
    worktree's copy when there is one (unless `checkout`), else the main checkout's."""
    mine = default_path(start)
    session = None if checkout else latest_session(mine.parent)
    worktree = mine.parent / ".autogolf" / "worktrees" / session if session else None
    if worktree is not None and worktree.is_dir():
        return worktree / IDEAS_FILE, f"the daemon's copy in session {session}'s worktree; " \
                                      "--checkout for yours"
    return mine, "your checkout"


def latest_session(root: Path) -> str | None:
    """The newest session named in the main checkout's ledger, or None."""
    ledger = root / ".autogolf" / "ledger.jsonl"
    if not ledger.is_file():
        return None
    names = [r.get("session") for r in Ledger(ledger).rows() if r.get("type") == "session"]
    return next((n for n in reversed(names) if isinstance(n, str) and n), None)


def default_path(start: Path) -> Path:
    """The backlog of the main checkout that owns `start` (a daemon worktree included)."""
    return (main_checkout(start) or start) / IDEAS_FILE


# --------------------------------------------------------------------------------- verbs


def _list(path: Path, status: str | None, out: TextIO) -> int:
    backlog = IdeasFile.load(path)
    shown = [i for i in backlog.ideas if status is None or i.status == status]
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    for idea in shown:
        out.write(format_idea(idea, width))
    out.write(_summary(backlog, shown, status) + "\n")
    if backlog.problems:
        out.write(f"\n{len(backlog.problems)} problem(s) in {path} (entries kept as written; "
                  "fix them by hand):\n")
        for problem in backlog.problems:
            out.write(f"  {path.name}:{problem.line}: {problem.message}\n")
    return 0


def _add(path: Path, args: argparse.Namespace, out: TextIO) -> int:
    knobs = parse_knobs(args.knobs) if args.knobs is not None else None
    backlog = IdeasFile.load(path, missing_ok=True)
    if args.patch is not None and not (path.parent / args.patch).is_file():
        raise IdeasError(f"patch file {args.patch} not found (looked in {path.parent})")
    if not backlog.lines:
        backlog.lines = ["# Ideas backlog\n", "\n"]  # a new file gets a heading
    idea_id = backlog.add(" ".join(args.text), knobs=knobs, patch=args.patch)
    backlog.save()
    out.write(f"added {idea_id} to {path}\n")
    return 0


def _mark(path: Path, args: argparse.Namespace, out: TextIO) -> int:
    backlog = IdeasFile.load(path)
    before = backlog.get(args.id)
    backlog.mark(args.id, args.status, note=args.note)
    backlog.save()
    out.write(f"{args.id}: {before.status or '?'} -> {args.status}\n")
    return 0


# --------------------------------------------------------------------------------- output


def format_idea(idea: Idea, width: int = 100) -> str:
    """One idea: id, status, text wrapped, then its knobs, patch, source, evidence, notes."""
    status = idea.status if idea.valid else f"{idea.status or '?'}!"
    head = f"{idea.id:<6} {status:<10} "
    indent = " " * len(head)
    lines = textwrap.wrap(idea.text or "(no text)", width=width, initial_indent=head,
                          subsequent_indent=indent) or [head]
    if idea.knobs:
        lines.append(f"{indent}knobs: " + " ".join(f"{k}={v}" for k, v in idea.knobs.items()))
    if idea.patch:
        lines.append(f"{indent}patch: {idea.patch}")
    if idea.source:
        lines.append(f"{indent}source: {idea.source}")
    for evidence in idea.evidence:
        delta = "n/a" if evidence.delta is None else f"{evidence.delta:+.4f}"
        lines.append(f"{indent}evidence: {evidence.experiment} {evidence.profile} "
                     f"delta={delta} {evidence.status}")
    lines += [f"{indent}note: {note}" for note in idea.notes]
    lines += [f"{indent}problem: {p}" for p in idea.problems]
    return "\n".join(lines) + "\n"


def _summary(backlog: IdeasFile, shown: list[Idea], status: str | None) -> str:
    counts = {s: sum(1 for i in backlog.ideas if i.status == s) for s in STATUSES}
    parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if not backlog.ideas:
        return f"no ideas in {backlog.path} yet: add one with `autogolf ideas add TEXT`"
    if status is not None:
        return f"{len(shown)} of {len(backlog.ideas)} ideas are {status} ({parts})"
    return f"{len(backlog.ideas)} ideas: {parts}"
