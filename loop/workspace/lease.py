"""Claims as leases (issue 20): a claim holds until its `lease_expires`, renewed meanwhile.

A daemon that claims a change posts `lease_expires` (UTC) with the claim and, while the
experiment runs, a renewal post every `renew_every_s` from a background thread, so renewal
does not depend on how often the loop calls the workspace (a benchmark may run for an hour).
The result post releases the claim. A daemon that dies (SIGKILL, power loss) stops renewing,
and its claim stops blocking others once `lease_expires` has passed. Expiry is read against
the reader's clock: machines are expected to keep their clocks in sync (NTP), and a lease is
minutes long, so seconds of skew do not matter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

# A claim without `lease_expires` (another tool, or autogolf before issue 20) holds for the
# shared convention's 15 minutes after its timestamp, so an old claim never blocks forever.
CONVENTIONAL_LEASE_S = 900.0
STOP_WAIT_S = 30.0  # how long stopping waits for a renewal in flight (a slow hub call)


def utc_now() -> datetime:
    """The clock leases are read against (tests replace it to jump past an expiry)."""
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def expires_at(moment: datetime, lease_s: float) -> str:
    return iso(moment + timedelta(seconds=lease_s))


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 time (naive = UTC), or None when absent or unreadable."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def claim_expiry(post: dict) -> datetime | None:
    """When a claim post stops holding: its `lease_expires`, else its timestamp plus the
    conventional 15 minutes; None when it says neither (it then holds nothing)."""
    explicit = parse_time(post.get("lease_expires"))
    if explicit is not None:
        return explicit
    stamped = parse_time(post.get("timestamp"))
    return stamped + timedelta(seconds=CONVENTIONAL_LEASE_S) if stamped else None


class Renewer:
    """Calls `renew` every `every_s` seconds on a daemon thread until `stop`.

    `renew` gets a function telling whether stop was asked, to check it before it writes
    (a renewal must not land after the result that released the claim). Every exception of
    `renew` goes to `warn` and the renewals go on: the thread never dies of a bad call, and
    nothing is ever raised into the loop."""

    def __init__(self, renew: Callable[[Callable[[], bool]], None], every_s: float,
                 warn: Callable[[str], None], name: str = "autogolf-lease"):
        self._renew, self._every_s, self._warn = renew, every_s, warn
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Renewer:
        self._thread.start()
        return self

    def stop(self, wait_s: float = STOP_WAIT_S) -> bool:
        """Ask the thread to stop and wait for it; True when it has ended."""
        self._stopped.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(wait_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopped.wait(self._every_s):
            try:
                self._renew(self._stopped.is_set)
            except Exception as exc:  # noqa: BLE001 - a renewal problem is a warning
                self._warn(f"workspace: lease renewal failed: {type(exc).__name__}: {exc}")
