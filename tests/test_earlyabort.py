"""Early abort (loop.measure.earlyabort): NaN/inf losses and runs projected past their timeout."""

from __future__ import annotations

import pytest

from loop.measure.earlyabort import Abort, EarlyAbort


def step(n: int, total: int, loss: str = "4.0000", train_ms: float | None = None) -> str:
    train = n * 100 if train_ms is None else train_ms
    return (f"step:{n}/{total} train_loss:{loss} train_time:{train:.0f}ms "
            f"step_avg:{train / max(n, 1):.2f}ms tok_s:1000")


def feed_steps(guard: EarlyAbort, total: int, seconds_per_step: float, count: int,
               first_at: float = 0.0) -> Abort | None:
    verdict = None
    for n in range(1, count + 1):
        verdict = guard.feed(step(n, total), first_at + (n - 1) * seconds_per_step)
    return verdict


@pytest.mark.parametrize("loss", ["nan", "inf", "-inf"])
def test_a_non_finite_train_loss_is_a_divergence_crash(loss):
    guard = EarlyAbort(timeout_s=100, start=0)
    assert guard.feed(step(1, 50), 1.0) is None
    verdict = guard.feed(step(2, 50, loss=loss), 2.0)
    assert verdict == Abort("crash", f"diverged: train_loss {loss} at step 2/50")
    assert guard.verdict() == verdict


def test_finite_losses_and_other_lines_never_abort():
    guard = EarlyAbort(timeout_s=100, start=0)
    lines = ["model_params:123", step(1, 10), "step:1/10 val_loss:nan val_bpb:nan "
             "train_time:1ms step_avg:1.00ms", "anything else"]
    assert all(guard.feed(line, 1.0) is None for line in lines)


def test_a_run_projected_past_its_timeout_is_stopped_as_a_timeout():
    guard = EarlyAbort(timeout_s=10, start=0)
    verdict = feed_steps(guard, total=100, seconds_per_step=1.0, count=3)
    assert verdict is not None and verdict.status == "timeout"
    assert verdict.reason.startswith("projected 99 s > timeout 10 s at step 3/100")


def test_no_projection_before_enough_step_lines():
    guard = EarlyAbort(timeout_s=10, start=0, min_steps=3)
    assert feed_steps(guard, total=1000, seconds_per_step=5.0, count=2) is None
    assert guard.projected_end() is None


def test_a_run_that_fits_is_not_stopped():
    guard = EarlyAbort(timeout_s=10, start=0)
    assert feed_steps(guard, total=100, seconds_per_step=0.05, count=20) is None
    assert guard.projected_end() == pytest.approx(0.95 + 80 * 0.05)


def test_time_before_the_first_step_is_elapsed_time_not_step_time():
    # 6 s of compilation, then fast steps: ends at ~7 s, under the 10 s timeout.
    guard = EarlyAbort(timeout_s=10, start=0)
    assert feed_steps(guard, total=100, seconds_per_step=0.01, count=5, first_at=6.0) is None
    assert guard.projected_end() == pytest.approx(6.04 + 95 * 0.01)


def test_elapsed_time_alone_can_exceed_the_timeout():
    guard = EarlyAbort(timeout_s=10, start=0)
    verdict = feed_steps(guard, total=100, seconds_per_step=0.01, count=3, first_at=12.0)
    assert verdict is not None and verdict.status == "timeout"


def test_a_trainer_wall_clock_cap_bounds_the_projection():
    guard = EarlyAbort(timeout_s=10, start=0)
    guard.feed("max_wallclock_seconds:2", 0.0)
    lines = [step(n, 1000, train_ms=n * 1000) for n in range(1, 4)]  # 1 s per step
    assert all(guard.feed(line, n * 1.0) is None for n, line in enumerate(lines))
    assert guard.projected_end() == pytest.approx(2.0)  # arrived at 2 s, cap already used


def test_a_zero_wall_clock_cap_means_no_cap():
    guard = EarlyAbort(timeout_s=10, start=0)
    guard.feed("warmdown_iters:10 max_wallclock_seconds:0", 0.0)
    verdict = feed_steps(guard, total=100, seconds_per_step=1.0, count=3)
    assert verdict is not None and verdict.status == "timeout"


def test_the_first_abort_is_kept():
    guard = EarlyAbort(timeout_s=10, start=0)
    first = guard.feed(step(1, 10, loss="nan"), 1.0)
    assert guard.feed(step(2, 10, loss="inf"), 2.0) == first
