"""A service's reactions, declared once: ``{EventClass: handler}``.

The table is the whole of what a service consumes. Its subjects (the durable consumer's
filter) are derived from the event classes, and a consumed message is decoded to its
class before its handler sees it, so a handler reads typed fields, and renaming an event
class breaks the table at import time instead of silently deciding nothing::

    class AssessmentApplication(ServiceApplication):
        def _course_started(self, event: CourseStarted, inbound: Inbound) -> Sequence[AggregateRoot]: ...

        reactions = Reactions({CourseStarted: _course_started, ...})

A message is matched to its class by the aggregate and event of its type
(``org.careplan.<context>.v1.<aggregate>.<event>``), which the consumer has checked
against its subject. Fields the class does not know are left out (contracts only grow);
a body that is not the class's event fails with :class:`UndecodableEventError`, naming
field paths only, never a value (a dead letter names it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from contracts.subjects import aggregate_token, context_of, event_token, subject_filter, subject_for, watermark_subject
from domain.base import AggregateRoot, DomainEvent
from services.shared.cloudevents import Inbound

App = TypeVar("App")
#: ``handler(app, event, inbound)``: the aggregates it changed (recorded with the message's tracking).
Handler = Callable[[App, Any, Inbound], Sequence[AggregateRoot]]


class UndecodableEventError(ValueError):
    """A message's body is not the event its type names. Names field paths, no values."""

    def __init__(self, event_class: type[DomainEvent], field_paths: list[str]) -> None:
        super().__init__(f"{event_class.__name__}: invalid or missing {', '.join(field_paths) or 'body'}")
        self.event_class = event_class
        self.field_paths = field_paths


def type_key(event_class: type[DomainEvent]) -> tuple[str, str]:
    return aggregate_token(event_class), event_token(event_class)


def _inbound_key(inbound: Inbound) -> tuple[str, str]:
    """``org.careplan.<context>.v1.<aggregate>.<event>`` → (aggregate, event)."""
    parts = inbound.type.rsplit(".", 2)
    return (parts[-2], parts[-1]) if len(parts) == 3 else ("", inbound.type)


#: Each event class's field names (the class attribute is a computed descriptor: slow per look).
_FIELDS: dict[type[DomainEvent], frozenset[str]] = {}


def decode(event_class: type[DomainEvent], body: Mapping[str, Any]) -> DomainEvent:
    """A contract body as an instance of its event class (unknown fields left out)."""
    known = _FIELDS.get(event_class)
    if known is None:
        known = _FIELDS[event_class] = frozenset(event_class.model_fields)
    fields = {name: value for name, value in body.items() if name in known}
    try:
        return event_class.model_validate(fields)
    except ValidationError as e:
        paths = sorted({".".join(str(p) for p in error["loc"]) for error in e.errors()})
        raise UndecodableEventError(event_class, paths) from None


class Reactions(Generic[App]):
    """What one consumer reacts to and how (see the module's docstring)."""

    def __init__(self, table: Mapping[type[DomainEvent], Handler[App]], *,
                 contexts: Mapping[type[DomainEvent], Iterable[str]] | None = None,
                 watermarks: Iterable[str] = ()) -> None:
        """``contexts``: for an event every application records (its module's ``CONTEXT``
        is :data:`~domain.base.ANY_CONTEXT`, e.g. dead letters), the contexts whose
        events of that class are consumed; without an entry, every context's.
        ``watermarks``: the applications whose relays' watermarks the consumer reads too
        (given to the application's ``note_watermark``)."""
        self.table: dict[type[DomainEvent], Handler[App]] = dict(table)
        self.watermarks = tuple(watermarks)
        self.contexts = {cls: tuple(found) for cls, found in (contexts or {}).items()}
        self._by_key: dict[tuple[str, str], type[DomainEvent]] = {}
        for cls in self.table:
            key = type_key(cls)  # raises for a class that is not a public event
            if key in self._by_key:
                msg = f"{cls.__name__} and {self._by_key[key].__name__} share the subject token {key}"
                raise ValueError(msg)
            self._by_key[key] = cls
        for cls in self.contexts:
            if cls not in self.table or context_of(cls, "x") != "x":
                msg = f"contexts are only named for events of any context that the table holds, not {cls.__name__}"
                raise ValueError(msg)

    @property
    def event_classes(self) -> list[type[DomainEvent]]:
        return list(self.table)

    @property
    def subjects(self) -> list[str]:
        """The consumer's filter subjects: one per event class (and context, where named)."""
        subjects: list[str] = []
        for cls in self.table:
            if cls in self.contexts:
                subjects += [subject_for(cls, "*", context=context) for context in self.contexts[cls]]
            else:
                subjects.append(subject_filter(cls))
        return subjects + [watermark_subject(application) for application in self.watermarks]

    def event_class_of(self, inbound: Inbound) -> type[DomainEvent] | None:
        return self._by_key.get(_inbound_key(inbound))

    def decode(self, inbound: Inbound) -> DomainEvent | None:
        """The message's event, or None when this table does not react to its kind."""
        cls = self.event_class_of(inbound)
        return decode(cls, inbound.body) if cls is not None else None

    def react(self, app: App, inbound: Inbound) -> Sequence[AggregateRoot]:
        cls = self.event_class_of(inbound)
        if cls is None:
            return []  # not one of ours: a subject outside the filter (a test, an operator's redrive)
        return self.table[cls](app, decode(cls, inbound.body), inbound)
