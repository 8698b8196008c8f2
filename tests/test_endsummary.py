"""The end-of-run summary and the macOS notification."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from loop.ui import endsummary

LEDGER = Path(__file__).resolve().parent / "fixtures" / "ledger_all_statuses.jsonl"
FIRST, SECOND = "20261123-0105", "20261124-0030"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with LEDGER.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------- summary


def test_summary_counts_experiments_and_keeps_apart_from_baselines(rows):
    first = endsummary.end_of_run_summary(rows, FIRST).splitlines()[0]
    assert "13 experiments run, 2 kept" in first and "2 baseline run(s)" in first


def test_summary_names_the_other_outcomes(rows):
    first = endsummary.end_of_run_summary(rows, FIRST).splitlines()[0]
    assert "2 discard" in first and "1 crash" in first and "1 timeout" in first


def test_summary_shows_best_val_bpb_per_profile_against_the_start(rows):
    text = endsummary.end_of_run_summary(rows, FIRST)
    assert "breadth: best 1.9570 (E0014) vs start 1.9812 (E0001): -0.0242" in text
    assert "confirm: best 1.9552 (E0014) vs start 1.9650 (E0003): -0.0098" in text


def test_summary_time_used_of_rows_without_time_s_is_the_sum_of_rung_wall_s(rows):
    # 214.1 + 213.0 + 212.6 + 240.2 + 4 x 213.0 (E0025-E0028) + 130.5 (E0029, pruned)
    # seconds of benchmarks in the second session (rows written before `time_s`).
    assert "time used: 31m 02s (benchmark runs" in endsummary.end_of_run_summary(rows, SECOND)


def test_summary_time_used_counts_every_seed_and_the_incumbents_runs(rows):
    # A sequential decision: the first run (its rung's wall_s) is a third of its runs.
    row = dict(next(r for r in rows if r.get("id") == "E0004"),
               time_s={"propose": 5.0, "checks": 2.0, "screen": 211.0, "repeats": 400.0,
                       "incumbent": 600.0, "judge": 30.0})
    text = endsummary.end_of_run_summary([rows[0], row], FIRST)
    assert "time used: 20m 11s (benchmark runs: every seed, the incumbent's too)" in text


def test_summary_says_why_it_stopped(rows):
    assert "stopped: reached --max-experiments 2" in endsummary.end_of_run_summary(rows, SECOND)


def test_summary_defaults_to_the_latest_session(rows):
    assert endsummary.end_of_run_summary(rows, None).startswith(f"session {SECOND}:")


def test_summary_leaves_out_other_sessions_and_manual_runs(rows):
    text = endsummary.end_of_run_summary(rows, SECOND)
    assert "confirm" not in text and "smoke" not in text and "E0014" not in text


def test_summary_without_a_valid_measurement_says_so_not_zero(rows):
    header = rows[0]
    crash = next(r for r in rows if r.get("id") == "E0005")
    text = endsummary.end_of_run_summary([header, crash], FIRST)
    assert "breadth: best unknown (-) vs start unknown (-): unknown" in text
    assert "0.0000" not in text


def _without_wall_s(row: dict) -> dict:
    return dict(row, rungs={p: {"exit_code": 1} for p in row["rungs"]})


def test_summary_time_is_unknown_when_no_run_says_its_duration(rows):
    crash = _without_wall_s(next(r for r in rows if r.get("id") == "E0005"))
    text = endsummary.end_of_run_summary([rows[0], crash], FIRST)
    assert "time used: unknown (benchmark runs" in text


def test_summary_counts_unknown_durations_apart(rows):
    crash = _without_wall_s(next(r for r in rows if r.get("id") == "E0005"))
    discard = next(r for r in rows if r.get("id") == "E0004")
    text = endsummary.end_of_run_summary([rows[0], discard, crash], FIRST)
    assert "time used: 3m 31s (+1 run(s) of unknown duration)" in text


# --------------------------------------------------------------------------- notify


def test_notify_does_nothing_off_macos(monkeypatch):
    monkeypatch.setattr(endsummary, "_on_macos", lambda: False)
    monkeypatch.setattr(endsummary.subprocess, "run", _must_not_run)
    endsummary.notify("autogolf", "done")


def test_notify_does_nothing_without_osascript(monkeypatch):
    monkeypatch.setattr(endsummary, "_on_macos", lambda: True)
    monkeypatch.setattr(endsummary.shutil, "which", lambda name: None)
    monkeypatch.setattr(endsummary.subprocess, "run", _must_not_run)
    endsummary.notify("autogolf", "done")


def test_notify_displays_a_notification_through_osascript(monkeypatch):
    calls = _fake_macos(monkeypatch)
    endsummary.notify('autogolf "night"', "2 kept\\3 failed")
    assert calls == [["/usr/bin/osascript", "-e",
                      'display notification "2 kept\\\\3 failed" '
                      'with title "autogolf \\"night\\""']]


def test_notify_swallows_osascript_failures(monkeypatch):
    _fake_macos(monkeypatch)

    def broken(*args, **kwargs):
        raise subprocess.TimeoutExpired("osascript", 10)

    monkeypatch.setattr(endsummary.subprocess, "run", broken)
    endsummary.notify("autogolf", "done")  # no exception: a notification is a courtesy


def _must_not_run(*args, **kwargs):
    raise AssertionError("no process may be started here")


def _fake_macos(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(endsummary, "_on_macos", lambda: True)
    monkeypatch.setattr(endsummary.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(endsummary.subprocess, "run",
                        lambda cmd, **kwargs: calls.append(cmd))
    return calls


def test_summary_says_where_the_sessions_time_went():
    rows = [{"type": "session", "session": "S", "timestamp": "2026-12-01T23:00:00+00:00"},
            {"type": "experiment", "id": "E0001", "session": "S", "baseline": True,
             "status": "keep", "rungs": {}, "time_s": {"screen": 60.0}},
            {"type": "experiment", "id": "E0002", "session": "S", "status": "discard",
             "rungs": {}, "time_s": {"propose": 30.0, "screen": 120.0, "repeats": 600.0,
                                     "incumbent": 300.0, "judge": 45.0, "checks": 5.0}},
            {"type": "stop", "session": "S", "timestamp": "2026-12-01T23:30:00+00:00",
             "reason": "done"}]
    text = endsummary.end_of_run_summary(rows, "S")
    assert ("where the time went: more seeds / re-runs 10m 00s, incumbent runs 5m 00s, first "
            "runs 2m 00s, baselines 1m 00s, the judge's scoring 45s, proposing 30s, checks 5s; "
            "30m 00s from start to stop; 2.0 experiments per hour") in text


def test_experiments_per_hour_count_candidates_only_and_are_unknown_without_times():
    from loop.ui import report

    header = {"type": "session", "timestamp": "2026-12-01T23:00:00+00:00"}
    rows = [{"type": "experiment", "id": f"E{n}", "baseline": n == 0, "status": "discard",
             "timestamp": f"2026-12-01T23:{15 * n:02d}:00+00:00"} for n in range(4)]
    assert report.experiments_per_hour(header, rows) == 3 / 0.75  # 3 candidates in 45 min
    assert report.experiments_per_hour({}, rows) is None
    assert report.fmt_rate(None) == "unknown"


def test_summary_leaves_out_the_split_when_no_row_recorded_it(rows):
    assert "where the time went" not in endsummary.end_of_run_summary(rows, FIRST)
def agent_row(exp_id: str, **attempt) -> dict:
    return {"type": "experiment", "id": exp_id, "session": "s", "status": "discard",
            "proposer": "agent", "rungs": {}, "agent": {"outcome": "agent_ok", **attempt}}


def test_summary_says_what_the_agent_spent_with_unknown_cost_when_none_was_reported(rows):
    text = endsummary.end_of_run_summary(rows, SECOND)
    assert ("  agent: 4 attempt(s), 50s of agent time, 0 retries after rate limits (0s waited);"
            " cost and tokens unknown (the agent CLI reported none)") in text


def test_summary_sums_the_reported_cost_and_tokens_and_names_the_unreported():
    session = [{"type": "session", "session": "s"},
               agent_row("E0001", wall_s=100, tries=3, retries=2, waited_s=90,
                         usage={"cost_usd": 0.25, "input_tokens": 1000, "output_tokens": 200}),
               agent_row("E0002", wall_s=20, usage=None)]
    text = endsummary.end_of_run_summary(session, "s")
    assert ("agent: 2 attempt(s), 2m 00s of agent time, 2 retries after rate limits (1m 30s "
            "waited); cost $0.25, tokens 1,200; 1 attempt(s) reported nothing, unknown for "
            "them") in text


def test_summary_has_no_agent_line_without_agent_attempts(rows):
    assert "agent:" not in endsummary.end_of_run_summary(rows, FIRST)
