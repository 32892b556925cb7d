"""Vocabulary of the care plan itself: lifecycle, expectations, emotional-value enhancement,
expert backing and coping skills (seeds 000 and 002)."""

from __future__ import annotations

from enum import Enum


class PlanStatus(str, Enum):
    """FHIR CarePlan statuses used by the lifecycle."""

    DRAFT = "draft"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    REVOKED = "revoked"


class GoalStatus(str, Enum):
    PROPOSED = "proposed"
    AGREED = "agreed"
    ACHIEVED = "achieved"
    ABANDONED = "abandoned"


class ExpectationHolder(str, Enum):
    """Whom an expectation is about (seed 000: themselves, others, their environment)."""

    SELF = "self"
    OTHERS = "others"
    ENVIRONMENT = "environment"


class ExpertBacking(str, Enum):
    """The forms of expert backing a therapist gives (seed 000)."""

    EMPATHY = "empathy"
    ADVICE = "advice"
    ENCOURAGEMENT = "encouragement"


class EnhancementStage(str, Enum):
    """Emotional-value enhancement, three stages taken strictly in this order (seed 000)."""

    EXPLORE_CORE_BELIEFS = "explore_core_beliefs"
    RELEASE_HARMFUL_EMOTIONS = "release_harmful_emotions"
    BUILD_EMOTIONAL_MATURITY = "build_emotional_maturity"


ENHANCEMENT_ORDER: tuple[EnhancementStage, ...] = tuple(EnhancementStage)


class HarmfulEmotion(str, Enum):
    FRUSTRATION = "frustration"
    GUILT = "guilt"
    ANGER = "anger"
    RESENTMENT = "resentment"
    SHAME = "shame"
    FEAR = "fear"


class CopingSkill(str, Enum):
    """Coping strategies and skills being built (seed 002)."""

    STRESS_MANAGEMENT = "stress_management"
    COMMUNICATION = "communication"
    PROBLEM_SOLVING = "problem_solving"
    MINDFULNESS_EXERCISES = "mindfulness_exercises"


class GoalComparator(str, Enum):
    BELOW = "below"
    AT_MOST = "at_most"
    AT_LEAST = "at_least"
    ABOVE = "above"
