"""What is stored: encryption at rest, and old events loading through upcasters."""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from eventsourcing.cipher import AESCipher
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic

from domain.base import DomainEvent
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.persistence import PydanticMapper, eventsourcing_env
from services.shared.settings import Settings
from tests.conftest import CLINICIAN, T0

SECRET_REASON = "Client disclosed thoughts about an overdose last winter"


def _story(app: CareApplication) -> UUID:
    plan_id = app.handle(
        c.DraftCarePlan(client_id="client-9", title="Episode", strategy="short_term_moderate", therapy_models=["fulfillment"]),
        CommandMeta(actor=CLINICIAN),
    ).aggregate_id
    app.handle(c.RaiseRisk(plan_id=plan_id, level="moderate", reason=SECRET_REASON), CommandMeta(actor=CLINICIAN))
    assert app.get_plan(plan_id).risk_level.value == "moderate"
    return plan_id


@pytest.mark.parametrize("encrypted", [True, False])
def test_free_text_is_unreadable_in_the_sqlite_file_when_a_key_is_configured(tmp_path: Any, encrypted: bool) -> None:
    settings = Settings(data_dir=tmp_path, cipher_key=AESCipher.create_key(32) if encrypted else None,
                        client_keys=encrypted)
    app = CareApplication(settings)
    try:
        plan_id = _story(app)
    finally:
        app.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("care.sqlite*"))
    assert (SECRET_REASON.encode() in raw) is (not encrypted)
    with sqlite3.connect(settings.sqlite_path("care")) as db:
        states = [row[0] for row in db.execute("SELECT state FROM stored_events")]
    assert len(states) == 2
    assert all((b"client-9" in s) is (not encrypted) for s in states[:1])
    # and the application still reads its own history with the key
    reopened = CareApplication(settings)
    try:
        assert [e.reason for e in reopened.history(plan_id)] == [None, SECRET_REASON]
    finally:
        reopened.close()


def test_the_wrong_key_cannot_read_the_history(tmp_path: Any) -> None:
    # the single key alone (per-client keys off): a client's events are under their own key
    app = CareApplication(Settings(data_dir=tmp_path, cipher_key=AESCipher.create_key(32), client_keys=False))
    try:
        plan_id = _story(app)
    finally:
        app.close()
    other = CareApplication(Settings(data_dir=tmp_path, cipher_key=AESCipher.create_key(32), client_keys=False))
    try:
        with pytest.raises(MapperDeserialisationError, match="Cannot load stored event"):
            list(other.history(plan_id))
    finally:
        other.close()


# ---------------------------------------------------------------- schema evolution


class HomeworkNoteV1(DomainEvent):
    """How a stored v1 event looked: no ``minutes`` field."""

    summary_template: ClassVar[str] = "note"
    note: str


class HomeworkNote(DomainEvent):
    """The same event today: v2 added ``minutes``; v1 events load with it unknown."""

    class_version: ClassVar[int] = 2
    summary_template: ClassVar[str] = "note ({minutes} min)"
    note: str
    minutes: int | None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["minutes"] = None


def _v1_event() -> HomeworkNoteV1:
    return HomeworkNoteV1(
        originator_id=uuid4(), originator_version=1, timestamp=T0, actor=CLINICIAN,
        correlation_id=uuid4(), note="Practised breathing",
    )


def test_a_stored_v1_event_loads_as_v2(tmp_path: Any) -> None:
    """Stores a v1 event in a real store, then reads it back under the v2 class."""
    from eventsourcing.persistence import InfrastructureFactory

    env = eventsourcing_env(Settings(data_dir=tmp_path), "evolution")
    factory = InfrastructureFactory.construct(env)  # type: ignore[arg-type]
    mapper = factory.mapper(transcoder=factory.transcoder())
    assert isinstance(mapper, PydanticMapper)
    recorder = factory.application_recorder()
    old = mapper.to_stored_event(_v1_event())
    # the code moved on: the same topic now resolves to the v2 class
    recorder.insert_events([StoredEvent(old.originator_id, old.originator_version, get_topic(HomeworkNote), old.state)])
    (stored,) = recorder.select_events(old.originator_id)
    loaded = mapper.to_domain_event(stored)
    assert isinstance(loaded, HomeworkNote)
    assert (loaded.note, loaded.minutes) == ("Practised breathing", None)
    assert loaded.event_id == _v1_event().model_copy(update={"originator_id": old.originator_id}).event_id

    # a v2 event round-trips with its class_version recorded in the stored state
    current = loaded.model_copy(update={"minutes": 12, "originator_version": 2})
    again = mapper.to_stored_event(current)
    assert b'"class_version":2' in again.state
    assert mapper.to_domain_event(again) == current
    factory.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_public_json_from_stored_bytes_equals_the_models_json(tmp_path: Any, encrypted: bool) -> None:
    """The relay's fast path (stored bytes + derived id) gives the contract JSON exactly."""
    import json

    from eventsourcing.persistence import InfrastructureFactory

    settings = Settings(data_dir=tmp_path, cipher_key=AESCipher.create_key(16) if encrypted else None)
    factory = InfrastructureFactory.construct(eventsourcing_env(settings, "public"))  # type: ignore[arg-type]
    mapper = factory.mapper(transcoder=factory.transcoder())
    current = _v1_event()
    stored = mapper.to_stored_event(current)
    public = mapper.to_public_json(stored)
    assert json.loads(public.body) == json.loads(current.model_dump_json())
    assert public.event_id == str(current.event_id)
    assert datetime_from(public.timestamp) == current.timestamp
    # an event that needs upcasting goes through the model, and comes out in today's form
    old = StoredEvent(stored.originator_id, stored.originator_version, get_topic(HomeworkNote), stored.state)
    upcast_public = mapper.to_public_json(old)
    assert json.loads(upcast_public.body)["minutes"] is None
    assert upcast_public.event_id == public.event_id
    factory.close()


def datetime_from(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)
