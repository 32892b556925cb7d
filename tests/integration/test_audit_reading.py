"""Auditors' reads: point-in-time replay, history, diff, and the access log of every read."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from domain.base import Actor, Role
from domain.catalogues.care import CopingSkill
from domain.catalogues.risk import RiskLevel
from services.audit.access import AccessLog
from services.audit.auditor import Auditor
from services.audit.reading import Stores, replay, state_at
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.errors import NotYetExistingError
from services.shared.settings import Settings
from tests.conftest import CLINICIAN, SUPERVISOR
from services.demo import _story as demo_story

AUDITOR = Actor(id="governance-2", role=Role.AUDITOR)


def long_history(settings: Settings, extra: int = 250) -> tuple[CareApplication, list]:
    """The demo's story (goals, expectations and their adjustment, strategy changes, ...),
    then hundreds of ordinary changes."""
    app = CareApplication(settings)
    plan_id, _, _ = demo_story(app)
    rng = random.Random(5)
    me, supervisor = CommandMeta(actor=CLINICIAN), CommandMeta(actor=SUPERVISOR)
    for i in range(extra):
        roll = rng.random()
        if roll < 0.5:
            app.handle(c.RecordSkillProgress(plan_id=plan_id, skill=CopingSkill.COMMUNICATION, note=f"note {i}"), me)
        elif roll < 0.7:
            app.handle(c.AddGoal(plan_id=plan_id, description=f"goal {i}"), me)
        elif roll < 0.85:
            level = app.get_plan(plan_id).risk_level
            if level is RiskLevel.NONE:
                app.handle(c.RaiseRisk(plan_id=plan_id, level=RiskLevel.LOW, reason=f"check {i}"), me)
            else:
                app.handle(c.LowerRisk(plan_id=plan_id, level=RiskLevel.NONE, reason=f"check {i}"), supervisor)
        else:
            app.handle(c.FocusOnTherapyModel(plan_id=plan_id, model="steady_progress", reason=f"why {i}"), me) \
                if "steady_progress" not in [m.value for m in app.get_plan(plan_id).therapy_models] else \
                app.handle(c.RecordSkillProgress(plan_id=plan_id, skill=CopingSkill.COMMUNICATION, note=f"n{i}"), me)
    return app, list(app.history(plan_id))


def test_the_state_at_every_recorded_moment_is_exactly_the_events_up_to_it(backend_settings: Settings) -> None:
    app, events = long_history(backend_settings)
    try:
        assert len(events) > 200
        plan_id = events[0].originator_id
        with Stores(backend_settings) as stores:
            for k, event in enumerate(events):
                # independently: the library replays the stored events up to that version
                expected = app.get_plan(plan_id, version=event.originator_version).model_dump(mode="json")
                at = replay(stores, plan_id, at=event.timestamp)
                assert at.version == k + 1 and at.state == expected, f"at the moment of version {k + 1}"
                if k + 1 < len(events):  # between two events: the state after the earlier one
                    between = event.timestamp + (events[k + 1].timestamp - event.timestamp) / 2
                    assert replay(stores, plan_id, at=between).state == expected
            with pytest.raises(NotYetExistingError, match="did not exist yet"):
                replay(stores, plan_id, at=events[0].timestamp - timedelta(microseconds=1))
    finally:
        app.close()


def test_history_and_diff_name_who_what_and_why(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    app, events = long_history(settings, extra=20)
    app.close()
    plan_id = events[0].originator_id
    auditor = Auditor(settings, AUDITOR, purpose="Clinical governance review 2026-Q4")
    store, history = auditor.history(plan_id)
    assert store == "care" and [h.version for h in history] == list(range(1, len(events) + 1))
    adjusted = next(h for h in history if h.event_type == "ExpectationAdjusted")
    assert adjusted.actor == CLINICIAN.id and adjusted.role == "clinician" and adjusted.reason
    assert "adjusted" in adjusted.summary.lower() or "→" in adjusted.summary
    strategy = next(h for h in history if h.event_type == "StrategyChanged")
    result = auditor.diff(plan_id, strategy.version - 1, strategy.version)
    assert [(c.path, c.change) for c in result.changes] == [("strategy", "changed")]
    assert [e.event_type for e in result.events_between] == ["StrategyChanged"]
    by_time = auditor.diff(plan_id, history[0].recorded, history[-1].recorded)
    assert by_time.from_version == 1 and by_time.to_version == len(events) and by_time.changes


def test_every_audit_read_is_recorded_and_a_read_without_a_purpose_is_refused(tmp_path: Path) -> None:
    from domain.errors import ReasonRequiredError

    settings = Settings(data_dir=tmp_path)
    app, events = long_history(settings, extra=5)
    app.close()
    plan_id = events[0].originator_id
    Auditor(settings, AUDITOR, purpose="Court order 17/2026").history(plan_id)
    Auditor(settings, AUDITOR, purpose="Court order 17/2026").replay(plan_id, version=3)
    with pytest.raises(ReasonRequiredError):
        Auditor(settings, AUDITOR, purpose="  ").history(plan_id)
    log = AccessLog(settings)
    try:
        entries = log.entries()
    finally:
        log.close()
    assert [(e.actor.id, e.function, e.purpose) for e in entries] == [
        ("governance-2", "history", "Court order 17/2026"), ("governance-2", "replay", "Court order 17/2026")]
    assert str(plan_id) in entries[1].subject and "version 3" in entries[1].subject


def test_state_at_a_version_before_the_first_is_refused() -> None:
    with pytest.raises(NotYetExistingError):
        state_at([_FakeFirst()], version=0)


class _FakeFirst:
    originator_id = "x"
    originator_version = 1
    timestamp = __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC)
