"""The fault suite: no accepted risk signal is lost on any path (issue 10).

Every test asserts the same invariant the same way: **every accepted risk signal ends in
an EscalationRaised on the stream** (``escalated``: an EscalationRaised whose causation
chain, through a dead letter if it failed on the way, leads back to the signal), **or the
input was refused at the door** (a 4xx problem, and nothing recorded).

These run the real services' code on both stores through the in-memory pipeline
(tests.support.pipeline); the faults that need the transport (forged messages, an outage
of the store, restored stores, two instances) are in test_fault_suite_nats.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from domain.base import Actor, CommandContext, Role
from domain.catalogues.strategies import Strategy
from services.api.app import Api, create_app
from services.api.auth import TokenRegistry, add_token
from services.care import commands as c
from services.care.application import CommandMeta
from services.escalation.commands import ResolveCrisis
from services.shared.clock import ManualClock
from services.shared.settings import Settings
from services.shared.tracking import Tracked
from tests.conftest import CLINICIAN, SUPERVISOR, T0
from tests.support.pipeline import Pipeline, escalated

ME = CommandMeta(actor=CLINICIAN)


@pytest.fixture
def pipeline(backend_settings: Settings) -> Iterator[Pipeline]:
    p = Pipeline(backend_settings, ManualClock(T0))
    try:
        yield p
    finally:
        p.close()


def api_for(p: Pipeline, tmp_path: Any) -> tuple[TestClient, dict[str, dict[str, str]]]:
    path = tmp_path / "tokens.json"
    tokens = {
        "clinician": add_token(path, actor_id=CLINICIAN.id, role=Role.CLINICIAN, clients=("*",)),
        "supervisor": add_token(path, actor_id=SUPERVISOR.id, role=Role.SUPERVISOR, clients=("*",)),
    }
    client = TestClient(create_app(Api(p.care, TokenRegistry.load(path), p.escalation, p.assessment)),
                        raise_server_exceptions=False)
    return client, {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}


def active_plan(p: Pipeline, client: str = "client-1") -> tuple[UUID, UUID]:
    plan = p.care.handle(c.DraftCarePlan(client_id=client, title="Low mood", strategy="short_term_moderate",
                                         therapy_models=["steady_drive"]), ME).aggregate_id
    course = p.care.handle(c.StartCourse(plan_id=plan, modality="interpersonal", planned_sessions=12), ME).aggregate_id
    return plan, course


def activate(p: Pipeline, plan: UUID) -> None:
    goal = c.AddGoal(plan_id=plan, description="Walk daily")
    for command in (c.RecordConsent(plan_id=plan), c.ExplainConfidentiality(plan_id=plan), goal,
                    c.AgreeGoal(plan_id=plan, goal_id=goal.goal_id), c.ActivatePlan(plan_id=plan)):
        p.care.handle(command, ME)


def nothing_written(p: Pipeline, aggregate_id: UUID, version: int) -> bool:
    return p.care.get_aggregate(aggregate_id).version == version


# --------------------------------------------------------------------- 1. derived text


@pytest.mark.parametrize("length", [1, 200, 3970, 3999, 4000])
def test_a_crisis_reason_up_to_its_limit_is_escalated_however_long(pipeline: Pipeline, tmp_path: Any, length: int) -> None:
    """The escalation's reason quotes the clinician's ("Raised by ... : "), the care policy's
    quotes the escalation's: each is cut to fit its event, and names its source by id."""
    plan, _ = active_plan(pipeline)
    api, who = api_for(pipeline, tmp_path)
    reason = ("Disclosed a plan to overdose tonight. ü—\u00a0" * 200)[:length]
    answer = api.post(f"/plans/{plan}/raise-crisis", json={"reason": reason}, headers=who["clinician"])
    assert answer.status_code == 200, answer.text
    pipeline.pump()
    assert escalated(pipeline.stream, answer.json()["event_ids"][0])
    assert pipeline.care.get_plan(plan).strategy is Strategy.EMERGENCY_SUPPORT
    assert not list(pipeline.events(".message_dead_lettered"))


@pytest.mark.parametrize("reason", ["x" * 4001, "x" * 100_000, "", "   "])
def test_a_crisis_reason_past_its_limit_is_refused_at_the_door(pipeline: Pipeline, tmp_path: Any, reason: str) -> None:
    plan, _ = active_plan(pipeline)
    version = pipeline.care.get_plan(plan).version
    api, who = api_for(pipeline, tmp_path)
    answer = api.post(f"/plans/{plan}/raise-crisis", json={"reason": reason}, headers=who["clinician"])
    assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
    assert nothing_written(pipeline, plan, version)


HUGE = 10**3999  # a 4,000-digit answer


@pytest.mark.parametrize(
    ("instrument", "answers", "risk"),
    [
        ("PHQ-9", [7, 1, 1, 1, 1, 1, 1, 1, 3], True),  # out of range, item 9 positive: rejected, flag kept
        ("PHQ-9", [1, None, None, None, 1, 1, 1, 1, 3], True),  # too many missing: rejected, flag kept
        ("PHQ-9", [1] * 12 + [3], True),  # wrong item count, the ninth answer positive: rejected, flag kept
        ("PHQ-9", [3] * 8 + [0] + [3] * 4, False),  # wrong item count, the ninth answer 0: rejected only
        ("PHQ-9", [1, 1, 1, 1, 1, 1, 1, 1, 99], True),  # item 9 at the door's bound
        ("C-SSRS-screener", [1, 1, 1, 1, 1, 9], True),  # out of range, intent and plan: high signal kept
        ("C-SSRS-screener", [1, 1, 1, 0, 1, 0], True),  # scored: high risk
        ("NOT-AN-INSTRUMENT", [3] * 9, False),
    ],
)
def test_answers_inside_the_door_are_decided_and_a_risk_signal_in_them_is_escalated(
    pipeline: Pipeline, tmp_path: Any, instrument: str, answers: list[int | None], risk: bool
) -> None:
    _, course = active_plan(pipeline)
    api, who = api_for(pipeline, tmp_path)
    answer = api.post(
        f"/courses/{course}/submit-questionnaire",
        json={"instrument": instrument, "answers": answers, "answered_at": T0.isoformat()}, headers=who["clinician"],
    )
    assert answer.status_code == 200, answer.text
    pipeline.pump()
    decisions = [m.subject.rsplit(".", 1)[1] for m in pipeline.events() if ".assessment_record." in m.subject]
    assert decisions[-1] in ("assessment_scored", "assessment_rejected")
    assert escalated(pipeline.stream, answer.json()["event_ids"][0]) is risk
    assert not list(pipeline.events(".message_dead_lettered"))


@pytest.mark.parametrize("value", [HUGE, -HUGE, 100, -1, 2**63])
def test_an_answer_that_cannot_be_an_answer_is_refused_at_the_door(pipeline: Pipeline, tmp_path: Any, value: int) -> None:
    _, course = active_plan(pipeline)
    version = pipeline.care.get_course(course).version
    api, who = api_for(pipeline, tmp_path)
    answer = api.post(
        f"/courses/{course}/submit-questionnaire",
        json={"instrument": "PHQ-9", "answers": [value, 1, 1, 1, 1, 1, 1, 1, 3], "answered_at": T0.isoformat()},
        headers=who["clinician"],
    )
    assert answer.status_code == 422, answer.text
    assert nothing_written(pipeline, course, version)


def test_a_stored_submission_with_a_huge_answer_is_still_rejected_with_its_risk_flag(pipeline: Pipeline) -> None:
    """Recorded before the door was shut (or by a version without it): scoring still fits its
    rejection into its event and keeps the flag."""
    from domain.events.therapy_course import QuestionnaireSubmitted

    plan, course = active_plan(pipeline)
    course_now = pipeline.care.get_course(course)
    event = course_now._trigger(  # noqa: SLF001 - writes what an older version accepted
        QuestionnaireSubmitted,
        CommandContext(actor=CLINICIAN, at=T0, correlation_id=UUID(int=5)),
        submission_id=UUID(int=77), instrument="PHQ-9", answers=[HUGE, 1, 1, 1, 1, 1, 1, 1, 3], answered_at=T0,
    )
    pipeline.care.save(course_now)
    pipeline.pump()
    rejected = [m for m in pipeline.events(".assessment_rejected")]
    assert len(rejected) == 1 and b'"suicide_item_positive":true' in rejected[0].body
    assert escalated(pipeline.stream, str(event.event_id))
    assert str(plan) in rejected[0].body.decode()


# --------------------------------------------------------------------- 3. fail closed


class Faulty:
    """Makes one service's decision fail (as a bug or a bad message would) for chosen
    events, with a message that quotes clinical text."""

    def __init__(self, service: str, fail: Any) -> None:
        self.service, self.fail = service, fail

    def __call__(self, name: str, app: Tracked) -> Tracked:
        if name != self.service:
            return app
        decide, fail = app.decide, self.fail

        def failing(inbound: Any) -> Any:
            if fail(inbound):
                msg = f"cannot decide: {inbound.body.get('reason') or inbound.body.get('instrument')} SENTINEL-9d1f"
                raise ValueError(msg)
            return decide(inbound)

        app.decide = failing  # type: ignore[method-assign]
        return app


@pytest.mark.parametrize("service", ["assessment", "escalation", "care-policies"])
def test_a_risk_signal_a_service_cannot_decide_ends_in_a_fail_safe_escalation(
    backend_settings: Settings, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    kinds = {"assessment": "questionnaire_submitted", "escalation": "assessment_scored", "care-policies": "escalation_raised"}
    faulty = Faulty(service, lambda inbound: inbound.event_name == kinds[service])
    p = Pipeline(backend_settings, ManualClock(T0), wrap=faulty)
    try:
        plan, course = active_plan(p)
        submitted = p.care.handle(c.SubmitQuestionnaire(course_id=course, instrument="PHQ-9", answers=[1] * 8 + [2],
                                                        answered_at=T0), ME)
        with caplog.at_level(logging.DEBUG):
            p.pump()
        dead = [m.body for m in p.events(".message_dead_lettered")]
        # the care policies fail on the fail-safe crisis too: that dead letter raises no further crisis
        assert len([d for d in dead if b'"risk_signal":true' in d]) == 1
        assert len(dead) == (2 if service == "care-policies" else 1)
        assert not [d for d in dead if b"SENTINEL" in d]
        assert escalated(p.stream, str(submitted.event_ids[0]))
        failsafe = [m.body for m in p.events(".escalation_raised") if b"unprocessable_risk_signal" in m.body]
        assert len(failsafe) == 1 and b'"severity":"immediate"' in failsafe[0]
        assert str(plan).encode() in failsafe[0]  # the plan is named, so a person knows whom to call
        assert "SENTINEL" not in caplog.text
    finally:
        p.close()


def test_a_dead_lettered_course_start_does_not_cascade(backend_settings: Settings) -> None:
    """The course's start failed in the assessment service (dead-lettered): the next
    submission is still scored and its item 9 escalated, the start read from the stream."""
    p = Pipeline(backend_settings, ManualClock(T0), wrap=Faulty("assessment", lambda i: i.event_name == "course_started"))
    try:
        _, course = active_plan(p)
        p.pump()
        assert len(list(p.events(".message_dead_lettered"))) == 1
        submitted = p.care.handle(c.SubmitQuestionnaire(course_id=course, instrument="PHQ-9", answers=[0] * 8 + [1],
                                                        answered_at=T0), ME)
        p.pump()
        assert [m.subject.rsplit(".", 1)[1] for m in p.events() if ".assessment_record." in m.subject] == [
            "assessment_record_opened", "assessment_scored"
        ]
        assert escalated(p.stream, str(submitted.event_ids[0]))
        assert len(list(p.events(".message_dead_lettered"))) == 1  # no cascade
    finally:
        p.close()


def test_a_course_start_gone_from_the_stream_does_not_cascade_either(backend_settings: Settings) -> None:
    """The start aged out of the stream before the assessment service first read it: the
    submission names its plan and client, and the record is opened from them."""
    p = Pipeline(backend_settings, ManualClock(T0), services=("escalation",))
    try:
        _, course = active_plan(p)
        p.pump()
        p.stream[:] = [m for m in p.stream if not m.subject.endswith(".course_started")]
        p.start_consumer("assessment")
        submitted = p.care.handle(c.SubmitQuestionnaire(course_id=course, instrument="PHQ-9", answers=[0] * 8 + [1],
                                                        answered_at=T0), ME)
        p.pump()
        assert escalated(p.stream, str(submitted.event_ids[0]))
        assert not list(p.events(".message_dead_lettered"))
    finally:
        p.close()


# --------------------------------------------------------------------- 4. crisis commands


def test_crisis_commands_are_in_the_right_hands(pipeline: Pipeline, tmp_path: Any) -> None:
    plan, _ = active_plan(pipeline)
    activate(pipeline, plan)
    api, who = api_for(pipeline, tmp_path)
    raised = api.post(f"/plans/{plan}/raise-crisis", json={"reason": "Disclosed a plan"}, headers=who["clinician"])
    assert raised.status_code == 200
    pipeline.pump()
    (crisis,) = pipeline.care.get_plan(plan).open_crises
    version = pipeline.care.get_plan(plan).version
    clinician = {
        "activate-emergency-support": {"crisis_id": str(crisis), "reason": "again"},
        "record-crisis-resolved": {"crisis_id": str(crisis), "outcome": "Seems fine now"},
        "end-emergency-support": {"strategy": "short_term_moderate", "reason": "Feels better"},
    }
    for command, body in clinician.items():
        answer = api.post(f"/plans/{plan}/{command}", json=body, headers=who["clinician"])
        assert answer.status_code == 403, (command, answer.text)
    for command, body in {"revoke-plan": {"reason": "Client withdrew"}, "put-plan-on-hold": {"reason": "Abroad"}}.items():
        answer = api.post(f"/plans/{plan}/{command}", json=body, headers=who["clinician"])
        assert answer.status_code == 409 and "resolve it first" in answer.json()["detail"], answer.text
    supervisor = {
        # a made-up crisis cannot put a plan into emergency support ...
        "activate-emergency-support": {"crisis_id": str(UUID(int=99)), "reason": "made up"},
        # ... nor can a supervisor record resolved a crisis that escalation still holds open
        "record-crisis-resolved": {"crisis_id": str(crisis), "outcome": "Seems fine now"},
        "end-emergency-support": {"strategy": "short_term_moderate", "reason": "Feels better"},
    }
    for command, body in supervisor.items():
        answer = api.post(f"/plans/{plan}/{command}", json=body, headers=who["supervisor"])
        assert answer.status_code == 409, (command, answer.text)
    assert nothing_written(pipeline, plan, version)
    # resolved through escalation, the plan records it; then a supervisor ends emergency support
    pipeline.escalation.handle(ResolveCrisis(crisis_id=crisis, outcome="Safe", reason="Seen"),
                               CommandMeta(actor=Actor(id="sup-3", role=Role.SUPERVISOR)))
    pipeline.pump()
    ended = api.post(f"/plans/{plan}/end-emergency-support", json={"strategy": "short_term_moderate", "reason": "Stable"},
                     headers=who["supervisor"])
    assert ended.status_code == 200, ended.text


# --------------------------------------------------------------------- 5. timers after catch-up


def test_a_session_held_still_on_its_way_is_not_overtaken_by_the_missed_timer(backend_settings: Settings) -> None:
    clock = ManualClock(T0)
    p = Pipeline(backend_settings, clock, services=("scheduling", "escalation"))
    try:
        plan, course = active_plan(p)
        p.pump()
        first = c.ScheduleSession(course_id=course, scheduled_for=T0 + timedelta(days=7))
        p.care.handle(first, ME)
        p.held.add("care")  # the care relay is down: what the clinician records waits in the store
        clock.advance(days=7, hours=1)
        p.care.handle(c.HoldSession(course_id=course, session_id=first.session_id, held_at=clock.now), ME)
        clock.advance(days=3)  # long past the slot's end plus the grace period
        p.pump()
        assert not list(p.events(".session_missed")), "the timer overtook attendance still on its way"
        p.held.clear()  # the relay is back
        p.pump()
        assert not list(p.events(".session_missed"))
        assert len(list(p.events(".session_attendance_recorded"))) == 1
        clock.advance(days=30)
        p.pump()  # the later slots, never held, are missed now
        assert list(p.events(".session_missed"))
    finally:
        p.close()


def test_a_session_held_after_it_was_marked_missed_corrects_the_record(backend_settings: Settings) -> None:
    clock = ManualClock(T0)
    p = Pipeline(backend_settings, clock, services=("scheduling", "escalation"))
    try:
        plan, course = active_plan(p)
        p.care.handle(c.RaiseRisk(plan_id=plan, level="high", reason="Disclosed ideation"), ME)
        first = c.ScheduleSession(course_id=course, scheduled_for=T0 + timedelta(days=7))
        p.care.handle(first, ME)
        p.pump()
        clock.advance(days=9)
        p.pump()
        missed = [m for m in p.events(".session_missed") if b'"number":1' in m.body]
        assert missed
        assert escalated(p.stream, missed[0].headers["ce-id"])  # at high risk: outreach
        p.care.handle(c.HoldSession(course_id=course, session_id=first.session_id, held_at=T0 + timedelta(days=7)), ME)
        p.pump()
        assert len(list(p.events(".session_attendance_corrected"))) == 1
        assert len(list(p.events(".missed_session_corrected"))) == 1
    finally:
        p.close()


# --------------------------------------------------------------------- 7. no clinical text outside events


SENTINEL = "SENTINEL-clinical-text-5e2b"


def test_no_clinical_text_reaches_a_log_line_or_a_dead_letter(backend_settings: Settings, caplog: pytest.LogCaptureFixture,
                                                              tmp_path: Any) -> None:
    """A sentinel in every free-text field along failing paths: a crisis reason, a
    questionnaire's instrument, a consent note, a goal; every service fails on them with
    an error that quotes them, and on malformed messages that carry them."""
    p = Pipeline(backend_settings, ManualClock(T0), wrap=_failing_everywhere)
    try:
        with caplog.at_level(logging.DEBUG):
            plan = p.care.handle(c.DraftCarePlan(client_id="client-7", title=f"Title {SENTINEL}", strategy="short_term_moderate",
                                                 therapy_models=["steady_drive"]), ME).aggregate_id
            p.care.handle(c.RecordConsent(plan_id=plan, note=f"Consent {SENTINEL}"), ME)
            course = p.care.handle(c.StartCourse(plan_id=plan, modality="interpersonal", planned_sessions=12), ME).aggregate_id
            p.care.handle(c.SubmitQuestionnaire(course_id=course, instrument=f"PHQ-9 {SENTINEL}", answers=[1] * 9,
                                                answered_at=T0), ME)
            p.care.handle(c.RaiseCrisis(plan_id=plan, reason=f"Crisis {SENTINEL}"), ME)
            p.publish(f"care.clinical.v1.care_plan.{plan}.crisis_raised_by_clinician",
                      {"ce-source": "urn:careplan:care", "ce-id": SENTINEL, "ce-type": SENTINEL}, SENTINEL.encode())
            api, who = api_for(p, tmp_path)
            api.post(f"/plans/{plan}/raise-crisis", json={"reason": "x" * 5000 + SENTINEL}, headers=who["clinician"])
            p.pump()
        dead = list(p.events(".message_dead_lettered"))
        assert len(dead) >= 4, [m.subject for m in dead]
        for message in dead:
            assert SENTINEL not in message.body.decode() + repr(message.headers)
        assert SENTINEL not in caplog.text
    finally:
        p.close()


def _failing_everywhere(name: str, app: Tracked) -> Tracked:
    return Faulty(name, lambda inbound: True)(name, app)
