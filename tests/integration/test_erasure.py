"""Erasure by crypto-shredding (issue 16), with the system running on a real nats-server: a
sentinel in every free-text field of one client's story; the erasure refused under a legal
hold, with an open crisis and by the supervisor who asked (nothing changed); then confirmed
by a second supervisor: the sentinel is in no file under the data dir (stores, key store,
JetStream store, read models) nor in any stream message, ``audit verify`` passes, the erased
history reads as erased, and another client's story reads and replays as before."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from domain.base import Actor, Role
from domain.catalogues.care import CopingSkill, ExpectationHolder
from domain.catalogues.modalities import Modality
from domain.catalogues.problem_areas import ProblemArea, RelationshipPeriod, RelationshipRole
from domain.data_subject import data_subject_id
from domain.errors import ClientDataErasedError
from services.api.app import Api, create_app
from services.api.auth import TokenRegistry, add_token
from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.audit.auditor import Auditor
from services.audit.integrity import verify_all
from services.audit.reading import Stores, history, replay
from services.care import commands as c
from services.care import policies
from services.care.application import CareApplication, CommandMeta
from services.escalation.service import SUBJECTS as ESCALATION_SUBJECTS
from services.escalation.service import EscalationApplication
from services.scheduling.service import SUBJECTS as SCHEDULING_SUBJECTS
from services.scheduling.service import SchedulingApplication
from services.shared.bus import EmbeddedNats
from services.shared.privacy.keys import key_store
from services.shared.runner import RunningService
from services.shared.settings import Settings
from services.subscriptions.kinds import Scope
from services.subscriptions.service import SUBJECTS as SUBSCRIPTIONS_SUBJECTS
from services.subscriptions.service import SubscriptionsApplication
from services.views.projection import Projection
from tests.conftest import CLINICIAN
from tests.support.bus import InProcessRelay, read_stream, with_streams

SENTINEL = "ZEBRA-SENTINEL-7731"
A, B = "client-erased", "client-kept"
ME = CommandMeta(actor=CLINICIAN)


@dataclass
class System:
    care: CareApplication
    escalation: EscalationApplication
    client: httpx.AsyncClient
    tokens: dict[str, str]
    url: str
    subscriptions: SubscriptionsApplication
    subscription: UUID

    async def post(self, path: str, body: Any, who: str) -> httpx.Response:
        return await self.client.post(path, json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def written(self) -> tuple[int, int]:
        """The client's rights record's events and the destroyed keys: what a refusal must not change
        (the services go on writing the stores meanwhile)."""
        keys = key_store(self.care.settings)
        subject = data_subject_id(keys.pseudonym(A))
        return len(self.care.recorder.select_events(subject)), len(keys.tombstones())


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[System]:
    with EmbeddedNats(store_dir=settings.data_dir / "nats") as nats:
        with_streams(nats)
        settings = settings.model_copy(update={"nats_url": nats.url, "relay_check_interval": 0.5,
                                               "timer_tick_seconds": 0.2})
        path = settings.tokens_path()
        tokens = {"clinician": add_token(path, actor_id="clinician-17", role=Role.CLINICIAN, clients=("*",)),
                  "sup1": add_token(path, actor_id="supervisor-1", role=Role.SUPERVISOR, clients=("*",)),
                  "sup2": add_token(path, actor_id="supervisor-2", role=Role.SUPERVISOR, clients=("*",))}
        escalation = EscalationApplication(settings)
        care = CareApplication(settings, crises=escalation.crisis_held_open)
        assessment = AssessmentApplication(settings)
        app = create_app(Api(care, TokenRegistry.load(path), escalation, assessment))
        escalating, scheduling = EscalationApplication(settings), SchedulingApplication(settings)
        # a hospital's subscription to every client's plans: its feed keeps the client's events too
        # (its receiver is away: deliveries wait and retry, the feed is what matters here)
        subscriptions = SubscriptionsApplication(settings)
        made = subscriptions.subscribe("webhook", {"endpoint": "http://127.0.0.1:9/hook", "filter": "care.>"},
                                Scope(("*",)), Actor(id="ehr-integration", role=Role.INTEGRATION))
        try:
            async with (
                InProcessRelay(settings, nats.url),
                RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS),
                RunningService(settings, escalating, ESCALATION_SUBJECTS, tick=escalating.fire_due_timers,
                               tick_interval=0.2),
                RunningService(settings, scheduling, SCHEDULING_SUBJECTS, tick=scheduling.fire_due_timers,
                               tick_interval=0.2),
                RunningService(settings, CareApplication(settings), policies.SUBJECTS, name=policies.NAME,
                               with_relay=False),
                RunningService(settings, subscriptions, SUBSCRIPTIONS_SUBJECTS,
                               background=subscriptions.run_background),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://careplan.test") as client,
            ):
                yield System(care, escalation, client, tokens, nats.url, subscriptions, made.subscription.id)
        finally:
            for application in (care, escalation, assessment, subscriptions):
                application.close()


def story(app: CareApplication, client_id: str, text: str) -> tuple[UUID, UUID, UUID]:
    """A plan, a course and an inventory with ``text`` in every free-text field."""
    run = app.handle
    plan = run(c.DraftCarePlan(client_id=client_id, title=f"{text} title", strategy="short_term_moderate",
                               therapy_models=["steady_progress"]), ME).aggregate_id
    run(c.RecordConsent(plan_id=plan, note=f"{text} consent"), ME)
    run(c.ExplainConfidentiality(plan_id=plan, note=f"{text} confidentiality"), ME)
    goal = c.AddGoal(plan_id=plan, description=f"{text} goal")
    run(goal, ME)
    run(c.AgreeGoal(plan_id=plan, goal_id=goal.goal_id), ME)
    run(c.ActivatePlan(plan_id=plan), ME)
    expectation = c.RecordExpectation(plan_id=plan, holder=ExpectationHolder.SELF, statement=f"{text} expectation")
    run(expectation, ME)
    run(c.IdentifyUnrealisticExpectation(plan_id=plan, expectation_id=expectation.expectation_id,
                                         rationale=f"{text} rationale"), ME)
    run(c.TargetCopingSkill(plan_id=plan, skill=CopingSkill.COMMUNICATION), ME)
    run(c.RecordSkillProgress(plan_id=plan, skill=CopingSkill.COMMUNICATION, note=f"{text} progress"), ME)
    course = run(c.StartCourse(plan_id=plan, modality=Modality.INTERPERSONAL, planned_sessions=12), ME).aggregate_id
    run(c.AssignHomework(course_id=course, kind="mood_diary", description=f"{text} homework"), ME)
    run(c.SubmitQuestionnaire(course_id=course, instrument="PHQ-9", answers=[1] * 8 + [0],
                              answered_at="2026-05-04T09:00:00Z"), ME)
    inventory = run(c.OpenInventory(plan_id=plan), ME).aggregate_id
    relationship = c.RecordRelationship(inventory_id=inventory, alias=f"{text[:20]} alias", role=RelationshipRole.PARTNER,
                                        period=RelationshipPeriod.PRESENT, closeness=3, satisfaction=2)
    run(relationship, ME)
    run(c.NoteRelationshipPattern(inventory_id=inventory, relationship_id=relationship.relationship_id,
                                  pattern=f"{text} pattern"), ME)
    run(c.IdentifyProblemArea(inventory_id=inventory, area=ProblemArea.ROLE_DISPUTE, evidence=f"{text} evidence"), ME)
    return plan, course, inventory


async def until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await asyncio.to_thread(check)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return found


def files_holding(root: Path, text: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and text in p.read_bytes()]


def postgres_rows_holding(settings: Settings, text: str) -> list[str]:
    """Tables of the test's schemas with a row holding ``text`` (as text, or as bytes)."""
    if settings.database != "postgres":
        return []
    from psycopg import sql

    from services.shared.persistence import _admin_connection

    found = []
    with _admin_connection(settings) as conn:
        tables = conn.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE %s",
                              (settings.postgres_schema_prefix + "\\_%",)).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {0} t WHERE t::text LIKE %s OR t::text LIKE %s").format(
                sql.Identifier(schema, table))
            (count,) = conn.execute(query, (f"%{text}%", f"%{text.encode().hex()}%")).fetchone()
            if count:
                found.append(f"{schema}.{table}")
    return found


async def test_an_erased_clients_data_is_nowhere_and_the_rest_is_unchanged(backend_settings: Settings) -> None:
    settings = backend_settings
    async with running(settings) as system:
        plan, course, inventory = await asyncio.to_thread(story, system.care, A, SENTINEL)
        kept_plan, _, _ = await asyncio.to_thread(story, system.care, B, "Kept story")
        system.care.handle(c.RaiseCrisis(plan_id=plan, reason=f"{SENTINEL} crisis"), ME)
        (crisis,) = await until(lambda: [k for k, v in system.escalation.open_crisis_ids().items() if v == A],
                                "the escalation service to raise the crisis")

        # refused, nothing written: an open crisis, a legal hold, the asker's own confirmation
        before = system.written()
        answer = await system.post(f"/clients/{A}/erasure", {"reason": "Art. 17 request"}, "sup1")
        assert answer.status_code == 409 and answer.json()["type"] == "/problems/open-crisis", answer.text
        assert system.written() == before
        for step in ("acknowledge", "resolve"):
            body = {"reason": f"{SENTINEL} {step}"} | ({"outcome": f"{SENTINEL} outcome"} if step == "resolve" else {})
            answer = await system.post(f"/escalations/{crisis}/{step}", body, "sup1")
            assert answer.status_code == 200, answer.text
        assert (await system.post(f"/clients/{A}/hold", {"reason": "Court order 12/2026"}, "sup1")).status_code == 200
        before = system.written()
        answer = await system.post(f"/clients/{A}/erasure", {"reason": "Art. 17 request"}, "sup2")
        assert answer.status_code == 409 and answer.json()["type"] == "/problems/legal-hold", answer.text
        assert system.written() == before
        assert (await system.post(f"/clients/{A}/release", {"reason": "Case closed"}, "sup1")).status_code == 200
        answer = await system.post(f"/clients/{A}/erasure", {"reason": "Art. 17 request"}, "sup1")
        assert answer.status_code == 202, answer.text
        request = answer.json()["request_id"]
        before = system.written()
        answer = await system.post(f"/clients/{A}/erasure/{request}/confirm", None, "sup1")
        assert answer.status_code == 403 and answer.json()["type"] == "/problems/four-eyes", answer.text
        assert system.written() == before
        assert system.care.get_plan(plan).title == f"{SENTINEL} title"

        # everything published and in the read models before the erasure
        await until(lambda: asyncio.run(_stream_holds(system.url, "crisis_resolved")), "the crisis's resolution published")
        await until(lambda: asyncio.run(_stream_holds(system.url, "assessment_scored")), "the score published")
        await until(lambda: any(e.event.client_id == A for e in system.subscriptions.numbered_events(system.subscription, 0)),
                    "the hospital's subscription feed to hold the client's events")
        projection = Projection(settings)
        projection.catch_up()
        assert projection.store.rows("SELECT title FROM view_plans WHERE client_id = ?", (A,))
        projection.close()
        assert files_holding(settings.data_dir, SENTINEL.encode()) or settings.database == "postgres"
        with Stores(settings) as stores:
            kept_before = (history(stores, kept_plan), replay(stores, kept_plan))
        # the auditors' access log: reads of the client's records, a purpose with the sentinel in it
        auditor = Auditor(settings, Actor(id="auditor-1", role=Role.AUDITOR), f"{SENTINEL} purpose")
        assert auditor.history(plan)[1] and auditor.export(client_id=A).aggregates
        elsewhere = CareApplication(settings)  # another process's application, the plan in its cache
        assert elsewhere.get_plan(plan).title == f"{SENTINEL} title"

        answer = await system.post(f"/clients/{A}/erasure/{request}/confirm", None, "sup2")
        assert answer.status_code == 200, answer.text
        erased = answer.json()
        assert erased["erased"] and erased["keys_destroyed"] == 1 and erased["messages_purged"] > 0, erased
        # the proof, published: no personal data, the erased aggregates' ids for subscribers to erase their copies
        await until(lambda: asyncio.run(_stream_holds(system.url, "client_data_erased")), "ClientDataErased published")
        (proof,) = [json.loads(m.body) for m in await read_stream(system.url) if m.subject.endswith(".client_data_erased")]
        assert {str(plan), str(course), str(inventory)} <= set(proof["aggregates"]) and A not in json.dumps(proof)
        assert (proof["requested_by"], proof["confirmed_by"]) == ("supervisor-1", "supervisor-2")

        # nowhere: no file under the data dir, no row of the database, no stream message
        assert files_holding(settings.data_dir, SENTINEL.encode()) == []
        assert postgres_rows_holding(settings, SENTINEL) == []
        for stream, subject in (("CARE", "care.>"), ("CARE_AUDIT", "audit.>")):
            messages = await read_stream(system.url, stream, subject)
            assert not [m.subject for m in messages if SENTINEL.encode() in m.body
                        or SENTINEL in str(m.headers)], stream
        assert not [m for m in await read_stream(system.url) if str(plan) in m.subject]
        assert system.care.get_plan(kept_plan).title == "Kept story title"
        # the other process's cache lets go of the erased plan within a second or so (docs/decisions.md)
        await until(lambda: _erased_in(elsewhere, plan), "the other process's cached plan to read as erased")
        elsewhere.close()

    # a backup taken after the erasure (the system stopped) holds none of it either
    from services.operations.backup import backup

    after = settings.data_dir.parent / f"backup-after-erasure-{settings.data_dir.name}-{settings.database}"
    backup(settings, after)
    assert files_holding(after, SENTINEL.encode()) == []

    # the chain verifies; the erased history reads as erased; the other client's is as it was
    assert [r for r in verify_all(settings) if not r.ok] == []
    assert sum(r.events for r in verify_all(settings)) > 50
    with Stores(settings) as stores:
        assert (history(stores, kept_plan), replay(stores, kept_plan)) == kept_before
        _, entries = history(stores, plan)
        assert entries[0].event_type == "CarePlanDrafted" and entries[0].actor == CLINICIAN.id
        assert all(e.summary.startswith("[erased]") for e in entries)
        gone = replay(stores, plan)
        assert auditor.history(plan)[1][0].summary.startswith("[erased]")  # an auditor's read of it, recorded
        report = "".join(auditor.export_text(client_id=A, output_format="html"))
        assert "[erased]" in report and SENTINEL not in report
        assert gone.aggregate_type == "CarePlan" and gone.state["erased"] == "[erased]"
        for aggregate in (course, inventory):
            assert all(e.summary.startswith("[erased]") for e in history(stores, aggregate)[1])


async def _stream_holds(url: str, event: str) -> bool:
    return any(m.subject.endswith(f".{event}") for m in await read_stream(url))


def _erased_in(app: CareApplication, plan: UUID) -> bool:
    try:
        app.get_plan(plan)
    except ClientDataErasedError:
        return True
    return False


def test_a_restored_key_store_destroys_again_the_keys_erased_after_its_backup(tmp_path: Path) -> None:
    """The tombstones kept from before a restore are applied to the restored key store: the
    wrapped key the old copy holds is gone again before anything reads it (issue 16, backups)."""
    import shutil

    import pytest

    from services.shared.keys import key_in_file
    from services.shared.privacy.keys import KeyDestroyedError, LocalKeyStore

    kek = key_in_file(tmp_path / "kek")
    live = LocalKeyStore(tmp_path / "keys.sqlite", kek)
    erased_key, _ = live.key_for(A)
    kept_key, _ = live.key_for(B)
    live.close()
    shutil.copy(tmp_path / "keys.sqlite", tmp_path / "backup.sqlite")  # the backup, taken before the erasure
    live = LocalKeyStore(tmp_path / "keys.sqlite", kek)
    live.destroy(A, why="erasure 1")
    kept = live.tombstones()
    live.close()
    shutil.copy(tmp_path / "backup.sqlite", tmp_path / "keys.sqlite")  # restored
    (tmp_path / "keys.sqlite-wal").unlink(missing_ok=True)
    restored = LocalKeyStore(tmp_path / "keys.sqlite", kek)
    assert restored.apply_tombstones(kept) == 1
    with pytest.raises(KeyDestroyedError):
        restored.key(erased_key)
    assert restored.key(kept_key) is not None and restored.is_destroyed(A) and not restored.is_destroyed(B)
    restored.close()


def test_the_erasure_goes_to_the_erased_clients_webhook_subscriptions_only(tmp_path: Path) -> None:
    """``ClientDataErased`` names the client by pseudonym only; the subscriptions service finds
    the client among its subscriptions' clients, so that client's receivers learn to erase
    their copies (and another client's do not)."""
    from domain.base import Actor as Who
    from services.privacy.erasure import erase_client
    from services.shared.cloudevents import cloudevent, parse_inbound
    from services.subscriptions.kinds import Scope
    from services.subscriptions.service import SubscriptionsApplication

    settings = Settings(data_dir=tmp_path)
    care = CareApplication(settings)
    subs = SubscriptionsApplication(settings)
    try:
        care.handle(c.DraftCarePlan(client_id=A, title="T", strategy="short_term_moderate",
                                    therapy_models=["steady_progress"]), ME)
        hospital = Who(id="ehr-integration", role=Role.INTEGRATION)
        mine = subs.subscribe("webhook", {"endpoint": "https://ehr.example/a", "filter": "care.>"}, Scope((A,)), hospital)
        theirs = subs.subscribe("webhook", {"endpoint": "https://ehr.example/b", "filter": "care.>"}, Scope((B,)), hospital)
        erase_client(care, A, reason="Retention period over", actor=Who(id="retention", role=Role.SERVICE))
        (notification,) = [n for n in care.recorder.select_notifications(start=1, limit=100)
                           if n.topic.endswith(":ClientDataErased")]
        message = cloudevent("care", notification, care.mapper.to_public_json(notification), notification.id - 1)
        inbound = parse_inbound(message.subject, message.headers, message.body)
        changed = subs.decide(inbound)
        assert [feed.id for feed in changed] == [feed_of(mine.subscription.id)]
        assert theirs.subscription.id != mine.subscription.id
    finally:
        subs.close()
        care.close()


def feed_of(subscription_id: UUID) -> UUID:
    from domain.subscriptions.feed import feed_id

    return feed_id(subscription_id)
