"""The server-side SVG charts: where things land, what is marked, what is escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from services.api.ui.charts import (
    BANDS,
    Y_MAX,
    Flag,
    Node,
    Progress,
    Score,
    frame_for,
    progress_chart,
    shared_bands,
    trace_graph,
)

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def week(n: int) -> datetime:
    return T0 + timedelta(weeks=n)


def sample() -> Progress:
    return Progress(
        series={"PHQ-9": [Score(week(0), 18, "moderately severe"), Score(week(4), 11), Score(week(8), 6)],
                "GAD-7": [Score(week(0), 14), Score(week(8), 9)]},
        flags=[Flag(week(0), "risk", "PHQ-9 item 9 above 0"), Flag(week(8), "improvement", "PHQ-9 -12")],
        sessions=[(week(n), f"session {n}, held") for n in range(1, 8)],
    )


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_scores_land_where_their_time_and_value_say() -> None:
    progress = sample()
    root = parsed(progress_chart(progress))
    frame = frame_for(progress)
    phq = [m for m in root.iter() if m.get("data-measure") == "PHQ-9" and m.get("class") == "score"]
    assert [int(m.get("data-score", "")) for m in phq] == [18, 11, 6]
    xs = [float(m.get("cx", "")) for m in phq]
    assert xs == sorted(xs) and xs[0] > frame.left and xs[-1] < frame.left + frame.width
    assert [float(m.get("cy", "")) for m in phq] == [frame.y(18), frame.y(11), frame.y(6)]
    assert frame.y(Y_MAX) == frame.top and frame.y(0) == frame.top + frame.height  # higher scores higher up
    # GAD-7 as squares on a dashed line (told apart without colour)
    gad = [m for m in root.iter() if m.get("data-measure") == "GAD-7" and m.get("class") == "score"]
    assert [m.tag.split("}")[1] for m in gad] == ["rect", "rect"]
    lines = {m.get("data-measure"): m for m in root.iter() if m.get("class") == "series"}
    assert lines["GAD-7"].get("stroke-dasharray") == "6 4" and lines["PHQ-9"].get("stroke-dasharray") == "none"


def test_the_severity_bands_are_shaded_over_their_score_ranges() -> None:
    progress = sample()
    root = parsed(progress_chart(progress))
    frame = frame_for(progress)
    bands = [b for b in root.iter() if b.get("class") == "band"]
    assert [b.get("data-band") for b in bands] == [name for _, _, name in BANDS]
    moderate = next(b for b in bands if b.get("data-band") == "moderate")
    assert float(moderate.get("y", "")) == frame.y(15)
    assert round(float(moderate.get("y", "")) + float(moderate.get("height", "")), 2) == frame.y(10)


def test_flags_reliable_change_and_sessions_are_marked() -> None:
    root = parsed(progress_chart(sample()))
    classes = [g.get("class") for g in root.iter() if (g.get("class") or "").startswith("flag")]
    assert classes == ["flag flag-risk", "flag flag-improvement"]
    assert len([t for t in root.iter() if t.get("class") == "session"]) == 7
    titles = [t.text for t in root.iter(f"{{{NS['s']}}}title")]
    assert any(t and t.startswith("PHQ-9 item 9 above 0 on 02 Mar 2026") for t in titles)


def test_text_is_escaped() -> None:
    progress = Progress(series={"PHQ-9": [Score(T0, 3, "<script>alert(1)</script>")]})
    svg = progress_chart(progress, title="a < b & c")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert parsed(svg).find("s:title", NS).text == "a < b & c"  # type: ignore[union-attr]


def test_an_empty_chart_still_draws_its_axes() -> None:
    root = parsed(progress_chart(Progress()))
    assert [b.get("class") for b in root.iter() if b.get("class") == "band"]
    assert not [m for m in root.iter() if m.get("class") == "score"]


def test_bands_shared_by_both_measures_are_named_for_each_where_they_differ() -> None:
    bands = {"PHQ-9": [(0, 4, "minimal"), (5, 9, "mild"), (10, 14, "moderate"), (15, 19, "moderately_severe"),
                       (20, 27, "severe")],
             "GAD-7": [(0, 4, "minimal"), (5, 9, "mild"), (10, 14, "moderate"), (15, 21, "severe")]}
    assert shared_bands(bands) == (
        (0, 4, "minimal"), (5, 9, "mild"), (10, 14, "moderate"),
        (15, 19, "moderately severe (PHQ-9) / severe (GAD-7)"), (20, 27, "severe (PHQ-9)"),
    )


def test_the_causation_graph_puts_each_service_in_its_column_with_an_arrow_per_cause() -> None:
    ids = [str(uuid4()) for _ in range(4)]
    nodes = [Node(ids[0], "care", "QuestionnaireSubmitted", "v3"), Node(ids[1], "assessment", "AssessmentScored", "v1"),
             Node(ids[2], "escalation", "EscalationRaised", "v1"),
             Node(ids[3], "care", "EmergencySupportActivated", "v9", highlighted=True)]
    edges = [(ids[0], ids[1]), (ids[1], ids[2]), (ids[2], ids[3]), ("not-shown", ids[0])]
    root = parsed(trace_graph(nodes, edges, title="trace"))
    stores = [t.text for t in root.iter() if t.get("class") == "store"]
    assert stores == ["care", "assessment", "escalation"]
    boxes = {g.get("data-event"): g.find("s:rect", NS) for g in root.iter() if g.get("class") == "node"}
    assert boxes[ids[0]].get("x") == boxes[ids[3]].get("x")  # type: ignore[union-attr]  # same service, same column
    assert float(boxes[ids[1]].get("x", 0)) > float(boxes[ids[0]].get("x", 0))  # type: ignore[union-attr]
    ys = [float(boxes[i].get("y", 0)) for i in ids]  # type: ignore[union-attr]
    assert ys == sorted(ys)  # recorded order, top to bottom
    assert boxes[ids[3]].get("stroke-width") == "3"  # type: ignore[union-attr]  # the event asked about
    drawn = [(e.get("data-from"), e.get("data-to")) for e in root.iter() if e.get("class") == "edge"]
    assert drawn == edges[:3]  # an edge to a node not shown is left out


def test_the_read_models_progress_becomes_the_charts_series_flags_and_sessions() -> None:
    from services.api.ui.plan_pages import chart_data
    from services.views.queries import Progress as ViewsProgress
    from services.views.queries import ProgressPoint, RiskFlag, SessionMark, severity_bands

    course = uuid4()

    def point(instrument: str, at: datetime, total: int, change: int, *, better: bool = False,
              worse: bool = False) -> ProgressPoint:
        return ProgressPoint(instrument=instrument, course_id=course, answered_at=at, total=total, severity="mild",
                             change=change, rci=0.0, reliable_improvement=better, reliable_deterioration=worse,
                             caseness=total >= 10)

    found = ViewsProgress(
        id=course, kind="course", plan_id=uuid4(), client_id="client-1", course_ids=[course],
        points=[point("PHQ-9", week(0), 19, 0), point("GAD-7", week(0), 6, 0), point("PHQ-9", week(6), 9, -10, better=True),
                point("GAD-7", week(6), 11, 5, worse=True)],
        flags=[RiskFlag(instrument="PHQ-9", course_id=course, answered_at=week(0), kind="phq9_item9", suicide_risk=None,
                        scored=True)],
        sessions=[SessionMark(course_id=course, starts_at=week(n), state="held" if n < 6 else "scheduled",
                              kind="session", source="course", number=n) for n in range(1, 20)],
        bands=severity_bands(), norms=[],
    )
    chart = chart_data(found)
    assert [s.score for s in chart.series["PHQ-9"]] == [19, 9] and [s.score for s in chart.series["GAD-7"]] == [6, 11]
    assert [(f.at, f.kind) for f in chart.flags] == [(week(6), "improvement"), (week(6), "deterioration"),
                                                     (week(0), "risk")]
    assert chart.flags[0].label == "PHQ-9 reliable improvement (-10)"
    assert chart.flags[2].label == "Risk flag: PHQ-9 item 9 above 0"
    # held sessions all; scheduled ones up to two weeks after the last score
    assert [at for at, _ in chart.sessions] == [week(n) for n in range(1, 9)]
    assert chart.bands[0][:2] == (0, 4) and chart.bands[-1][1] == 27
