"""Proposers: who edits the worktree (search, agent, ideas, a rotation of them).

The contract is `loop.proposers.base` (Proposal, Proposer); `loop.proposers.registry` builds
the one autogolf.yaml names.
"""

from loop.proposers.base import Proposal, Proposer

__all__ = ["Proposal", "Proposer"]
