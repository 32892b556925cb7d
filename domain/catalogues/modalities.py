"""Therapy modalities a course can follow (seeds 001 and 002), with their session ranges."""

from __future__ import annotations

from enum import Enum


class Modality(str, Enum):
    INTERPERSONAL = "interpersonal"  # IPT
    COGNITIVE_BEHAVIOURAL = "cognitive_behavioural"
    PSYCHODYNAMIC = "psychodynamic"
    HUMANISTIC = "humanistic"
    MINDFULNESS_BASED = "mindfulness_based"
    SUPPORTIVE = "supportive"
    INTERACTIVE = "interactive"


#: Allowed planned session counts per modality. IPT is 12 to 16 weekly sessions (seed 001);
#: the others are bounded only to catch typing errors.
PLANNED_SESSIONS: dict[Modality, range] = {
    Modality.INTERPERSONAL: range(12, 17),
    Modality.COGNITIVE_BEHAVIOURAL: range(1, 53),
    Modality.PSYCHODYNAMIC: range(1, 201),
    Modality.HUMANISTIC: range(1, 201),
    Modality.MINDFULNESS_BASED: range(1, 53),
    Modality.SUPPORTIVE: range(1, 201),
    Modality.INTERACTIVE: range(1, 201),
}


class CoursePhase(str, Enum):
    """Phases of a course; IPT moves initial → middle → termination (seed 001)."""

    INITIAL = "initial"
    MIDDLE = "middle"
    TERMINATION = "termination"


class InitialPhaseTask(str, Enum):
    """What the initial IPT sessions establish (seed 001, "The Initial Consultation")."""

    HISTORY = "history"
    SYMPTOMS = "symptoms"
    RELATIONSHIP_HISTORY = "relationship_history"
    INTERPERSONAL_INVENTORY = "interpersonal_inventory"
    CHOICE_OF_PROBLEM_AREA = "choice_of_problem_area"
    TREATMENT_CONTRACT = "treatment_contract"


class HomeworkKind(str, Enum):
    COMMUNICATION_EXERCISE = "communication_exercise"
    MINDFULNESS_PRACTICE = "mindfulness_practice"
    ACTIVE_LISTENING = "active_listening"
    MOOD_DIARY = "mood_diary"
    OTHER = "other"
