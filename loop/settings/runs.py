"""How a run is made and when it stops: `profiles:` (per-device timeouts), `device:`,
`ladder:`, `full_every_keeps:`, `benchmark:`, `checks:`, `stop:` and `limits:`.

The timeouts of this section are enforced by loop/measure (runner, watchdog); the stop rules
by loop/daemon/stoprules.py. Which device class this machine trains on is asked when the file
is loaded (loop.config), not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from loop.settings.paths import normalise
from loop.settings.reader import Reader

DEFAULT_TIMEOUTS = {"smoke": 300.0, "breadth": 900.0, "confirm": 2700.0, "full": 14400.0}
# Device classes a profile timeout can be given for (`timeout_s: {default: 900, cuda: 300}`);
# `device: auto` asks MLX which one this machine trains on (loop.platform.device_class).
DEVICE_CLASSES = ("cpu", "metal", "cuda")
DEVICES = ("auto", *DEVICE_CLASSES)
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_LIMITS = ("kill_grace_s", "max_memory_mb", "min_available_memory_mb", "min_free_disk_mb")


@dataclass(frozen=True)
class ProfileConfig:
    """One profile. timeout_s is the timeout on this machine's device class (resolved when
    the configuration is loaded); by_device holds the per-class values it was chosen from."""

    name: str
    timeout_s: float
    by_device: dict[str, float] = field(default_factory=dict, compare=False)

    def timeout_for(self, device: str) -> float:
        """The timeout on `device` (a DEVICE_CLASSES name): its own value, else the default."""
        return self.by_device.get(device, self.by_device.get("default", self.timeout_s))


def default_profiles() -> dict[str, ProfileConfig]:
    return {name: ProfileConfig(name, t) for name, t in DEFAULT_TIMEOUTS.items()}


def read_runs(reader: Reader, top: dict) -> dict[str, Any]:
    """The Config fields of this module's sections (`profiles` always set: later sections
    name profiles)."""
    kw: dict[str, Any] = {"profiles": _profiles(reader, top)}
    reader.put(kw, "device", reader.choice(top, "device", "device", DEVICES))
    reader.put(kw, "ladder", _ladder(reader, top, kw["profiles"]))
    every = reader.number(top, "full_every_keeps", minimum=0, integer=True)
    reader.put(kw, "full_every_keeps", every)  # `full` is always defined (a default profile)
    kw.update(_commands(reader, top))
    kw.update(_stop(reader, top))
    kw.update(_limits(reader, top))
    return kw


def _profiles(reader: Reader, top: dict) -> dict[str, ProfileConfig]:
    profiles = default_profiles()  # entries given here override or add to the defaults
    for name, value in reader.mapping(top.get("profiles"), "profiles", None).items():
        where = f"profiles.{name}"
        if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
            reader.fail(where, "bad profile name", "letters, digits, _ and -")
            continue
        entry = reader.mapping(value, where, ("timeout_s",))
        if isinstance(entry.get("timeout_s"), dict):
            profile = _device_timeouts(reader, name, entry["timeout_s"], f"{where}.timeout_s")
        else:
            timeout = reader.number(entry, "timeout_s", where=where, positive=True)
            profile = None if timeout is None else ProfileConfig(name, timeout)
        if profile is not None:
            profiles[name] = profile
    return profiles


def _device_timeouts(reader: Reader, name: str, value: dict, where: str) -> ProfileConfig | None:
    """`timeout_s: {default: 900, cuda: 300}`: a default and any device class's own."""
    section = reader.mapping(value, where, ("default", *DEVICE_CLASSES))
    values = {key: reader.number(section, key, where=where, positive=True,
                                 required=key == "default") for key in section}
    if "default" not in section:
        reader.fail(f"{where}.default", "missing", "a number > 0, the timeout on any "
                    "device class not listed")
    if "default" not in section or any(v is None for v in values.values()):
        return None
    return ProfileConfig(name, values["default"], values)


def _ladder(reader: Reader, top: dict, profiles: dict[str, ProfileConfig]
            ) -> tuple[str, ...] | None:
    if "ladder" not in top:
        return None
    rungs = top["ladder"]
    allowed = f"a non-empty list of profiles from: {', '.join(profiles)}"
    if not isinstance(rungs, list) or not rungs:
        reader.fail("ladder", f"got {rungs!r}", allowed)
        return None
    for i, rung in enumerate(rungs):
        if not isinstance(rung, str) or rung not in profiles:
            reader.fail(f"ladder[{i}]", f"unknown profile {rung!r}", allowed)
    if len(set(map(str, rungs))) != len(rungs):
        reader.fail("ladder", "a profile appears twice", "each rung once")
    return tuple(rungs)


def _commands(reader: Reader, top: dict) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    bench = reader.mapping(top.get("benchmark", {}), "benchmark", ("command",))
    reader.put(kw, "benchmark_command", reader.command(bench, "benchmark.command"))
    checks = reader.mapping(top.get("checks", {}), "checks", ("command", "timeout_s"))
    reader.put(kw, "checks_command", reader.command(checks, "checks.command"))
    timeout = reader.number(checks, "timeout_s", where="checks", positive=True)
    reader.put(kw, "checks_timeout_s", timeout)
    return kw


def _stop(reader: Reader, top: dict) -> dict[str, Any]:
    section = reader.mapping(top.get("stop", {}), "stop",
                             ("max_consecutive_failures", "stop_file"))
    kw: dict[str, Any] = {}
    failures = reader.number(section, "max_consecutive_failures", where="stop", minimum=1,
                             integer=True)
    reader.put(kw, "max_consecutive_failures", failures)
    if "stop_file" in section:
        stop_file = section["stop_file"]
        if not isinstance(stop_file, str) or normalise(stop_file) is None:
            reader.fail("stop.stop_file", f"got {stop_file!r}", "a path inside the repository")
        else:
            kw["stop_file"] = stop_file
    return kw


def _limits(reader: Reader, top: dict) -> dict[str, Any]:
    section = reader.mapping(top.get("limits", {}), "limits", _LIMITS)
    kw: dict[str, Any] = {}
    reader.put(kw, _LIMITS[0], reader.number(section, _LIMITS[0], where="limits", minimum=0))
    for key in _LIMITS[1:]:
        reader.put(kw, key, reader.number(section, key, where="limits", minimum=0, integer=True))
    return kw
