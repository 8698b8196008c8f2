"""Opening the storage the `workspace:` section names, and this daemon's agent id.

The section itself (keys, defaults, checks) is loop/settings/workspace.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from loop.settings.workspace import AGENT_ID, WorkspaceConfig
from loop.settings.workspace import DEFAULT_LEASE_S as DEFAULT_LEASE_S
from loop.settings.workspace import RENEWALS_PER_LEASE as RENEWALS_PER_LEASE
from loop.workspace.dirstore import DirStore
from loop.workspace.hfbucket import HfBucketStore
from loop.workspace.storage import Storage

# Several machines often share one committed autogolf.yaml: each sets its own id here.
AGENT_ID_ENV = "AUTOGOLF_AGENT_ID"


def agent_id(ws: WorkspaceConfig) -> str:
    """The configured id, unless $AUTOGOLF_AGENT_ID overrides it (ValueError when bad)."""
    override = os.environ.get(AGENT_ID_ENV, "").strip()
    if override and not AGENT_ID.fullmatch(override):
        raise ValueError(f"${AGENT_ID_ENV}={override!r}: letters, digits and - only")
    return override or ws.agent_id


def open_storage(ws: WorkspaceConfig, repo: Path) -> Storage:
    if ws.backend == "hf-bucket":
        return HfBucketStore(str(ws.bucket))
    path = Path(str(ws.path)).expanduser()
    return DirStore(path if path.is_absolute() else Path(repo) / path)


def storage_for(location: str) -> Storage:
    """A storage from a command-line location: `hf://buckets/ns/name` or a folder."""
    if location.startswith("hf://buckets/"):
        return HfBucketStore(location)
    return DirStore(Path(location).expanduser().resolve())
