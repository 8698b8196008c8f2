"""The `workspace:` section of autogolf.yaml and opening the storage it names."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loop.workspace.board import AGENT_ID
from loop.workspace.dirstore import DirStore
from loop.workspace.hfbucket import HfBucketStore
from loop.workspace.storage import Storage

BACKENDS = ("dir", "hf-bucket")
KEYS = ("agent_id", "backend", "path", "bucket", "publish_every_experiment")
# Several machines often share one committed autogolf.yaml: each sets its own id here.
AGENT_ID_ENV = "AUTOGOLF_AGENT_ID"


@dataclass(frozen=True)
class WorkspaceConfig:
    agent_id: str
    backend: str = "dir"
    path: str | None = None  # dir: a folder every machine can reach (relative to the repo)
    bucket: str | None = None  # hf-bucket: "namespace/name"
    publish_every_experiment: bool = False  # results for every experiment, not only keeps


def read_workspace(value: Any, fail: Callable[[str, str, str], None]) -> WorkspaceConfig | None:
    """Validate the section; each problem goes to `fail(where, problem, allowed)`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        fail("workspace", f"expected a mapping, got {type(value).__name__}", ", ".join(KEYS))
        return None
    before = _Counter(fail)
    for key in value:
        if key not in KEYS:
            before.fail(f"workspace.{key}", "unknown key", ", ".join(KEYS))
    agent = value.get("agent_id")
    if not isinstance(agent, str) or not AGENT_ID.fullmatch(agent):
        before.fail("workspace.agent_id", f"got {agent!r}", "letters, digits and - ([A-Za-z0-9-]+)")
    backend = value.get("backend", "dir")
    if backend not in BACKENDS:
        before.fail("workspace.backend", f"got {backend!r}", " | ".join(BACKENDS))
    where = {"dir": "path", "hf-bucket": "bucket"}.get(backend)
    if where and not (isinstance(value.get(where), str) and value[where].strip()):
        allowed = "a folder path" if where == "path" else "a bucket id namespace/name"
        before.fail(f"workspace.{where}", f"missing for backend {backend}", allowed)
    every = value.get("publish_every_experiment", False)
    if not isinstance(every, bool):
        before.fail("workspace.publish_every_experiment", f"got {every!r}", "true | false")
    if before.count:
        return None
    return WorkspaceConfig(agent_id=agent, backend=backend, path=value.get("path"),
                           bucket=value.get("bucket"), publish_every_experiment=every)


class _Counter:
    def __init__(self, fail: Callable[[str, str, str], None]):
        self._fail, self.count = fail, 0

    def fail(self, where: str, problem: str, allowed: str) -> None:
        self.count += 1
        self._fail(where, problem, allowed)


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
