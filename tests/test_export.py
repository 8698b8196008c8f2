"""`autogolf export --format pi`: the ledger in pi-autoresearch's session log layout (pi 1.6.2)."""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from loop.store.statuses import NAMES as STATUSES
from loop.ui import report_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEDGER = FIXTURES / "ledger_all_statuses.jsonl"
RUN_KEYS = {"run", "commit", "metric", "metrics", "status", "description", "timestamp",
            "segment", "confidence", "asi", "autogolf"}
PI_STATUSES = {"keep", "discard", "crash", "checks_failed"}


def load_rows() -> list[dict]:
    with LEDGER.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return report_cli.pi_records(load_rows(), "breadth")


def runs(records: list[dict]) -> dict[str, dict]:
    return {r["autogolf"]["id"]: r for r in records if r.get("type") != "config"}


# --------------------------------------------------------------------------- layout


def test_file_starts_with_a_config_header(records):
    header = records[0]
    assert header["type"] == "config"
    assert (header["metricName"], header["bestDirection"]) == ("val_bpb", "lower")
    assert isinstance(header["name"], str) and "metricUnit" in header


def test_each_session_opens_its_own_segment(records):
    configs = [i for i, r in enumerate(records) if r.get("type") == "config"]
    assert [records[i]["autogolf"]["session"] for i in configs] == ["20261123-0105",
                                                                   "20261124-0030"]
    second = configs[1]
    assert {r["segment"] for r in records[1:second]} == {0}
    assert {r["segment"] for r in records[second + 1:]} == {1}


def test_run_lines_have_exactly_pi_fields_plus_ours(records):
    for record in runs(records).values():
        assert set(record) == RUN_KEYS


def test_runs_are_numbered_from_one_across_the_file(records):
    numbers = [r["run"] for r in records if r.get("type") != "config"]
    assert numbers == list(range(1, len(numbers) + 1))


def test_field_types(records):
    for record in runs(records).values():
        assert record["status"] in PI_STATUSES
        assert record["metric"] is None or isinstance(record["metric"], float)
        assert isinstance(record["metrics"], dict) and isinstance(record["description"], str)
        assert isinstance(record["timestamp"], int) and isinstance(record["segment"], int)
        assert record["commit"] is None or len(record["commit"]) == 7


def test_timestamp_is_milliseconds_since_the_epoch(records):
    expected = datetime(2026, 11, 23, 1, 8, 47, tzinfo=timezone.utc).timestamp() * 1000
    assert runs(records)["E0001"]["timestamp"] == int(expected)


# --------------------------------------------------------------------------- statuses


@pytest.mark.parametrize("exp_id, ours, theirs", [
    ("E0001", "keep", "keep"), ("E0002", "keep", "keep"), ("E0004", "discard", "discard"),
    ("E0005", "crash", "crash"), ("E0006", "timeout", "crash"),
    ("E0007", "checks_failed", "checks_failed"), ("E0008", "over_cap", "checks_failed"),
    ("E0009", "forbidden_edit", "checks_failed"), ("E0010", "invalid_metric", "crash"),
    ("E0011", "metric_mismatch", "crash"), ("E0012", "duplicate", "discard"),
    ("E0015", "interrupted", "crash"),
])
def test_status_maps_onto_pi_and_ours_is_kept(records, exp_id, ours, theirs):
    record = runs(records)[exp_id]
    assert (record["status"], record["autogolf"]["status"]) == (theirs, ours)


def test_every_status_has_a_pi_mapping():
    assert set(report_cli.PI_STATUS) == set(STATUSES)
    assert set(report_cli.PI_STATUS.values()) == PI_STATUSES


# --------------------------------------------------------------------------- values


def test_metric_is_val_bpb_at_the_exported_profile(records):
    assert runs(records)["E0002"]["metric"] == 1.97010544


def test_failed_runs_have_a_null_metric_never_zero(records):
    for exp_id in ("E0005", "E0006", "E0010", "E0011", "E0015", "E0007"):
        assert runs(records)[exp_id]["metric"] is None, exp_id
        assert runs(records)[exp_id]["metrics"] == {}, exp_id


def test_metrics_map_has_the_other_metric_values_unchanged(records):
    metrics = runs(records)["E0002"]["metrics"]
    assert metrics["total_bytes"] == 4812345 and isinstance(metrics["total_bytes"], int)
    assert "val_bpb" not in metrics and "wall_s" not in metrics and "log" not in metrics


def test_commit_is_the_kept_commit_else_the_incumbent_tested_on(records):
    rows = {r.get("id"): r for r in load_rows()}
    assert runs(records)["E0002"]["commit"] == rows["E0002"]["commit"][:7]
    assert runs(records)["E0004"]["commit"] == rows["E0004"]["base_commit"][:7]


def test_only_the_exported_profile_is_included():
    confirm = runs(report_cli.pi_records(load_rows(), "confirm"))
    assert set(confirm) == {"E0003", "E0002", "E0013", "E0014"}
    assert confirm["E0002"]["metric"] == 1.9590021


def test_failures_before_any_benchmark_belong_to_the_first_rung(records):
    assert {"E0007", "E0009", "E0012"} <= set(runs(records))


def test_manual_runs_are_not_exported(records):
    assert "E0016" not in runs(records)


def test_default_profile_is_the_first_rung_of_the_ladder():
    assert report_cli.default_profile(load_rows()) == "breadth"


# --------------------------------------------------------------------------- confidence


def test_confidence_is_best_improvement_over_mad():
    # median 1.95, absolute deviations 0.05, 0.05, 0 -> MAD 0.05; improvement 2.0 - 1.9.
    assert report_cli.confidence([2.0, 1.9, 1.95], kept=[2.0, 1.9]) == pytest.approx(2.0)


def test_confidence_is_unknown_below_three_values():
    assert report_cli.confidence([2.0, 1.9], kept=[2.0, 1.9]) is None


def test_confidence_is_unknown_when_mad_is_zero():
    assert report_cli.confidence([2.0, 2.0, 2.0, 1.9], kept=[2.0]) is None


def test_confidence_of_early_runs_is_null(records):
    first = [r for r in records if r.get("type") != "config"][:2]
    assert [r["confidence"] for r in first] == [None, None]


# --------------------------------------------------------------------------- the verb


def _export_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report_cli.add_export_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".autogolf").mkdir()
    shutil.copy(LEDGER, tmp_path / ".autogolf" / "ledger.jsonl")
    return tmp_path


def test_export_writes_one_json_object_per_line(workspace, capsys):
    assert report_cli.export_main(_export_args("--format", "pi")) == 0
    out = workspace / ".auto" / "log.jsonl"  # no session files here: pi 1.6's own layout
    assert capsys.readouterr().out.strip() == str(out)
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == report_cli.pi_records(load_rows(), "breadth")


def test_export_never_overwrites_without_force(workspace, capsys):
    existing = workspace / "autoresearch.jsonl"
    existing.write_text('{"type": "config", "name": "pi own session"}\n')
    assert report_cli.export_main(_export_args()) == 2
    assert "--force" in capsys.readouterr().err
    assert existing.read_text().startswith('{"type": "config", "name": "pi own')
    assert report_cli.export_main(_export_args("--force")) == 0


def test_export_to_stdout(workspace, capsys):
    assert report_cli.export_main(_export_args("--out", "-", "--profile", "confirm")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["type"] == "config"


def test_export_without_a_ledger_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert report_cli.export_main(_export_args()) == 2
    assert "no ledger at" in capsys.readouterr().err


def test_confidence_without_an_improvement_is_null_as_pi_writes_it():
    assert report_cli.confidence([2.0, 1.9, 1.95, 2.1], kept=[2.0]) is None


def test_each_run_carries_pis_hypothesis_and_rollback_reason(records):
    runs = [r for r in records if "run" in r]
    kept = next(r for r in runs if r["autogolf"]["status"] == "keep")
    dropped = next(r for r in runs if r["autogolf"]["status"] == "discard")
    assert kept["asi"] == {"hypothesis": kept["description"], "rollback_reason": None}
    assert dropped["asi"]["rollback_reason"] == dropped["autogolf"]["reason"]


def test_every_status_of_ours_maps_to_a_status_pi_knows():
    from loop.store.statuses import PI_STATUSES
    from loop.store.statuses import STATUSES as TABLE

    assert {s.pi for s in TABLE.values()} == set(PI_STATUSES)
