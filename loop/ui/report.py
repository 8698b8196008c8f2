"""`autogolf report`: the morning page, built from the ledger alone.

`build_report(rows, out_dir)` writes `index.html` (self-contained: inline CSS and inline SVG
charts, no script, no network, works opened from disk) and `summary.md` into `out_dir`
(normally `.autogolf/report/`).

What a point on a chart means (SPEC sections 4, 6 and 9):
- one chart per (dataset, profile): results from different datasets or profiles are never
  put in one series;
- x is the experiment's position in the ledger (chronological), so one x is the same
  experiment on every chart; kept changes are labelled with their id;
- a failed run (crash, timeout, checks, forbidden edit, invalid or mismatched metric,
  interrupted) has no trustworthy val_bpb: it is marked on the top edge as "unknown", never
  plotted as a number; a run that never reached a benchmark (checks_failed, forbidden_edit)
  is marked on the chart of its session's first rung;
- duplicates were not run and appear only in the tables; manual runs (`autogolf bench`)
  are never compared with the loop and are listed on their own.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loop.store.statuses import NAMES as STATUSES
from loop.store.statuses import names_where
from loop.ui import evidence

CAP_BYTES = 16_000_000
# Statuses whose rung values are not a trustworthy measurement: shown as "unknown".
FAILED = names_where(failed_run=True)
# Failed before any benchmark ran: no rung, charted on the session's first rung.
NOT_BENCHMARKED = names_where(benchmarked=False)
MAX_PATCH_CHARS = 200_000
UNKNOWN = "unknown"


# --------------------------------------------------------------------------- reading rows


def number(value: Any) -> float | None:
    """A finite number, or None (unknown): booleans, strings, NaN and inf are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def experiments(rows: Iterable[dict]) -> list[dict]:
    return [r for r in rows if isinstance(r, dict) and r.get("type") == "experiment"]


def loop_experiments(rows: Iterable[dict]) -> list[dict]:
    """The loop's experiments (baselines included), without manual `bench` rows."""
    return [r for r in experiments(rows) if not r.get("manual")]


def manual_runs(rows: Iterable[dict]) -> list[dict]:
    return [r for r in experiments(rows) if r.get("manual")]


def is_kept_change(row: dict) -> bool:
    return row.get("status") == "keep" and not row.get("baseline") and not row.get("manual")


def category(row: dict) -> str:
    """What a row counts as: its status, except a good baseline and any manual run."""
    if row.get("manual"):
        return "manual"
    status = row.get("status") or UNKNOWN
    if row.get("baseline") and status == "keep":
        return "baseline"
    return status


def categories() -> list[str]:
    """Every category in display order (SPEC section 6 statuses, then ours)."""
    return [*STATUSES, "baseline", "manual"]


def rungs(row: dict) -> dict[str, dict]:
    value = row.get("rungs")
    if not isinstance(value, dict):
        return {}
    return {p: r for p, r in value.items() if isinstance(r, dict)}


def rung_metric(row: dict, profile: str, name: str) -> float | None:
    return number(rungs(row).get(profile, {}).get(name))


def trusted_val_bpb(row: dict, profile: str) -> float | None:
    """val_bpb at `profile`, or None when the row failed (its number is not a result)."""
    if row.get("status") in FAILED:
        return None
    return rung_metric(row, profile, "val_bpb")


def wall_seconds(row: dict) -> tuple[float, int]:
    """(sum of the known rung wall_s, number of rungs whose wall_s is unknown)."""
    total, unknown = 0.0, 0
    for rung in rungs(row).values():
        seconds = number(rung.get("wall_s"))
        if seconds is None:
            unknown += 1
        else:
            total += seconds
    return total, unknown


def session_headers(rows: Iterable[dict]) -> dict[str, dict]:
    return {str(r.get("session")): r for r in rows
            if isinstance(r, dict) and r.get("type") == "session" and r.get("session")}


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- formatting


def fmt_bpb(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:.4f}"


def fmt_delta(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:+.4f}"


def fmt_bytes(value: float | None) -> str:
    return UNKNOWN if value is None else f"{int(value):,}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return UNKNOWN
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def fmt_time(value: Any) -> str:
    stamp = parse_time(value)
    if stamp is None:
        return UNKNOWN
    return stamp.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def short_commit(value: Any) -> str:
    return value[:10] if isinstance(value, str) and value else "-"


# --------------------------------------------------------------------------- the numbers


@dataclass
class Point:
    """One experiment's result at one profile."""

    x: int              # position among the loop's experiments, chronological, from 1
    id: str
    session: str
    kind: str           # "kept" | "baseline" | "discard" | "over_cap" | "unknown"
    val_bpb: float | None
    total_bytes: float | None


def _kind(row: dict, val_bpb: float | None) -> str:
    status = row.get("status")
    if status in FAILED or val_bpb is None:
        return "unknown"
    if status == "keep":
        return "baseline" if row.get("baseline") else "kept"
    return "over_cap" if status == "over_cap" else "discard"


def _row_profiles(row: dict, headers: dict[str, dict]) -> list[str]:
    """The profiles a row is charted at (a never-benchmarked failure: its first rung)."""
    measured = list(rungs(row))
    if measured or row.get("status") not in NOT_BENCHMARKED:
        return measured
    ladder = headers.get(str(row.get("session")), {}).get("ladder")
    return [ladder[0]] if isinstance(ladder, list) and ladder else []


def series(rows: list[dict]) -> dict[tuple[str, str], list[Point]]:
    """Chart points per (dataset, profile), in ledger order; duplicates were not run."""
    headers = session_headers(rows)
    found: dict[tuple[str, str], list[Point]] = {}
    for x, row in enumerate(loop_experiments(rows), start=1):
        if row.get("status") == "duplicate":
            continue
        dataset = str(row.get("dataset") or UNKNOWN)
        for profile in _row_profiles(row, headers):
            val = trusted_val_bpb(row, profile)
            total = None if row.get("status") in FAILED else rung_metric(row, profile,
                                                                         "total_bytes")
            point = Point(x, str(row.get("id", "?")), str(row.get("session") or UNKNOWN),
                          _kind(row, val), val, total)
            found.setdefault((dataset, profile), []).append(point)
    return found


def by_session(points: list[Point]) -> list[list[Point]]:
    """Consecutive runs of points from one session (each session has its own incumbent)."""
    groups: list[list[Point]] = []
    for point in points:
        if groups and groups[-1][0].session == point.session:
            groups[-1].append(point)
        else:
            groups.append([point])
    return groups


def running_best(points: list[Point]) -> list[tuple[int, float]]:
    """(x, best so far) at every kept or baseline point of one session, for a step line."""
    steps: list[tuple[int, float]] = []
    best: float | None = None
    for point in points:
        if point.kind in ("kept", "baseline") and point.val_bpb is not None:
            best = point.val_bpb if best is None else min(best, point.val_bpb)
            steps.append((point.x, best))
    return steps


@dataclass
class Progress:
    dataset: str
    profile: str
    start: float | None      # the first baseline (or first kept) measurement
    start_id: str | None
    best: float | None       # the lowest kept or baseline measurement
    best_id: str | None
    kept: int                # kept changes measured at this profile

    @property
    def delta(self) -> float | None:
        if self.start is None or self.best is None:
            return None
        return self.best - self.start


def progress(rows: list[dict]) -> list[Progress]:
    """Start and best val_bpb per (dataset, profile)."""
    result = []
    for (dataset, profile), points in series(rows).items():
        good = [(p.val_bpb, p) for p in points
                if p.kind in ("kept", "baseline") and p.val_bpb is not None]
        first = next((p for _, p in good if p.kind == "baseline"), good[0][1] if good else None)
        best = min(good, key=lambda pair: pair[0])[1] if good else None
        result.append(Progress(dataset, profile,
                               first.val_bpb if first else None, first.id if first else None,
                               best.val_bpb if best else None, best.id if best else None,
                               sum(1 for p in points if p.kind == "kept")))
    return result


def count_by_category(rows: list[dict]) -> Counter[str]:
    """Experiments per category (status; good baselines and manual runs apart)."""
    return Counter(category(r) for r in experiments(rows))


@dataclass
class TimeSpent:
    seconds: float = 0.0     # sum of the known rung wall_s
    unknown: int = 0         # rungs whose wall_s is unknown
    rungs: int = 0           # rungs run at all (0: no benchmark ever ran)

    def text(self) -> str:
        if not self.rungs:
            return "no benchmark run"
        if self.unknown == self.rungs:
            return UNKNOWN
        extra = f" (+{self.unknown} run(s) of unknown duration)" if self.unknown else ""
        return fmt_duration(self.seconds) + extra


def time_by_category(rows: list[dict]) -> dict[str, TimeSpent]:
    """Benchmark time per category, from the rungs' wall_s."""
    totals: dict[str, TimeSpent] = {}
    for row in experiments(rows):
        seconds, unknown = wall_seconds(row)
        spent = totals.setdefault(category(row), TimeSpent())
        spent.seconds += seconds
        spent.unknown += unknown
        spent.rungs += len(rungs(row))
    return totals


# How the split of a session's time reads (row field `time_s`, loop.store.rows.TIME_KINDS).
TIME_LABELS = {"propose": "proposing", "checks": "checks", "screen": "first runs",
               "repeats": "more seeds / re-runs", "incumbent": "incumbent runs",
               "judge": "the judge's scoring"}


def time_split(rows: list[dict]) -> tuple[dict[str, float], int]:
    """Seconds per kind of time over the experiments' `time_s` (baselines' own runs as
    "baselines"), and how many experiments did not record it (rows written before it)."""
    split: dict[str, float] = {}
    missing = 0
    for row in experiments(rows):
        spent = row.get("time_s")
        if not isinstance(spent, dict):
            missing += 1
            continue
        for kind, seconds in spent.items():
            value = number(seconds)
            if value is None:
                continue
            key = "baselines" if row.get("baseline") and kind in ("screen", "repeats") \
                else kind
            split[key] = split.get(key, 0.0) + value
    return split, missing


def experiments_per_hour(header: dict | None, rows: list[dict],
                         stop: dict | None = None) -> float | None:
    """Candidate experiments (baselines not counted) per hour of the session: from its
    header to its stop row (else its last experiment row); None when the times are unknown."""
    start = parse_time((header or {}).get("timestamp"))
    exps = experiments(rows)
    last = stop or (exps[-1] if exps else None)
    end = parse_time((last or {}).get("timestamp"))
    if start is None or end is None or end <= start:
        return None
    changes = sum(1 for r in exps if not r.get("baseline"))
    return changes / ((end - start).total_seconds() / 3600)


def fmt_rate(per_hour: float | None) -> str:
    return UNKNOWN if per_hour is None else f"{per_hour:.1f} experiments per hour"


def time_split_text(rows: list[dict]) -> str | None:
    """e.g. "first runs 20m 10s, incumbent runs 9m 02s, ..." largest first; None when no
    experiment recorded its time."""
    split, missing = time_split(rows)
    if not split:
        return None
    labels = {**TIME_LABELS, "baselines": "baselines"}
    parts = [f"{labels.get(k, k)} {fmt_duration(v)}"
             for k, v in sorted(split.items(), key=lambda kv: -kv[1])]
    extra = f" (+{missing} experiment(s) that did not record it)" if missing else ""
    return ", ".join(parts) + extra
@dataclass
class AgentSpent:
    """What the agent proposer used over some rows (their `agent` attempts); cost and tokens
    are sums over the attempts that reported them, unknown when none did."""

    attempts: int = 0
    tries: int = 0
    retries: int = 0
    wall_s: float = 0.0
    waited_s: float = 0.0
    cost_usd: float | None = None
    tokens: int | None = None
    unreported: int = 0  # attempts whose CLI reported no usage

    def add(self, attempt: dict) -> None:
        self.attempts += 1
        self.retries += int(number(attempt.get("retries")) or 0)
        self.tries += int(number(attempt.get("tries")) or 1)
        self.wall_s += number(attempt.get("wall_s")) or 0.0
        self.waited_s += number(attempt.get("waited_s")) or 0.0
        usage = attempt.get("usage") if isinstance(attempt.get("usage"), dict) else {}
        cost = number(usage.get("cost_usd"))
        tokens = [number(usage.get(k)) for k in ("input_tokens", "output_tokens")]
        known = [t for t in tokens if t is not None]
        self.unreported += cost is None and not known
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost
        if known:
            self.tokens = (self.tokens or 0) + int(sum(known))

    def cost_text(self) -> str:
        if self.cost_usd is None and self.tokens is None:
            return f"cost and tokens {UNKNOWN} (the agent CLI reported none)"
        cost = f"${self.cost_usd:.2f}" if self.cost_usd is not None else UNKNOWN
        tokens = f"{self.tokens:,}" if self.tokens is not None else UNKNOWN
        gap = (f"; {self.unreported} attempt(s) reported nothing, {UNKNOWN} for them"
               if self.unreported else "")
        return f"cost {cost}, tokens {tokens}{gap}"

    def text(self) -> str:
        return (f"{self.attempts} attempt(s), {fmt_duration(self.wall_s)} of agent time, "
                f"{self.retries} retries after rate limits ({fmt_duration(self.waited_s)} "
                f"waited); {self.cost_text()}")


def agent_spent(rows: Iterable[dict]) -> AgentSpent | None:
    """The agent's spending over these rows' attempts; None when no row has one."""
    spent = AgentSpent()
    for row in experiments(rows):
        if isinstance(row.get("agent"), dict):
            spent.add(row["agent"])
    return spent if spent.attempts else None


def deltas(row: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    """(profile, val_bpb, incumbent before, delta) for each rung of a row."""
    before = row.get("incumbent_before")
    before = before if isinstance(before, dict) else {}
    out = []
    for profile in rungs(row):
        val = trusted_val_bpb(row, profile)
        base = number(before.get(profile))
        out.append((profile, val, base, None if val is None or base is None else val - base))
    return out


def first_total_bytes(row: dict) -> float | None:
    """The artifact size of the first rung that has one; unknown for a failed run."""
    if row.get("status") in FAILED:
        return None
    for profile in rungs(row):
        value = rung_metric(row, profile, "total_bytes")
        if value is not None:
            return value
    return None


def sessions(rows: list[dict]) -> list[dict]:
    """Each session covered: its header facts, experiment counts and stop reasons."""
    headers = session_headers(rows)
    names = list(headers)
    for row in loop_experiments(rows):
        name = row.get("session")
        if name and str(name) not in names:
            names.append(str(name))  # rows whose header is missing still belong somewhere
    out = []
    for name in names:
        mine = [r for r in loop_experiments(rows) if str(r.get("session")) == name]
        stops = [r for r in rows if r.get("type") == "stop" and str(r.get("session")) == name]
        out.append({"name": name, "header": headers.get(name, {}), "experiments": mine,
                    "kept": sum(1 for r in mine if is_kept_change(r)), "stops": stops})
    return out


# --------------------------------------------------------------------------- patches


def patch_text(row: dict, repo: Path | None) -> tuple[str | None, str]:
    """(the patch text or None, a note: where it came from or why it is missing)."""
    raw = row.get("patch")
    if not isinstance(raw, str) or not raw:
        return None, "no patch recorded"
    path = Path(raw)
    if not path.is_absolute():
        path = (repo or Path.cwd()) / path
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, f"patch file not found: {raw}"
    if len(text) > MAX_PATCH_CHARS:
        return text[:MAX_PATCH_CHARS], f"{raw} (first {MAX_PATCH_CHARS:,} characters)"
    return text, raw


# --------------------------------------------------------------------------- ideas


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def evidence_text(item: Any) -> str:
    """One piece of evidence: a string as written, or a record (loop.backlog.ideas.Evidence or a
    dict with experiment/profile/delta/status) as "E0012 breadth delta=-0.0031 keep"."""
    if isinstance(item, str):
        return item
    experiment = _field(item, "experiment")
    if experiment is None:
        return str(item)
    delta = fmt_delta(number(_field(item, "delta")))
    return (f"{experiment} {_field(item, 'profile') or UNKNOWN} delta={delta} "
            f"{_field(item, 'status') or UNKNOWN}")


def idea_view(item: Any) -> dict[str, Any]:
    """An idea as id/status/text/evidence, from a dict or any object with those attributes."""
    evidence = _field(item, "evidence")
    if evidence is None:
        evidence = []
    elif isinstance(evidence, (str, dict)) or not isinstance(evidence, Iterable):
        evidence = [evidence]
    return {"id": str(_field(item, "id") or "?"), "status": str(_field(item, "status") or "?"),
            "text": str(_field(item, "text") or ""),
            "evidence": [evidence_text(e) for e in evidence]}


# --------------------------------------------------------------------------- charts

KIND_STYLE = {
    "discard": dict(marker="o", s=22, color="#9aa5b1", alpha=0.45, label="discarded"),
    "over_cap": dict(marker="v", s=30, color="#e67e22", alpha=0.5, label="over the size cap"),
    "baseline": dict(marker="D", s=40, color="#2c6fbb", edgecolor="black", linewidths=0.6,
                     label="baseline (incumbent re-measured)", zorder=4),
    "kept": dict(marker="o", s=55, color="#27ae60", edgecolor="black", linewidths=0.7,
                 label="kept", zorder=5),
}
# Outside the plot, right of it, below the top edge where "unknown" is written.
LEGEND = dict(loc="upper left", bbox_to_anchor=(1.01, 0.9), fontsize=7.5, frameon=False)
UNKNOWN_STYLE = dict(marker="x", s=36, color="#c0392b", clip_on=False, zorder=6,
                     label="failed: val_bpb unknown (top edge)")


def _plot_kinds(ax: Any, points: list[Point], value: str, scale: float = 1.0) -> None:
    for kind, style in KIND_STYLE.items():
        chosen = [p for p in points if p.kind == kind and getattr(p, value) is not None]
        if chosen:
            ax.scatter([p.x for p in chosen], [getattr(p, value) / scale for p in chosen],
                       **style)


def _mark_unknown(ax: Any, xs: list[int], label: bool = True) -> None:
    """Unknowns sit on the top edge in axes coordinates: they never move the value scale."""
    if not xs:
        return
    from matplotlib.transforms import blended_transform_factory

    edge = blended_transform_factory(ax.transData, ax.transAxes)
    style = dict(UNKNOWN_STYLE) if label else {**UNKNOWN_STYLE, "label": None}
    ax.scatter(xs, [1.0] * len(xs), transform=edge, **style)
    ax.text(1.005, 1.0, UNKNOWN, transform=ax.transAxes, fontsize=7, color="#c0392b",
            va="center", ha="left")


def _bpb_axes(ax: Any, points: list[Point]) -> None:
    _plot_kinds(ax, points, "val_bpb")
    label = "running best (per session)"
    for group in by_session(points):
        steps = running_best(group)
        if steps:
            xs = [x for x, _ in steps] + [group[-1].x]
            ys = [y for _, y in steps] + [steps[-1][1]]
            ax.step(xs, ys, where="post", color="#27ae60", linewidth=1.6, label=label,
                    zorder=3)
            label = None
    for point in points:
        if point.kind == "kept" and point.val_bpb is not None:
            ax.annotate(point.id, (point.x, point.val_bpb), textcoords="offset points",
                        xytext=(4, -11), fontsize=7, color="#1e7d46")
    _mark_unknown(ax, [p.x for p in points if p.kind == "unknown"])
    if not any(p.val_bpb is not None for p in points):
        ax.set_yticks([])  # no scale at all beats a scale that suggests a value
        ax.text(0.5, 0.5, "no valid val_bpb yet", transform=ax.transAxes, ha="center",
                color="#666666")
    ax.margins(y=0.12)  # room for the id labels under the lowest points
    ax.set_ylabel("val_bpb (lower is better)")
    ax.grid(True, alpha=0.25)
    ax.legend(**LEGEND)


def _mark_sessions(axes: list[Any], points: list[Point]) -> None:
    """A dotted line where a new session (a fresh branch and incumbent) begins."""
    for group in by_session(points)[1:]:
        x = group[0].x - 0.5
        for ax in axes:
            ax.axvline(x, color="#7f8c8d", linestyle=":", linewidth=1)
        axes[0].text(x, 0.02, f" session {group[0].session}",
                     transform=axes[0].get_xaxis_transform(), fontsize=7, color="#555555",
                     rotation=90, va="bottom", ha="left")


def _size_axes(ax: Any, points: list[Point], cap_bytes: int) -> None:
    mb = 1e6
    _plot_kinds(ax, points, "total_bytes", scale=mb)
    ax.axhline(cap_bytes / mb, color="#c0392b", linestyle="--", linewidth=1.2,
               label=f"cap {cap_bytes:,} bytes")
    _mark_unknown(ax, [p.x for p in points if p.total_bytes is None], label=False)
    known = [p.total_bytes for p in points if p.total_bytes is not None]
    ax.set_ylim(0, max([cap_bytes, *known]) / mb * 1.12)
    ax.set_ylabel("total_bytes (MB)")
    ax.set_xlabel("experiment (ledger order)")
    ax.grid(True, alpha=0.25)
    ax.legend(**LEGEND)


def render_chart(dataset: str, profile: str, points: list[Point], cap_bytes: int,
                 salt: str) -> str:
    """One (dataset, profile) series as an SVG document: val_bpb above, size below."""
    # The object API (no pyplot) never touches a GUI backend or global figure state: it
    # renders headless like Agg, straight to SVG. Imported here so `import loop.ui.report`
    # stays cheap for callers that only want the numbers.
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Text stays text (searchable, small) in the reader's own sans-serif font: the SVG
    # names system fonts only, so nothing is ever fetched.
    with rc_context({"svg.hashsalt": salt, "svg.fonttype": "none", "font.family": "sans-serif",
                     "font.sans-serif": ["Helvetica", "Arial", "DejaVu Sans"]}):
        fig = Figure(figsize=(10, 6.4), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
        _bpb_axes(top, points)
        _size_axes(bottom, points, cap_bytes)
        _mark_sessions([top, bottom], points)
        xs = [p.x for p in points]
        bottom.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        top.set_title(f"{profile}  ·  dataset {dataset}", fontsize=11, loc="left")
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg",
                    metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return buffer.getvalue()


def inline_svg(svg: str, prefix: str) -> str:
    """An SVG document made fit to sit inside HTML next to other charts.

    Drops the XML prolog and DOCTYPE (and with them the DTD URL) and the namespace
    attributes (the HTML parser supplies them), and prefixes every id so that two charts'
    internal references never collide.
    """
    body = svg[svg.index("<svg"):]
    body = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", body, count=0)
    body = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', body)
    body = re.sub(r'(xlink:href|href)="#([^"]+)"', rf'\1="#{prefix}-\2"', body)
    body = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", body)
    return body.replace("<svg ", '<svg role="img" class="chart" ', 1)


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;
 margin:0;background:#f5f6f8;color:#1d232a}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;
 border-bottom:1px solid #d8dde3;padding-bottom:4px}
.sub{color:#5b6570;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:10px 16px;
 min-width:150px}
.card b{display:block;font-size:22px}.card span{color:#5b6570;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13.5px}
th,td{border:1px solid #e1e5ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4}td.num{text-align:right;font-variant-numeric:tabular-nums;
 white-space:nowrap}
.unknown{color:#b03a2e;font-style:italic}.good{color:#1e7d46}.bad{color:#b03a2e}
.zero{color:#a0a8b0}
.chart-box{background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:8px;
 margin:12px 0}
svg.chart{width:100%;height:auto;display:block}
details{margin:4px 0}summary{cursor:pointer;color:#1f5fa8}
pre.diff{background:#0f1720;color:#e6edf3;padding:10px;border-radius:6px;overflow:auto;
 max-height:520px;font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.status{font-weight:600}.note{color:#5b6570;font-size:13px}
pre.diff .add{color:#7ee787}pre.diff .del{color:#ffa198}pre.diff .hunk{color:#79c0ff}
pre.diff .file{color:#d2a8ff}table.fixed{table-layout:fixed}
tr.diff-row td{border-top:none;padding-top:0}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(text: str, cls: str = "") -> str:
    if text == UNKNOWN:
        cls = (cls + " unknown").strip()
    return f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>"


def _table(head: list[str], body: list[str]) -> str:
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cards(rows: list[dict]) -> str:
    loop = loop_experiments(rows)
    changes = [r for r in loop if not r.get("baseline")]
    failed = sum(1 for r in changes if r.get("status") in FAILED)
    seconds = sum(wall_seconds(r)[0] for r in experiments(rows))
    cards = [(len(changes), "experiments (baselines apart)"),
             (sum(1 for r in changes if is_kept_change(r)), "kept"),
             (failed, "failed"), (fmt_duration(seconds), "benchmark time"),
             (len(sessions(rows)), "sessions")]
    inner = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(t)}</span></div>'
                    for v, t in cards)
    return f'<div class="cards">{inner}</div>'


def _progress_html(rows: list[dict]) -> str:
    body = []
    for p in progress(rows):
        cls = "good" if p.delta is not None and p.delta < 0 else ""
        body.append("<tr>" + _cell(p.profile) + _cell(p.dataset)
                    + _cell(f"{fmt_bpb(p.start)} ({p.start_id or '-'})", "num")
                    + _cell(f"{fmt_bpb(p.best)} ({p.best_id or '-'})", "num")
                    + _cell(fmt_delta(p.delta), f"num {cls}") + _cell(str(p.kept), "num")
                    + "</tr>")
    if not body:
        return '<p class="note">No measurements yet.</p>'
    return _table(["profile", "dataset", "start", "best", "best - start", "kept"], body)


def _charts_html(rows: list[dict], cap_bytes: int) -> str:
    parts = []
    for n, ((dataset, profile), points) in enumerate(sorted(series(rows).items()), start=1):
        svg = render_chart(dataset, profile, points, cap_bytes, salt=f"{dataset}/{profile}")
        parts.append(f'<div class="chart-box" id="chart-{n}">'
                     f"{inline_svg(svg, f'c{n}')}</div>")
    if not parts:
        return '<p class="note">No benchmark results to chart yet.</p>'
    return "".join(parts)


def _diff_line(line: str) -> str:
    """One escaped diff line, coloured by what it does."""
    if line.startswith(("+++", "---")):
        kind = "file"
    elif line.startswith("@@"):
        kind = "hunk"
    else:
        kind = {"+": "add", "-": "del"}.get(line[:1], "")
    return f'<span class="{kind}">{esc(line)}</span>' if kind else esc(line)


def _diff_html(row: dict, repo: Path | None) -> str:
    text, note = patch_text(row, repo)
    if text is None:
        return f'<span class="note">{esc(note)}</span>'
    lines = "\n".join(_diff_line(line) for line in text.split("\n"))
    return (f"<details><summary>diff of {esc(row.get('id'))} ({esc(note)})</summary>"
            f'<pre class="diff">{lines}</pre></details>')


def _deltas_html(row: dict) -> str:
    lines = []
    for profile, val, base, delta in deltas(row):
        cls = "good" if delta is not None and delta < 0 else "unknown" if delta is None else ""
        lines.append(f"{esc(profile)}: {esc(fmt_bpb(val))} vs {esc(fmt_bpb(base))} "
                     f'<span class="{cls}">({esc(fmt_delta(delta))})</span>')
    return "<br>".join(lines) or '<span class="unknown">unknown</span>'


KEPT_COLUMNS = (("id", "7%"), ("change", "38%"), ("val_bpb vs incumbent (delta)", "30%"),
                ("total_bytes", "12%"), ("commit", "13%"))


def _kept_html(rows: list[dict], repo: Path | None) -> str:
    body = []
    for row in experiments(rows):
        if not is_kept_change(row):
            continue
        body.append(f'<tr id="kept-{esc(row.get("id"))}">' + _cell(str(row.get("id")))
                    + _cell(str(row.get("description") or "")) + f"<td>{_deltas_html(row)}</td>"
                    + _cell(fmt_bytes(first_total_bytes(row)), "num")
                    + f'<td><code title="{esc(row.get("commit") or "")}">'
                    f"{esc(short_commit(row.get('commit')))}</code></td></tr>"
                    # The diff gets the table's full width on a row of its own.
                    + f'<tr class="diff-row"><td colspan="{len(KEPT_COLUMNS)}">'
                    f"{_diff_html(row, repo)}</td></tr>")
    if not body:
        return '<p class="note">No change has been kept yet.</p>'
    cols = "".join(f'<col style="width:{width}">' for _, width in KEPT_COLUMNS)
    head = "".join(f"<th>{esc(name)}</th>" for name, _ in KEPT_COLUMNS)
    return (f'<table class="fixed"><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _status_html(rows: list[dict]) -> str:
    counts, times = count_by_category(rows), time_by_category(rows)
    names = categories() + sorted(set(counts) - set(categories()))
    body = []
    for name in names:
        count = counts.get(name, 0)
        spent = times[name].text() if count else "-"
        body.append("<tr>" + _cell(name, "status") + _cell(str(count), "num zero" if not count
                                                           else "num")
                    + _cell(spent, "num") + "</tr>")
    return _table(["status", "experiments", "benchmark time (sum of rung wall_s)"], body)


def _agent_html(rows: list[dict]) -> str:
    spent = agent_spent(rows)
    if spent is None:
        return "<p>No experiment was proposed by the agent.</p>"
    cells = [("attempts", str(spent.attempts)), ("tries (with retries)", str(spent.tries)),
             ("agent time", fmt_duration(spent.wall_s)),
             ("retries after rate limits", str(spent.retries)),
             ("waited for rate limits", fmt_duration(spent.waited_s)),
             ("reported cost", f"${spent.cost_usd:.2f}" if spent.cost_usd is not None
              else UNKNOWN),
             ("reported tokens", f"{spent.tokens:,}" if spent.tokens is not None else UNKNOWN),
             ("attempts that reported no usage", str(spent.unreported))]
    return _table(["", "the agent proposer"],
                  ["<tr>" + _cell(k) + _cell(v, "num unknown" if v == UNKNOWN else "num")
                   + "</tr>" for k, v in cells])


def _link_ids(text: str, known: set[str]) -> str:
    """Escaped text with experiment ids turned into in-page links."""
    def link(match: re.Match[str]) -> str:
        exp_id = match.group(0)
        return f'<a href="#exp-{exp_id}">{exp_id}</a>' if exp_id in known else exp_id

    return re.sub(r"\bE\d{4,}\b", link, esc(text))


def _ideas_html(ideas: list | None, rows: list[dict]) -> str:
    if ideas is None:
        return '<p class="note">No ideas backlog was given to the report.</p>'
    known = {str(r.get("id")) for r in experiments(rows)}
    body = []
    for idea in map(idea_view, ideas):
        evidence = "<br>".join(_link_ids(e, known) for e in idea["evidence"]) or "-"
        body.append("<tr>" + _cell(idea["id"]) + _cell(idea["status"], "status")
                    + _cell(idea["text"]) + f"<td>{evidence}</td></tr>")
    if not body:
        return '<p class="note">The ideas backlog is empty.</p>'
    return _table(["id", "status", "idea", "evidence"], body)


def _session_count(session: dict) -> str:
    baselines = sum(1 for r in session["experiments"] if r.get("baseline"))
    changes = len(session["experiments"]) - baselines
    return f"{changes} ({session['kept']} kept) + {baselines} baseline(s)"


def _sessions_html(rows: list[dict]) -> str:
    body = []
    for s in sessions(rows):
        header = s["header"]
        stops = "<br>".join(f"{esc(fmt_time(r.get('timestamp')))}: {esc(r.get('reason') or '')}"
                            for r in s["stops"]) or "no stop recorded (running, or killed)"
        ladder = header.get("ladder")
        body.append("<tr>" + _cell(s["name"]) + _cell(fmt_time(header.get("timestamp")))
                    + _cell(str(header.get("dataset") or UNKNOWN))
                    + _cell(" -> ".join(ladder) if isinstance(ladder, list) else UNKNOWN)
                    + _cell(str(header.get("proposer") or UNKNOWN))
                    + _cell(_session_count(s), "num")
                    + f"<td>{stops}</td></tr>")
    if not body:
        return '<p class="note">No session in the ledger.</p>'
    return _table(["session", "started", "dataset", "ladder", "proposer", "experiments",
                   "stopped"], body)


def _rung_summary(row: dict) -> str:
    parts = [f"{p}: {fmt_bpb(trusted_val_bpb(row, p))}" for p in rungs(row)]
    return "; ".join(parts) or "-"


def _manual_html(rows: list[dict]) -> str:
    body = ["<tr>" + _cell(str(r.get("id"))) + _cell(fmt_time(r.get("timestamp")))
            + _cell(_rung_summary(r)) + _cell(fmt_bytes(first_total_bytes(r)), "num")
            + _cell(str(r.get("status") or UNKNOWN), "status") + _cell(str(r.get("reason") or ""))
            + _cell(short_commit(r.get("commit"))) + "</tr>" for r in manual_runs(rows)]
    if not body:
        return '<p class="note">No manual runs.</p>'
    return ('<p class="note">Runs of <code>autogolf bench</code>: recorded, never compared with '
            "the loop's incumbents and not on the charts above.</p>"
            + _table(["id", "when", "val_bpb", "total_bytes", "status", "reason", "commit"],
                     body))


def _all_html(rows: list[dict]) -> str:
    body = []
    for n, row in enumerate(loop_experiments(rows), start=1):
        seconds, unknown = wall_seconds(row)
        spent = fmt_duration(seconds) if rungs(row) and not unknown else (
            UNKNOWN if unknown else "-")
        body.append(f'<tr id="exp-{esc(row.get("id"))}">' + _cell(str(n), "num")
                    + _cell(str(row.get("id"))) + _cell(str(row.get("session") or "-"))
                    + _cell(category(row), "status") + _cell(_rung_summary(row))
                    + _cell(fmt_bytes(first_total_bytes(row)) if rungs(row) else "-", "num")
                    + _cell(spent, "num") + _cell(str(row.get("description") or ""))
                    + _cell(str(row.get("reason") or "")) + "</tr>")
    return (f"<details><summary>All {len(body)} experiments of the loop</summary>"
            + _table(["#", "id", "session", "status", "val_bpb", "total_bytes", "time",
                      "change", "reason"], body) + "</details>")


def evidence_lines(rows: list[dict], rules: Mapping[str, Any] | None,
                   max_pooled_dof: float = 10.0) -> list[str]:
    """Per session: what each profile can resolve, each keep's score re-measured at fresh
    seeds, proxy fidelity and where the time went (loop.ui.evidence); [] when nothing."""
    lines = []
    for s in sessions(rows):
        exps = s["experiments"]
        found = [] if rules is None else evidence.resolution(exps, rules, max_pooled_dof)
        minimum = next(iter(rules.values())).min_improvement if rules else None
        part = [f"resolvable: {r.text(minimum)}" for r in found]
        part += [f"kept score: {k.text()}" for k in evidence.refreshed(exps)]
        fidelity = evidence.proxy_fidelity(exps)
        part += [fidelity.text()] if fidelity is not None else []
        split = time_split_text(exps)
        rate = experiments_per_hour(s["header"], exps, s["stops"][-1] if s["stops"] else None)
        part += [f"where the time went: {split}; {fmt_rate(rate)}"] if split else []
        lines += [f"session {s['name']}: {line}" for line in part]
    return lines


def _evidence_html(rows: list[dict], rules: Mapping[str, Any] | None,
                   max_pooled_dof: float) -> str:
    lines = evidence_lines(rows, rules, max_pooled_dof)
    if not lines:
        return ('<p class="note">No sequential decision, keep or timed experiment yet.</p>')
    return "<ul>" + "".join(f"<li><code>{esc(line)}</code></li>" for line in lines) + "</ul>"


def render_html(rows: list[dict], ideas: list | None, repo: Path | None,
                cap_bytes: int, generated: str, rules: Mapping[str, Any] | None = None,
                max_pooled_dof: float = 10.0) -> str:
    sections = [
        ("Progress per profile", _progress_html(rows)),
        ("val_bpb and artifact size per experiment", _charts_html(rows, cap_bytes)),
        ("Kept changes", _kept_html(rows, repo)),
        ("What the evidence can resolve", _evidence_html(rows, rules, max_pooled_dof)),
        ("Experiments by status", _status_html(rows)),
        ("What the agent spent", _agent_html(rows)),
        ("Ideas and their evidence", _ideas_html(ideas, rows)),
        ("Sessions", _sessions_html(rows)),
        ("Manual runs", _manual_html(rows)),
        ("Every experiment", _all_html(rows)),
    ]
    body = "".join(f"<h2>{esc(title)}</h2>{content}" for title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>autogolf report</title><style>{CSS}</style></head><body><main>"
            f"<h1>autogolf report</h1><p class=\"sub\">generated {esc(generated)} from "
            f"{len(experiments(rows))} experiments in the ledger · unknown values are shown as "
            f"<span class=\"unknown\">unknown</span>, never as 0</p>{_cards(rows)}{body}"
            "</main></body></html>\n")


# --------------------------------------------------------------------------- Markdown


def md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in body]
    return lines


def render_markdown(rows: list[dict], ideas: list | None, generated: str,
                    rules: Mapping[str, Any] | None = None, max_pooled_dof: float = 10.0) -> str:
    lines = [f"# autogolf report ({generated})", ""]
    for s in sessions(rows):
        stop = s["stops"][-1].get("reason") if s["stops"] else "no stop recorded"
        lines.append(f"- session {s['name']}: {_session_count(s)}; last stop: {stop}")
    lines += ["", "## Progress per profile", ""]
    lines += _md_table(["profile", "dataset", "start", "best", "best - start", "kept"],
                       [[p.profile, p.dataset, f"{fmt_bpb(p.start)} ({p.start_id or '-'})",
                         f"{fmt_bpb(p.best)} ({p.best_id or '-'})", fmt_delta(p.delta),
                         str(p.kept)] for p in progress(rows)])
    lines += ["", "## Kept changes", ""]
    lines += _md_table(["id", "change", "val_bpb (delta)", "commit", "patch"],
                       [[str(r.get("id")), str(r.get("description") or ""),
                         "; ".join(f"{p} {fmt_bpb(v)} ({fmt_delta(d)})"
                                   for p, v, _, d in deltas(r)),
                         short_commit(r.get("commit")), str(r.get("patch") or "-")]
                        for r in experiments(rows) if is_kept_change(r)])
    found = evidence_lines(rows, rules, max_pooled_dof)
    if found:
        lines += ["", "## What the evidence can resolve", ""] + [f"- {line}" for line in found]
    counts, times = count_by_category(rows), time_by_category(rows)
    lines += ["", "## Experiments by status", ""]
    names = [n for n in categories() if n in counts] + sorted(set(counts) - set(categories()))
    lines += _md_table(["status", "experiments", "benchmark time"],
                       [[name, str(counts[name]), times[name].text()] for name in names])
    spent = agent_spent(rows)
    if spent is not None:
        lines += ["", "## What the agent spent", "", spent.text()]
    manual = manual_runs(rows)
    if manual:
        lines += ["", "## Manual runs (not compared with the loop)", ""]
        lines += _md_table(["id", "val_bpb", "status"], [[str(r.get("id")), _rung_summary(r),
                                                          str(r.get("status"))] for r in manual])
    if ideas is not None:
        lines += ["", "## Ideas", ""]
        lines += _md_table(["id", "status", "idea", "evidence"],
                           [[i["id"], i["status"], i["text"], "; ".join(i["evidence"])]
                            for i in map(idea_view, ideas)])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- entry point


def build_report(ledger_rows: list[dict], out_dir: Path, ideas: list | None = None,
                 repo: Path | None = None, cap_bytes: int = CAP_BYTES,
                 rules: Mapping[str, Any] | None = None, max_pooled_dof: float = 10.0) -> Path:
    """Write `index.html` and `summary.md` into `out_dir`; returns the HTML path.

    Relative patch paths in the rows are read from `repo` (default: the current folder).
    `rules`: the sequential keep rule per profile (Config.sequential_rule), for what each
    profile can resolve; without it that line is left out.
    """
    rows = [r for r in ledger_rows if isinstance(r, dict)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    index = out_dir / "index.html"
    index.write_text(render_html(rows, ideas, repo, cap_bytes, generated, rules,
                                 max_pooled_dof), encoding="utf-8")
    (out_dir / "summary.md").write_text(render_markdown(rows, ideas, generated, rules,
                                                        max_pooled_dof), encoding="utf-8")
    return index
