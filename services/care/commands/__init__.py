"""Every command of the care application, one small class each, in one module per
aggregate (as ``domain.events``): ``care_plan``, ``therapy_course``, ``inventory``; what
they share is in ``base``.

A command names its target aggregate and says what to ask of it; the application does
the rest (load, concurrency check, save). Creation commands make a new aggregate.
The same classes are the request bodies of the HTTP API and the CLI.

The modules are imported in this order on purpose: the API enumerates the commands by
subclass (``commands_of``), so the order in which the classes are defined is the order
of its routes and of its OpenAPI document.
"""

from __future__ import annotations

# Not a command: the single module this package replaces happened to hold it, and
# ``services.bench.relay`` calls ``c.uuid4()``; kept so that keeps working.
from uuid import uuid4 as uuid4

# isort: off
# In the order the classes were written (base, care plan, therapy course, inventory): see above.
from services.care.commands.base import Lookup, CrisisNotHeldError, Command, CreationCommand
from services.care.commands.care_plan import (
    DraftCarePlan, PlanCommand, RecordConsent, ExplainConfidentiality, ActivatePlan, PutPlanOnHold, ResumePlan,
    CompletePlan, RevokePlan, AddGoal, AgreeGoal, ReviseGoal, AchieveGoal, AbandonGoal, RecordExpectation,
    IdentifyUnrealisticExpectation, AdjustExpectation, GiveExpertBacking, StartEnhancementStage, ReleaseHarmfulEmotion,
    CompleteEnhancementStage, ChangeStrategy, ActivateEmergencySupport, RaiseCrisis, RecordCrisisResolved,
    EndEmergencySupport, FocusOnTherapyModel, DropTherapyModel, RaiseRisk, LowerRisk, TargetCopingSkill,
    RecordSkillProgress,
)
from services.care.commands.therapy_course import (
    StartCourse, CourseCommand, CompleteInitialTask, EnterMiddlePhase, EnterTerminationPhase, ExtendCourse,
    ScheduleSession, HoldSession, MissSession, CancelSession, AssignHomework, ReviewHomework, SubmitQuestionnaire,
    CompleteCourse, DiscontinueCourse,
)
from services.care.commands.inventory import (
    OpenInventory, InventoryCommand, RecordRelationship, ReviseRelationship, NoteRelationshipPattern,
    NoteRelationshipExpectation, IdentifyProblemArea, ChooseProblemAreaFocus,
)
# isort: on

__all__ = [  # noqa: RUF022 (in definition order, as the imports)
    "Lookup", "CrisisNotHeldError", "Command", "CreationCommand", "DraftCarePlan", "PlanCommand", "RecordConsent",
    "ExplainConfidentiality", "ActivatePlan", "PutPlanOnHold", "ResumePlan", "CompletePlan", "RevokePlan", "AddGoal",
    "AgreeGoal", "ReviseGoal", "AchieveGoal", "AbandonGoal", "RecordExpectation", "IdentifyUnrealisticExpectation",
    "AdjustExpectation", "GiveExpertBacking", "StartEnhancementStage", "ReleaseHarmfulEmotion",
    "CompleteEnhancementStage", "ChangeStrategy", "ActivateEmergencySupport", "RaiseCrisis", "RecordCrisisResolved",
    "EndEmergencySupport", "FocusOnTherapyModel", "DropTherapyModel", "RaiseRisk", "LowerRisk", "TargetCopingSkill",
    "RecordSkillProgress", "StartCourse", "CourseCommand", "CompleteInitialTask", "EnterMiddlePhase",
    "EnterTerminationPhase", "ExtendCourse", "ScheduleSession", "HoldSession", "MissSession", "CancelSession",
    "AssignHomework", "ReviewHomework", "SubmitQuestionnaire", "CompleteCourse", "DiscontinueCourse", "OpenInventory",
    "InventoryCommand", "RecordRelationship", "ReviseRelationship", "NoteRelationshipPattern",
    "NoteRelationshipExpectation", "IdentifyProblemArea", "ChooseProblemAreaFocus",
]
