"""The house plan of `loop/`: each room (a subpackage, or a module at the top of `loop/`) is
on a floor, and imports run down, never round.

Read from the source with ast (every import, also those inside functions): no module imports
itself through others (a circle), no two rooms import each other once the known exceptions are
set aside, and an import that runs up a floor is one of at most two known exceptions, each
with its reason. A room not on the plan fails the test: give it a floor here (and in
docs/DESIGN.md).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

LOOP = Path(__file__).resolve().parent.parent / "loop"

# Ground first. Rooms on one floor may import each other's modules (not in a circle).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("errors", "platform", "network", "events"),  # facts and plumbing: import nothing of ours
    ("store",),       # ledger rows, the status table, verdicts, git, files
    ("settings",),    # each autogolf.yaml section: its keys, defaults and checks
    ("data",),        # datasets, shards, token bytes
    ("config",),      # the whole autogolf.yaml, read into one Config
    ("repo",),        # finding the repository and its configuration
    ("measure",),     # running a benchmark, parsing its output, the seal, how runs end
    ("judge",),       # the keep rule: validity, the daemon's own score, the ladder
    ("backlog",),     # the ideas backlog and its bookkeeping
    ("proposers",),   # who edits: search, agent, ideas
    ("workspace",),   # several daemons, one board
    ("daemon",),      # the unattended loop
    ("ui",),          # the verbs
)

# The imports that may run up (module -> module it imports), at most two, each with why.
KNOWN_UPWARD: dict[tuple[str, str], str] = {
    ("loop.config", "loop.judge.sequential"):
        "the keep rule checks its own settings (SequentialRule, a pure module of the standard "
        "library only): the configuration builds it rather than write the check twice",
    ("loop.settings.keep", "loop.judge.sequential"):
        "the same: the keep_rule section is handed to SequentialRule, which checks it",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(LOOP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LOOP.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The modules of `loop` that `path` imports (a `from loop.x import y` names loop.x.y
    when y is a module, else loop.x)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                     else node.module for alias in node.names]
        else:
            continue
        yield from (name for name in names if name in known and name != "loop")


def room(module: str) -> str:
    return module.split(".")[1]


def floor_of(name: str) -> int:
    for number, rooms in enumerate(FLOORS):
        if name in rooms:
            return number
    raise AssertionError(f"loop/{name} is on no floor of tests/test_layers.py: give it one")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(path, known)) - {name} for name, path in known.items()}


def upward() -> set[tuple[str, str]]:
    return {(src, dst) for src, targets in graph().items() if src != "loop"
            for dst in targets if floor_of(room(dst)) > floor_of(room(src))}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_every_room_of_loop_is_on_a_floor():
    for name in {room(m) for m in modules() if m != "loop"}:
        floor_of(name)


def test_no_module_imports_itself_through_others():
    assert circles(graph()) == []


def test_no_two_rooms_import_each_other_apart_from_the_known_exceptions():
    rooms: dict[str, set[str]] = {}
    for src, targets in graph().items():
        for dst in targets:
            if src != "loop" and room(src) != room(dst) and (src, dst) not in KNOWN_UPWARD:
                rooms.setdefault(room(src), set()).add(room(dst))
    assert circles(rooms) == []


def test_imports_run_down_the_floors_apart_from_at_most_two_known_exceptions():
    assert len(KNOWN_UPWARD) <= 2
    assert sorted(upward() - set(KNOWN_UPWARD)) == []


def test_the_judge_imports_nothing_of_the_loop_that_runs_it():
    above = {"backlog", "proposers", "workspace", "daemon", "ui"}
    assert sorted((src, dst) for src, targets in graph().items() if src.startswith("loop.judge")
                  for dst in targets if room(dst) in above) == []
