"""pi-autoresearch's session log both ways: the reader, `autogolf import`, the round trip.

The fixture `fixtures/pi_1_6_2_auto_log.jsonl` is a `.auto/log.jsonl` written by hand in the
exact layout of pi-autoresearch v1.6.2 (tag v1.6.2, commit 9c8cc2a8): compact JSON, the
config header as `init_experiment` writes it, run lines in `log_experiment`'s key order
(run, commit, metric, metrics, status, description, timestamp, segment, confidence, asi;
asi left out when empty), metric 0 for a crash, `{"type": "hook"}` lines from hooks.ts, and
a second config line that starts segment 1 (jsonl.ts `reconstructJsonlState`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loop.daemon.lock import DaemonLock
from loop.proposers.agent import AgentProposer
from loop.proposers.registry import _imported
from loop.store import pilog
from loop.store.ledger import Ledger
from loop.ui import import_cli, report, report_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PI_LOG = FIXTURES / "pi_1_6_2_auto_log.jsonl"
LEDGER = FIXTURES / "ledger_all_statuses.jsonl"
ROOT = Path(__file__).resolve().parent.parent


def _parse(add, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(list(argv))


def do_import(*argv: str) -> int:
    return import_cli.main(_parse(import_cli.add_arguments, *argv))


def do_export(*argv: str) -> int:
    return report_cli.export_main(_parse(report_cli.add_export_arguments, *argv))


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A project root holding a pi 1.6 session (`.auto/`) and no ledger yet."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".auto").mkdir()
    shutil.copy(PI_LOG, tmp_path / ".auto" / "log.jsonl")
    return tmp_path


def ledger_rows(repo: Path) -> list[dict]:
    return Ledger(repo / ".autogolf" / "ledger.jsonl").rows()


# --------------------------------------------------------------------------- the reader


def test_reader_derives_segments_from_config_lines_as_pi_does():
    log = pilog.read_log(PI_LOG)
    assert [r.entry["run"] for r in log.runs] == [1, 2, 3, 4, 5, 6]
    assert [r.segment for r in log.runs] == [0, 0, 0, 0, 0, 1]
    assert log.runs[-1].config["name"] == "golf on pi (confirm)"
    assert (log.configs, log.hooks, log.other, log.segment) == (2, 2, [], 1)


def test_a_config_after_any_run_opens_the_next_segment_even_twice_in_a_row(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"type":"config"}\n{"run":1,"status":"keep","metric":1}\n'
                    '{"type":"config"}\n{"type":"config"}\n{"run":2,"status":"keep"}\n')
    assert [r.segment for r in pilog.read_log(path).runs] == [0, 2]


def test_a_crash_metric_of_zero_is_unknown_not_zero():
    runs = {r.entry["run"]: r for r in pilog.read_log(PI_LOG).runs}
    assert pilog.known_metric(runs[3]) is None  # crash, pi logged 0
    assert pilog.known_metric(runs[5]) is None  # checks_failed: no accepted measurement
    assert pilog.known_metric(runs[4]) == 2.0102


def test_a_corrupt_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = PI_LOG.read_text().splitlines()
    lines[3] = lines[3][:40]  # torn in the middle
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(pilog.PiLogError, match="line 4: not JSON"):
        pilog.read_log(path)


def test_an_unknown_status_is_an_error_where_pi_would_read_keep(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"type":"config"}\n{"run":1,"metric":2.0,"status":"kept"}\n')
    with pytest.raises(pilog.PiLogError, match="line 2: run 1 has status 'kept'"):
        pilog.read_log(path)


def test_a_file_that_is_no_pi_log_is_refused_with_the_layout_it_wants():
    with pytest.raises(pilog.PiLogError, match="not a pi-autoresearch log: no config line"):
        pilog.read_log(LEDGER)  # our own ledger: JSON objects, but no config and no run


# --------------------------------------------------------------------------- where


def test_find_log_reads_dot_auto_over_the_flat_log_as_pi_does(tmp_path):
    (tmp_path / pilog.LEGACY_LOG).write_text("{}\n")
    assert pilog.find_log(tmp_path) == (tmp_path / pilog.LEGACY_LOG, "legacy")
    (tmp_path / ".auto").mkdir()
    (tmp_path / ".auto" / "prompt.md").write_text("x")
    with pytest.raises(pilog.PiLogError, match=r"pi would read .*\.auto/log\.jsonl"):
        pilog.find_log(tmp_path)  # a .auto/ session: pi ignores autoresearch.jsonl now
    (tmp_path / ".auto" / "log.jsonl").write_text("{}\n")
    assert pilog.find_log(tmp_path) == (tmp_path / ".auto" / "log.jsonl", "auto")
    assert pilog.find_log(tmp_path / ".auto") == (tmp_path / ".auto" / "log.jsonl", "auto")


def test_find_log_without_a_log_says_where_it_looked(tmp_path):
    with pytest.raises(pilog.PiLogError, match="autoresearch.jsonl"):
        pilog.find_log(tmp_path / "nowhere")


def test_pi_reads_the_flat_files_until_a_dot_auto_session_exists(tmp_path):
    assert pilog.layout_pi_reads(tmp_path) == "auto"  # nothing yet: pi 1.6 starts .auto/
    (tmp_path / "autoresearch.md").write_text("x")
    assert pilog.layout_pi_reads(tmp_path) == "legacy"
    (tmp_path / ".auto" / "hooks").mkdir(parents=True)
    assert pilog.layout_pi_reads(tmp_path) == "auto"


# --------------------------------------------------------------------------- import


def test_import_writes_unjudged_rows_that_are_never_experiments(repo, capsys):
    assert do_import("--format", "pi", str(repo)) == 0
    rows = ledger_rows(repo)
    assert [r["pi_run"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {r["type"] for r in rows} == {"imported"} and not any(r["judged"] for r in rows)
    assert report.experiments(rows) == []  # no incumbent, no keep, no search trial
    assert "status" not in rows[0] and rows[0]["pi_status"] == "keep"
    assert "imported 6 pi run(s)" in capsys.readouterr().out


def test_import_keeps_pis_figures_reasons_and_the_line_itself(repo):
    do_import(str(repo / ".auto" / "log.jsonl"))
    rows = {r["pi_run"]: r for r in ledger_rows(repo)}
    assert rows[2]["metric"] == 2.0612 and rows[2]["metric_name"] == "val_bpb"
    assert rows[2]["rollback_reason"] == "val_bpb worse by 0.008"
    assert rows[2]["next_action_hint"] == "try untied with a smaller vocab"
    assert rows[3]["metric"] is None and rows[3]["pi"]["metric"] == 0
    assert rows[1]["metrics"] == {"total_bytes": 4812345, "step_ms": 812.5}
    assert rows[6]["pi_segment"] == 1 and rows[6]["pi_session"] == "golf on pi (confirm)"
    assert rows[1]["run_timestamp"] == "2026-11-23T02:13:20+00:00"
    assert rows[1]["pi"] == json.loads(PI_LOG.read_text().splitlines()[1])


def test_importing_again_adds_only_pis_new_runs(repo, capsys):
    do_import(str(repo))
    with (repo / ".auto" / "log.jsonl").open("a") as log:
        log.write('{"run":7,"commit":"e4f5a6b","metric":1.97,"metrics":{},"status":"discard",'
                  '"description":"later","timestamp":1795403000000,"segment":1,'
                  '"confidence":null}\n')
    capsys.readouterr()
    do_import(str(repo))
    assert [r["id"] for r in ledger_rows(repo)] == [f"P{i:04d}" for i in range(1, 8)]
    assert "skipped 6 already imported" in capsys.readouterr().out


def test_a_corrupt_log_imports_nothing_and_exits_2(repo, capsys):
    log = repo / ".auto" / "log.jsonl"
    log.write_text(PI_LOG.read_text() + '{"run": 7, "status": "keep"\n')
    before = log.read_bytes()
    assert do_import(str(repo)) == 2
    assert "line 11: not JSON" in capsys.readouterr().err
    assert not (repo / ".autogolf" / "ledger.jsonl").exists()
    assert log.read_bytes() == before  # pi's file is only read


def test_a_dry_run_writes_nothing(repo, capsys):
    assert do_import("--dry-run", str(repo)) == 0
    assert "would import 6" in capsys.readouterr().out
    assert not (repo / ".autogolf" / "ledger.jsonl").exists()


def test_import_is_refused_while_a_daemon_holds_the_lock(repo, capsys):
    with DaemonLock(repo / ".autogolf" / "lock"):
        assert do_import(str(repo)) == 2
    assert "import after it stops" in capsys.readouterr().err
    assert ledger_rows(repo) == []


# --------------------------------------------------------------------------- round trip


@pytest.fixture
def ours(tmp_path, monkeypatch) -> Path:
    """A project root with our ledger and no pi session."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".autogolf").mkdir()
    shutil.copy(LEDGER, tmp_path / ".autogolf" / "ledger.jsonl")
    return tmp_path


def test_round_trip_our_reader_sees_every_exported_run_as_we_wrote_it(ours):
    assert do_export() == 0
    log = pilog.read_log(ours / ".auto" / "log.jsonl")
    written = [r for r in report_cli.pi_records(Ledger(LEDGER).rows(), "breadth") if "run" in r]
    assert [r.entry for r in log.runs] == written
    assert [r.segment for r in log.runs] == [r["segment"] for r in written]
    assert all(r.from_autogolf for r in log.runs)


def test_round_trip_brings_back_only_what_pi_added(ours, capsys):
    do_export()
    log = ours / ".auto" / "log.jsonl"
    pi_run = json.loads(PI_LOG.read_text().splitlines()[3]) | {"run": 99}
    with log.open("a") as handle:
        handle.write(json.dumps(pi_run, separators=(",", ":")) + "\n")
    before = len(ledger_rows(ours))
    assert do_import(str(ours)) == 0
    added = ledger_rows(ours)[before:]
    assert [(r["type"], r["pi_run"], r["description"]) for r in added] == [
        ("imported", 99, "tie embeddings")]
    assert "autogolf's own" in capsys.readouterr().out


def test_export_refuses_to_overwrite_pi_runs_the_ledger_lacks(ours, capsys):
    do_export()
    log = ours / ".auto" / "log.jsonl"
    with log.open("a") as handle:
        handle.write(PI_LOG.read_text().splitlines()[3] + "\n")
    before = log.read_bytes()
    assert do_export("--force") == 2
    assert "autogolf import --format pi" in capsys.readouterr().err
    assert log.read_bytes() == before
    do_import(str(ours))
    assert do_export("--force") == 0  # now every pi run is in the ledger


def test_append_adds_after_pis_lines_only_the_runs_the_log_lacks(ours):
    rows = Ledger(LEDGER).rows()
    later = "20261124-0030"
    (ours / ".autogolf" / "ledger.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows if r.get("session") != later))
    do_export()  # the first night, then pi's own run
    log = ours / ".auto" / "log.jsonl"
    with log.open("a") as handle:
        handle.write(PI_LOG.read_text().splitlines()[3] + "\n")
    before, seen = log.read_text(), pilog.read_log(log)
    shutil.copy(LEDGER, ours / ".autogolf" / "ledger.jsonl")  # the second night
    assert do_export("--append") == 0
    text = log.read_text()
    assert text.startswith(before)  # pi's history untouched
    added = [json.loads(line) for line in text[len(before):].splitlines()]
    assert added[0]["type"] == "config" and added[0]["autogolf"]["session"] == later
    second = {r.get("id") for r in rows if r.get("session") == later}
    assert {r["autogolf"]["id"] for r in added[1:]} <= second
    assert [r["run"] for r in added[1:]] == list(range(seen.max_run + 1, seen.max_run + len(added)))
    runs = pilog.read_log(log).runs[len(seen.runs):]
    assert {r.segment for r in runs} == {seen.segment + 1} == {r["segment"] for r in added[1:]}


def test_append_to_a_corrupt_log_writes_nothing(ours, capsys):
    log = ours / ".auto" / "log.jsonl"
    log.parent.mkdir()
    log.write_text('{"type":"config"}\n{"run": 1,\n')
    assert do_export("--append") == 2
    assert "line 2: not JSON" in capsys.readouterr().err
    assert log.read_text() == '{"type":"config"}\n{"run": 1,\n'


def test_export_beside_flat_session_files_writes_the_flat_log(ours):
    (ours / "autoresearch.md").write_text("# session\n")
    assert do_export() == 0
    assert (ours / "autoresearch.jsonl").is_file() and not (ours / ".auto").exists()


def test_export_into_a_dot_auto_session_writes_its_log(ours):
    (ours / "autoresearch.md").write_text("# session\n")
    (ours / ".auto").mkdir()
    (ours / ".auto" / "measure.sh").write_text("echo METRIC val_bpb=1\n")
    assert do_export() == 0
    assert (ours / ".auto" / "log.jsonl").is_file() and not (ours / "autoresearch.jsonl").exists()


def test_forcing_dot_auto_beside_flat_files_warns_what_pi_will_miss(ours, capsys):
    (ours / "autoresearch.md").write_text("# session\n")
    assert do_export("--layout", "auto") == 0
    err = capsys.readouterr().err
    assert ".auto/prompt.md" in err and ".auto/measure.sh" in err


# --------------------------------------------------------------------------- the agent


def test_the_agent_prompt_lists_pis_runs_under_their_own_heading(repo, tmp_path):
    do_import(str(repo))
    agent = AgentProposer(["true"], 10, tmp_path / "work", imported=lambda: _imported(repo))
    prompt = agent.build_prompt(repo, [], None, None, tmp_path / "summary.txt")
    heading = "## Tried in pi-autoresearch (imported: pi's own numbers, not judged here"
    section = prompt.split(heading, 1)[1].split("\n## ", 1)[0]
    assert "P0002 pi discard val_bpb=2.0612: tie embeddings - tied input/output" in section
    assert "P0003 pi crash: MLP ratio 4 - wider MLP / out of memory at step 12" in section
    incumbents = prompt.split("## Incumbents", 1)[1].split("\n## ", 1)[0]
    assert "None measured yet" in incumbents  # pi's keeps are not our incumbent


def test_without_imported_runs_the_prompt_has_no_pi_section(tmp_path):
    agent = AgentProposer(["true"], 10, tmp_path / "work", imported=lambda: [])
    prompt = agent.build_prompt(tmp_path, [], None, None, tmp_path / "summary.txt")
    assert "pi-autoresearch" not in prompt


# --------------------------------------------------------------------------- pi's own code


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_pis_own_reader_reads_our_export_where_we_put_it():
    """bench/pi_reader_check.py with pi's checkout in AUTOGOLF_PI_CHECKOUT (e.g. v1.6.2)."""
    checkout = os.environ.get("AUTOGOLF_PI_CHECKOUT")
    if not checkout:
        pytest.skip("set AUTOGOLF_PI_CHECKOUT to a pi-autoresearch checkout")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "pi_reader_check.py"),
                           "--pi", checkout], capture_output=True, text=True, timeout=120)
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr
