"""What a night costs (loop/daemon/nightcost.py) and `touch .autogolf/STOP` stopping within one
run: the projection from run times measured here, shown by `status` and at the start of `run`."""

from __future__ import annotations

import dataclasses

import pytest
from scheduler_helpers import (
    Scripted,
    candidates,
    cli,
    commit_files,
    fake_runs,
    rows,
    run_daemon,
)

from loop.config import Config, load_config
from loop.daemon import nightcost, scheduler

DATASET = "sample_sp1024:abc"


def measured(profile: str, wall_s: float, **extra) -> dict:
    return {"type": "experiment", "dataset": DATASET, "rungs": {profile: {"wall_s": wall_s}},
            **extra}


# --------------------------------------------------------------------------- the projection


def test_one_run_is_the_median_of_the_runs_measured_here():
    rows_ = [measured("breadth", s) for s in (200, 260, 240)]
    [cost] = nightcost.profile_costs(rows_, Config(), ("breadth",), DATASET)
    assert (cost.run_s, cost.runs_measured) == (240, 3)


def test_a_run_includes_the_judges_scoring_when_its_row_measured_that_profile_alone():
    row = measured("breadth", 200, time_s={"screen": 200, "repeats": 200, "incumbent": 200,
                                           "judge": 60, "propose": 500})
    row["rungs"]["breadth"]["run_logs"] = ["a.log", "b.log"]
    assert nightcost.run_times([row], "breadth", DATASET) == [220.0]


def test_runs_on_another_dataset_do_not_count():
    rows_ = [measured("breadth", 200), {**measured("breadth", 900), "dataset": "other:1"}]
    [cost] = nightcost.profile_costs(rows_, Config(), ("breadth",), DATASET)
    assert cost.run_s == 200


def test_the_worst_decision_is_the_sequential_cap_of_pairs_of_two_runs():
    [cost] = nightcost.profile_costs([measured("breadth", 240)], Config(), ("breadth",), DATASET)
    assert cost.decision_runs == 2 * Config().keep_max_runs["breadth"] == 20
    assert cost.decision_s == 240 * 20


def test_under_the_margin_rule_the_worst_decision_is_one_run_and_its_reruns():
    cfg = Config(keep_rule_enabled=False, noise_rerun_close=2)
    assert nightcost.decision_runs(cfg, "breadth") == 3


def test_a_profile_never_run_here_is_unknown_with_the_command_that_measures_it():
    lines = nightcost.night_lines([], Config(), ("breadth",), DATASET)
    assert "breadth  one run unknown" in lines[1]
    assert "autogolf bench --profile breadth" in lines[1]
    assert not any("experiments" in line for line in lines)  # no guess at the night


def test_a_night_is_projected_between_every_decision_at_the_cap_and_every_one_clear():
    rows_ = [measured("breadth", 240), measured("confirm", 840)]
    lines = nightcost.night_lines(rows_, Config(), ("breadth", "confirm"), DATASET, hours=8)
    text = "\n".join(lines)
    # worst: 10 pairs x 2 x 240 s + 6 pairs x 2 x 840 s = 14,880 s; clear: 2 x 240 s = 480 s
    assert "one decision at most 10 pairs x 2 runs = 80.0 min" in text
    assert "one decision at most 6 pairs x 2 runs = 2.8 h" in text
    assert f"in 8 h: {8 * 3600 // 14880}-{8 * 3600 // 480} experiments" in text
    assert "after the run in flight (at most 14.0 min here)" in text


def test_the_sessions_own_pace_is_shown_once_it_has_experiments():
    rows_ = [measured("breadth", 240, session="s1", time_s={"screen": 240, "repeats": 360}),
             measured("breadth", 240, session="s1", time_s={"screen": 240})]
    lines = nightcost.night_lines(rows_, Config(), ("breadth",), DATASET, session="s1", hours=8)
    assert lines[-1] == ("  at this session's pace (2 experiment(s), 7.0 min each on average): "
                         "68 experiments in 8 h")


# --------------------------------------------------------------------------- status and run


def test_status_shows_what_a_night_costs_for_the_sessions_ladder(repo):
    run_daemon(repo, {"LR": 0.041}, ladder=("breadth",))
    done = cli(repo, "status")
    assert done.returncode == 0, done.stderr
    assert "what a night costs here" in done.stdout
    assert "breadth  one run " in done.stdout and "one decision at most" in done.stdout


def test_one_manual_bench_is_enough_for_status_to_project_a_night(repo):
    bench = cli(repo, "bench", "--profile", "breadth")
    assert bench.returncode == 0, bench.stdout + bench.stderr
    done = cli(repo, "status")
    assert done.returncode == 0, done.stderr
    assert "no session yet" in done.stdout
    assert "breadth  one run " in done.stdout and "(median of 1" in done.stdout
    assert "confirm  one run unknown" in done.stdout  # never run here: not guessed


def test_run_says_what_a_night_costs_before_the_first_experiment(repo):
    run_daemon(repo, {"LR": 0.041}, ladder=("breadth",))
    lines: list[str] = []
    cfg = dataclasses.replace(load_config(repo / "autogolf.yaml"), ladder=("breadth",))
    scheduler.Scheduler(repo, cfg, scheduler.StopRules(max_experiments=0), proposer=Scripted(),
                        out=lines.append).run()
    assert any(line.startswith("what a night costs here") for line in lines)
    assert any("in 8 h:" in line for line in lines)


# --------------------------------------------------------------------------- STOP


@pytest.fixture
def stop_during_the_first_candidate_run(repo, monkeypatch):
    """`touch .autogolf/STOP` while the first candidate's first run is in flight."""
    real_run = scheduler.LoopBench.run

    def run(self, exp, profile, tag="", env_extra=None, pruner=None):
        if not exp.baseline and not tag:
            (repo / ".autogolf" / "STOP").touch()
        return real_run(self, exp, profile, tag, env_extra, pruner)

    monkeypatch.setattr(scheduler.LoopBench, "run", run)
    return repo


def test_the_stop_file_ends_a_decision_after_the_run_in_flight(
        stop_during_the_first_candidate_run, tmp_path):
    repo = stop_during_the_first_candidate_run
    commit_files(repo, {"knobs.sh": "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\n"})
    cfg = dataclasses.replace(load_config(repo / "autogolf.yaml"), ladder=("breadth",),
                              keep_rule_enabled=True)
    rules = scheduler.StopRules(max_consecutive_failures=0, stop_file=repo / cfg.stop_file)
    reason = scheduler.Scheduler(repo, cfg, rules, out=lambda s: None, proposer=Scripted(
        {"SEED_SD": 0.02, "SEED_X": 0.004, "BONUS_BREADTH": 0.001}, {"LR": 0.05})).run()
    [row] = candidates(repo)
    assert row["status"] == "interrupted"
    assert "stopped by the stop file .autogolf/STOP" in row["reason"]
    assert isinstance(row["rungs"]["breadth"]["val_bpb"], float)  # the run in flight finished
    ran = [line.split()[0] for line in fake_runs(tmp_path)]
    assert ran == ["E0001-breadth", f"{row['id']}-breadth"]  # the baseline, then one run
    assert reason == "stop file .autogolf/STOP found (removed)" == rows(repo)[-1]["reason"]
    assert not (repo / ".autogolf" / "STOP").exists()
