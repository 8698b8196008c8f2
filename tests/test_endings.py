"""The table of how a run or a process is stopped (loop.measure.endings): every way named
there lives where the table says, records a known status, and the design notes show it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from scheduler_helpers import Scripted

from loop.config import load_config
from loop.daemon import scheduler
from loop.measure import endings, watchdog
from loop.measure.endings import ENDINGS
from loop.store.statuses import NAMES

ROOT = Path(__file__).resolve().parent.parent
LOCATIONS = sorted({where for ending in ENDINGS for where in ending.where})


def _defined_in_file(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name
               for node in ast.walk(tree))


@pytest.mark.parametrize("where", LOCATIONS)
def test_every_place_the_table_names_exists(where):
    module, _, attribute = where.partition(":")
    if module.endswith(".py"):  # a file the daemon runs, never imports (the trainer)
        assert _defined_in_file(ROOT / module, attribute), f"{attribute} not in {module}"
        return
    found = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)  # AttributeError names the stale entry


def test_every_ending_records_a_status_of_the_status_table():
    for ending in ENDINGS:
        status = ending.row.split(" ")[0]
        assert status in NAMES or ending.row.startswith("(none"), ending.name


def test_the_endings_have_one_row_each():
    names = [ending.name for ending in ENDINGS]
    assert len(names) == len(set(names))


def test_the_design_notes_show_the_table_as_it_is():
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    assert endings.markdown() in design, ("docs/DESIGN.md's table of how runs end is stale: "
                                          "paste loop.measure.endings.markdown() there")


def test_the_watchdog_says_it_is_off_and_how_to_turn_it_on():
    line = watchdog.describe(0, 0)
    assert line.startswith("memory watchdog: off")
    assert "limits.max_memory_mb" in line and "limits.min_available_memory_mb" in line


def test_the_watchdog_says_it_is_on_with_its_limits():
    assert watchdog.describe(8000, 0) == ("memory watchdog: on, it stops a benchmark over "
                                          "8000 MB (limits.max_memory_mb)")
    assert "under 2000 MB available" in watchdog.describe(0, 2000)


def test_the_daemon_says_the_watchdog_setting_when_a_session_starts(repo):
    lines: list[str] = []
    cfg = load_config(repo / "autogolf.yaml")
    scheduler.Scheduler(repo, cfg, scheduler.StopRules(max_experiments=0), proposer=Scripted(),
                        out=lines.append).run()
    assert watchdog.describe(cfg.max_memory_mb, cfg.min_available_memory_mb) in lines
    assert any(line.startswith("memory watchdog: off") for line in lines)  # the default
