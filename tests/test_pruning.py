"""The in-run pruner (loop/measure/pruning.py) on scripted curves: a clear loser is stopped,
a close call runs on, a curve that crosses late is never pruned, and nothing is pruned
without a comparable incumbent curve."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.measure import pruning
from loop.measure.watchdog import RunGuard

TOTAL = 30
# The incumbent's train_loss at the steps smoke logs (1-10, 20, 30).
INCUMBENT = {**{s: 7.0 - 0.1 * s for s in range(1, 11)}, 20: 5.4, 30: 5.0}


def lines(curve: dict[int, float], total: int = TOTAL) -> list[str]:
    return [f"step:{s}/{total} train_loss:{v:.4f} train_time:{10 * s}ms step_avg:10.00ms "
            "tok_s:1000" for s, v in sorted(curve.items())]


def shifted(by: dict[int, float]) -> dict[int, float]:
    """The incumbent's curve, `by[s]` nats higher at step s (0 elsewhere)."""
    return {s: v + by.get(s, 0.0) for s, v in INCUMBENT.items()}


def first_prune(curve: dict[int, float], incumbent: dict[int, float] = INCUMBENT,
                total: int = TOTAL) -> int | None:
    pruner = pruning.CurvePruner(incumbent, TOTAL)
    for line in lines(curve, total):
        if pruner.feed(line):
            return int(line.split("/")[0].split(":")[1])
    return None


def test_a_candidate_clearly_behind_at_60_percent_of_its_steps_is_pruned_there():
    assert first_prune(shifted({20: 0.6, 30: 0.6})) == 20


def test_the_prune_verdict_is_its_own_status_with_the_gaps_in_its_reason():
    pruner = pruning.CurvePruner(INCUMBENT, TOTAL)
    for line in lines(shifted({20: 0.6})):
        pruner.feed(line)
    verdict = pruner.verdict()
    assert verdict is not None and verdict.status == "pruned"
    assert verdict.reason.startswith("pruned at step 20/30") and "20: +0.600" in verdict.reason


def test_a_close_call_runs_to_the_end():
    assert first_prune(shifted({20: pruning.MARGIN * 0.9, 30: pruning.MARGIN * 0.9})) is None


def test_a_gap_before_60_percent_of_the_steps_is_never_evidence():
    # a lower embedding learning rate: 0.4 nats behind at a third of the run, ahead later
    behind_early = {s: 0.4 for s in range(1, 11)}
    assert first_prune(shifted({**behind_early, 20: -0.2, 30: -0.25})) is None


def test_a_curve_that_catches_up_after_the_first_look_is_not_pruned_later():
    # behind at the first look by less than the margin, then further behind: pruning needs
    # the margin at every look, so the first look's gap keeps it running
    assert first_prune(shifted({20: 0.1, 30: 0.6})) is None


def test_a_candidate_with_another_step_count_is_never_pruned():
    assert first_prune({s: v + 1.0 for s, v in INCUMBENT.items()}, total=40) is None


def test_steps_the_incumbent_did_not_log_are_not_compared():
    incumbent = {s: v for s, v in INCUMBENT.items() if s != 20}
    assert first_prune(shifted({20: 0.6}), incumbent) is None
    assert first_prune(shifted({20: 0.6, 30: 0.6}), incumbent) == 30


def test_a_non_finite_candidate_loss_is_left_to_the_early_abort():
    pruner = pruning.CurvePruner(INCUMBENT, TOTAL)
    assert pruner.feed("step:20/30 train_loss:nan train_time:1ms step_avg:1.00ms") is None


def test_no_pruner_without_an_incumbent_curve_reaching_the_first_look(tmp_path: Path):
    assert pruning.pruner_for(None) is None
    assert pruning.pruner_for(tmp_path / "missing.log") is None
    early_only = tmp_path / "early.log"
    early_only.write_text("\n".join(lines({s: 7.0 for s in range(1, 11)})) + "\n")
    assert pruning.pruner_for(early_only) is None
    full = tmp_path / "full.log"
    full.write_text("seed:1337\n" + "\n".join(lines(INCUMBENT)) + "\n")
    assert pruning.pruner_for(full) is not None


def test_the_run_guard_stops_a_run_the_pruner_rules_out():
    guard = RunGuard(None, None, pruner=pruning.CurvePruner(INCUMBENT, TOTAL))
    for line in lines(shifted({20: 0.6})):
        guard.on_line(line)
    assert guard.stop() and guard.verdict is not None and guard.verdict.status == "pruned"


def test_the_pruner_refuses_a_margin_or_fraction_out_of_range():
    with pytest.raises(ValueError, match="margin"):
        pruning.CurvePruner(INCUMBENT, TOTAL, margin=0.0)


def test_on_real_paired_smoke_runs_the_pruner_drops_under_2_percent_of_winning_runs(
        repo_root: Path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("pruning_bench",
                                                  repo_root / "bench" / "pruning.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    runs = json.loads((repo_root / "bench" / "data" / "pruning-curves.json").read_text())["runs"]
    base = {r["seed"]: r for r in runs.values() if r["config"] == "base"}
    wins = pruned = losses_pruned = 0
    for r in runs.values():
        if r["config"] == "base":
            continue
        won = base[r["seed"]]["val_bpb"] - r["val_bpb"] >= bench.MIN_IMPROVEMENT
        stopped = bench.replay(r, base[r["seed"]], pruning.MARGIN, pruning.MIN_FRACTION, 10)
        wins += won
        pruned += won and stopped is not None
        losses_pruned += not won and stopped is not None
    assert wins >= 50 and pruned / wins < 0.02  # measured 0 of 58 (2026-12-07)
    assert losses_pruned >= 10  # and it does stop the clear losers (11 of 62)
