"""The twelve interactive therapy models (seed 000).

The seed's sentence says "nine key models" under a heading of twelve; its list has
twelve, and all twelve are supported.
"""

from __future__ import annotations

from enum import Enum


class TherapyModel(str, Enum):
    STEADY_PROGRESS = "steady_progress"
    INDIVIDUAL_GROWTH = "individual_growth"
    GUIDED_EXPLORATION = "guided_exploration"
    SPIRITUAL_SUPPORT = "spiritual_support"
    EMOTIONAL_CALM = "emotional_calm"
    ENVIRONMENTAL_GROWTH = "environmental_growth"
    HOLINESS_OF_LIFE = "holiness_of_life"
    LIVELY_ENGAGEMENT = "lively_engagement"
    TRUSTED_GUIDANCE = "trusted_guidance"
    STEADY_DRIVE = "steady_drive"
    PERSONAL_BOUNDARIES = "personal_boundaries"
    FULFILLMENT = "fulfillment"

    @property
    def title(self) -> str:
        return self.value.replace("_", " ").title()


MODEL_FOCUS: dict[TherapyModel, str] = {
    TherapyModel.STEADY_PROGRESS: "Finding purpose and calm by setting clear goals and building healthy relationships.",
    TherapyModel.INDIVIDUAL_GROWTH: "Gaining spiritual and social support to boost confidence and self-esteem.",
    TherapyModel.GUIDED_EXPLORATION: "Using mentors and community backing to navigate life's challenges.",
    TherapyModel.SPIRITUAL_SUPPORT: "Fostering meaning, influence, and ongoing encouragement.",
    TherapyModel.EMOTIONAL_CALM: "Cultivating inner stability through supportive guidance and personal achievement.",
    TherapyModel.ENVIRONMENTAL_GROWTH: "Balancing independence with positive impact on others.",
    TherapyModel.HOLINESS_OF_LIFE: "Feeling vibrant and valued by living according to deep beliefs.",
    TherapyModel.LIVELY_ENGAGEMENT: "Combining personal achievement with reliable support.",
    TherapyModel.TRUSTED_GUIDANCE: "Learning to read your environment and follow clear direction.",
    TherapyModel.STEADY_DRIVE: "Strengthening inner resilience and self-motivation.",
    TherapyModel.PERSONAL_BOUNDARIES: "Achieving independence while enjoying reliable support.",
    TherapyModel.FULFILLMENT: "Finding lasting peace and purpose through meaningful mentorship.",
}
