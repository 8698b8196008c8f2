"""The judge's `Bench`, implemented by the daemon: benchmarks of the session worktree,
baselines as ledger rows, the candidate set aside and put back.

The judge (loop.judge) asks only through `Bench` (loop.judge.bench); `LoopBench` answers
through `Loop`, the small public face the scheduler shows it (loop.daemon.scheduler.Scheduler
is one). Neither reaches into the other's private state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from loop.backlog.bookkeeping import Bookkeeping
from loop.daemon.session import Paths, StateFile
from loop.daemon.stops import Stops
from loop.daemon.tamper import Fingerprint
from loop.events import EventBus
from loop.judge.bench import Bench
from loop.judge.verdict import Abandon, BaselineFailed
from loop.measure.pipeline import Pipeline, Run
from loop.measure.pruning import CurvePruner
from loop.store import gitsession
from loop.store.gitsession import GitSession
from loop.store.rows import Experiment


class Loop(ABC):
    """What the bench uses of the loop that runs it (set once the session is open)."""

    paths: Paths
    git: GitSession
    bookkeeping: Bookkeeping
    pipeline: Pipeline
    fingerprint: Fingerprint
    events: EventBus
    state: StateFile
    stops: Stops

    @abstractmethod
    def baseline(self, profile: str, parent: Experiment | None = None,
                 description: str | None = None) -> dict:
        """Measure the branch head at `profile` as its own (baseline) ledger row."""

    @abstractmethod
    def say(self, line: str) -> None:
        """One line for the person watching."""


class LoopBench(Bench):
    """The judge's view of the loop: benchmarks of the session worktree, and its incumbents."""

    def __init__(self, loop: Loop):
        self.loop = loop

    def run(self, exp: Experiment, profile: str, tag: str = "",
            env_extra: dict[str, str] | None = None, pruner: CurvePruner | None = None) -> Run:
        loop = self.loop
        log = loop.paths.experiment(exp.id) / f"bench-{profile}{tag}.log"
        loop.events.rung_started(exp.id, profile, tag)
        before = loop.fingerprint.take()
        run = loop.pipeline.benchmark(loop.git.worktree, profile, exp.id + tag, log, env_extra,
                                      pruner)
        loop.fingerprint.check(before, f"the {profile} benchmark of {exp.id}")
        return run

    def baseline(self, profile: str, parent: Experiment | None = None,
                 description: str | None = None) -> dict:
        if parent is None:
            return self.loop.baseline(profile, description=description)
        # Set the candidate aside (its patch is saved), measure the branch head, put it back.
        self.set_aside(parent)
        row = self.loop.baseline(profile, parent=parent)
        if row["status"] == "interrupted":
            raise Abandon(f"stopped by {self.loop.stops.requested() or 'a stop request'} "
                          f"during the {profile} baseline")
        if row["status"] != "keep":
            raise BaselineFailed(f"the incumbent failed its {profile} baseline "
                                 f"({row['id']}: {row['status']})")
        try:
            self.put_back(parent)
        except (OSError, gitsession.GitError) as exc:
            # A saved patch that is damaged or gone: the candidate cannot be put back.
            raise Abandon(f"its saved patch {parent.patch} could not be re-applied after the "
                          f"{profile} baseline: {' '.join(str(exc).split())}") from exc
        return row

    def checkpoint(self, exp: Experiment, stage: str) -> None:
        self.loop.state.stage(exp, stage)

    def stop_requested(self) -> str | None:
        return self.loop.stops.requested()

    def say(self, line: str) -> None:
        self.loop.say(line)

    def set_aside(self, exp: Experiment) -> None:
        # A person's backlog edits stay (git apply below leaves files outside the patch alone).
        bookkeeping = self.loop.bookkeeping
        bookkeeping.restore_keeping(bookkeeping.edits(exp.patch))

    def put_back(self, exp: Experiment) -> None:
        self.loop.git.apply_patch((self.loop.paths.repo / exp.patch).read_text())
