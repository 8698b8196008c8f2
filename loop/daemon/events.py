"""What the loop tells an observer while it works (the live display of `autogolf run`).

The scheduler only emits these events; what is shown, and how, is loop.ui.progress's job. Every
method is a no-op here, so an observer overrides only what it needs, and `RunEvents()` is the
silent default. An observer must be quick: `output_line` runs once per line of trainer output.
"""

from __future__ import annotations


class RunEvents:
    """The events of one `autogolf run` (and of `autogolf bench`, which uses the last three)."""

    def proposing(self, exp_id: str, proposer: str) -> None:
        """The proposer was asked for a change for `exp_id` (an agent may take minutes)."""

    def experiment_started(self, exp_id: str, proposer: str, idea: str | None,
                           description: str) -> None:
        """`exp_id` has its change (or is a baseline, proposer "baseline") and starts."""

    def rung_started(self, exp_id: str | None, profile: str, tag: str = "") -> None:
        """A benchmark of `exp_id` at `profile` starts (None: a manual bench); `tag` marks an
        extra run of the same rung (a re-run or a noise calibration run, e.g. "-r2")."""

    def output_line(self, line: str) -> None:
        """One line of the running benchmark's output, without its newline."""

    def decided(self, exp_id: str, status: str, reason: str | None) -> None:
        """`exp_id`'s row was written with this status and reason."""
