"""The one table of how a run or a process is stopped, and where each way lives.

Like the status table (loop.store.statuses), this is data: each `Ending` says what is
stopped, when, what the ledger row then says, which setting controls it, and where the code
is (`module:attribute`, checked by tests/test_endings.py; a `.py` path names a file the
daemon runs but does not import, such as the trainer). docs/DESIGN.md renders it. A new way
to stop something is one row here, beside its code.

What is stopped: `benchmark` (autoresearch.sh and the trainer), `checks`
(autoresearch.checks.sh), `agent` (a coding agent's command), `model server` (the judge's
process that loads an artifact), `child` (any of those), `decision` (the runs a keep
decision would still spend). When the *loop* stops between experiments (--max-experiments,
failures in a row, a proposer with nothing left...) is loop.daemon.stoprules'.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ending:
    name: str
    stops: str  # benchmark, checks, agent, model server, child, decision
    when: str
    row: str  # the status the experiment gets (and the reason's start, when it has one)
    setting: str  # what turns it on, off or sets its limit ("" when nothing does)
    where: tuple[str, ...]  # "module:attribute" (or "path.py:name") of the code


ENDINGS: tuple[Ending, ...] = (
    Ending("deadline", "child", "--until or --hours (awake time) has passed: the child in "
           "flight is ended at once, baselines and `full` runs included",
           "interrupted", "`--until`, `--hours`",
           ("loop.daemon.stops:Stops.stopping", "loop.measure.runner:run_command")),
    Ending("signal", "child", "SIGINT or SIGTERM to the daemon: the child in flight is ended, "
           "the experiment abandoned", "interrupted", "",
           ("loop.daemon.stops:catch_stop_signals", "loop.daemon.stops:Stops.note_signal")),
    Ending("stop file", "decision", "the stop file exists: the run in flight finishes, the "
           "decision stops before its next run", "interrupted", "`stop_file` "
           "(.autogolf/STOP)",
           ("loop.daemon.stops:Stops.requested", "loop.judge.judge:Judge._abandon_if_stopping")),
    Ending("timeout", "benchmark", "the benchmark runs past its profile's timeout: SIGTERM to "
           "its process group, SIGKILL after the grace", "timeout",
           "`profiles.<p>.timeout_s`, `limits.kill_grace_s`",
           ("loop.measure.runner:run_command", "loop.measure.runner:_terminate",
            "loop.judge.validity:_process_failure")),
    Ending("projected timeout", "benchmark", "the step rate says training alone cannot end "
           "before the timeout", "timeout (`projected ...`)", "`profiles.<p>.timeout_s`",
           ("loop.measure.earlyabort:EarlyAbort", "loop.measure.watchdog:RunGuard.stop")),
    Ending("memory", "benchmark", "the run's process tree uses more than the limit, or the "
           "machine has less available than the floor; off unless a limit is set",
           "crash (`oom: ...`)", "`limits.max_memory_mb`, `limits.min_available_memory_mb` "
           "(0 = off, the default)",
           ("loop.measure.watchdog:MemoryWatchdog", "loop.measure.watchdog:describe")),
    Ending("divergence", "benchmark", "a non-finite train_loss: the trainer exits 3; a "
           "`train_loss:nan|inf` line ends the run even if an edited trainer goes on; exit 0 "
           "after one is still a crash", "crash (`diverged: ...`)", "",
           ("benchmark/train_gpt_mlx.py:NonFiniteLoss", "loop.measure.earlyabort:EarlyAbort",
            "loop.judge.validity:_process_failure")),
    Ending("pruned", "benchmark", "a candidate's training loss is clearly behind the "
           "incumbent's at the same seed and step", "pruned", "`keep_rule.prune`",
           ("loop.measure.pruning:CurvePruner", "loop.judge.judge:Judge._pruner")),
    Ending("futility", "decision", "after the first pair of runs the candidate is so far "
           "behind that more pairs would not change the answer (before any spread is "
           "measured: no better than the incumbent at the first seed, the sign screen)",
           "discard",
           "`keep_rule.futility` (0 = no look)",
           ("loop.judge.sequential:step",)),
    Ending("curtailed", "decision", "from the first look on, a keep by the cap is unlikely "
           "even if the mean gain so far is the true gain", "discard (`curtailed ...`; "
           "inconclusive when the mean gain reaches min_improvement)",
           "`keep_rule.curtail` (0 = never)",
           ("loop.judge.sequential:step", "loop.judge.sequential:keep_chance")),
    Ending("compute cap", "decision", "a candidate ahead after its first pair (or a winner) "
           "spent more compute per run than the allowance of the incumbent's at the same "
           "seeds, confirmed on a pair run back to back", "over_budget",
           "`judge.compute_allowance`",
           ("loop.judge.judge:Judge._early_budget", "loop.judge.judge:Judge._budget_verdict",
            "loop.judge.validity:budget_verdict")),
    Ending("seed check", "decision", "a candidate ahead after its second pair (or a winner) "
           "gave the same artifact, byte for byte, or the same score at two judge seeds while "
           "the incumbent's differ: it ignores the seed", "seed_ignored", "",
           ("loop.judge.judge:Judge._early_seed", "loop.judge.judge:Judge._seed_verdict")),
    Ending("checks timeout", "checks", "autoresearch.checks.sh runs past its timeout",
           "checks_failed", "`checks.timeout_s`",
           ("loop.measure.pipeline:Pipeline.checks",)),
    Ending("agent timeout", "agent", "the coding agent runs past its timeout: it and "
           "everything it started are killed", "agent_timeout", "`agent.timeout_s`",
           ("loop.proposers.agent:AgentProposer",)),
    Ending("model server", "model server", "the artifact does not load or answer within the "
           "server's timeouts, or the daemon stops (deadline, signal) while it scores",
           "unjudged (interrupted on a stop)", "",
           ("loop.judge.score:ModelServer", "loop.judge.score:score_sets")),
    Ending("escaped descendants", "child", "a child's descendants that left its process group "
           "(setsid, double fork) are killed when the child ends, and inside the seal its init "
           "kills whatever is left", "(none: cleanup)", "",
           ("loop.measure.runner:_Tracker.sweep", "loop.measure.sealinit:main")),
    Ending("orphans of a killed daemon", "child", "at start, children a SIGKILLed daemon left "
           "running (they carry its token) are killed before anything runs",
           "interrupted (the recovered experiment)", "",
           ("loop.daemon.session:kill_orphans", "loop.daemon.session:recover")),
)


def markdown() -> str:
    """The table as docs/DESIGN.md shows it (a test keeps the two the same)."""
    lines = ["| how | what stops | when | the row says | setting | where |",
             "|---|---|---|---|---|---|"]
    for e in ENDINGS:
        where = ", ".join(f"`{w}`" for w in e.where)
        lines.append(f"| {e.name} | {e.stops} | {e.when} | {e.row} | {e.setting or '-'} "
                     f"| {where} |")
    return "\n".join(lines)
