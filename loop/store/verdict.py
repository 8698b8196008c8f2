"""The verdict on one experiment: the one type from the first check to the ledger row.

A verdict is made once (loop.judge.judge, or the loop for outcomes it knows before any judging:
a forbidden edit, a duplicate, a stop), may gain words on the way (the verification of a keep
appends its reason), and ends in the row as `status`, `reason` and `margin`. It lives with
the ledger's rows, below the judge that reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from loop.store.statuses import check


@dataclass
class Verdict:
    status: str
    reason: str
    margin: float | None = None
    val_bpb: float | None = None  # the score the verdict was reached on, when there is one

    def __post_init__(self) -> None:
        check(self.status)

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        """A verdict from the state file (older state files have no val_bpb)."""
        return cls(data["status"], data.get("reason") or "", data.get("margin"),
                   data.get("val_bpb"))
