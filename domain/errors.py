"""Errors a command can meet. Each names what went wrong and says what to do instead."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a clinical or lifecycle rule; nothing was recorded."""

    #: Stable, machine-readable code (used by HTTP problem details and the CLI).
    code: str = "domain-error"


class PlanNotActiveError(DomainError):
    code = "plan-not-active"


class InvalidStatusTransitionError(DomainError):
    code = "invalid-status-transition"


class AllianceIncompleteError(DomainError):
    code = "alliance-incomplete"


class ReasonRequiredError(DomainError):
    code = "reason-required"


class NotAuthorisedError(DomainError):
    code = "not-authorised"


class UnknownGoalError(DomainError):
    code = "unknown-goal"


class GoalClosedError(DomainError):
    code = "goal-closed"


class UnknownExpectationError(DomainError):
    code = "unknown-expectation"


class ExpectationNotIdentifiedError(DomainError):
    code = "expectation-not-identified"


class ExpectationAlreadyIdentifiedError(DomainError):
    code = "expectation-already-identified"


class EnhancementStageOrderError(DomainError):
    code = "enhancement-stage-order"


class StrategyUnchangedError(DomainError):
    code = "strategy-unchanged"


class EmergencySupportError(DomainError):
    code = "emergency-support"


class TherapyModelError(DomainError):
    code = "therapy-model"


class RiskLevelError(DomainError):
    code = "risk-level"


class CopingSkillError(DomainError):
    code = "coping-skill"


class CourseNotOpenError(DomainError):
    code = "course-not-open"


class PlannedSessionCountError(DomainError):
    code = "planned-session-count"


class PhaseOrderError(DomainError):
    code = "phase-order"


class ProblemAreaNotChosenError(DomainError):
    code = "problem-area-not-chosen"


class UnknownSessionError(DomainError):
    code = "unknown-session"


class SessionStateError(DomainError):
    code = "session-state"


class UnknownHomeworkError(DomainError):
    code = "unknown-homework"


class HomeworkStateError(DomainError):
    code = "homework-state"


class QuestionnaireShapeError(DomainError):
    code = "questionnaire-shape"


class UnknownRelationshipError(DomainError):
    code = "unknown-relationship"


class ProblemAreaError(DomainError):
    code = "problem-area"


class InvalidValueError(DomainError):
    """A value given with a command is out of its allowed range or empty."""

    code = "invalid-value"


class ClientDataErasedError(DomainError):
    """The record's content was erased (crypto-shredding, issue 16): it cannot be changed or replayed."""

    code = "client-data-erased"


class LegalHoldError(DomainError):
    """The client's records are under a legal hold: they may not be erased until it is released."""

    code = "legal-hold"


class OpenCrisisBlocksErasureError(DomainError):
    """The client has an open crisis: their records may not be erased until it is resolved."""

    code = "open-crisis"


class FourEyesError(NotAuthorisedError):
    """An erasure is confirmed by a second supervisor, not by the one who asked for it."""

    code = "four-eyes"


class ErasureRequestError(DomainError):
    """No such pending erasure request, or it lapsed (confirm within the window), or the client is already erased."""

    code = "erasure-request"
