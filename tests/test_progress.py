"""The live display of `autogolf run` / `bench` (loop.ui.progress) and the loop's events.

Progress is read from a recorded capture of a real smoke benchmark (autoresearch.sh + the MLX
trainer, tests/fixtures/smoke_bench_capture.log), replayed on a fake clock taken from the
trainer's own `train_time` figures. The scheduler's events come from a run with the fake
benchmark in tests/scheduler_helpers.py (its `repo` fixture comes through conftest).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from scheduler_helpers import (  # the fixtures `repo` and `cache_root` come from conftest
    WIN_BOTH,
    Scripted,
    cli,
)

from loop.config import load_config
from loop.daemon import scheduler
from loop.events import RunEvents
from loop.store.ledger import Ledger
from loop.ui.progress import CLEAR_LINE, LiveStatus, bar

FIXTURE = Path(__file__).parent / "fixtures" / "smoke_bench_capture.log"
_TRAIN_TIME = re.compile(r"train_time:(\d+)ms")


class Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def plain(**kw) -> tuple[LiveStatus, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return LiveStatus(out, tty=False, clock=clock, **kw), out, clock


def terminal(width: int = 200, **kw) -> tuple[LiveStatus, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return LiveStatus(out, tty=True, clock=clock, width=lambda: width, **kw), out, clock


def replay(live: LiveStatus, clock: Clock, lines: list[str], start: float = 2.0) -> None:
    """Feed captured lines; a line with train_time arrives at start + that time."""
    for line in lines:
        if m := _TRAIN_TIME.search(line):
            clock.now = max(clock.now, start + int(m.group(1)) / 1000)
        live.output_line(line)


def synthetic_steps(n: int) -> list[str]:
    return [f"step:{s}/{n} train_loss:5.0 train_time:{s * 100}ms step_avg:100.00ms"
            for s in range(1, n + 1)]


# --------------------------------------------------------------------------- the bar


@pytest.mark.parametrize(("step", "total", "expected"), [
    (0, 10, "[>         ]"),
    (5, 10, "[=====>    ]"),
    (10, 10, "[==========]"),
    (12, 10, "[==========]"),
    (3, 0, "[>         ]"),
])
def test_bar(step, total, expected):
    assert bar(step, total, width=10) == expected


# --------------------------------------------------------------------------- plain lines


def test_recorded_smoke_run_as_plain_lines_step_total_and_eta():
    live, out, clock = plain()
    live.rung_started("E0001", "smoke")
    replay(live, clock, FIXTURE.read_text().splitlines())
    lines = out.getvalue().splitlines()
    assert all(line.startswith("E0001 smoke ") for line in lines)
    # At step 20 the run had done 19 steps in 3.25 s since step 1: 10 more take ~1.7 s.
    [at_20] = [line for line in lines if "step 20/30" in line]
    assert at_20.startswith("E0001 smoke training step 20/30 (66%) ETA 2s")
    phases = [line.split()[2].rstrip(",") for line in lines]
    assert phases[0] == "training" and phases[-1] == "done"
    assert "evaluating" in phases and "exporting" in phases
    # 54 captured lines, a dozen step lines, but only one line per tenth or phase change.
    assert len(lines) <= 10


def test_plain_lines_one_per_tenth_of_the_steps():
    live, out, clock = plain()
    live.rung_started("E0003", "breadth")
    for line in synthetic_steps(1000):
        clock.now += 0.05
        live.output_line(line)
    shown = re.findall(r"step (\d+)/1000 \((\d+)%\)", out.getvalue())
    percents = [int(p) for _, p in shown]
    # The first step, then the first step of each following tenth; 100% is "evaluating".
    assert percents == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def test_plain_lines_at_least_once_a_minute_while_output_flows():
    live, out, clock = plain()
    live.rung_started("E0003", "full")
    for line in synthetic_steps(100)[:9]:  # nine steps, 40 s apart: all in the first tenth
        clock.now += 40
        live.output_line(line)
    steps = [int(s) for s in re.findall(r"step (\d+)/100", out.getvalue())]
    assert steps == [1, 3, 5, 7, 9]  # a line as soon as 60 s passed since the last one


def test_plain_lines_say_when_a_long_start_is_still_going():
    live, out, clock = plain()
    live.rung_started("E0003", "full")
    live.output_line("mlx_version:0.29.1")
    assert out.getvalue() == ""
    clock.now = 75
    live.output_line("warmup_step:20/20")
    assert out.getvalue() == "E0003 full starting, elapsed 1m15s\n"


def test_plain_experiment_start_names_the_proposer_idea_and_proposing_time():
    live, out, clock = plain()
    live.proposing("E0004", "agent")
    clock.now = 123
    live.experiment_started("E0004", "agent", "I003", "shorter warmdown")
    assert out.getvalue() == "E0004 proposed by agent idea I003 in 2m03s\n"


def test_plain_log_messages_pass_through_unchanged():
    live, out, _ = plain()
    live.rung_started("E0001", "smoke")
    live.log("E0001 keep  smoke=3.9029  baseline")
    assert out.getvalue() == "E0001 keep  smoke=3.9029  baseline\n"
    assert CLEAR_LINE not in out.getvalue()


# --------------------------------------------------------------------------- the terminal line


def status_after_replay(width: int = 200) -> tuple[LiveStatus, io.StringIO, Clock]:
    live, out, clock = terminal(width)
    live.decided("E0006", "discard", "at breadth: no better")
    live.proposing("E0007", "search")
    live.experiment_started("E0007", "search", "I003", "MATRIX_LR 0.04 -> 0.05")
    live.rung_started("E0007", "smoke")
    lines = FIXTURE.read_text().splitlines()
    replay(live, clock, lines[: next(i for i, ln in enumerate(lines) if "step:20/30" in ln) + 1])
    return live, out, clock


def test_terminal_line_has_experiment_rung_bar_eta_proposer_idea_and_last_decision():
    live, out, _ = status_after_replay()
    assert live.status_text() == (
        "E0007 smoke [=============>      ] 20/30 ETA 2s | search idea I003: MATRIX_LR 0.04 -> 0.05"
        " | last E0006 discard")
    text = out.getvalue()
    assert "\n" not in text  # rewritten in place, never scrolled
    assert text.endswith(CLEAR_LINE + live.status_text())


def test_terminal_line_is_cut_to_the_terminal_width():
    _, out, _ = status_after_replay(width=40)
    drawn = out.getvalue().split(CLEAR_LINE)[1:]
    assert drawn and all(len(d) <= 39 for d in drawn)
    assert drawn[-1] == "E0007 smoke [=============>      ] 20/3"


def test_terminal_redraws_at_most_five_times_a_second_within_a_phase():
    live, out, clock = terminal()
    live.rung_started("E0001", "breadth")
    before = out.getvalue().count(CLEAR_LINE)
    for line in synthetic_steps(100)[:50]:  # 50 steps in 0.5 s
        clock.now += 0.01
        live.output_line(line)
    draws = out.getvalue().count(CLEAR_LINE) - before
    assert 2 <= draws <= 4  # the first step, then one per 0.2 s


def test_terminal_redraws_at_once_on_a_phase_change():
    live, out, clock = terminal()
    live.rung_started("E0001", "breadth")
    live.output_line("step:10/10 train_loss:5.0 train_time:100ms step_avg:10.00ms")
    live.output_line("serialized_model_int8_zlib:123 bytes (payload:1)")  # same instant
    assert out.getvalue().endswith("E0001 breadth [====================] 10/10 exporting")


def test_terminal_messages_scroll_above_the_status_line():
    live, out, _ = status_after_replay()
    status = live.status_text()
    out.truncate(0), out.seek(0)
    live.log("E0007 wins at smoke: 3.8000 vs 3.9029")
    assert out.getvalue() == (CLEAR_LINE + "E0007 wins at smoke: 3.8000 vs 3.9029\n"
                              + CLEAR_LINE + status)


def test_terminal_close_clears_the_status_line():
    live, out, _ = status_after_replay()
    live.close()
    assert out.getvalue().endswith(CLEAR_LINE)
    live.log("summary")
    assert out.getvalue().endswith(CLEAR_LINE + "summary\n")


def test_an_extra_run_of_a_rung_is_told_apart():
    live, out, clock = plain()
    live.rung_started("E0001", "breadth", "-r2")
    live.output_line("step:1/4 train_loss:5.0 train_time:10ms step_avg:10.00ms")
    assert out.getvalue().startswith("E0001 breadth-r2 training step 1/4 (25%)")


def test_terminal_nested_baseline_then_back_to_the_candidate():
    live, _, clock = terminal()
    live.experiment_started("E0003", "search", None, "LR=0.05")
    live.rung_started("E0003", "breadth")
    live.experiment_started("E0004", "baseline", None, "baseline abc at confirm")
    live.rung_started("E0004", "confirm")
    assert live.status_text().startswith("E0004 confirm starting")
    live.decided("E0004", "keep", "baseline")
    assert live.status_text() == "E0003 | search: LR=0.05 | last E0004 keep"
    live.rung_started("E0003", "confirm")
    live.output_line("step:1/4 train_loss:5.0 train_time:10ms step_avg:10.00ms")
    assert live.status_text().startswith("E0003 confirm [=====>")


# --------------------------------------------------------------------------- the loop's events


class Recorder(RunEvents):
    def __init__(self):
        self.events: list[tuple] = []

    def proposing(self, exp_id, proposer):
        self.events.append(("proposing", exp_id, proposer))

    def experiment_started(self, exp_id, proposer, idea, description):
        self.events.append(("started", exp_id, proposer, idea, description))

    def rung_started(self, exp_id, profile, tag=""):
        self.events.append(("rung", exp_id, profile, tag))

    def output_line(self, line):
        if line.startswith("step:"):
            self.events.append(("line", line.split()[0]))

    def decided(self, exp_id, status, reason):
        self.events.append(("decided", exp_id, status))


def daemon(repo: Path, events: RunEvents, *steps: dict) -> scheduler.Scheduler:
    rules = scheduler.StopRules(max_experiments=len(steps))
    return scheduler.Scheduler(repo, load_config(repo / "autogolf.yaml"), rules,
                               proposer=Scripted(*steps), out=lambda s: None, events=events)


def train_lines(profile_steps: int = 4) -> list[tuple]:
    steps = [("line", f"step:{s}/{profile_steps}") for s in range(1, profile_steps + 1)]
    return steps + [("line", f"step:{profile_steps}/{profile_steps}")]  # the validation line


def runs(events: list[tuple]) -> list[tuple]:
    """The events with each benchmark run as one ("run", id, profile, tag) entry, after
    checking that the run's output lines reached the observer."""
    out: list[tuple] = []
    for i, event in enumerate(events):
        if event[0] == "rung":
            assert events[i + 1: i + 1 + len(train_lines())] == train_lines(), event
            out.append(("run", *event[1:]))
        elif event[0] != "line":
            out.append(event)
    return out


def extra_runs(events: list[tuple], exp_id: str, profile: str) -> list[str]:
    """The tags of the extra runs (re-runs, noise calibration) of one rung; [] when none."""
    tags = [e[3] for e in events if e[:3] == ("run", exp_id, profile)]
    assert tags[0] == "" and len(set(tags)) == len(tags)
    return tags[1:]


def test_scheduler_emits_the_lifecycle_of_a_kept_change_with_a_nested_baseline(repo):
    recorder = Recorder()
    daemon(repo, recorder, {**WIN_BOTH, "idea": "I001"}).run()
    events = runs(recorder.events)
    baselines = {e[1]: e[4] for e in events if e[:1] == ("started",) and e[2] == "baseline"}
    assert list(baselines) == ["E0001", "E0003"]
    assert re.fullmatch(r"baseline [0-9a-f]{10} at breadth", baselines["E0001"])
    assert re.fullmatch(r"baseline [0-9a-f]{10} at confirm", baselines["E0003"])
    # Baselines may be measured more than once (noise calibration): each run is announced.
    again_1 = [("run", "E0001", "breadth", t) for t in extra_runs(events, "E0001", "breadth")]
    again_3 = [("run", "E0003", "confirm", t) for t in extra_runs(events, "E0003", "confirm")]
    assert events == [
        ("started", "E0001", "baseline", None, baselines["E0001"]),
        ("run", "E0001", "breadth", ""), *again_1, ("decided", "E0001", "keep"),
        ("proposing", "E0002", "scripted"),
        ("started", "E0002", "scripted", "I001", "BONUS_BREADTH=0.01 BONUS_CONFIRM=0.01"),
        ("run", "E0002", "breadth", ""),
        # E0002 won at breadth; the incumbent has no confirm figure yet, so it is measured
        # while E0002 waits, then E0002 climbs to confirm.
        ("started", "E0003", "baseline", None, baselines["E0003"]),
        ("run", "E0003", "confirm", ""), *again_3, ("decided", "E0003", "keep"),
        ("run", "E0002", "confirm", ""), ("decided", "E0002", "keep"),
    ]


def test_scheduler_emits_decided_for_a_change_that_never_reaches_a_benchmark(repo):
    recorder = Recorder()
    daemon(repo, recorder, {"file": "fakebench.py", "text": "print()\n"}).run()
    assert recorder.events[-3:] == [
        ("proposing", "E0002", "scripted"),
        ("started", "E0002", "scripted", None, "edit fakebench.py"),
        ("decided", "E0002", "forbidden_edit")]


class Broken(RunEvents):
    def output_line(self, line):
        raise RuntimeError("display bug")

    def decided(self, exp_id, status, reason):
        raise RuntimeError("display bug")


def test_a_failing_display_never_stops_the_loop_or_changes_its_rows(repo):
    assert daemon(repo, Broken(), WIN_BOTH).run() == "reached --max-experiments 1"
    got = [(r["id"], r["status"]) for r in Ledger(repo / ".autogolf/ledger.jsonl").rows()
           if r.get("type") == "experiment"]
    assert got == [("E0001", "keep"), ("E0003", "keep"), ("E0002", "keep")]


def test_run_without_a_terminal_logs_plain_progress_lines(repo):
    done = cli(repo, "run", "--max-experiments", "1", "--ladder", "breadth")
    assert done.returncode == 0, done.stderr
    assert CLEAR_LINE not in done.stdout
    assert "E0001 breadth training step 1/4 (25%)" in done.stdout
    assert re.search(r"^E0002 proposed by search in \d+s$", done.stdout, re.M)
    assert "E0002 breadth evaluating step 4/4 (100%)" in done.stdout


def test_bench_without_a_terminal_logs_plain_progress_lines(repo):
    done = cli(repo, "bench", "--profile", "breadth")
    assert done.returncode == 0, done.stderr
    assert "breadth training step 1/4 (25%)" in done.stdout
    assert CLEAR_LINE not in done.stdout

