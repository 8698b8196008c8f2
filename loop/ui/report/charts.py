"""The report's charts: one SVG per (dataset, profile), val_bpb above and size below, made
to sit inline in the HTML page (matplotlib's object API, headless)."""

from __future__ import annotations

import io
import re
from typing import Any

from loop.ui.report.rows import UNKNOWN
from loop.ui.report.views import Point, by_session, running_best

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
