"""Evidence for the agent's prompt: how the incumbent and the last runs trained, and which
idea families keep losing.

- `runs_section`: for the incumbent of each profile and the last few measured runs, per
  rung: val_bpb, the training curve (train_loss at a few steps, read by the daemon's own
  parser from the rung's log), the step time, the roundtrip gap (post- minus pre-quantization
  val_bpb) and the artifact headroom under the cap (the judge's measured size when it has
  one). Unknown figures read "unknown".
- `family_section` / `rotated_families`: the backlog's ideas grouped by their heading
  (loop.backlog.ideas.families); a family whose last N tested ideas all lost
  (`agent.rotate_after_losses`) is rotated away from: no idea of it is suggested.

Everything is bounded: a few rows, a few curve points, a capped number of families.
"""

from __future__ import annotations

from pathlib import Path

from loop.measure.logparse import parse_train_curve, parse_trainer_log
from loop.store.statuses import names_where

EVIDENCE_ROWS = 3  # measured runs shown besides the incumbents
CURVE_POINTS = 6
MAX_FAMILIES = 20
MAX_LOG_BYTES = 4_000_000  # a rung's log is read only up to this much (its tail)
LOSSES = names_where(search="loss")  # discard, crash, timeout, over_cap
TESTED = names_where(tests_idea=True, says_about_change=True)
UNKNOWN = "unknown"


# --------------------------------------------------------------------------- runs


def runs_section(rows: list[dict], home: Path, cap_bytes: int,
                 last: int = EVIDENCE_ROWS) -> str:
    """The incumbents' and the last `last` measured runs' figures, one line per rung."""
    incumbents = _incumbent_rows(rows)
    measured = [r for r in rows if _measured_rungs(r) and r not in incumbents]
    lines = [_rung_line(row, profile, rung, home, cap_bytes, row in incumbents)
             for row in incumbents + measured[-last:]
             for profile, rung in _measured_rungs(row).items()]
    return "\n".join(lines) + "\n" if lines else "Nothing measured yet.\n"


def _incumbent_rows(rows: list[dict]) -> list[dict]:
    """The latest keep per profile of the session of the last row."""
    session = next((r.get("session") for r in reversed(rows) if r.get("session")), None)
    best: dict[str, dict] = {}
    for row in rows:
        if row.get("status") == "keep" and row.get("session") == session:
            for profile in _measured_rungs(row):
                best[profile] = row
    return list({id(r): r for r in best.values()}.values())


def _measured_rungs(row: dict) -> dict[str, dict]:
    return {p: r for p, r in (row.get("rungs") or {}).items()
            if isinstance(r, dict) and (r.get("log") or r.get("val_bpb") is not None)}


def _rung_line(row: dict, profile: str, rung: dict, home: Path, cap_bytes: int,
               incumbent: bool) -> str:
    text = _read_log(home, rung.get("log"))
    log = parse_trainer_log(text) if text else None
    tag = "incumbent, " if incumbent else ""
    idea = f" [{row['idea']}]" if row.get("idea") else ""
    parts = [f"val_bpb {_num(rung.get('val_bpb'), '.4f')}",
             f"train_loss {_curve(parse_train_curve(text)) if text else UNKNOWN}",
             f"step {_num(_pick(log and log.step_ms, rung.get('step_ms')), '.1f')} ms",
             f"roundtrip gap {_num(_gap(log, rung), '+.5f')}",
             f"headroom {_headroom(rung, cap_bytes)}"]
    return (f"- {row.get('id')} {tag}{row.get('status')}{idea} at {profile}: "
            + "; ".join(parts))


def _curve(curve: list[tuple[int, float | None]]) -> str:
    """A few evenly spaced points, the first and the last included: `6.93@1 5.61@30`."""
    if not curve:
        return UNKNOWN
    if len(curve) > CURVE_POINTS:
        step = (len(curve) - 1) / (CURVE_POINTS - 1)
        curve = [curve[round(i * step)] for i in range(CURVE_POINTS)]
    return " ".join(f"{_num(loss, '.3f')}@{s}" for s, loss in curve)


def _gap(log, rung: dict) -> float | None:
    """Post- minus pre-quantization val_bpb: the daemon's reading, else the printed claim."""
    if log is not None and log.exact_val_bpb is not None and log.pre_quant_val_bpb is not None:
        return log.exact_val_bpb - log.pre_quant_val_bpb
    return rung.get("delta_bpb_roundtrip")


def _headroom(rung: dict, cap_bytes: int) -> str:
    judged = ((rung.get("judge") or {}).get("total_bytes") or {}).get("total")
    total = _pick(judged, rung.get("total_bytes"))
    if not isinstance(total, (int, float)):
        return UNKNOWN
    return (f"{cap_bytes - int(total):,} bytes ({100 * total / cap_bytes:.1f}% of the cap "
            "used)")


def _read_log(home: Path, path: str | None) -> str | None:
    if not path:
        return None
    full = Path(path) if Path(path).is_absolute() else home / path
    try:
        with full.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - MAX_LOG_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return None


# --------------------------------------------------------------------------- families


def loss_streaks(rows: list[dict], families: dict[str, str]) -> dict[str, int]:
    """Family -> tested ideas lost in a row at the end (a keep resets it)."""
    streaks: dict[str, int] = {}
    for row in rows:
        family = families.get(row.get("idea") or "")
        if family is None or row.get("status") not in TESTED:
            continue
        if row["status"] == "keep":
            streaks[family] = 0
        elif row["status"] in LOSSES:
            streaks[family] = streaks.get(family, 0) + 1
    return streaks


def rotated_families(rows: list[dict], families: dict[str, str], after: int) -> set[str]:
    """Families to rotate away from: `after` losses in a row (0: never)."""
    if after <= 0:
        return set()
    return {f for f, n in loss_streaks(rows, families).items() if n >= after}


def family_section(rows: list[dict], families: dict[str, str], after: int) -> str:
    """Per family: tested, kept, the last outcomes, and whether it is rotated away from."""
    tested = [r for r in rows if r.get("status") in TESTED and not r.get("baseline")]
    streaks, rotated = loss_streaks(rows, families), rotated_families(rows, families, after)
    names = list(dict.fromkeys(families.values()))
    lines = []
    for name in names[:MAX_FAMILIES]:
        mine = [r for r in tested if families.get(r.get("idea") or "") == name]
        line = f"- {name}: {_tally(mine)}"
        if name in rotated:
            line += (f"; {streaks[name]} losses in a row: rotate away, no idea of it is "
                     f"suggested (agent.rotate_after_losses {after})")
        lines.append(line)
    if len(names) > MAX_FAMILIES:
        lines.append(f"- ... {len(names) - MAX_FAMILIES} more families")
    own = [r for r in tested if not r.get("idea") or r.get("idea") not in families]
    lines.append(f"- outside the backlog's families (own ideas): {_tally(own)}")
    return "\n".join(lines) + "\n"


def _tally(rows: list[dict]) -> str:
    if not rows:
        return "nothing tested yet"
    kept = sum(r.get("status") == "keep" for r in rows)
    recent = ", ".join(f"{r.get('id')} {r.get('status')}" for r in rows[-3:])
    return f"{len(rows)} tested, {kept} kept; last: {recent}"


# --------------------------------------------------------------------------- small helpers


def _pick(first, second):
    return first if first is not None else second


def _num(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(
        value, bool) else UNKNOWN
