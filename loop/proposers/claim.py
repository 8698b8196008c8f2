"""The agent's summary file: its description of the change and which idea it says it tried.

The prompt asks for a description line and one claim line, `idea: I003` (a backlog id) or
`idea: own` (its own idea). The experiment is credited to what the agent says, not blindly to
the idea the prompt suggested:

- a backlog id that exists: that idea (a note when it is not the suggested one);
- `own`, or an id the backlog does not have: no idea (its own), with a note;
- no claim line: the suggested idea, with the note that the agent did not say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OWN = "own"
_CLAIM = re.compile(r"^\s*idea\s*:\s*\[?\s*([A-Za-z0-9_-]+)\s*\]?\s*\.?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Summary:
    description: str  # the other lines, joined into one ("" when none)
    claim: str | None  # an idea id as written, "own", or None (no claim line)


@dataclass(frozen=True)
class Credit:
    idea: str | None
    note: str  # for the row's reason, e.g. " (credit: ...)"; "" when nothing to say


def read_summary(text: str) -> Summary:
    """Split a summary file into its description and its last `idea:` line."""
    claim, lines = None, []
    for line in text.splitlines():
        if m := _CLAIM.match(line):
            claim = OWN if m.group(1).lower() == OWN else m.group(1).upper()
        elif line.strip():
            lines.append(line.strip())
    return Summary(" ".join(" ".join(lines).split()), claim)


def credit(claim: str | None, suggested: str | None, known: set[str]) -> Credit:
    """Which idea the experiment tested, by the agent's claim (`known`: the backlog's ids)."""
    if claim is None:
        target = f"credited to the suggested {suggested}" if suggested else "its own idea"
        return Credit(suggested, f" (credit: the agent did not say which idea; {target})")
    if claim == OWN:
        return Credit(None, " (credit: the agent says it tried its own idea)")
    if claim not in known:
        return Credit(None, f" (credit: the agent named idea {claim}, which is not in the "
                            "backlog; counted as its own idea)")
    if claim != suggested:
        shown = suggested or "none"
        return Credit(claim, f" (credit: the agent says it implemented {claim}; suggested "
                             f"was {shown})")
    return Credit(claim, "")
