"""The checked-in contracts match the code, and real emitted events validate against them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
from typer.testing import CliRunner

from contracts.generate import CONTRACTS_DIR, check, generate, schema_path
from contracts.subjects import aggregate_token, ce_type, subject_for, subject_pattern
from domain.base import DomainEvent
from domain.events import public_event_classes
from domain.events.care_plan import StrategyChanged
from domain.events.dead_letters import MessageDeadLettered
from services.care.application import CareApplication
from services.cli import app as cli
from services.shared.settings import Settings
from tests.support.story import every_event_story


def test_contracts_check_passes_on_the_checked_in_files() -> None:
    result = CliRunner().invoke(cli, ["contracts", "check"])
    assert result.exit_code == 0, result.output
    assert "contracts are current" in result.output


def test_contracts_check_fails_on_an_edited_missing_or_stale_file(tmp_path: Path) -> None:
    copy = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, copy)
    assert check(copy) == []
    edited = copy / schema_path(StrategyChanged)
    edited.write_text(edited.read_text().replace('"reason"', '"why"'))
    (copy / "asyncapi.json").unlink()
    (copy / "schemas" / "care_plan" / "Retired.json").write_text("{}")
    problems = check(copy)
    assert f"differs from the code: {schema_path(StrategyChanged)}" in problems
    assert "missing: asyncapi.json" in problems
    assert "no longer generated: schemas/care_plan/Retired.json" in problems
    assert sorted(generate(copy)) == sorted(["asyncapi.json", schema_path(StrategyChanged), "schemas/care_plan/Retired.json"])
    assert check(copy) == []


def test_every_public_event_has_a_schema_and_a_channel() -> None:
    asyncapi = json.loads((CONTRACTS_DIR / "asyncapi.json").read_text())
    assert asyncapi["asyncapi"].startswith("3.")
    classes = [cls for group in public_event_classes().values() for cls in group]
    # 68 until the dead letters (4), the escalation's noted and corrected misses (2) and the
    # scheduling's corrected attendance (1); 77 with the escalation's delivered and failed notifications,
    # 89 with the subscriptions' (12), 95 with a client's rights record's (6: holds, erasure)
    assert len(classes) == 95
    addresses = {ch["address"] for ch in asyncapi["channels"].values()}
    for cls in classes:
        assert (CONTRACTS_DIR / schema_path(cls)).exists()
        assert subject_pattern(cls) in addresses
        message = asyncapi["components"]["messages"][f"{aggregate_token(cls)}.{cls.__name__}"]
        assert message["payload"]["$ref"].removeprefix("#/components/schemas/") in asyncapi["components"]["schemas"]
    headers = asyncapi["components"]["schemas"]["CloudEventsHeaders"]
    assert {"ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "ce-specversion", "ce-sequence"} <= set(headers["required"])
    assert subject_for(StrategyChanged, "abc") == "care.clinical.v1.care_plan.abc.strategy_changed"
    assert ce_type(StrategyChanged) == "org.careplan.clinical.v1.care_plan.strategy_changed"
    # events every application records are published in the recording application's context
    assert subject_pattern(MessageDeadLettered) == "care.{context}.v1.dead_letter.{aggregate_id}.message_dead_lettered"
    assert subject_for(MessageDeadLettered, "abc", context="assessment") == "care.assessment.v1.dead_letter.abc.message_dead_lettered"


def test_real_emitted_events_validate_against_their_schemas(tmp_path: Path) -> None:
    app = CareApplication(Settings(data_dir=tmp_path))
    try:
        every_event_story(app)
        seen: set[str] = set()
        for notification in app.recorder.select_notifications(start=1, limit=1000):
            event: DomainEvent = app.mapper.to_domain_event(notification)
            schema = json.loads((CONTRACTS_DIR / schema_path(type(event))).read_text())
            body = json.loads(event.model_dump_json())
            jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(body)
            seen.add(type(event).__name__)
        care_groups = ("care_plan", "therapy_course", "inventory")
        assert seen == {cls.__name__ for name in care_groups for cls in public_event_classes()[name]}
        # and a body that breaks the contract is caught by the same schema
        bad = dict(body, originator_version="two")
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(bad))
        assert errors
    finally:
        app.close()
