"""Building blocks shared by the three aggregates: who acted, the command context, the
event base class, the aggregate base class and snapshots.

Events are frozen pydantic models, so one class is at once the domain event, the stored
form and the public contract (its JSON Schema is generated into ``contracts/``).
Aggregates are pydantic models too; they change only by applying their own events.
"""

from __future__ import annotations

import functools
import hashlib
import string
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, ClassVar, Self, TypeVar
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr, computed_field

from domain.errors import InvalidValueError, NotAuthorisedError, ReasonRequiredError

#: Namespace of event ids: an event's id is derived from its aggregate id and version, so
#: the same stored event always has the same id wherever it travels.
EVENT_ID_NAMESPACE = UUID("6f1c1f0e-8a55-4a4e-9d0c-2a7c5b0e9d11")

_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes
#: SHA-1 state after the namespace, copied for each id (saves hashing the namespace again).
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE_BYTES)
#: The RFC 4122 variant bits set on the hex digit that carries them (10xx: 8, 9, a or b).
_VARIANT_DIGIT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def derive_event_id(aggregate_id: UUID | str, version: int) -> str:
    """``str(uuid5(EVENT_ID_NAMESPACE, f"{aggregate_id}:{version}"))``, computed directly:
    the relay derives one per message, and the stdlib path costs twice as much."""
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(f"{aggregate_id}:{version}".encode())
    h = sha1.hexdigest()
    # version 5 in the 13th digit, the variant in the 17th
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


#: Longest free text an event field holds (a reason, a note, a statement).
TEXT_MAX = 4000
#: Longest short text (an id, a title, a name).
SHORT_TEXT_MAX = 200
Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]
ShortText = Annotated[str, Field(min_length=1, max_length=SHORT_TEXT_MAX)]
#: Marks where quoted text was cut to fit its field.
ELLIPSIS = " [\u2026]"

#: The moments a command or a query may name: far enough either way for any clinical date,
#: and far from ``datetime``'s own limits, so adding a session's length, a grace period or a
#: zone's offset never overflows (year 9999 plus 50 minutes did).
MOMENT_MIN = datetime(1900, 1, 1, tzinfo=UTC)
MOMENT_MAX = datetime(2200, 1, 1, tzinfo=UTC)


def within_moment_bounds(value: datetime) -> datetime:
    try:
        inside = MOMENT_MIN <= value < MOMENT_MAX
    except OverflowError:  # comparing moments across zones near datetime's limits
        inside = False
    if not inside:
        msg = f"a moment from {MOMENT_MIN.isoformat()} up to {MOMENT_MAX.isoformat()} is expected"
        raise ValueError(msg)
    return value


#: An RFC 3339 moment: with a time zone (a naive one is refused) and within the bounds above.
Moment = Annotated[AwareDatetime, AfterValidator(within_moment_bounds)]


def quote(text: object, limit: int) -> str:
    """``text`` as it can be quoted in a field of at most ``limit`` characters: whole when
    it fits, else cut and marked. Text that one event derives from another (a reason built
    from a clinician's reason) goes through here, so deriving can never overflow a field;
    the deriving event names its source by id, where the whole text stays."""
    value = text if isinstance(text, str) else str(text)
    if len(value) <= limit:
        return value
    if limit <= len(ELLIPSIS):
        return value[:limit]
    return value[: limit - len(ELLIPSIS)] + ELLIPSIS


def bounded(prefix: str, text: object, limit: int = TEXT_MAX, suffix: str = "") -> str:
    """``prefix + text + suffix`` in at most ``limit`` characters: the quoted text gives way,
    the fixed parts (themselves cut if they alone are too long) are kept."""
    prefix, suffix = quote(prefix, limit // 2), quote(suffix, limit // 4)
    return prefix + quote(text, limit - len(prefix) - len(suffix)) + suffix


#: The ``CONTEXT`` of an events module whose events every application records (dead
#: letters): they are published in the context of the application that recorded them.
ANY_CONTEXT = "{context}"


class Role(str, Enum):
    CLINICIAN = "clinician"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    INTEGRATION = "integration"
    SERVICE = "service"
    #: A person at the machine running careplan (the operating-system user), e.g. redriving a dead letter.
    OPERATOR = "operator"


#: Roles that may make clinical decisions (lower a risk level, leave emergency support).
CLINICAL_ROLES = frozenset({Role.CLINICIAN, Role.SUPERVISOR})


class Actor(BaseModel):
    """Who acted: a pseudonymous id and the role they acted in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: ShortText
    role: Role


class CommandContext(BaseModel):
    """What every command carries besides its own data.

    ``at`` is the recording time, supplied by the application from its clock: the domain
    never reads a clock itself.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: Actor
    at: datetime
    correlation_id: UUID
    causation_id: str | None = None


class DomainEvent(BaseModel):
    """Base of every event: aggregate id and version, when, who, why, and the story."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Schema version of the event class; raise it with an ``upcast_vN_vN+1`` staticmethod.
    class_version: ClassVar[int] = 1
    #: True only for what an erased client's event reads as (services.shared.privacy.erased).
    erased: ClassVar[bool] = False
    #: Short human description of the event, used by audit and the demo timeline.
    summary_template: ClassVar[str] = ""

    originator_id: UUID
    originator_version: int = Field(ge=1)
    timestamp: datetime
    actor: Actor
    reason: str | None = Field(default=None, max_length=TEXT_MAX)
    correlation_id: UUID
    causation_id: str | None = Field(default=None, max_length=200)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> UUID:
        return UUID(derive_event_id(self.originator_id, self.originator_version))

    def describe(self) -> str:
        """One line a person can read, filled from the event's own fields."""
        fields = self.__dict__
        values = {name: _readable(fields[name]) for name in _template_fields(self.summary_template) if name in fields}
        return self.summary_template.format(**values)

    def mutate(self, aggregate: Any) -> Any:
        """Library protocol (``CanMutateProtocol``): apply this event to the aggregate."""
        if aggregate is None:
            return AggregateRoot.created_by(self)
        aggregate.apply(self)
        return aggregate


@functools.cache
def _template_fields(template: str) -> tuple[str, ...]:
    """The fields a summary template names (only those are made readable: audit reads
    describe every event they return)."""
    names = (field.split(".", 1)[0].split("[", 1)[0] for _, field, _, _ in string.Formatter().parse(template) if field)
    return tuple(dict.fromkeys(names))


def _readable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    if isinstance(value, list):
        return ", ".join(str(_readable(v)) for v in value)
    return value


class RequiresReason(DomainEvent):
    """An event whose ``reason`` may not be empty (DOMAIN.md: adjustments, strategy and
    risk changes, escalation decisions)."""

    reason: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]  # type: ignore[assignment]


TEvent = TypeVar("TEvent", bound=DomainEvent)
Applier = Callable[[Any, Any], None]


def when(event_class: type[DomainEvent]) -> Callable[[Applier], Applier]:
    """Marks an aggregate method as the one that applies ``event_class``."""

    def mark(method: Applier) -> Applier:
        method.__applies__ = event_class  # type: ignore[attr-defined]
        return method

    return mark


class AggregateRoot(BaseModel):
    """Base of CarePlan, TherapyCourse and Inventory.

    A command method checks its rule, then calls :meth:`_trigger`; the event is applied
    by the method marked ``@when(EventClass)`` and kept as pending until saved.
    """

    model_config = ConfigDict(validate_assignment=False, extra="forbid")

    #: The event class that creates an aggregate of this class.
    created_event: ClassVar[type[DomainEvent]]
    _appliers: ClassVar[dict[type[DomainEvent], Applier]]
    _creators: ClassVar[dict[type[DomainEvent], type[AggregateRoot]]] = {}

    id: UUID
    version: int
    created_on: datetime
    modified_on: datetime

    _pending: list[DomainEvent] = PrivateAttr(default_factory=list)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        appliers: dict[type[DomainEvent], Applier] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                event_class = getattr(attr, "__applies__", None)
                if event_class is not None:
                    appliers[event_class] = attr
        cls._appliers = appliers
        if "created_event" in cls.__dict__:
            AggregateRoot._creators[cls.created_event] = cls

    @classmethod
    def created_by(cls, event: DomainEvent) -> AggregateRoot:
        try:
            aggregate_class = AggregateRoot._creators[type(event)]
        except KeyError:
            msg = f"{type(event).__name__} does not create an aggregate; history is out of order"
            raise TypeError(msg) from None
        return aggregate_class._from_created(event)

    @classmethod
    def _from_created(cls, event: DomainEvent) -> Self:
        """Builds the initial state from the creation event (each aggregate overrides)."""
        raise NotImplementedError

    @classmethod
    def _created(cls, event: DomainEvent, **fields: Any) -> Self:
        """The aggregate as its creation event makes it: identity and times, plus ``fields``."""
        return cls(
            id=event.originator_id,
            version=event.originator_version,
            created_on=event.timestamp,
            modified_on=event.timestamp,
            **fields,
        )

    @classmethod
    def _start(cls, event_class: type[TEvent], ctx: CommandContext, aggregate_id: UUID, **fields: Any) -> Self:
        event = event_class(
            originator_id=aggregate_id,
            originator_version=1,
            timestamp=ctx.at,
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
            **fields,
        )
        aggregate = cls._from_created(event)
        aggregate._pending.append(event)
        return aggregate

    def _trigger(self, event_class: type[TEvent], ctx: CommandContext, **fields: Any) -> TEvent:
        event = event_class(
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=ctx.at,
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
            **fields,
        )
        self.apply(event)
        self._pending.append(event)
        return event

    def apply(self, event: DomainEvent) -> None:
        applier = self._appliers.get(type(event))
        if applier is not None:
            applier(self, event)
        self.version = event.originator_version
        self.modified_on = event.timestamp

    def collect_events(self) -> Sequence[DomainEvent]:
        """Library protocol: hands over and forgets the pending events."""
        events, self._pending = self._pending, []
        return events

    @property
    def pending_events(self) -> list[DomainEvent]:
        return list(self._pending)


def project(aggregate: Any, events: Iterable[Any]) -> Any:
    """Projector for the library's repository: snapshots first, then events, in order."""
    for event in events:
        if event.erased:
            # an erased client's event (services.shared.privacy.erased): the client's own aggregate raises
            # ClientDataErasedError; another's (a subscription feed) keeps its version, the content is gone
            aggregate = event.mutate(aggregate)
            continue
        if aggregate is None:
            if isinstance(event, AggregateSnapshot):
                aggregate = event.restore()
                continue
            aggregate = AggregateRoot.created_by(event)
        else:
            aggregate.apply(event)
    return aggregate


class AggregateSnapshot(BaseModel):
    """The whole state of an aggregate at a version, to shorten long replays."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    class_version: ClassVar[int] = 1
    erased: ClassVar[bool] = False

    originator_id: UUID
    originator_version: int
    timestamp: datetime
    aggregate_type: str
    state: dict[str, Any]
    #: A digest of the snapshot and of the hash-chain link of the event at its version
    #: (services.shared.snapshots): a snapshot without it, or that no longer matches it, is
    #: not trusted on load.
    chain_digest: str | None = None

    @classmethod
    def take(cls, aggregate: AggregateRoot) -> AggregateSnapshot:
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=aggregate.modified_on,
            aggregate_type=type(aggregate).__name__,
            state=aggregate.model_dump(mode="json"),
        )

    def restore(self) -> AggregateRoot:
        for aggregate_class in AggregateRoot._creators.values():
            if aggregate_class.__name__ == self.aggregate_type:
                return aggregate_class.model_validate(self.state)
        msg = f"Snapshot of unknown aggregate type {self.aggregate_type!r}"
        raise TypeError(msg)

    def mutate(self, _: Any) -> AggregateRoot:
        return self.restore()


def require_reason(reason: str | None, what: str) -> str:
    """Returns the stripped reason, or refuses the command that needs one."""
    if reason is None or not reason.strip():
        msg = f"A reason is required to {what}; say why in the 'reason' field."
        raise ReasonRequiredError(msg)
    return reason.strip()


def require_text(value: str, field: str, max_length: int = TEXT_MAX) -> str:
    """Returns stripped text, or refuses empty or overlong text with the field named."""
    stripped = value.strip() if isinstance(value, str) else ""
    if not stripped:
        msg = f"'{field}' must not be empty."
        raise InvalidValueError(msg)
    if len(stripped) > max_length:
        msg = f"'{field}' is {len(stripped)} characters long; at most {max_length} are allowed."
        raise InvalidValueError(msg)
    return stripped


def require_clinical_role(actor: Actor, what: str) -> None:
    if actor.role not in CLINICAL_ROLES:
        msg = (
            f"Only a clinician or supervisor may {what}; "
            f"{actor.id} acted as {actor.role.value}."
        )
        raise NotAuthorisedError(msg)


#: Who may move a plan into or out of a crisis: the services' reactions to escalation, or
#: a supervisor (a clinician raises a crisis and lets escalation hold it).
CRISIS_HANDS = frozenset({Role.SERVICE, Role.SUPERVISOR})


def require_role(actor: Actor, roles: frozenset[Role], what: str, instead: str = "") -> None:
    if actor.role not in roles:
        allowed = " or ".join(sorted(r.value for r in roles))
        msg = f"Only a {allowed} may {what}; {actor.id} acted as {actor.role.value}.{' ' + instead if instead else ''}"
        raise NotAuthorisedError(msg)
