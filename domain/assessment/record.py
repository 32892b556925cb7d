"""AssessmentRecord: the scoring service's aggregate, one per therapy course.

It knows the course's plan and client, and the first score of each instrument (the
baseline every later score is compared with)."""

from __future__ import annotations

from datetime import datetime
from typing import Self
from uuid import UUID, uuid5

from pydantic import BaseModel, Field, PrivateAttr

from domain.assessment import change as change_rules
from domain.assessment.results import Rejection
from domain.assessment.scoring import score_submission
from domain.base import SHORT_TEXT_MAX, TEXT_MAX, AggregateRoot, CommandContext, quote, when
from domain.events.assessment import (
    AssessmentRecordOpened,
    AssessmentRejected,
    AssessmentScored,
    ChangeFromBaseline,
)

RECORD_NAMESPACE = UUID("3b8f0f57-9d1e-4b1f-a7a4-5d6f0c1e2a90")


def record_id(course_id: UUID) -> UUID:
    """Distinct from the course's own id, so event ids never collide across stores."""
    return uuid5(RECORD_NAMESPACE, f"assessment:{course_id}")


class Baseline(BaseModel):
    submission_id: UUID
    total: int


class AssessmentRecord(AggregateRoot):
    created_event = AssessmentRecordOpened

    course_id: UUID
    plan_id: UUID
    client_id: str
    baselines: dict[str, Baseline] = Field(default_factory=dict)
    decided: list[UUID] = Field(default_factory=list)
    #: ``decided`` as a set, made at the first look (a course's submissions grow without bound).
    _decided_set: set[UUID] | None = PrivateAttr(default=None)

    @classmethod
    def open(cls, *, course_id: UUID, plan_id: UUID, client_id: str, ctx: CommandContext) -> Self:
        return cls._start(
            AssessmentRecordOpened, ctx, record_id(course_id), course_id=course_id, plan_id=plan_id, client_id=client_id
        )

    @classmethod
    def _from_created(cls, event: AssessmentRecordOpened) -> Self:  # type: ignore[override]
        return cls._created(
            event,
            course_id=event.course_id,
            plan_id=event.plan_id,
            client_id=event.client_id,
        )

    def score(
        self, submission_id: UUID, *, instrument: str, answers: list[object], answered_at: datetime, ctx: CommandContext
    ) -> AssessmentScored | AssessmentRejected | None:
        """Scores a submission, or rejects it with the reason; a submission already decided
        is left alone (returns None)."""
        if self._decided_set is None:
            self._decided_set = set(self.decided)
        if submission_id in self._decided_set:
            return None
        common = {
            "submission_id": submission_id,
            "course_id": self.course_id,
            "plan_id": self.plan_id,
            "client_id": self.client_id,
            "instrument": quote(instrument, SHORT_TEXT_MAX) or "(none)",
            "answered_at": answered_at,
        }
        result = score_submission(instrument, answers)
        if isinstance(result, Rejection):
            return self._trigger(
                AssessmentRejected, ctx, rejection_reason=quote(result.reason, TEXT_MAX) or "(no reason given)",
                suicide_item_positive=result.suicide_item_positive,
                **common,
            )
        change = None
        caseness = None
        if result.total is not None and change_rules.norms_of(instrument) is not None:
            caseness = change_rules.caseness(instrument, result.total)
            baseline = self.baselines.get(instrument)
            if baseline is not None:
                c = change_rules.against_baseline(instrument, baseline.total, result.total)
                change = ChangeFromBaseline(baseline_submission_id=baseline.submission_id, **c.model_dump())
        return self._trigger(
            AssessmentScored,
            ctx,
            total=result.total,
            severity=result.severity,
            answered_items=result.answered_items,
            prorated=result.prorated,
            suicide_item_positive=result.suicide_item_positive,
            suicide_risk=result.suicide_risk,
            caseness=caseness,
            change=change,
            **common,
        )

    @when(AssessmentScored)
    def _scored(self, event: AssessmentScored) -> None:
        self._decide(event.submission_id)
        if event.total is not None and event.instrument not in self.baselines:
            self.baselines[event.instrument] = Baseline(submission_id=event.submission_id, total=event.total)

    @when(AssessmentRejected)
    def _rejected(self, event: AssessmentRejected) -> None:
        self._decide(event.submission_id)

    def _decide(self, submission_id: UUID) -> None:
        self.decided.append(submission_id)
        if self._decided_set is not None:
            self._decided_set.add(submission_id)
