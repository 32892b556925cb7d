"""The assessment scoring service on real NATS, fed by the care application's relay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import jsonschema
import nats
import pytest
from eventsourcing.persistence import IntegrityError
from faststream.nats import NatsBroker

from contracts.generate import CONTRACTS_DIR, SCHEMA_BASE_URI
from services.assessment.service import SUBJECTS, AssessmentApplication
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.bus import EmbeddedNats
from services.shared.cloudevents import Inbound, cloudevent, parse_inbound
from services.shared.consumer import DurableConsumer
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.conftest import CLINICIAN
from tests.support.bus import InProcessRelay, StreamMessage, read_stream, with_streams

META = CommandMeta(actor=CLINICIAN)
WHEN = datetime(2026, 5, 4, 9, tzinfo=UTC)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


def start_course(app: CareApplication) -> tuple[str, str]:
    plan = app.handle(
        c.DraftCarePlan(client_id="client-5", title="Mood", strategy="short_term_moderate", therapy_models=["emotional_calm"]),
        META,
    ).aggregate_id
    course = app.handle(c.StartCourse(plan_id=plan, modality="interpersonal", planned_sessions=12), META).aggregate_id
    return str(plan), str(course)


def submit(app: CareApplication, course: str, instrument: str, answers: list[int | None]) -> str:
    result = app.handle(
        c.SubmitQuestionnaire(course_id=course, instrument=instrument, answers=answers, answered_at=WHEN), META
    )
    return str(result.event_ids[0])


async def wait_for_messages(url: str, subject_prefix: str, count: int, timeout: float = 30) -> list[StreamMessage]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [m for m in await read_stream(url) if m.subject.startswith(subject_prefix)]
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


def service(settings: Settings, **options: object) -> RunningService:
    return RunningService(settings, AssessmentApplication(settings), SUBJECTS, **options)


async def test_scores_rejects_and_links_every_decision_to_its_submission(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    app = CareApplication(settings)
    try:
        plan, course = start_course(app)
        first = submit(app, course, "PHQ-9", [2, 2, 2, 2, 2, 2, 2, 2, 0])  # 16, moderately severe
        second = submit(app, course, "PHQ-9", [1, 1, 1, 1, 1, 1, 1, 1, 1])  # 9, item 9 positive, -7
        third = submit(app, course, "GAD-7", [1, 1, 1])  # wrong item count
        async with InProcessRelay(settings, nats_server.url), service(settings):
            decisions = await wait_for_messages(nats_server.url, "care.assessment.v1.", 4)
        submitted = {
            m.headers["ce-id"]: json.loads(m.body)["correlation_id"]
            for m in await read_stream(nats_server.url)
            if m.subject.endswith("questionnaire_submitted")
        }
    finally:
        app.close()
    bodies = [json.loads(m.body) for m in decisions]
    assert [m.subject.rsplit(".", 1)[1] for m in decisions] == [
        "assessment_record_opened", "assessment_scored", "assessment_scored", "assessment_rejected"
    ]
    opened, scored1, scored2, rejected = bodies
    assert (opened["course_id"], opened["plan_id"], opened["client_id"]) == (course, plan, "client-5")
    assert (scored1["total"], scored1["severity"], scored1["change"], scored1["caseness"]) == (16, "moderately_severe", None, True)
    assert scored1["causation_id"] == first
    assert (scored2["total"], scored2["suicide_item_positive"]) == (9, True)
    assert scored2["change"]["change"] == -7 and scored2["change"]["reliable_improvement"] is True
    assert scored2["change"]["baseline_total"] == 16 and scored2["causation_id"] == second
    assert "7 items; 3 were given" in rejected["rejection_reason"] and rejected["causation_id"] == third
    assert [b["correlation_id"] for b in bodies[1:]] == [submitted[b["causation_id"]] for b in bodies[1:]]
    assert all(b["actor"] == {"id": "assessment-service", "role": "service"} for b in bodies)
    for message in decisions:
        schema_file = message.headers["ce-dataschema"].removeprefix(SCHEMA_BASE_URI + "/")
        schema = json.loads((CONTRACTS_DIR / schema_file).read_text())
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(json.loads(message.body))
        assert message.headers["ce-source"] == "urn:careplan:assessment"


class FailingAssessment(AssessmentApplication):
    """The assessment service with a fault: deciding the named events fails, with a message
    that quotes what it was given (as pydantic's and enum errors do)."""

    name = AssessmentApplication.name

    def __init__(self, settings: Settings, fail_on: set[str]) -> None:
        super().__init__(settings)
        self.fail_on = fail_on

    def decide(self, inbound):  # type: ignore[no-untyped-def]
        if inbound.event_id in self.fail_on:
            msg = f"cannot decide {inbound.body.get('instrument')} {SENTINEL}"
            raise ValueError(msg)
        return super().decide(inbound)


SENTINEL = "SENTINEL-crisis-note-7f3a"


async def test_malformed_and_failing_messages_are_dead_lettered_and_consumption_goes_on(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    app = CareApplication(settings)
    try:
        _, course = start_course(app)
        failing = submit(app, course, "PHQ-9", [1] * 9)
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(3)
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            # not a CloudEvent at all
            await js.publish(f"care.clinical.v1.therapy_course.{course}.questionnaire_submitted", b"\xff not json")
            # a well-formed event whose source is not the subject's publisher: it cannot move any position
            forged = {"ce-source": "urn:careplan:assessment", "ce-sequence": "99999", "ce-id": str(uuid4()),
                      "ce-subject": course, "ce-type": "org.careplan.clinical.v1.therapy_course.questionnaire_submitted"}
            body = {"submission_id": str(uuid4()), "instrument": "PHQ-9", "answers": [0] * 9,
                    "answered_at": WHEN.isoformat(), "correlation_id": str(uuid4()), "note": SENTINEL}
            await js.publish(f"care.clinical.v1.therapy_course.{course}.questionnaire_submitted",
                             json.dumps(body).encode(), headers=forged)
            await nc.close()
            submit(app, course, "PHQ-9", [0] * 9)
            running = RunningService(settings, FailingAssessment(settings, {failing}), SUBJECTS, max_attempts=2, retry_cap=0.2)
            async with running:
                dead = await wait_for_messages(nats_server.url, "care.assessment.v1.dead_letter.", 3)
                scored = await wait_for_messages(nats_server.url, "care.assessment.v1.assessment_record.", 2)
                assert running.consumer.dead_lettered == 3
    finally:
        app.close()
    letters = [json.loads(m.body) for m in dead]
    assert [(d["error_class"], d["attempts"]) for d in letters] == [
        ("ValueError", 2), ("MalformedMessageError", 0), ("MalformedMessageError", 0)
    ]
    assert letters[0]["failed_event_id"] == failing and letters[0]["source"] == "care" and letters[0]["position"] == 3
    # every submission may carry a risk signal: each of its dead letters says so (escalation acts on it)
    assert all(d["risk_signal"] and d["failed_event_type"] == "therapy_course.questionnaire_submitted" for d in letters)
    assert letters[2]["failed_event_id"] == forged["ce-id"] and letters[2]["position"] is None
    # nothing of what the messages said, or of the error's message, is in a dead letter
    assert not [m for m in dead if SENTINEL in m.body.decode() + json.dumps(m.headers)]
    assert [m.subject.rsplit(".", 1)[1] for m in scored] == ["assessment_record_opened", "assessment_scored"]


async def test_a_repeated_delivery_and_a_restart_change_nothing(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    app = CareApplication(settings)
    try:
        _, course = start_course(app)
        submit(app, course, "PHQ-9", [3] * 9)
        async with InProcessRelay(settings, nats_server.url):
            async with service(settings) as running:
                await wait_for_messages(nats_server.url, "care.assessment.v1.", 2)
                # the same stored event published again under a new message id: a redelivery as the service sees it
                original = next(m for m in await read_stream(nats_server.url) if m.subject.endswith("questionnaire_submitted"))
                nc = await nats.connect(nats_server.url)
                await nc.jetstream().publish(original.subject, original.body,
                                             headers=dict(original.headers, **{"Nats-Msg-Id": "again"}))
                await nc.close()
                for _ in range(100):
                    if running.consumer.skipped:
                        break
                    await asyncio.sleep(0.05)
                assert running.consumer.skipped == 1
            submit(app, course, "PHQ-9", [0] * 9)
            async with service(settings) as restarted:  # picks up where the durable consumer left off
                await wait_for_messages(nats_server.url, "care.assessment.v1.", 3)
                assert restarted.consumer.processed == 1
        await asyncio.sleep(0.3)
        decisions = [m for m in await read_stream(nats_server.url) if m.subject.startswith("care.assessment.v1.")]
    finally:
        app.close()
    assert [m.subject.rsplit(".", 1)[1] for m in decisions] == ["assessment_record_opened", "assessment_scored", "assessment_scored"]
    assert json.loads(decisions[2].body)["change"]["baseline_total"] == 27


async def test_a_backlog_is_recorded_in_runs_and_a_failing_message_in_it_is_set_apart(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """Messages waiting together are decided together, in order: later decisions of one
    transaction see the earlier ones (every score after the first is compared with the
    first), and a message that cannot be decided is dead-lettered without losing or
    reordering the messages around it."""
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    app = CareApplication(settings)
    try:
        _, course = start_course(app)
        first = [submit(app, course, "PHQ-9", [3] * 9) for _ in range(20)]
        failing = submit(app, course, "PHQ-9", [1] * 9)
        later = [submit(app, course, "PHQ-9", [0] * 9) for _ in range(20)]
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(43)
            running = RunningService(settings, FailingAssessment(settings, {failing}), SUBJECTS, max_attempts=2,
                                     retry_cap=0.2)
            async with running:
                scored = await wait_for_messages(nats_server.url, "care.assessment.v1.assessment_record.", 41)
                dead = await wait_for_messages(nats_server.url, "care.assessment.v1.dead_letter.", 1)
                processed, runs, isolated = running.consumer.processed, running.consumer.runs, running.consumer.isolated
    finally:
        app.close()
    assert len(dead) == 1 and json.loads(dead[0].body)["failed_event_id"] == failing
    bodies = [json.loads(m.body) for m in scored if m.subject.endswith("assessment_scored")]
    assert [b["causation_id"] for b in bodies] == first + later
    baseline = bodies[0]["submission_id"]
    assert bodies[0]["change"] is None
    assert all(b["change"]["baseline_submission_id"] == baseline for b in bodies[1:])
    assert [b["change"]["baseline_total"] for b in bodies[1:]] == [27] * 39
    assert processed == 41  # the course start and forty submissions
    assert 1 <= runs < processed / 4, f"{runs} transactions for {processed} messages: not recorded in runs"
    assert isolated == 1  # only the failing submission was decided on its own


async def test_a_delivery_a_dead_instance_left_behind_is_decided_when_it_comes_back_behind_later_ones(
    tmp_path: Path, nats_server: EmbeddedNats, backend_settings: Settings
) -> None:
    """An instance died holding a delivery (its pull request was answered after its
    successor had started: the successor's start-up wait saw nothing outstanding).
    JetStream hands the successor the later messages at once and the lost one only after
    its ack_wait, as a redelivery behind them. The successor waits for it and decides the
    three in order; before, it decided the later two, moved its position past the first,
    and took the redelivery for decided: one submission never scored."""
    settings = backend_settings.model_copy(update={"data_dir": tmp_path / "data", "nats_url": nats_server.url})
    app = CareApplication(settings)
    assessment = AssessmentApplication(settings)
    broker = NatsBroker(nats_server.url)
    control = await nats.connect(nats_server.url)
    try:
        _, course = start_course(app)
        async with InProcessRelay(settings, nats_server.url) as relay:
            async with service(settings) as running:  # makes the durable, decides the course start
                for _ in range(600):
                    if running.consumer.processed:
                        break
                    await asyncio.sleep(0.05)
            submissions = [submit(app, course, "PHQ-9", [k] * 9) for k in (3, 2, 1)]
            await relay.wait_position(5)
            consumer = DurableConsumer(settings, service="assessment", app=assessment, subjects=SUBJECTS,
                                       handle=assessment.decide)
            consumer.attach(broker)
            assert await consumer.in_line(control.jetstream())
            # the dead instance: its pull request takes the first submission, and it is gone
            dead = await nats.connect(nats_server.url)
            taken = await (await dead.jetstream().pull_subscribe_bind("assessment", settings.stream_name)).fetch(1)
            await dead.close()
            assert [m.headers["ce-id"] for m in taken] == submissions[:1]
            await broker.start()
            for _ in range(600):
                if consumer.processed + consumer.skipped >= 3:
                    break
                await asyncio.sleep(0.05)
            processed, skipped = consumer.processed, consumer.skipped
    finally:
        await broker.stop()
        await control.close()
        app.close()
    scored = [e for e in (assessment.mapper.to_domain_event(n) for n in assessment.stored_notifications())
              if type(e).__name__ == "AssessmentScored"]
    assessment.close()
    assert (processed, skipped) == (3, 0)
    assert [str(e.causation_id) for e in scored] == submissions


def test_a_cached_record_another_instance_moved_on_is_decided_again_from_the_store(backend_settings: Settings) -> None:
    """A run of decisions uses the cached record without reading the store (only this
    service writes it). When another instance decided for the course meanwhile (its
    partition moved there and back), the stale copy's event takes a version already
    stored: the commit fails, the cache is emptied, and deciding again from the store finds
    the submission decided: nothing is scored twice."""
    settings = backend_settings.model_copy(update={"data_dir": backend_settings.data_dir / "data"})
    app = CareApplication(settings)
    here, there = AssessmentApplication(settings), AssessmentApplication(settings)
    try:
        _, course = start_course(app)
        submit(app, course, "PHQ-9", [3] * 9)
        submit(app, course, "PHQ-9", [1] * 9)
        submit(app, course, "PHQ-9", [2] * 9)
        inbound = []
        for notification in app.recorder.select_notifications(start=1, limit=100):
            message = cloudevent("care", notification, app.mapper.to_public_json(notification), notification.id - 1)
            found = parse_inbound(message.subject, message.headers, message.body, notification.id)
            if isinstance(found, Inbound) and here.reactions.event_class_of(found) is not None:
                inbound.append(found)
        opened, first, second, third = inbound
        here.record_run(here.decide, [opened], [])
        here.record_run(here.decide, [first], [])  # read from the store, and cached here
        there.record_run(there.decide, [second], [])  # another instance scores the second
        with pytest.raises(IntegrityError):
            here.record_run(here.decide, [second, third], [])  # from the stale copy: a version already taken
        # from the store: the second decided before, the third not (the failed run's changes are gone)
        assert here.record_run(here.decide, [second, third], []) == 1
        scored = [e for e in (here.mapper.to_domain_event(n) for n in here.stored_notifications())
                  if type(e).__name__ == "AssessmentScored"]
    finally:
        app.close()
        here.close()
        there.close()
    assert [str(e.causation_id) for e in scored] == [first.event_id, second.event_id, third.event_id]
