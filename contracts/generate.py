"""Generates the checked-in contracts from the event classes, and checks them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from contracts.subjects import (
    ANY_CONTEXT,
    CLINICAL_CONTEXT,
    MAJOR_VERSION,
    aggregate_token,
    ce_type_pattern,
    event_token,
    subject_pattern,
)
from domain.base import DomainEvent
from domain.events import public_event_classes

CONTRACTS_DIR = Path(__file__).resolve().parent
SCHEMA_BASE_URI = "https://careplan.example/contracts"

CLOUDEVENTS_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 binary content mode, as NATS headers.",
    "required": ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "ce-sequence", "Nats-Msg-Id"],
    "properties": {
        "ce-specversion": {"type": "string", "const": "1.0"},
        "ce-id": {"type": "string", "format": "uuid", "description": "The event id (event_id of the body)."},
        "ce-source": {"type": "string", "description": "urn:careplan:<application> that recorded the event."},
        "ce-type": {"type": "string", "description": "org.careplan.<context>.v<major>.<aggregate>.<event>"},
        "ce-time": {"type": "string", "format": "date-time", "description": "Recording time of the event."},
        "ce-subject": {"type": "string", "description": "The aggregate id."},
        "ce-sequence": {
            "type": "string",
            "description": "Position in the source application's notification log; consecutive per source, so a gap is detectable.",
        },
        "ce-dataschema": {"type": "string", "format": "uri"},
        "traceparent": {"type": "string", "description": "W3C trace context, when the command carried one."},
        "Nats-Msg-Id": {"type": "string", "description": "<application>:<notification id>, for JetStream de-duplication."},
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def schema_path(event_class: type[DomainEvent]) -> str:
    return f"schemas/{aggregate_token(event_class)}/{event_class.__name__}.json"


def _open_for_additions(node: Any) -> Any:
    """Contracts grow additively within a major version, so a consumer holding an older
    schema must accept fields it does not know yet: drop ``additionalProperties: false``."""
    if isinstance(node, dict):
        return {k: _open_for_additions(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_open_for_additions(v) for v in node]
    return node


def event_schema(event_class: type[DomainEvent]) -> dict[str, Any]:
    schema = _open_for_additions(event_class.model_json_schema(mode="serialization"))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{SCHEMA_BASE_URI}/{schema_path(event_class)}"
    schema["description"] = _describe(event_class)
    schema["x-class-version"] = event_class.class_version
    schema["x-ce-type"] = ce_type_pattern(event_class)
    schema["x-subject"] = subject_pattern(event_class)
    return schema


def _describe(event_class: type[DomainEvent]) -> str:
    doc = (event_class.__doc__ or "").strip()
    return doc or event_class.summary_template


def asyncapi_document() -> dict[str, Any]:
    classes = [cls for group in public_event_classes().values() for cls in group]
    refs, definitions = models_json_schema(
        [(cls, "serialization") for cls in classes], ref_template="#/components/schemas/{model}"
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for cls in classes:
        # Two aggregates may have events of one name (the course's and the scheduling
        # service's SessionScheduled): keys carry the aggregate, payloads pydantic's own refs.
        key = f"{aggregate_token(cls)}.{event_token(cls)}"
        message = f"{aggregate_token(cls)}.{cls.__name__}"
        messages[message] = {
            "name": cls.__name__,
            "title": cls.__name__,
            "summary": cls.summary_template,
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "payload": refs[(cls, "serialization")],
            "x-ce-type": ce_type_pattern(cls),
            "x-schema-file": schema_path(cls),
        }
        parameters = {"aggregate_id": {"description": "Id of the aggregate the event belongs to."}}
        if ANY_CONTEXT in subject_pattern(cls):
            parameters["context"] = {"description": "The context of the application that recorded the event."}
        channels[key] = {
            "address": subject_pattern(cls),
            "title": f"{cls.__name__} of one {aggregate_token(cls)}",
            "parameters": parameters,
            "messages": {cls.__name__: {"$ref": f"#/components/messages/{message}"}},
        }
        operations[f"publish.{key}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{cls.__name__}"}],
        }
    schemas = _open_for_additions(dict(definitions.get("$defs", {})))
    schemas["CloudEventsHeaders"] = CLOUDEVENTS_HEADERS
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "careplan events",
            "version": f"{MAJOR_VERSION}.0.0",
            "description": (
                "Events of the careplan care application on NATS JetStream (stream CARE, subjects care.>). "
                f"Subjects: care.<context>.v{MAJOR_VERSION}.<aggregate>.<aggregate_id>.<event>; the care "
                f"application's context is '{CLINICAL_CONTEXT}'. Contract changes are additive within a major "
                "version; a breaking change is published side by side on a new major subject version."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:4222", "protocol": "nats", "description": "Embedded server of `careplan up` (its port is chosen free at start)."}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """Relative path → content, for every generated contract file."""
    files = {
        schema_path(cls): render(event_schema(cls))
        for group in public_event_classes().values()
        for cls in group
    }
    files["asyncapi.json"] = render(asyncapi_document())
    return files


def generate(target: Path = CONTRACTS_DIR) -> list[str]:
    """Writes every contract file; removes stale schema files. Returns what changed."""
    changed = []
    files = expected_files()
    for rel, content in files.items():
        path = target / rel
        if not path.exists() or path.read_text() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            changed.append(rel)
    for stale in _schema_files(target) - set(files):
        (target / stale).unlink()
        changed.append(stale)
    return sorted(changed)


def check(target: Path = CONTRACTS_DIR) -> list[str]:
    """Problems found: files missing, differing, or no longer generated. Empty means current."""
    problems = []
    files = expected_files()
    for rel, content in sorted(files.items()):
        path = target / rel
        if not path.exists():
            problems.append(f"missing: {rel}")
        elif path.read_text() != content:
            problems.append(f"differs from the code: {rel}")
    problems.extend(f"no longer generated: {rel}" for rel in sorted(_schema_files(target) - set(files)))
    return problems


def _schema_files(target: Path) -> set[str]:
    root = target / "schemas"
    if not root.exists():
        return set()
    return {str(p.relative_to(target)) for p in root.rglob("*.json")}
