"""What people read at scale, from the read models: caseloads, plan lists, outcomes, a
client's progress. The API's routes and the web pages call :class:`Views` only.

``clients`` is the caller's client scope (``None``: every client); filters narrow it.
:meth:`Views.catch_up` applies what the stores recorded since the last call (bounded:
only what is new), so a read right after a write sees it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from domain.assessment.instruments import instrument_named
from domain.catalogues.risk import RiskLevel
from services.escalation.open_view import OpenCrises
from services.shared.clock import Clock, system_clock
from services.shared.settings import Settings
from services.views import outcomes as oc
from services.views.projection import Projection
from services.views.store import moment, parse_moment

T = TypeVar("T")

PLAN_STATUSES = ("draft", "active", "on-hold", "completed", "revoked")
RISK_LEVELS = tuple(level.value for level in RiskLevel)


class Page(BaseModel, Generic[T]):
    """One page of a longer list."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    items: list[T]
    """This page's items"""
    total: int
    """How many items match, on every page"""
    page: int
    """This page's number, from 1"""
    size: int
    """Items per page asked for"""


class LastScore(BaseModel):
    """The latest scored questionnaire of one instrument."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    score: int
    """The total (PHQ-9 0–27, GAD-7 0–21)"""
    severity: str | None
    """The severity band of the total (minimal, mild, moderate, moderately_severe, severe)"""
    answered_at: datetime
    """When the client answered it"""


class CaseloadRow(BaseModel):
    """One care plan as a caseload lists it."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    plan_id: UUID
    """The care plan"""
    client_id: str
    """The client's pseudonymous id"""
    clinician: str
    """The actor who drafted the plan (the domain has no other assigned clinician)"""
    title: str
    """The plan's title"""
    status: str
    """One of draft, active, on-hold, completed, revoked"""
    strategy: str
    """The strategy format in force (emergency_support during a crisis)"""
    risk_level: str
    """One of none, low, moderate, high, imminent"""
    open_crises: int
    """Crises raised for this plan and not resolved"""
    course_id: UUID | None
    """The plan's current course: its latest active one, else its latest"""
    course_phase: str | None
    """One of initial, middle, termination"""
    course_status: str | None
    """One of active, completed, discontinued"""
    next_session_at: datetime | None
    """The earliest scheduled session (or check-in) still to come, of any of the plan's courses"""
    last_phq9: LastScore | None
    last_gad7: LastScore | None
    questionnaires_overdue: bool
    """An active course and no PHQ-9/GAD-7 answered for CAREPLAN_VIEWS_OVERDUE_WEEKS weeks (counted from the course's start when it has none yet)"""
    updated_at: datetime
    """When the plan's listed fields last changed"""


class MeasureNorms(BaseModel):
    """The numbers an outcome was judged by, per measure."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    instrument: str
    """PHQ-9 or GAD-7"""
    caseness_at_or_above: int
    """A case at or above this total"""
    reliable_change: int
    """Reliable change in points"""
    sd1: float
    """Jacobson–Truax: the standard deviation SD1 (docs/outcomes.md says where it comes from)"""
    retest_r: float
    """Jacobson–Truax: the published test–retest reliability r"""


class CourseOutcome(BaseModel):
    """One course in an outcome report."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    course_id: UUID
    plan_id: UUID
    client_id: str
    modality: str
    status: str
    """One of active, completed, discontinued"""
    started_at: datetime
    ended_at: datetime | None
    finished: bool
    """Ended (completed or discontinued) within the report's period"""
    result: oc.CourseResult


class OutcomeSummary(BaseModel):
    """NHS Talking Therapies figures over a set of courses; rates are fractions (None: no denominator)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    courses: int
    paired: int
    """Courses with paired scores on at least one measure"""
    at_caseness: int
    """Paired and a case at the first score"""
    recovered: int
    recovery_rate: float | None
    """recovered / at_caseness"""
    reliable_improvement: int
    reliable_improvement_rate: float | None
    """reliable_improvement / paired"""
    reliable_deterioration: int
    reliable_deterioration_rate: float | None
    """reliable_deterioration / paired"""
    reliable_recovery: int
    reliable_recovery_rate: float | None
    """reliable_recovery / at_caseness"""


class OutcomeReport(BaseModel):
    """Outcomes per course and across the service for a period."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    start: datetime | None
    """Start of the period asked for, inclusive (None: open-ended). A course is in the report
    when it ended in the period or, still open, had a PHQ-9 or GAD-7 answered in it."""
    end: datetime | None
    """End of the period, exclusive (None: open-ended)"""
    courses: list[CourseOutcome]
    finished: OutcomeSummary
    """Over the courses that finished in the period (the NHS Talking Therapies figures)"""
    all: OutcomeSummary
    """Over every listed course, open ones judged on their scores so far"""
    norms: list[MeasureNorms]


class ProgressPoint(BaseModel):
    """One PHQ-9 or GAD-7 score, with its change against its course's first of that instrument."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    instrument: str
    course_id: UUID
    answered_at: datetime
    total: int
    severity: str | None
    change: int
    """Total − the course's first total of this instrument (0 for the first)"""
    rci: float
    """Jacobson–Truax index of that change"""
    reliable_improvement: bool
    reliable_deterioration: bool
    caseness: bool
    """A case at this total (PHQ-9 ≥ 10, GAD-7 ≥ 8)"""


class RiskFlag(BaseModel):
    """A questionnaire that carried a risk signal."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    instrument: str
    course_id: UUID
    answered_at: datetime
    kind: Literal["phq9_item9", "cssrs", "suicide_item"]
    """phq9_item9 (item 9 above 0), cssrs (C-SSRS ideation or behaviour), or suicide_item (another instrument's)"""
    suicide_risk: str | None
    """C-SSRS triage (none, low, moderate, high) when scored"""
    scored: bool
    """False when the submission was rejected (still a signal)"""


class SessionMark(BaseModel):
    """A session or check-in on the time axis."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    course_id: UUID
    starts_at: datetime
    state: str
    """One of scheduled, held, missed, cancelled"""
    kind: str
    """One of session, check_in"""
    source: str
    """course (scheduled by a clinician on the course) or schedule (the scheduling service's timetable)"""
    number: int


class SeverityBand(BaseModel):
    """A band to shade: totals from ``low`` to ``high`` inclusive."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    instrument: str
    severity: str
    low: int
    high: int


class Progress(BaseModel):
    """What a progress chart needs for one plan (all its courses) or one course."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    id: UUID
    """The id asked for, and whether it named a plan or a course"""
    kind: Literal["plan", "course"]
    plan_id: UUID
    client_id: str
    course_ids: list[UUID]
    points: list[ProgressPoint]
    """PHQ-9 and GAD-7 scores, oldest first"""
    flags: list[RiskFlag]
    sessions: list[SessionMark]
    bands: list[SeverityBand]
    norms: list[MeasureNorms]
    """The instruments' caseness thresholds and reliable-change points"""


class NotInViewsError(LookupError):
    """No plan or course of that id in the views."""


def measure_norms() -> list[MeasureNorms]:
    found = []
    for name in oc.MEASURES:
        norms = oc.norms_of(name)
        assert norms is not None
        found.append(MeasureNorms(instrument=name, caseness_at_or_above=norms.caseness_above + 1,
                                  reliable_change=int(norms.reliable_change), sd1=norms.sd1, retest_r=norms.retest_r))
    return found


def severity_bands() -> list[SeverityBand]:
    bands = []
    for name in oc.MEASURES:
        definition = instrument_named(name)
        assert definition is not None
        low = 0
        for high, severity in definition.bands:
            bands.append(SeverityBand(instrument=name, severity=severity.value, low=low, high=high))
            low = high + 1
    return bands


def _in(column: str, values: Sequence[Any]) -> str:
    return f"{column} IN ({', '.join('?' for _ in values)})" if values else "1 = 0"


_CASELOAD_COLUMNS = ("plan_id, client_id, clinician, title, status, strategy, risk_level, risk_rank, created_at, "
                     "updated_at")
#: A plan's current course: its latest active one, else its latest (``fields`` of it).
_CURRENT_COURSE = ("SELECT {fields} FROM view_courses c WHERE c.plan_id = p.plan_id ORDER BY "
                   "CASE WHEN c.status = 'active' THEN 0 ELSE 1 END, c.started_at DESC, c.course_id DESC LIMIT 1")
_COURSE_FIELDS = "c.course_id || '|' || c.phase || '|' || c.status || '|' || c.started_at"
#: A plan's last scored total of one instrument (a parameter) as "total|severity|answered_at".
_LAST_SCORE = ("SELECT s.total || '|' || COALESCE(s.severity, '') || '|' || s.answered_at FROM view_scores s "
               "WHERE s.plan_id = p.plan_id AND s.instrument = ? AND s.scored = 1 "
               "ORDER BY s.answered_at DESC, s.submission_id DESC LIMIT 1")


def _last_score(packed: str | None) -> LastScore | None:
    if packed is None:
        return None
    total, severity, answered_at = packed.split("|")
    return LastScore(score=int(total), severity=severity or None, answered_at=parse_moment(answered_at))


class Views:
    """The read models' queries. Thread-safe; one per process."""

    def __init__(self, settings: Settings, *, clock: Clock = system_clock, projection: Projection | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.projection = projection if projection is not None else Projection(settings)
        self.store = self.projection.store
        escalation = self.projection.sources["escalation"]
        #: open crises: the escalation store's own view, reused (services/escalation/open_view.py)
        self.crises = OpenCrises(escalation.recorder, escalation.mapper)
        #: the escalation log's end when the open crises were last refreshed (-1: never)
        self._crises_end = -1
        #: open crises per plan, and the state of the open-crises view they were counted at
        self._open_counts: tuple[tuple[int, int], dict[str, int]] = ((-1, -1), {})

    def close(self) -> None:
        self.projection.close()

    # ----------------------------------------------------------------- keeping up

    def catch_up(self) -> None:
        """Applies what the stores recorded since the last call (only what is new). A read that
        is already current costs one statement: the views' positions and every log's end read
        together (:meth:`Projection.marks`); the logs are read only when one of them moved.
        Whatever was committed before the call is below those ends, so it is applied before
        the read (read-your-writes)."""
        positions, ends = self.projection.marks()
        if positions != ends:
            self.projection.catch_up(marks=(positions, ends))
        # the open crises follow the escalation log in memory: read it only when it moved since
        # a refresh that began after its end was this (the refresh reads at least that far)
        end = ends["escalation"]
        if end != self._crises_end:
            self.crises.refresh()
            self._crises_end = end

    def lag(self) -> dict[str, int]:
        """Per followed store: events in its log beyond the views' position (0: caught up)."""
        return self.projection.lag()

    # ----------------------------------------------------------------- lists

    def caseload(self, clients: frozenset[str] | None, *, clinician: str | None = None, status: str | None = None,
                 risk: str | None = None, page: int = 1, size: int = 50) -> Page[CaseloadRow]:
        """Plans that need attention first: highest risk level, then the oldest plan."""
        return self._list(clients, clinician=clinician, status=status, risk=risk, page=page, size=size,
                          order="risk_rank DESC, created_at, plan_id")

    def plans(self, clients: frozenset[str] | None, *, clinician: str | None = None, status: str | None = None,
              risk: str | None = None, page: int = 1, size: int = 50) -> Page[CaseloadRow]:
        """Plans in the order they were drafted."""
        return self._list(clients, clinician=clinician, status=status, risk=risk, page=page, size=size,
                          order="created_at, plan_id")

    def _list(self, clients: frozenset[str] | None, *, clinician: str | None, status: str | None, risk: str | None,
              page: int, size: int, order: str) -> Page[CaseloadRow]:
        if page < 1 or size < 1:
            raise ValueError("page and size start at 1")
        if status is not None and status not in PLAN_STATUSES:
            raise ValueError(f"status is one of {', '.join(PLAN_STATUSES)}")
        if risk is not None and risk not in RISK_LEVELS:
            raise ValueError(f"risk is one of {', '.join(RISK_LEVELS)}")
        where, params = self._filters(clients, clinician=clinician, status=status, risk=risk)
        now = moment(self.clock())
        # One statement: how many plans match (counted once, uncorrelated), the page of plans,
        # then per plan (correlated subqueries, each on an index) its current course, last
        # scores, last questionnaire and next session.
        plans = self.store.rows(
            f"SELECT (SELECT COUNT(*) FROM view_plans WHERE {where}) AS total, "
            "p.plan_id, p.client_id, p.clinician, p.title, p.status, p.strategy, p.risk_level, p.updated_at, "
            f"({_CURRENT_COURSE.format(fields=_COURSE_FIELDS)}) AS course, "
            f"({_LAST_SCORE}) AS last_phq9, ({_LAST_SCORE}) AS last_gad7, "
            "(SELECT MAX(s.answered_at) FROM view_scores s WHERE s.instrument IN (?, ?) AND s.course_id = "
            f"({_CURRENT_COURSE.format(fields='c.course_id')})) AS answered, "
            # per course of the plan, its first session to come (nested, so that each is an
            # index lookup by course whatever the planner knows of the tables)
            "(SELECT MIN((SELECT MIN(s.starts_at) FROM view_sessions s WHERE s.course_id = c.course_id "
            "AND s.state = 'scheduled' AND s.starts_at > ?)) FROM view_courses c WHERE c.plan_id = p.plan_id) "
            "AS next_session "
            f"FROM (SELECT {_CASELOAD_COLUMNS} FROM view_plans WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?) AS p "
            f"ORDER BY {order}",
            [*params, oc.PHQ9, oc.GAD7, oc.PHQ9, oc.GAD7, now, *params, size, (page - 1) * size],
        )
        if plans:
            total = int(plans[0][0])
        elif page == 1:
            total = 0
        else:  # a page past the end: the count alone
            total = int(self.store.rows(f"SELECT COUNT(*) FROM view_plans WHERE {where}", params)[0][0])
        return Page[CaseloadRow](items=self._rows([row[1:] for row in plans]), total=total, page=page, size=size)

    @staticmethod
    def _filters(clients: frozenset[str] | None, *, clinician: str | None, status: str | None,
                 risk: str | None) -> tuple[str, list[Any]]:
        where, params = ["1 = 1"], []
        if clients is not None:
            ordered = sorted(clients)
            where.append(_in("client_id", ordered))
            params += ordered
        for column, value in (("clinician", clinician), ("status", status), ("risk_level", risk)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return " AND ".join(where), params

    def _rows(self, plans: list[tuple[Any, ...]]) -> list[CaseloadRow]:
        now = self.clock()
        open_crises = self._open_crises_per_plan()
        overdue_before = moment(now - timedelta(weeks=self.settings.views_overdue_weeks))
        rows = []
        for (plan_id, client_id, clinician, title, status, strategy, risk_level, updated_at, course, phq9, gad7,
             answered, next_session) in plans:
            course_id, phase, course_status, started_at = course.split("|") if course else (None,) * 4
            overdue = course_status == "active" and (answered or started_at) < overdue_before
            rows.append(CaseloadRow(
                plan_id=UUID(plan_id), client_id=client_id, clinician=clinician, title=self.store.unseal(title),
                status=status, strategy=strategy, risk_level=risk_level, open_crises=open_crises.get(plan_id, 0),
                course_id=UUID(course_id) if course_id else None, course_phase=phase, course_status=course_status,
                next_session_at=parse_moment(next_session), last_phq9=_last_score(phq9), last_gad7=_last_score(gad7),
                questionnaires_overdue=overdue, updated_at=parse_moment(updated_at),
            ))
        return rows

    def _open_crises_per_plan(self) -> dict[str, int]:
        """Open crises per plan, counted again only when the open-crises view read something
        since the last count (its position and count of notifications read say so)."""
        state = (self.crises.position, self.crises.read)
        counted, counts = self._open_counts
        if counted == state:
            return counts
        counts = defaultdict(int)
        for crisis_plan in self.crises.plans_open().values():
            if crisis_plan is not None:
                counts[str(crisis_plan)] += 1
        self._open_counts = (state, counts)
        return counts

    # ----------------------------------------------------------------- outcomes

    def outcomes(self, clients: frozenset[str] | None, *, start: datetime | None = None,
                 end: datetime | None = None) -> OutcomeReport:
        """Per course and across the service for ``[start, end)``; see :class:`OutcomeReport`."""
        lo = moment(start) if start is not None else ""
        hi = moment(end) if end is not None else "~"  # after every stored moment
        where, params = ["1 = 1"], []
        if clients is not None:
            ordered = sorted(clients)
            where.append(_in("c.client_id", ordered))
            params += ordered
        courses = self.store.rows(
            "SELECT c.course_id, c.plan_id, c.client_id, c.modality, c.status, c.started_at, c.ended_at "
            f"FROM view_courses c WHERE {' AND '.join(where)} AND ("
            "(c.ended_at IS NOT NULL AND c.ended_at >= ? AND c.ended_at < ?) OR (c.ended_at IS NULL AND EXISTS ("
            "SELECT 1 FROM view_scores s WHERE s.course_id = c.course_id AND s.scored = 1 AND s.instrument IN (?, ?) "
            "AND s.answered_at >= ? AND s.answered_at < ?))) ORDER BY c.started_at, c.course_id",
            [*params, lo, hi, oc.PHQ9, oc.GAD7, lo, hi],
        )
        totals: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        ids = [c[0] for c in courses]
        if ids:
            for course_id, instrument, total in self.store.rows(
                f"SELECT course_id, instrument, total FROM view_scores WHERE {_in('course_id', ids)} "
                "AND scored = 1 AND total IS NOT NULL AND instrument IN (?, ?) ORDER BY answered_at, submission_id",
                [*ids, oc.PHQ9, oc.GAD7],
            ):
                totals[course_id][instrument].append(total)
        listed = [
            CourseOutcome(
                course_id=UUID(cid), plan_id=UUID(pid), client_id=client, modality=modality, status=status,
                started_at=parse_moment(started), ended_at=parse_moment(ended), finished=ended is not None,
                result=oc.course_result(totals.get(cid, {})),
            )
            for cid, pid, client, modality, status, started, ended in courses
        ]
        return OutcomeReport(start=start, end=end, courses=listed, finished=summarise([c for c in listed if c.finished]),
                             all=summarise(listed), norms=measure_norms())

    # ----------------------------------------------------------------- progress

    def progress(self, plan_or_course_id: UUID) -> Progress:
        """The chart of one course, or of every course of one plan (NotInViewsError: neither)."""
        key = str(plan_or_course_id)
        course = self.store.rows("SELECT plan_id, client_id FROM view_courses WHERE course_id = ?", [key])
        if course:
            kind: Literal["plan", "course"] = "course"
            plan_id, client_id = course[0]
            course_ids = [key]
        else:
            plan = self.store.rows("SELECT client_id FROM view_plans WHERE plan_id = ?", [key])
            if not plan:
                raise NotInViewsError(f"No plan or course {key} in the views.")
            kind, plan_id, client_id = "plan", key, plan[0][0]
            course_ids = [r[0] for r in self.store.rows(
                "SELECT course_id FROM view_courses WHERE plan_id = ? ORDER BY started_at, course_id", [key])]
        points: list[ProgressPoint] = []
        flags: list[RiskFlag] = []
        sessions: list[SessionMark] = []
        if course_ids:
            first: dict[tuple[str, str], int] = {}
            for cid, instrument, total, severity, answered_at, positive, risk, scored in self.store.rows(
                "SELECT course_id, instrument, total, severity, answered_at, suicide_item_positive, suicide_risk, scored "
                f"FROM view_scores WHERE {_in('course_id', course_ids)} ORDER BY answered_at, submission_id", course_ids,
            ):
                at = parse_moment(answered_at)
                if positive or (risk is not None and risk != "none"):
                    flag_kind = "phq9_item9" if instrument == oc.PHQ9 else "cssrs" if instrument.startswith("C-SSRS") \
                        else "suicide_item"
                    flags.append(RiskFlag(instrument=instrument, course_id=UUID(cid), answered_at=at, kind=flag_kind,
                                          suicide_risk=risk, scored=bool(scored)))
                if instrument not in oc.MEASURES or total is None:
                    continue
                baseline = first.setdefault((cid, instrument), total)
                points_needed = oc.reliable_change_points(instrument)
                points.append(ProgressPoint(
                    instrument=instrument, course_id=UUID(cid), answered_at=at, total=total, severity=severity,
                    change=total - baseline, rci=round(oc.rci(instrument, baseline, total), 3),
                    reliable_improvement=baseline - total >= points_needed,
                    reliable_deterioration=total - baseline >= points_needed, caseness=oc.is_case(instrument, total),
                ))
            sessions = [
                SessionMark(course_id=UUID(cid), starts_at=parse_moment(starts), state=state, kind=kind_, source=source,
                            number=number)
                for cid, starts, state, kind_, source, number in self.store.rows(
                    "SELECT course_id, starts_at, state, kind, source, number FROM view_sessions "
                    f"WHERE {_in('course_id', course_ids)} ORDER BY starts_at, session_key", course_ids,
                )
            ]
        return Progress(id=plan_or_course_id, kind=kind, plan_id=UUID(plan_id), client_id=client_id,
                        course_ids=[UUID(c) for c in course_ids], points=points, flags=flags, sessions=sessions,
                        bands=severity_bands(), norms=measure_norms())

    # ----------------------------------------------------------------- for tests and rebuild checks

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every view table, sorted (comparing a rebuild with the kept state)."""
        from services.views.store import VIEW_TABLES

        return {table: sorted(self.store.rows(f"SELECT * FROM {table}")) for table in VIEW_TABLES}


def summarise(courses: Sequence[CourseOutcome]) -> OutcomeSummary:
    results = [c.result for c in courses]
    paired = sum(r.paired for r in results)
    cases = sum(r.case_at_first for r in results)
    recovered = sum(r.recovered for r in results)
    improved = sum(r.reliable_improvement for r in results)
    deteriorated = sum(r.reliable_deterioration for r in results)
    reliably_recovered = sum(r.reliable_recovery for r in results)
    return OutcomeSummary(
        courses=len(results), paired=paired, at_caseness=cases, recovered=recovered,
        recovery_rate=oc.rate(recovered, cases), reliable_improvement=improved,
        reliable_improvement_rate=oc.rate(improved, paired), reliable_deterioration=deteriorated,
        reliable_deterioration_rate=oc.rate(deteriorated, paired), reliable_recovery=reliably_recovered,
        reliable_recovery_rate=oc.rate(reliably_recovered, cases),
    )


__all__ = [
    "CaseloadRow", "CourseOutcome", "LastScore", "MeasureNorms", "NotInViewsError", "OutcomeReport",
    "OutcomeSummary", "Page", "Progress", "ProgressPoint", "RiskFlag", "SessionMark", "SeverityBand", "Views",
]
