"""The METRIC line grammar of SPEC section 4: `METRIC name=value`, one metric per line.

A metric whose value is missing, malformed or non-finite is *unknown*: it is left out of the
result, never reported as 0 (a crash recorded as val_bpb=0 looks like the best run ever).
"""

from __future__ import annotations

import math
import re

# A line that *claims* to report a metric: the keyword at column 0, one space, a valid name.
# Whatever follows `=` is the value; anything but a finite decimal makes the metric unknown.
_STATEMENT = re.compile(r"METRIC ([A-Za-z0-9_.]+)=(.*)")

# Decimal notation only (optional sign, digits, point, exponent). Python's float() also
# accepts "nan", "inf", "1_000", non-ASCII digits and surrounding spaces: the grammar does not.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_decimal(text: str) -> float | None:
    """The finite value of a decimal literal, or None when it is not one (unknown)."""
    if not _DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_metric_lines(text: str) -> dict[str, float]:
    """Metrics reported by `METRIC name=value` lines in `text`; unknown ones are omitted.

    The last statement about a name wins, including a last statement whose value is not a
    finite number: the script's final word is then "unknown", so an earlier value is dropped.
    Lines that are not METRIC statements (trainer output, prose) are ignored.
    """
    metrics: dict[str, float] = {}
    for line in text.splitlines():
        match = _STATEMENT.fullmatch(line)
        if match is None:
            continue
        name, raw = match.groups()
        value = parse_decimal(raw)
        if value is None:
            metrics.pop(name, None)
        else:
            metrics[name] = value
    return metrics
