"""The loop (loop.daemon.scheduler) and the verbs (loop.ui.cli) against a FAKE benchmark.

Each test builds a small git repo whose benchmark is `fakebench.py`: it prints the trainer's
log lines (SPEC section 3, so the daemon's own parser reads them) and METRIC lines at once,
with val_bpb = 1.0 + 0.1 * ln(LR / 0.05)^2 - BONUS_<PROFILE> + seeded noise of +-0.0001,
knobs read from `knobs.sh`. `MODE=crash|hang|nan|mismatch|nometric` makes it fail one way.
Most tests drive the scheduler in-process with a scripted proposer (so the outcome of every
experiment is known); the kill tests run a real process and SIGKILL it at a stage.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from scheduler_helpers import (
    WIN_BOTH,
    WIN_BREADTH_LOSE_CONFIRM,
    Scripted,
    assert_recovered,
    baselines,
    branch_head,
    candidates,
    cli,
    commit_files,
    fake_runs,
    git,
    kill_at,
    resume,
    rows,
    run_daemon,
    session_of,
    start_driver,
    wait_for,
    worktree,
)

from loop.config import load_config
from loop.daemon import scheduler
from loop.daemon.lock import DaemonLock
from loop.daemon.stoprules import deadline_from, expected_cost_s
from loop.errors import UserError
from loop.proposers import Proposal
from loop.store.ledger import Ledger

# --------------------------------------------------------------------------- the ladder


def test_first_run_measures_the_incumbent_at_the_first_rung_only(repo):
    run_daemon(repo, {"BONUS_BREADTH": -0.01})  # loses at breadth: never reaches confirm
    assert [(r["status"], r["reason"], list(r["rungs"])) for r in baselines(repo)] == [
        ("keep", "baseline", ["breadth"])]
    assert baselines(repo)[0]["commit"] == git(repo, "rev-parse", "HEAD")


def test_breadth_winner_is_promoted_and_kept_when_it_also_wins_confirm(repo):
    start = git(repo, "rev-parse", "HEAD")
    run_daemon(repo, WIN_BOTH)
    [row] = candidates(repo)
    assert row["status"] == "keep"
    assert list(row["rungs"]) == ["breadth", "confirm"]
    assert row["commit"] == branch_head(repo) != start
    assert git(repo, "rev-parse", f"{row['commit']}^") == start


def test_confirm_baseline_is_measured_when_a_candidate_first_reaches_confirm(repo):
    run_daemon(repo, {"BONUS_BREADTH": -0.01}, WIN_BOTH)
    ids = [(r["id"], r.get("baseline"), list(r["rungs"])) for r in rows(repo)
           if r.get("type") == "experiment"]
    # E0004 (the confirm baseline) is measured while E0003 waits, so it is written first.
    assert ids == [("E0001", True, ["breadth"]), ("E0002", False, ["breadth"]),
                   ("E0004", True, ["confirm"]), ("E0003", False, ["breadth", "confirm"])]


def test_breadth_winner_that_loses_at_confirm_is_not_kept(repo):
    start_head = git(repo, "rev-parse", "HEAD")
    run_daemon(repo, WIN_BREADTH_LOSE_CONFIRM)
    [row] = candidates(repo)
    assert row["status"] == "discard"
    assert row["reason"].startswith("at confirm:")
    assert row["commit"] is None
    assert branch_head(repo) == start_head
    assert git(worktree(repo), "status", "--porcelain") == ""


def test_keep_commit_message_has_the_description_and_a_metrics_trailer(repo):
    run_daemon(repo, WIN_BOTH)
    message = git(repo, "log", "-1", "--format=%B", branch_head(repo))
    assert message.splitlines()[0] == "BONUS_BREADTH=0.01 BONUS_CONFIRM=0.01"
    assert "Autogolf-Experiment: E0002" in message
    assert "Autogolf-Breadth: val_bpb=" in message and "Autogolf-Confirm: val_bpb=" in message


def test_incumbent_after_a_keep_is_the_kept_score(repo):
    run_daemon(repo, WIN_BOTH, {"BONUS_BREADTH": 0.011, "BONUS_CONFIRM": 0.011})
    first, second = candidates(repo)
    assert second["status"] == "discard"  # 0.011 better than the start, 0.001 than the keep
    assert second["incumbent_before"]["breadth"] == first["rungs"]["breadth"]["val_bpb"]


def test_every_attempt_saves_its_patch_and_benchmark_log(repo):
    run_daemon(repo, {"BONUS_BREADTH": -0.01})
    [row] = candidates(repo)
    patch = repo / row["patch"]
    assert patch == repo / ".autogolf/experiments/E0002/patch.diff"
    assert "+BONUS_BREADTH=-0.01" in patch.read_text()
    assert "val_bpb" in (repo / row["rungs"]["breadth"]["log"]).read_text()


def test_full_runs_after_every_n_keeps_and_is_recorded_apart(repo):
    run_daemon(repo, WIN_BOTH, full_every_keeps=1, ladder=("breadth",))
    full = [r for r in baselines(repo) if "full" in r["rungs"]]
    assert len(full) == 1 and full[0]["commit"] == branch_head(repo)
    assert "full" not in candidates(repo)[0]["rungs"]


# --------------------------------------------------------------------------- statuses


def test_same_diff_on_the_same_incumbent_is_a_duplicate_and_not_rerun(repo, tmp_path):
    lose = {"BONUS_BREADTH": -0.01}
    run_daemon(repo, lose, lose)
    first, second = candidates(repo)
    assert (first["status"], second["status"]) == ("discard", "duplicate")
    assert "E0002" in second["reason"]
    assert second["rungs"] == {}
    assert len([r for r in fake_runs(tmp_path) if r.startswith("E0003")]) == 0


def test_edit_outside_the_editable_set_is_forbidden_and_undone(repo, tmp_path):
    run_daemon(repo, {"file": "fakebench.py", "text": "print('METRIC val_bpb=0.1')\n"})
    [row] = candidates(repo)
    assert row["status"] == "forbidden_edit" and "fakebench.py" in row["reason"]
    assert git(worktree(repo), "status", "--porcelain") == ""
    assert "fakebench.py" in (repo / row["patch"]).read_text()  # the attempt is kept anyway


@pytest.mark.parametrize("mode, status", [
    ("crash", "crash"), ("nan", "crash"), ("mismatch", "metric_mismatch"),
    ("nometric", "invalid_metric"),
])
def test_failed_benchmark_is_recorded_with_its_status(repo, mode, status):
    run_daemon(repo, {"MODE": mode})
    [row] = candidates(repo)
    assert row["status"] == status
    assert row["rungs"]["breadth"].get("val_bpb") is None  # no score accepted: never 0
    assert git(worktree(repo), "status", "--porcelain") == ""


def test_benchmark_past_its_profile_timeout_is_a_timeout(repo):
    cfg = load_config(repo / "autogolf.yaml")
    profiles = dict(cfg.profiles)
    profiles["breadth"] = dataclasses.replace(profiles["breadth"], timeout_s=2)
    run_daemon(repo, {"MODE": "hang"}, profiles=profiles)
    [row] = candidates(repo)
    assert row["status"] == "timeout" and row["rungs"]["breadth"]["timed_out"]
    assert row["rungs"]["breadth"]["wall_s"] < 30  # stopped, not the hang's 60 s


def test_failing_checks_skip_the_benchmark(repo, tmp_path):
    run_daemon(repo, {"CHECKS": "fail"})
    [row] = candidates(repo)
    assert row["status"] == "checks_failed"
    assert not any(r.startswith("E0002") for r in fake_runs(tmp_path))
    assert (repo / ".autogolf/experiments/E0002/checks.log").exists()


def test_over_the_artifact_cap_is_over_cap(repo):
    run_daemon(repo, {"SIZE": 16_000_000, "BONUS_BREADTH": 0.01})
    assert candidates(repo)[0]["status"] == "over_cap"


# (The ideas backlog through the scheduler: tests/test_scheduler_ideas.py.)


# --------------------------------------------------------------------------- stop rules


def test_max_experiments_stops_the_run_and_writes_a_stop_row(repo):
    reason = run_daemon(repo, *[{"BONUS_BREADTH": -0.01 * i} for i in range(1, 6)],
                        max_experiments=2)
    assert len(candidates(repo)) == 2
    last = rows(repo)[-1]
    assert (last["type"], last["reason"]) == ("stop", reason)
    assert "max-experiments" in reason


def test_stop_file_ends_the_experiment_in_flight_before_its_first_run_and_is_consumed(repo):
    def touch_stop(worktree: Path) -> Proposal:
        (repo / ".autogolf" / "STOP").touch()
        (worktree / "notes.md").write_text("tried\n")
        return Proposal("notes", None)

    reason = run_daemon(repo, {"BONUS_BREADTH": -0.01}, touch_stop, {"BONUS_BREADTH": -0.02})
    assert len(candidates(repo)) == 2
    assert candidates(repo)[-1]["status"] == "interrupted"  # its patch kept, never run
    assert candidates(repo)[-1]["rungs"] == {}
    assert "stop file" in reason
    assert not (repo / ".autogolf" / "STOP").exists()


def test_consecutive_failures_stop_the_run(repo):
    reason = run_daemon(repo, *[{"MODE": "crash", "LR": 0.04 + i / 1000} for i in range(6)])
    assert [r["status"] for r in candidates(repo)] == ["crash"] * 3
    assert "3 consecutive failures" in reason


def test_every_kind_of_failure_counts_toward_the_stop_and_the_reason_names_them(repo):
    forbidden = {"file": "fakebench.py", "text": "print()\n"}
    reason = run_daemon(repo, forbidden, {"MODE": "crash"}, {"MODE": "nometric"},
                        {"BONUS_BREADTH": -0.01})
    assert [r["status"] for r in candidates(repo)] == [
        "forbidden_edit", "crash", "invalid_metric"]
    assert reason.startswith("3 consecutive failures (forbidden_edit, crash, invalid_metric)")


def test_a_failure_streak_is_reset_by_a_measured_result(repo):
    crash = [{"MODE": "crash", "LR": 0.04 + i / 1000} for i in range(1, 5)]
    run_daemon(repo, crash[0], crash[1], {"BONUS_BREADTH": -0.01}, crash[2], crash[3])
    assert len(candidates(repo)) == 5  # 2 failures, a discard, 2 failures: never 3 in a row


def test_until_is_the_next_such_local_time():
    from datetime import datetime

    now = datetime(2026, 11, 23, 23, 0).astimezone()
    deadline = datetime.fromtimestamp(deadline_from("07:30", None, now)).astimezone()
    assert (deadline.day, deadline.hour, deadline.minute) == (24, 7, 30)
    assert deadline_from("07:30", 1, now) == (now.timestamp() + 3600)
    with pytest.raises(UserError, match="HH:MM"):
        deadline_from("7pm", None, now)


def test_a_crashing_incumbent_stops_the_run_before_any_candidate(repo):
    (repo / "knobs.sh").write_text("LR=0.04\nMODE=crash\n")
    git(repo, "commit", "-qam", "broken")
    done = cli(repo, "run", "--max-experiments", "3")
    assert done.returncode == 1
    assert [r["status"] for r in baselines(repo)] == ["crash"] and candidates(repo) == []
    assert "failed its breadth baseline" in rows(repo)[-1]["reason"]


def test_past_deadline_starts_no_experiment(repo):
    cfg = load_config(repo / "autogolf.yaml")
    rules = scheduler.StopRules(deadline=time.time() - 1)
    reason = scheduler.Scheduler(repo, cfg, rules, proposer=Scripted({"LR": 0.05}),
                                 out=lambda s: None).run()
    assert "time limit" in reason and candidates(repo) == []


# --------------------------------------------------------------------------- sessions


def test_run_continues_the_latest_session_unless_new_session(repo):
    run_daemon(repo, WIN_BOTH)
    run_daemon(repo, {"LR": 0.041})
    assert len([r for r in rows(repo) if r.get("type") == "session"]) == 1
    assert len(baselines(repo)) == 2  # the keep made the incumbent known: no new baseline
    cfg = load_config(repo / "autogolf.yaml")
    scheduler.Scheduler(repo, cfg, scheduler.StopRules(max_experiments=0), new_session=True,
                        proposer=Scripted(), out=lambda s: None).run()
    assert len([r for r in rows(repo) if r.get("type") == "session"]) == 2


def test_users_checkout_is_never_touched(repo):
    before = (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"),
              git(repo, "branch", "--show-current"), (repo / "knobs.sh").read_text())
    run_daemon(repo, WIN_BOTH, {"BONUS_BREADTH": -0.01}, {"MODE": "crash"})
    after = (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"),
             git(repo, "branch", "--show-current"), (repo / "knobs.sh").read_text())
    assert after == before


def test_second_daemon_is_refused_while_the_lock_is_held(repo):
    with DaemonLock(repo / ".autogolf" / "lock"):
        done = cli(repo, "run", "--max-experiments", "1")
    assert done.returncode == 2
    assert str(os.getpid()) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("tag, env", [
    ("propose", {"PAUSE_AT": "propose"}),
    ("checks", {"FAKE_BLOCK": "checks"}),
    ("E0002-breadth", {"FAKE_BLOCK": "E0002-breadth"}),
    ("E0003-confirm", {"FAKE_BLOCK": "E0003-confirm"}),  # E0002's confirm baseline
])
def test_kill_before_the_decision_records_interrupted_and_restores(repo, tmp_path, tag, env):
    kill_at(repo, tmp_path, [WIN_BOTH], tag, **env)
    resume(repo)
    assert_recovered(repo, "E0002", "interrupted")
    assert branch_head(repo) == git(repo, "rev-parse", "HEAD")  # nothing was kept


def test_kill_during_the_first_baseline_records_it_interrupted_and_measures_it_again(
        repo, tmp_path):
    kill_at(repo, tmp_path, [WIN_BOTH], "E0001-breadth", FAKE_BLOCK="E0001-breadth")
    resume(repo)
    assert [(r["id"], r["status"]) for r in baselines(repo)][:2] == [
        ("E0001", "interrupted"), ("E0002", "keep")]
    assert_recovered(repo, "E0001", "interrupted")


def test_kill_during_the_confirm_baseline_records_both_as_interrupted(repo, tmp_path):
    kill_at(repo, tmp_path, [WIN_BOTH], "E0003-confirm", FAKE_BLOCK="E0003-confirm")
    resume(repo)
    baseline = next(r for r in rows(repo) if r.get("id") == "E0003")
    assert (baseline["baseline"], baseline["status"]) == (True, "interrupted")


def test_kill_after_the_commit_records_the_keep_with_that_commit(repo, tmp_path):
    kill_at(repo, tmp_path, [WIN_BOTH], "commit", PAUSE_AT="commit")
    kept = branch_head(repo)
    resume(repo)
    assert_recovered(repo, "E0002", "keep")
    assert next(r for r in rows(repo) if r.get("id") == "E0002")["commit"] == kept
    assert git(repo, "merge-base", "--is-ancestor", kept, branch_head(repo)) == ""


def test_kill_just_before_the_commit_still_keeps_the_winning_change(repo, tmp_path):
    start = git(repo, "rev-parse", "HEAD")
    kill_at(repo, tmp_path, [WIN_BOTH], "before_commit", PAUSE_AT="before_commit")
    resume(repo)
    assert_recovered(repo, "E0002", "keep")
    kept = next(r for r in rows(repo) if r.get("id") == "E0002")["commit"]
    assert git(repo, "rev-parse", f"{kept}^") == start
    assert "+BONUS_CONFIRM=0.01" in git(repo, "show", kept)


def test_kill_after_the_row_is_written_duplicates_nothing(repo, tmp_path):
    kill_at(repo, tmp_path, [{"BONUS_BREADTH": -0.01}], "record", PAUSE_AT="record")
    resume(repo)
    assert_recovered(repo, "E0002", "discard")


def test_resume_kills_the_benchmark_the_killed_daemon_left_running(repo, tmp_path):
    orphan = kill_at(repo, tmp_path, [WIN_BOTH], "E0002-breadth", FAKE_BLOCK="E0002-breadth")
    assert psutil.pid_exists(orphan)
    resume(repo)
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == "zombie"


def test_sigterm_abandons_the_experiment_cleanly(repo, tmp_path):
    proc = start_driver(repo, [WIN_BOTH], 5, FAKE_BLOCK="E0002-breadth")
    wait_for(tmp_path / "signals" / "E0002-breadth", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert candidates(repo)[-1]["status"] == "interrupted"
    assert rows(repo)[-1]["type"] == "stop" and "SIGTERM" in rows(repo)[-1]["reason"]
    assert git(worktree(repo), "status", "--porcelain") == ""


# --------------------------------------------------------------------------- the verbs


def test_status_shows_the_running_experiment_and_its_stage(repo, tmp_path):
    proc = start_driver(repo, [WIN_BOTH], 1, FAKE_BLOCK="E0002-breadth")
    try:
        wait_for(tmp_path / "signals" / "E0002-breadth", proc)
        done = cli(repo, "status")
    finally:
        proc.kill()
        proc.wait()
    assert done.returncode == 0, done.stderr
    assert "running: E0002 (BONUS_BREADTH=0.01 BONUS_CONFIRM=0.01)" in done.stdout
    assert "stage benchmark:breadth" in done.stdout


def test_cli_run_with_the_search_proposer_writes_rows_and_status_shows_them(repo):
    done = cli(repo, "run", "--max-experiments", "2", "--ladder", "breadth")
    assert done.returncode == 0, done.stderr
    assert len(candidates(repo)) == 2
    assert all(r["proposer"] == "search" and r["knobs"]["LR"] != 0.04 for r in candidates(repo))
    status = cli(repo, "status")
    assert "incumbents:" in status.stdout and "E0003" in status.stdout


def test_cli_show_prints_decision_diff_and_log_tail(repo):
    run_daemon(repo, {"BONUS_BREADTH": -0.01})
    done = cli(repo, "show", "2")
    assert done.returncode == 0, done.stderr
    for text in ("E0002", "discard", "+BONUS_BREADTH=-0.01", "final_int8_zlib_roundtrip_exact"):
        assert text in done.stdout


def test_cli_bench_records_a_manual_row_and_prints_metrics(repo):
    done = cli(repo, "bench", "--profile", "breadth")
    assert done.returncode == 0, done.stderr
    [row] = [r for r in rows(repo) if r.get("manual")]
    assert row["status"] == "keep" and row["commit"] == git(repo, "rev-parse", "HEAD")
    assert "val_bpb" in done.stdout and "step 4/4" in done.stdout


def test_cli_bench_of_an_edited_checkout_saves_the_uncommitted_change(repo):
    (repo / "knobs.sh").write_text("LR=0.05\nMODE=ok\n")
    assert cli(repo, "bench", "--profile", "breadth").returncode == 0
    [row] = [r for r in rows(repo) if r.get("manual")]
    assert "+LR=0.05" in (repo / row["patch"]).read_text()
    assert row["rungs"]["breadth"]["val_bpb"] == pytest.approx(1.0, abs=2e-4)


@pytest.mark.parametrize("setup, needle", [
    (lambda repo: (repo / "autogolf.yaml").write_text("min_improvment: 0.1\n"), "min_improvment"),
    (lambda repo: subprocess.run(["git", "update-ref", "-d", "HEAD"], cwd=repo), "no commits"),
    (lambda repo: None, "no experiment E0042"),
])
def test_user_errors_are_one_line_with_exit_code_2(repo, setup, needle):
    setup(repo)
    done = cli(repo, "show", "E0042") if "E0042" in needle else cli(repo, "run")
    assert done.returncode == 2
    assert needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_missing_dataset_is_a_user_error(repo):
    done = cli(repo, "run", env={"AUTOGOLF_CACHE_ROOT": str(repo)})
    assert done.returncode == 2 and "bootstrap-parameter-golf.sh" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_deadline_stops_a_running_benchmark_and_records_interrupted(repo):
    cfg = load_config(repo / "autogolf.yaml")
    rules = scheduler.StopRules(deadline=time.time() + 8, max_consecutive_failures=3)
    steps = [{"MODE": "hang"}, {"LR": 0.05}]
    reason = scheduler.Scheduler(repo, dataclasses.replace(cfg, ladder=("breadth",)), rules,
                                 proposer=Scripted(*steps), out=lambda s: None).run()
    [row] = candidates(repo)
    assert row["status"] == "interrupted"
    assert row["reason"] == ("stopped by the time limit (--until/--hours) during the breadth "
                             "benchmark")
    assert reason == "stopped by the time limit (--until/--hours)"
    assert git(worktree(repo), "status", "--porcelain") == ""


def test_a_candidate_whose_curve_is_clearly_behind_the_incumbents_is_pruned_mid_run(repo):
    run_daemon(repo, {"LAG": 1.0}, {"LAG": 0.1, "LR": 0.049})
    pruned, close = candidates(repo)
    assert pruned["status"] == "pruned"
    assert pruned["reason"].startswith("at breadth: pruned at step 3/4: train_loss behind")
    assert "val_bpb" not in pruned["rungs"]["breadth"]  # a part run has no score
    assert close["status"] != "pruned"  # 0.1 nats behind: within the margin, it runs on


@pytest.mark.parametrize("limit", ["until", "hours"])
def test_the_deadline_stops_a_running_baseline_within_seconds_and_records_it_interrupted(
        repo, limit):
    commit_files(repo, {"knobs.sh": "LR=0.04\nBONUS_BREADTH=0\nBONUS_CONFIRM=0\nMODE=hang\n"})
    cfg = dataclasses.replace(load_config(repo / "autogolf.yaml"), ladder=("breadth",))
    rules = (scheduler.StopRules(deadline=time.time() + 4) if limit == "until"
             else scheduler.StopRules(hours=4 / 3600))  # --hours: awake time, 4 s of it
    started = time.monotonic()
    reason = scheduler.Scheduler(repo, cfg, rules, proposer=Scripted({"LR": 0.05}),
                                 out=lambda s: None).run()
    took = time.monotonic() - started
    [row] = baselines(repo)
    assert row["status"] == "interrupted"
    assert reason == "stopped by the time limit (--until/--hours)"
    assert candidates(repo) == []
    assert took < 4 + cfg.kill_grace_s + 20  # the hanging benchmark sleeps 60 s per step


def test_the_expected_cost_of_an_experiment_is_the_median_of_its_rungs_runs():
    rows = [{"rungs": {"breadth": {"wall_s": w}, "confirm": {"wall_s": 10 * w}}}
            for w in (1.0, 3.0, 2.0)]
    assert expected_cost_s(rows, ("breadth", "confirm")) == 2.0 + 20.0
    assert expected_cost_s(rows[:1], ("breadth", "full")) is None  # full never ran: unknown
    with_reruns = rows + [{"rungs": {"breadth": {"wall_s": 2.0, "run_logs": ["a", "b"]}}}]
    assert expected_cost_s(with_reruns, ("breadth",)) == 2.0 * 3  # the first run and 2 more


def test_an_experiment_that_does_not_fit_before_the_deadline_is_not_started(repo):
    run_daemon(repo, {"LR": 0.05})
    # This session's rungs took two hours each (as a real breadth may): recorded rows say so.
    ledger = Ledger(repo / ".autogolf" / "ledger.jsonl")
    for n in range(3):
        ledger.append({"type": "experiment", "id": f"E00{90 + n}", "session": session_of(repo),
                       "status": "discard", "rungs": {"breadth": {"wall_s": 7200.0},
                                                      "confirm": {"wall_s": 7200.0}}})
    cfg = load_config(repo / "autogolf.yaml")
    rules = scheduler.StopRules(deadline=time.time() + 3600)  # an hour left
    before = len(candidates(repo))
    reason = scheduler.Scheduler(repo, cfg, rules, proposer=Scripted({"LR": 0.06}),
                                 out=lambda s: None).run()
    assert reason == ("the next experiment (about 14400 s, from this session's measured runs) "
                      "does not fit before the time limit (--until/--hours)")
    assert len(candidates(repo)) == before


# --------------------------------------------------------------------------- sequential rule


def sequential_run(repo, *steps: dict, max_runs: int = 6) -> str:
    cfg = load_config(repo / "autogolf.yaml")
    cfg = dataclasses.replace(cfg, ladder=("breadth",), keep_rule_enabled=True,
                              keep_max_runs={p: max_runs for p in cfg.profiles})
    rules = scheduler.StopRules(max_experiments=len(steps), max_consecutive_failures=0)
    return scheduler.Scheduler(repo, cfg, rules, proposer=Scripted(*steps),
                               out=lambda s: None).run()


SEEDED = {"SEED_SD": 0.02, "SEED_X": 0.004}  # seed luck as on the CPU at smoke


def test_the_sequential_rule_keeps_a_clear_win_in_a_few_paired_runs(repo, tmp_path):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.05})
    [row] = candidates(repo)
    seq = row["rungs"]["breadth"]["sequential"]
    assert row["status"] == "keep" and row["reason"].startswith("at breadth: sequential (")
    assert 2 <= len(seq["seeds"]) < 6  # more than one run, fewer than the cap
    assert seq["seeds"] == list(range(1337, 1337 + len(seq["seeds"])))
    runs = "\n".join(fake_runs(tmp_path))  # the candidate and the incumbent at every seed
    for seed in seq["seeds"][1:]:
        assert f"-seed{seed}-breadth" in runs and f"-incumbent-seed{seed}-breadth" in runs


def test_the_sequential_rule_never_keeps_on_one_run(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.2})
    [row] = candidates(repo)
    assert len(row["rungs"]["breadth"]["sequential"]["seeds"]) >= 2


def test_a_decision_cut_short_keeps_its_earlier_pairs_in_the_ledger(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.05, "CRASH_SEED": "1338"})
    [row] = candidates(repo)
    assert row["status"] == "crash" and "seed 1338" in row["reason"]
    seq = row["rungs"]["breadth"]["sequential"]  # the pair at 1337 measured the spread
    assert seq["seeds"] == [1337] and seq["status"] == "crash"
    assert seq["diffs"] == [pytest.approx(seq["incumbent"][0] - seq["candidate"][0])]


def test_the_incumbents_run_at_a_seed_whose_candidate_failed_is_reused_by_the_next_decision(
        repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.05, "CRASH_SEED": "1338"},
                   {**SEEDED, "BONUS_BREADTH": 0.05, "LR": 0.05})
    crashed, second = candidates(repo)
    unpaired = crashed["rungs"]["breadth"]["sequential"]["unpaired"]
    assert crashed["status"] == "crash" and unpaired["seeds"] == [1338]
    decision = second["rungs"]["breadth"]["sequential"]
    assert decision["seeds"][:2] == [1337, 1338]
    assert decision["incumbent"][1] == unpaired["incumbent"][0]  # that run, reused
    logs = second["rungs"]["breadth"].get("run_logs") or []
    assert not any("-incumbent-seed1338." in log for log in logs)


def test_a_change_within_the_seed_noise_is_not_kept_at_the_cap(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.001}, max_runs=4)
    [row] = candidates(repo)
    assert row["status"] in ("inconclusive", "discard")
    assert len(row["rungs"]["breadth"]["sequential"]["seeds"]) <= 4  # never past the cap


def test_a_new_session_starts_from_the_spread_its_earlier_sessions_measured(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, *({**SEEDED, "BONUS_BREADTH": b} for b in (0.05, 0.10, 0.15)))
    assert [r["status"] for r in candidates(repo)] == ["keep"] * 3
    cfg = load_config(repo / "autogolf.yaml")
    cfg = dataclasses.replace(cfg, ladder=("breadth",), keep_rule_enabled=True,
                              keep_max_runs={p: 6 for p in cfg.profiles})
    scheduler.Scheduler(repo, cfg, scheduler.StopRules(max_experiments=1), new_session=True,
                        proposer=Scripted({**SEEDED, "BONUS_BREADTH": -0.05}),
                        out=lambda s: None).run()  # a new branch from your HEAD: worse than it
    first, second = {r["session"] for r in candidates(repo)}, candidates(repo)[-1]
    assert len(first) == 2 and second["status"] == "discard"
    # a clear loser, stopped after one pair by the spread the first session measured (a
    # session with no spread of its own would only have the sign screen)
    assert "futility look" in second["reason"] and "from earlier decisions" in second["reason"]


def sequential_ladder_run(repo, step: dict, max_runs: int) -> dict:
    cfg = load_config(repo / "autogolf.yaml")
    # beta and futility 0.10, no curtailment: the settings these scripted seed draws were
    # chosen under (an undecided candidate at the cap)
    cfg = dataclasses.replace(cfg, ladder=("breadth", "confirm"), keep_rule_enabled=True,
                              keep_max_runs={p: max_runs for p in cfg.profiles},
                              keep_beta=0.10, keep_futility=0.10, keep_curtail=0.0)
    rules = scheduler.StopRules(max_experiments=1, max_consecutive_failures=0)
    scheduler.Scheduler(repo, cfg, rules, proposer=Scripted(step), out=lambda s: None).run()
    [row] = candidates(repo)
    return row


def test_an_undecided_candidate_that_leans_to_a_win_is_decided_at_the_stronger_rung(repo):
    # breadth: a gain that 3 pairs cannot resolve; confirm: a clear one
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    row = sequential_ladder_run(repo, {"SEED_SD": 0.02, "SEED_X": 0.002,
                                       "BONUS_BREADTH": 0.006, "BONUS_CONFIRM": 0.1}, max_runs=3)
    breadth = row["rungs"]["breadth"]["sequential"]
    assert breadth["status"] == "inconclusive" and sum(breadth["diffs"]) > 0
    assert row["rungs"]["confirm"]["sequential"]["decision"] == "keep"
    assert row["status"] == "keep" and "promoted to the next rung" in row["reason"]


def test_an_undecided_candidate_that_leans_to_a_loss_stops_at_its_rung(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    row = sequential_ladder_run(repo, {**SEEDED, "BONUS_BREADTH": -0.001,
                                       "BONUS_CONFIRM": 0.1}, max_runs=2)
    assert row["status"] in ("inconclusive", "discard") and "confirm" not in row["rungs"]


def test_a_trainer_that_ignores_the_judges_seed_is_a_metric_mismatch(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.01, "SEED": "42"})
    [row] = candidates(repo)
    assert row["status"] in ("metric_mismatch", "protocol_drift")


def test_after_a_keep_the_next_decision_pairs_with_the_kept_candidates_own_runs(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.05},
                   {**SEEDED, "BONUS_BREADTH": 0.05, "LR": 0.05})
    kept, second = [r["rungs"]["breadth"]["sequential"] for r in candidates(repo)]
    assert kept["decision"] == "keep" and second["incumbent_id"] == candidates(repo)[0]["id"]
    shared = min(len(kept["seeds"]), len(second["seeds"]))
    assert second["seeds"][:shared] == kept["seeds"][:shared]  # one seed schedule
    assert second["incumbent"][:shared] == kept["candidate"][:shared]  # its runs, reused
    logs = candidates(repo)[1]["rungs"]["breadth"].get("run_logs") or []
    rerun = [s for s in kept["seeds"] if any(f"-incumbent-seed{s}." in log for log in logs)]
    assert rerun == []  # not run again at the seeds it was kept on
    assert kept["estimate"]["selected"] is True  # its score is flagged as optimistic


def test_each_row_says_where_its_time_went(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.05})
    [row] = candidates(repo)
    spent = row["time_s"]
    assert {"propose", "checks", "screen", "repeats", "incumbent"} <= set(spent)
    seq = row["rungs"]["breadth"]["sequential"]
    # the first run's own wall_s is the screening time; the other seeds are the repeats
    assert spent["screen"] == pytest.approx(row["rungs"]["breadth"]["wall_s"], abs=1e-3)
    assert len(seq["seeds"]) >= 2 and spent["repeats"] > 0 and spent["incumbent"] > 0


def test_the_sequential_rule_spends_no_calibration_runs_on_a_baseline(repo, tmp_path):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    cfg = load_config(repo / "autogolf.yaml")
    cfg = dataclasses.replace(cfg, ladder=("breadth",), keep_rule_enabled=True,
                              noise_runs={"breadth": 5})
    rules = scheduler.StopRules(max_experiments=1, max_consecutive_failures=0)
    scheduler.Scheduler(repo, cfg, rules, proposer=Scripted({**SEEDED, "BONUS_BREADTH": 0.3}),
                        out=lambda s: None).run()
    [base] = baselines(repo)
    assert "runs" not in base["rungs"]["breadth"] and not base.get("calibration")


def test_status_says_what_each_profile_can_resolve(repo):
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    sequential_run(repo, {**SEEDED, "BONUS_BREADTH": 0.05})
    done = cli(repo, "status")
    assert done.returncode == 0, done.stderr
    assert "what each profile can resolve" in done.stdout
    assert re.search(r"breadth\s+smallest gain confirmable in \d+ pairs: \d\.\d{4}; a gain "
                     r"of 0\.002 needs", done.stdout)


def test_a_full_request_measures_the_incumbent_at_full_on_its_own_row(repo):
    def request_full(tree: Path) -> Proposal:
        (repo / ".autogolf" / "FULL").touch()  # a person asks while E0002 is proposed
        (tree / "notes.md").write_text("asked for full\n")
        return Proposal("notes", None)

    run_daemon(repo, request_full, {"LR": 0.05}, ladder=("breadth",), max_experiments=2)
    full = [r for r in baselines(repo) if "full" in r["rungs"]]
    assert len(full) == 1 and full[0]["description"].startswith(
        "full evaluation of the incumbent on request")
    assert all(set(r["rungs"]) <= {"breadth"} for r in candidates(repo))  # never mixed
    assert not (repo / ".autogolf" / "FULL").exists()  # consumed


def test_proxy_fidelity_is_the_rank_correlation_of_breadth_and_confirm_gains():
    from loop.ui.evidence import rank_correlation, rung_gains

    rows = [{"incumbent_before": {"breadth": 1.0, "confirm": 1.0},
             "rungs": {"breadth": {"val_bpb": 1.0 - g}, "confirm": {"val_bpb": 1.0 - h}}}
            for g, h in [(0.01, 0.008), (0.02, 0.011), (0.03, 0.02), (0.04, 0.001)]]
    rows.append({"incumbent_before": {"breadth": 1.0}, "rungs": {"breadth": {"val_bpb": 0.9}}})
    pairs = rung_gains(rows, "breadth", "confirm")
    assert len(pairs) == 4  # the one without a confirm figure is left out
    assert rank_correlation(pairs) == pytest.approx(-0.2)  # ranks 0 1 2 3 vs 1 2 3 0
    assert rank_correlation(pairs[:3]) == pytest.approx(1.0)
    assert rank_correlation(pairs[:2]) is None  # too few to say
