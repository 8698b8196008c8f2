"""The `workspace:` section of autogolf.yaml and opening the storage it names."""

from __future__ import annotations

import math
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
KEYS = ("agent_id", "backend", "path", "bucket", "publish_every_experiment", "lease_s",
        "renew_every_s")
# A claim is a lease (issue 20): 15 minutes, as in autoresearch-at-home's shared protocol,
# renewed a third of the way through so that one late or lost renewal does not let it lapse.
DEFAULT_LEASE_S = 900.0
RENEWALS_PER_LEASE = 3
# Several machines often share one committed autogolf.yaml: each sets its own id here.
AGENT_ID_ENV = "AUTOGOLF_AGENT_ID"


@dataclass(frozen=True)
class WorkspaceConfig:
    agent_id: str
    backend: str = "dir"
    path: str | None = None  # dir: a folder every machine can reach (relative to the repo)
    bucket: str | None = None  # hf-bucket: "namespace/name"
    # Results JSON for every finished experiment (SPEC 10: others learn what failed); false
    # publishes only keeps' JSON. A result post is written either way: it releases the claim.
    publish_every_experiment: bool = True
    lease_s: float = DEFAULT_LEASE_S  # how long a claim holds without a renewal
    renew_every_s: float | None = None  # None: lease_s / RENEWALS_PER_LEASE

    @property
    def renew_interval_s(self) -> float:
        return self.renew_every_s or self.lease_s / RENEWALS_PER_LEASE


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
    every = value.get("publish_every_experiment", True)
    if not isinstance(every, bool):
        before.fail("workspace.publish_every_experiment", f"got {every!r}", "true | false")
    lease, renew = _read_lease(value, before)
    if before.count:
        return None
    return WorkspaceConfig(agent_id=agent, backend=backend, path=value.get("path"),
                           bucket=value.get("bucket"), publish_every_experiment=every,
                           lease_s=lease, renew_every_s=renew)


def _read_lease(value: dict, before: _Counter) -> tuple[float, float | None]:
    """`lease_s` (> 0 seconds) and `renew_every_s` (> 0 and shorter than the lease)."""
    lease = value.get("lease_s", DEFAULT_LEASE_S)
    if not _positive(lease):
        before.fail("workspace.lease_s", f"got {lease!r}", "a number of seconds > 0 (900: 15 min)")
        lease = DEFAULT_LEASE_S
    renew = value.get("renew_every_s")
    if renew is not None and not (_positive(renew) and renew < lease):
        before.fail("workspace.renew_every_s", f"got {renew!r}",
                    f"a number of seconds > 0 and < lease_s ({lease:g}); default lease_s / "
                    f"{RENEWALS_PER_LEASE}")
    return float(lease), None if renew is None else float(renew)


def _positive(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


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
