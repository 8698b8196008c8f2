"""`workspace:`: the shared collaboration workspace (a folder or a Hugging Face bucket) and
this daemon's agent id in it. Opening the storage it names is loop/workspace/settings.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from loop.settings.reader import Reader

BACKENDS = ("dir", "hf-bucket")
KEYS = ("agent_id", "backend", "path", "bucket", "publish_every_experiment", "lease_s",
        "renew_every_s")
AGENT_ID = re.compile(r"[A-Za-z0-9-]+")  # in every file name a daemon writes
# A claim is a lease: 15 minutes, as in autoresearch-at-home's shared protocol, renewed a
# third of the way through so that one late or lost renewal does not let it lapse.
DEFAULT_LEASE_S = 900.0
RENEWALS_PER_LEASE = 3


@dataclass(frozen=True)
class WorkspaceConfig:
    agent_id: str
    backend: str = "dir"
    path: str | None = None  # dir: a folder every machine can reach (relative to the repo)
    bucket: str | None = None  # hf-bucket: "namespace/name"
    # Results JSON for every finished experiment (others learn what failed); false
    # publishes only keeps' JSON. A result post is written either way: it releases the claim.
    publish_every_experiment: bool = True
    lease_s: float = DEFAULT_LEASE_S  # how long a claim holds without a renewal
    renew_every_s: float | None = None  # None: lease_s / RENEWALS_PER_LEASE

    @property
    def renew_interval_s(self) -> float:
        return self.renew_every_s or self.lease_s / RENEWALS_PER_LEASE


def read_workspace(reader: Reader, value: Any) -> WorkspaceConfig | None:
    """The section (None: no workspace, or a problem reported to `reader`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        reader.fail("workspace", f"expected a mapping, got {type(value).__name__}",
                    ", ".join(KEYS))
        return None
    before = len(reader.problems)
    for key in value:
        if key not in KEYS:
            reader.fail(f"workspace.{key}", "unknown key", ", ".join(KEYS))
    agent = value.get("agent_id")
    if not isinstance(agent, str) or not AGENT_ID.fullmatch(agent):
        reader.fail("workspace.agent_id", f"got {agent!r}",
                    "letters, digits and - ([A-Za-z0-9-]+)")
    backend = value.get("backend", "dir")
    if backend not in BACKENDS:
        reader.fail("workspace.backend", f"got {backend!r}", " | ".join(BACKENDS))
    where = {"dir": "path", "hf-bucket": "bucket"}.get(backend)
    if where and not (isinstance(value.get(where), str) and value[where].strip()):
        allowed = "a folder path" if where == "path" else "a bucket id namespace/name"
        reader.fail(f"workspace.{where}", f"missing for backend {backend}", allowed)
    every = value.get("publish_every_experiment", True)
    if not isinstance(every, bool):
        reader.fail("workspace.publish_every_experiment", f"got {every!r}", "true | false")
    lease, renew = _read_lease(reader, value)
    if len(reader.problems) > before:
        return None
    return WorkspaceConfig(agent_id=agent, backend=backend, path=value.get("path"),
                           bucket=value.get("bucket"), publish_every_experiment=every,
                           lease_s=lease, renew_every_s=renew)


def _read_lease(reader: Reader, value: dict) -> tuple[float, float | None]:
    """`lease_s` (> 0 seconds) and `renew_every_s` (> 0 and shorter than the lease)."""
    lease = value.get("lease_s", DEFAULT_LEASE_S)
    if not _positive(lease):
        reader.fail("workspace.lease_s", f"got {lease!r}", "a number of seconds > 0 (900: 15 min)")
        lease = DEFAULT_LEASE_S
    renew = value.get("renew_every_s")
    if renew is not None and not (_positive(renew) and renew < lease):
        reader.fail("workspace.renew_every_s", f"got {renew!r}",
                    f"a number of seconds > 0 and < lease_s ({lease:g}); default lease_s / "
                    f"{RENEWALS_PER_LEASE}")
    return float(lease), None if renew is None else float(renew)


def _positive(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)
