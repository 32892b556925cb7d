"""Charts drawn on the server as SVG (no JavaScript, nothing fetched; they print as they show).

* :func:`progress_chart`: PHQ-9 and GAD-7 scores over time on one chart, the severity bands
  shaded behind them, risk flags (PHQ-9 item 9, C-SSRS) and reliable change marked, the
  sessions as ticks on the time axis.
* :func:`trace_graph`: an event's causation chain as a graph, one column per service.

Built with ElementTree, so every text is escaped and the result is well-formed XML. Lines
differ by dash and marker shape as well as colour (readable in black and white).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SVG_NS = "http://www.w3.org/2000/svg"

#: (low, high inclusive, name): the score bands shaded, PHQ-9's cut-offs (5/10/15/20), which
#: GAD-7's (5/10/15) share; :func:`shared_bands` makes them from the read models' bands.
BANDS: tuple[tuple[int, int, str], ...] = (
    (0, 4, "minimal"), (5, 9, "mild"), (10, 14, "moderate"),
    (15, 19, "moderately severe (PHQ-9) / severe (GAD-7)"), (20, 27, "severe (PHQ-9)"),
)
BAND_COLOURS = ("#ffffff", "#f3f6e4", "#fdf1d6", "#fbe0cf", "#f6cfcf", "#f0c0c0")
Y_MAX = 27
#: measure → (colour, dash pattern, marker shape)
STYLES = {"PHQ-9": ("#1f4e9c", "", "circle"), "GAD-7": ("#8a3b00", "6 4", "square")}


@dataclass(frozen=True)
class Score:
    at: datetime
    score: int
    severity: str = ""


@dataclass(frozen=True)
class Flag:
    """A mark above the plot at a moment: a risk flag or a reliable change."""

    at: datetime
    kind: str  # "risk", "improvement", "deterioration"
    label: str


@dataclass
class Progress:
    series: dict[str, list[Score]] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    #: (when, what: e.g. "session 3, held")
    sessions: list[tuple[datetime, str]] = field(default_factory=list)
    bands: tuple[tuple[int, int, str], ...] = BANDS


def shared_bands(bands: dict[str, list[tuple[int, int, str]]], first: str = "PHQ-9") -> tuple[tuple[int, int, str], ...]:
    """One set of bands for both measures: the first measure's, each named for every measure
    whose band starts at the same score (by name alone when they agree)."""
    shared = []
    for low, high, name in bands.get(first, []):
        names = {m: n for m, found in bands.items() for lo, _, n in found if lo == low}
        if len(set(names.values())) <= 1 and len(names) == len(bands):
            label = name
        else:
            label = " / ".join(f"{n} ({m})" for m, n in names.items())
        shared.append((low, high, label.replace("_", " ")))
    return tuple(shared) or BANDS


@dataclass(frozen=True)
class Frame:
    """Where the plot is inside the picture and how moments and scores map into it."""

    start: datetime
    end: datetime
    left: float = 56
    top: float = 40
    width: float = 640
    height: float = 300

    def x(self, at: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        return round(self.left + self.width * (at - self.start).total_seconds() / span, 2)

    def y(self, score: float) -> float:
        return round(self.top + self.height * (1 - score / Y_MAX), 2)


def _el(parent: ET.Element, tag: str, text: str | None = None, **attributes: object) -> ET.Element:
    node = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attributes.items()})
    if text is not None:
        node.text = text
    return node


def frame_for(progress: Progress) -> Frame:
    moments = [s.at for scores in progress.series.values() for s in scores]
    moments += [f.at for f in progress.flags] + [at for at, _ in progress.sessions]
    if not moments:
        now = datetime.now().astimezone()
        return Frame(now - timedelta(days=7), now)
    start, end = min(moments), max(moments)
    pad = max((end - start) / 20, timedelta(days=1))
    return Frame(start - pad, end + pad)


def progress_chart(progress: Progress, *, title: str = "PHQ-9 and GAD-7 over time") -> str:
    frame = frame_for(progress)
    total_w, total_h = frame.left + frame.width + 330, frame.top + frame.height + 70
    svg = ET.Element("svg", {"xmlns": SVG_NS, "viewBox": f"0 0 {total_w:g} {total_h:g}", "role": "img",
                             "aria-labelledby": "chart-title chart-desc", "class": "chart"})
    _el(svg, "title", title, id="chart-title")
    _el(svg, "desc", "Scores over time against the severity bands; the table below gives the same figures.",
        id="chart-desc")
    # severity bands
    for (low, high, name), colour in zip(progress.bands, BAND_COLOURS, strict=False):
        top = min(high + 1, Y_MAX)
        band = _el(svg, "rect", x=frame.left, y=frame.y(top), width=frame.width, height=round(frame.y(low) - frame.y(top), 2),
                   fill=colour, class_="band")
        band.set("data-band", name)
        _el(svg, "text", name, x=frame.left + frame.width + 8, y=(frame.y(low) + frame.y(top)) / 2 + 4,
            class_="band-label", font_size=11)
    # score axis
    _el(svg, "line", x1=frame.left, y1=frame.top, x2=frame.left, y2=frame.top + frame.height, stroke="#333")
    for value in (0, 5, 10, 15, 20, 27):
        _el(svg, "line", x1=frame.left - 4, y1=frame.y(value), x2=frame.left, y2=frame.y(value), stroke="#333")
        _el(svg, "text", str(value), x=frame.left - 8, y=frame.y(value) + 4, text_anchor="end", font_size=11)
    _el(svg, "text", "score", x=14, y=frame.top + frame.height / 2, font_size=11,
        transform=f"rotate(-90 14 {frame.top + frame.height / 2:g})", text_anchor="middle")
    # time axis, with a tick per session
    bottom = frame.top + frame.height
    _el(svg, "line", x1=frame.left, y1=bottom, x2=frame.left + frame.width, y2=bottom, stroke="#333")
    for when in _date_ticks(frame):
        _el(svg, "text", when.strftime("%d %b %Y"), x=frame.x(when), y=bottom + 32, text_anchor="middle", font_size=11)
    for session, what in sorted(progress.sessions):
        tick = _el(svg, "line", x1=frame.x(session), y1=bottom, x2=frame.x(session), y2=bottom + 10, stroke="#333",
                   stroke_width=2, class_="session")
        _el(tick, "title", f"{what} {session:%d %b %Y %H:%M}")
    _el(svg, "text", "▮ sessions", x=frame.left, y=bottom + 52, font_size=11)
    # the series
    legend_y = frame.top - 22
    legend_x = frame.left
    for measure, scores in progress.series.items():
        colour, dash, shape = STYLES.get(measure, ("#222", "2 2", "circle"))
        ordered = sorted(scores, key=lambda s: s.at)
        if len(ordered) > 1:
            _el(svg, "polyline", points=" ".join(f"{frame.x(s.at):g},{frame.y(s.score):g}" for s in ordered),
                fill="none", stroke=colour, stroke_width=2, stroke_dasharray=dash or "none", class_="series",
                data_measure=measure)
        for s in ordered:
            mark = _marker(svg, shape, frame.x(s.at), frame.y(s.score), colour)
            mark.set("class", "score")
            mark.set("data-measure", measure)
            mark.set("data-score", str(s.score))
            _el(mark, "title", f"{measure} {s.score}{' (' + s.severity + ')' if s.severity else ''} on {s.at:%d %b %Y}")
        _marker(svg, shape, legend_x + 6, legend_y, colour)
        _el(svg, "line", x1=legend_x + 14, y1=legend_y, x2=legend_x + 40, y2=legend_y, stroke=colour, stroke_width=2,
            stroke_dasharray=dash or "none")
        _el(svg, "text", measure, x=legend_x + 46, y=legend_y + 4, font_size=12)
        legend_x += 110
    # flags above the plot
    for flag in sorted(progress.flags, key=lambda f: f.at):
        x = frame.x(flag.at)
        symbol, colour = {"risk": ("!", "#b00020"), "improvement": ("▼", "#1b6e20"),
                          "deterioration": ("▲", "#b00020")}.get(flag.kind, ("•", "#333"))
        group = _el(svg, "g", class_=f"flag flag-{flag.kind}")
        _el(group, "line", x1=x, y1=frame.top, x2=x, y2=bottom, stroke=colour, stroke_dasharray="2 3")
        _el(group, "text", symbol, x=x, y=frame.top - 4, text_anchor="middle", font_size=14, fill=colour,
            font_weight="bold")
        _el(group, "title", f"{flag.label} on {flag.at:%d %b %Y}")
    _el(svg, "text", "! risk flag   ▼ reliable improvement   ▲ reliable deterioration", x=frame.left + 260,
        y=legend_y + 4, font_size=11)
    return ET.tostring(svg, encoding="unicode")


def _marker(parent: ET.Element, shape: str, x: float, y: float, colour: str) -> ET.Element:
    if shape == "square":
        return _el(parent, "rect", x=round(x - 4, 2), y=round(y - 4, 2), width=8, height=8, fill=colour)
    return _el(parent, "circle", cx=x, cy=y, r=4.5, fill=colour)


def _date_ticks(frame: Frame, count: int = 5) -> list[datetime]:
    step = (frame.end - frame.start) / (count + 1)
    return [frame.start + step * (i + 1) for i in range(count)]


# --------------------------------------------------------------------- causation graph


@dataclass(frozen=True)
class Node:
    id: str
    store: str
    label: str
    detail: str
    highlighted: bool = False


def trace_graph(nodes: Sequence[Node], edges: Sequence[tuple[str, str]], *, title: str) -> str:
    """Nodes in columns by store (in the order the stores first appear) and rows by their
    order in ``nodes`` (recorded order); an arrow from each cause to its effect."""
    stores: list[str] = []
    for node in nodes:
        if node.store not in stores:
            stores.append(node.store)
    col_w, row_h, box_w, box_h, top = 250, 64, 225, 44, 40
    where = {n.id: (20 + stores.index(n.store) * col_w, top + i * row_h) for i, n in enumerate(nodes)}
    width, height = 40 + max(len(stores), 1) * col_w, top + max(len(nodes), 1) * row_h + 20
    svg = ET.Element("svg", {"xmlns": SVG_NS, "viewBox": f"0 0 {width} {height}", "role": "img",
                             "aria-labelledby": "graph-title", "class": "graph"})
    _el(svg, "title", title, id="graph-title")
    defs = _el(svg, "defs")
    marker = _el(defs, "marker", id="arrow", viewBox="0 0 10 10", refX=10, refY=5, markerWidth=8, markerHeight=8,
                 orient="auto-start-reverse")
    _el(marker, "path", d="M 0 0 L 10 5 L 0 10 z", fill="#333")
    for i, store in enumerate(stores):
        _el(svg, "text", store, x=20 + i * col_w + box_w / 2, y=24, text_anchor="middle", font_size=13,
            font_weight="bold", class_="store")
    for cause, effect in edges:
        if cause not in where or effect not in where:
            continue
        (x1, y1), (x2, y2) = where[cause], where[effect]
        edge = _el(svg, "path", d=f"M {x1 + box_w / 2} {y1 + box_h} C {x1 + box_w / 2} {y1 + box_h + 20}, "
                   f"{x2 + box_w / 2} {y2 - 20}, {x2 + box_w / 2} {y2}", fill="none", stroke="#333",
                   stroke_width=1.5, marker_end="url(#arrow)", class_="edge")
        edge.set("data-from", cause)
        edge.set("data-to", effect)
    for node in nodes:
        x, y = where[node.id]
        group = _el(svg, "g", class_="node", data_event=node.id)
        _el(group, "rect", x=x, y=y, width=box_w, height=box_h, rx=6, fill="#fff8d8" if node.highlighted else "#eef2f8",
            stroke="#b00020" if node.highlighted else "#1f4e9c", stroke_width=3 if node.highlighted else 1.5)
        _el(group, "text", node.label, x=x + 8, y=y + 18, font_size=12, font_weight="bold")
        _el(group, "text", node.detail, x=x + 8, y=y + 35, font_size=11)
        _el(group, "title", f"{node.store}: {node.label} — {node.detail}")
    return ET.tostring(svg, encoding="unicode")
