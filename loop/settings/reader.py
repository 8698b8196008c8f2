"""The value checks every section of autogolf.yaml uses; problems are collected, not raised.

Each check names the key path of what it read (`profiles.breadth.timeout_s`) and says what is
allowed, and returns None for a value that is absent or refused, so the default stays.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any


class Reader:
    """Collects one line per problem ("key.path: problem (allowed: ...)") in `problems`."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, problem: str, allowed: str) -> None:
        self.problems.append(f"{where}: {problem} (allowed: {allowed})")

    @staticmethod
    def put(kw: dict[str, Any], key: str, value: Any) -> None:
        """Set `kw[key]` unless `value` is None (absent or invalid: keep the default)."""
        if value is not None:
            kw[key] = value

    def named(self, value: Any, where: str, allowed: tuple[str, ...]) -> dict:
        """`mapping`, where a bare string is shorthand for the name alone (`proposer: search`
        is `proposer: {name: search}`)."""
        return self.mapping({"name": value} if isinstance(value, str) else value, where, allowed)

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...] | None) -> dict:
        """`value` as a dict (empty when invalid); unknown keys reported with a suggestion."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {type(value).__name__}", "key: value pairs")
            return {}
        if allowed is None:
            return value
        for key in value:
            if key not in allowed:
                path = str(key) if where == "(top level)" else f"{where}.{key}"
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.fail(path, f"unknown key{hint}", ", ".join(allowed))
        return {k: v for k, v in value.items() if k in allowed}

    def number(
        self,
        section: dict,
        key: str,
        *,
        where: str = "",
        minimum: float | None = None,
        positive: bool = False,
        integer: bool = False,
        required: bool = False,
    ) -> float | int | None:
        """A finite number (bools refused), optionally whole, > 0 or >= `minimum`."""
        path = f"{where}.{key}" if where else key
        if key not in section:
            if required:
                self.fail(path, "missing", "a number")
            return None
        value = section[key]
        kind = "a whole number" if integer else "a number"
        if positive:
            kind += " > 0"
        elif minimum is not None:
            kind += f" >= {minimum:g}"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (not integer or float(value).is_integer())
        ok = ok and (not positive or value > 0) and (minimum is None or value >= minimum)
        if not ok:
            self.fail(path, f"got {value!r}", kind)
            return None
        return int(value) if integer else value

    def flag(self, section: dict, key: str, where: str,
             allowed: str = "true | false") -> bool | None:
        """A YAML boolean at `where` (the full key path)."""
        if key not in section:
            return None
        if isinstance(section[key], bool):
            return section[key]
        self.fail(where, f"got {section[key]!r}", allowed)
        return None

    def string(self, section: dict, key: str, where: str, pattern: re.Pattern) -> str | None:
        if key not in section:
            return None
        value = section[key]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.fail(where, f"got {value!r}", f"text matching {pattern.pattern}")
            return None
        return value

    def choice(self, section: dict, key: str, where: str, allowed: tuple[str, ...]) -> str | None:
        if key not in section:
            return None
        if section[key] not in allowed:
            self.fail(where, f"got {section[key]!r}", " | ".join(allowed))
            return None
        return section[key]

    def command(self, section: dict, where: str) -> str | None:
        """`command:` as a non-empty shell command line."""
        if "command" not in section:
            return None
        value = section["command"]
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"got {value!r}", "a non-empty shell command")
            return None
        return value

    def per_profile(self, section: dict, key: str, where: str, profiles: dict[str, Any],
                    defaults: dict[str, int], fallback: int, **checks: Any
                    ) -> dict[str, int] | None:
        """`key: 5` (every profile) or `key: {breadth: 5, ...}` (the rest keep `defaults`,
        a profile with no default gets `fallback`); `checks` as for number()."""
        if key not in section:
            return None
        value = section[key]
        if not isinstance(value, dict):
            number = self.number(section, key, where=where, **checks)
            return None if number is None else {name: number for name in profiles}
        counts = {name: defaults.get(name, fallback) for name in profiles}
        for name, count in value.items():
            if name not in profiles:
                self.fail(f"{where}.{key}.{name}", "unknown profile",
                          f"one of {', '.join(profiles)}")
                continue
            number = self.number({name: count}, name, where=f"{where}.{key}", **checks)
            if number is not None:
                counts[name] = number
        return counts
