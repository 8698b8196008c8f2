"""The one table of experiment statuses (SPEC section 6) and what each one means.

Every part of the daemon that treats statuses differently - the loop's failure stop, the
duplicate check, the report, the ideas backlog, the search proposer, the pi export, the
shared workspace - reads the property it needs from this table, so adding a status is one
row here. The properties:

- `failed_run`: the row's rung figures are not a valid measurement (the run failed or never
  finished): the report shows them as "unknown";
- `benchmarked`: a benchmark ran at all (the report charts the others on the first rung);
- `says_about_change`: the row is evidence about the change itself; `interrupted` and
  `duplicate` are not, so the same diff may be tried again and a workspace claim is released;
- `failure`: counts toward the consecutive-failure stop (`limits.max_consecutive_failures`);
- `judged`: the judge reached a verdict on the change itself, the same on any machine (a
  crash or a timeout is often machine-local): in a shared workspace it keeps blocking others;
- `idea_after`: the status the tested idea gets in the backlog (None: left as it is);
- `tests_idea`: the attempt tested the idea it was credited to (False: the idea stays as
  untried as it was, e.g. the daemon was stopped);
- `search`: what the search proposer learns: "win", "loss" or None (nothing);
- `pi`: the status in pi-autoresearch's jsonl layout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Status:
    name: str
    meaning: str
    failed_run: bool = True
    benchmarked: bool = True
    says_about_change: bool = True
    failure: bool = False
    judged: bool = False
    idea_after: str | None = None
    tests_idea: bool = True
    search: str | None = None
    pi: str = "crash"
    in_spec: bool = True  # in the spec's list; the others: documented in docs/LEDGER.md


_TABLE = (
    Status("keep", "won at every rung of the ladder: committed", failed_run=False,
           idea_after="promising", search="win", pi="keep", judged=True),
    Status("discard", "measured, not better than the incumbent by min_improvement (the "
           "keep rule's evidence)", failed_run=False,
           idea_after="exhausted", search="loss", pi="discard", judged=True),
    Status("crash", "the benchmark exited non-zero (or ran out of memory, or diverged)",
           failure=True, idea_after="exhausted", search="loss"),
    Status("timeout", "the benchmark ran past its profile's timeout", failure=True,
           idea_after="exhausted", search="loss"),
    Status("checks_failed", "autoresearch.checks.sh failed", benchmarked=False, failure=True,
           idea_after="invalid", pi="checks_failed"),
    Status("over_cap", "the artifact is over artifact_cap_bytes", failed_run=False,
           failure=True, idea_after="exhausted", search="loss", pi="checks_failed", judged=True),
    # A forbidden edit is the editor's fault, not the idea's: the idea stays as it was.
    Status("forbidden_edit", "the diff touches files outside the editable set",
           benchmarked=False, failure=True, tests_idea=False, pi="checks_failed"),
    Status("invalid_metric", "no finite val_bpb or size in the output", failure=True,
           idea_after="invalid"),
    Status("metric_mismatch", "a printed figure disagrees with the daemon's own reading",
           failure=True, idea_after="invalid", judged=True),
    # Undecided is still the evidence on the change at that profile: another agent on the
    # same incumbent would spend the same paired runs (on a CPU, to the same numbers).
    Status("inconclusive", "the sequential rule was still undecided at its cap on paired runs "
           "(or could not resolve a gain that reached min_improvement): worth a stronger "
           "profile", failed_run=False, pi="discard", in_spec=False, judged=True),
    # A judged loss that cost a fraction of a run (issue 26): its figures are a partial
    # run's, so no score, but the idea was tested and lost, as a discard.
    Status("pruned", "stopped early as a clear loser: its training loss was clearly behind "
           "the incumbent's at the same seed and step (loop/measure/pruning.py)",
           idea_after="exhausted", search="loss", pi="discard", in_spec=False, judged=True),
    Status("duplicate", "the same change was already measured on this incumbent",
           says_about_change=False, failed_run=False, pi="discard"),
    Status("interrupted", "the daemon was stopped before the decision", says_about_change=False,
           tests_idea=False),
    Status("agent_failed", "the coding agent exited non-zero", benchmarked=False, failure=True,
           in_spec=False, tests_idea=False),
    Status("agent_timeout", "the coding agent ran past agent.timeout_s", benchmarked=False,
           failure=True, in_spec=False, tests_idea=False),
    Status("agent_no_change", "the coding agent changed nothing", benchmarked=False,
           failure=True, pi="discard", in_spec=False, tests_idea=False),
    Status("agent_touched_git", "the coding agent changed git metadata: the run stops",
           benchmarked=False, failure=True, in_spec=False, tests_idea=False),
    Status("unjudged", "the judge could not score the artifact (missing, unloadable, looks "
           "ahead, non-finite logits): never kept", failure=True, idea_after="invalid",
           in_spec=False),
    Status("protocol_drift", "the candidate changed the frozen evaluation protocol",
           failed_run=False, failure=True, pi="checks_failed", in_spec=False, judged=True),
    # Compute is the challenge's other cap (time): a win bought with more of it is no win.
    Status("over_budget", "a winning candidate (or one ahead after its first pair) spent "
           "more compute per run than the incumbent at the same seeds, by more than "
           "judge.compute_allowance",
           failed_run=False, failure=True, idea_after="exhausted", search="loss",
           pi="checks_failed", in_spec=False, judged=True),
    Status("seed_ignored", "the trainer gave the same result at different judge seeds (it "
           "ignores the seed): a frozen lucky seed is not an improvement", failed_run=False,
           failure=True, idea_after="invalid", pi="checks_failed", in_spec=False, judged=True),
)
STATUSES: dict[str, Status] = {s.name: s for s in _TABLE}
NAMES: tuple[str, ...] = tuple(STATUSES)
# pi-autoresearch's own statuses (the `pi` column maps ours onto them), and whether pi's row
# of that status carries a measurement: pi's agent logs 0 for a crash or a failed check.
PI_MEASURED: dict[str, bool] = {"keep": True, "discard": True, "crash": False,
                                "checks_failed": False}
PI_STATUSES: tuple[str, ...] = tuple(PI_MEASURED)


def status(name: str | None) -> Status | None:
    """The table row of `name`, or None for a status this version does not know."""
    return STATUSES.get(name or "")


def names_where(**properties: object) -> frozenset[str]:
    """The statuses whose properties equal all of `properties`, e.g. failure=True."""
    return frozenset(s.name for s in _TABLE
                     if all(getattr(s, key) == value for key, value in properties.items()))


def check(name: str) -> str:
    """`name` when it is a known status; ValueError listing the known ones otherwise."""
    if name not in STATUSES:
        raise ValueError(f"unknown status {name!r}; allowed: {', '.join(NAMES)}")
    return name
