"""IPT problem areas and relationship vocabulary for the interpersonal inventory (seed 001)."""

from __future__ import annotations

from enum import Enum


class ProblemArea(str, Enum):
    GRIEF = "grief"
    ROLE_DISPUTE = "role_dispute"
    ROLE_TRANSITION = "role_transition"
    INTERPERSONAL_DEFICITS = "interpersonal_deficits"


#: IPT chooses one or two problem areas as the focus of the middle phase.
MAX_FOCUS_AREAS = 2


class RelationshipRole(str, Enum):
    PARTNER = "partner"
    FORMER_PARTNER = "former_partner"
    PARENT = "parent"
    CHILD = "child"
    SIBLING = "sibling"
    OTHER_FAMILY = "other_family"
    FRIEND = "friend"
    COLLEAGUE = "colleague"
    MANAGER = "manager"
    MENTOR = "mentor"
    NEIGHBOUR = "neighbour"
    OTHER = "other"


class RelationshipPeriod(str, Enum):
    PAST = "past"
    PRESENT = "present"
