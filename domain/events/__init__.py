"""Public events of the three aggregates. Each class is a contract: its JSON Schema is
generated into ``contracts/`` and checked against the code by the test suite."""

from __future__ import annotations

from domain.base import AggregateSnapshot, DomainEvent
from domain.events import (
    assessment,
    care_plan,
    data_subjects,
    dead_letters,
    escalation,
    escalation_plans,
    inventory,
    scheduling,
    scheduling_plans,
    subscription_clients,
    subscription_deliveries,
    subscription_feeds,
    subscriptions,
    therapy_course,
)


def public_event_classes() -> dict[str, list[type[DomainEvent]]]:
    """Every public event class, by aggregate, in declaration order."""
    return {
        "care_plan": _classes_of(care_plan),
        "therapy_course": _classes_of(therapy_course),
        "inventory": _classes_of(inventory),
        "assessment_record": _classes_of(assessment),
        "crisis": _classes_of(escalation),
        "plan_risk": _classes_of(escalation_plans),
        "course_schedule": _classes_of(scheduling),
        "plan_strategy": _classes_of(scheduling_plans),
        "dead_letter": _classes_of(dead_letters),
        "subscription": _classes_of(subscriptions),
        "subscription_feed": _classes_of(subscription_feeds),
        "subscription_delivery": _classes_of(subscription_deliveries),
        "client_link": _classes_of(subscription_clients),
        "data_subject": _classes_of(data_subjects),
    }


def _classes_of(module: object) -> list[type[DomainEvent]]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, DomainEvent)
        and value.__module__ == module.__name__  # type: ignore[attr-defined]
        and value.summary_template
    ]


__all__ = ["AggregateSnapshot", "DomainEvent", "public_event_classes"]
