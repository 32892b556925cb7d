"""The seven treatment strategy formats of interactive psychotherapy (seed 000)."""

from __future__ import annotations

from enum import Enum


class Strategy(str, Enum):
    LONG_TERM_DEEP_WORK = "long_term_deep_work"
    MID_TERM_IN_DEPTH = "mid_term_in_depth"
    MID_TERM_MODERATE_DEPTH = "mid_term_moderate_depth"
    SHORT_TERM_DEEP_IMPACT = "short_term_deep_impact"
    SHORT_TERM_MODERATE = "short_term_moderate"
    EMERGENCY_SUPPORT = "emergency_support"
    COMBINED_APPROACH = "combined_approach"

    @property
    def number(self) -> int:
        return list(Strategy).index(self) + 1

    @property
    def title(self) -> str:
        return STRATEGY_TITLES[self][0]

    @property
    def description(self) -> str:
        return STRATEGY_TITLES[self][1]


STRATEGY_TITLES: dict[Strategy, tuple[str, str]] = {
    Strategy.LONG_TERM_DEEP_WORK: (
        "Long-Term, Deep Work",
        "Slow, steady progress on major life goals and self-discovery.",
    ),
    Strategy.MID_TERM_IN_DEPTH: (
        "Mid-Term, In-Depth",
        "Focused personal growth with guided cognitive exploration.",
    ),
    Strategy.MID_TERM_MODERATE_DEPTH: (
        "Mid-Term, Moderate Depth",
        "Boosting emotional calm and environmental support.",
    ),
    Strategy.SHORT_TERM_DEEP_IMPACT: (
        "Short-Term, Deep Impact",
        "Rapid environmental changes and value reinforcement.",
    ),
    Strategy.SHORT_TERM_MODERATE: (
        "Short-Term, Moderate",
        "Building energy, clear guidance, and steady motivation.",
    ),
    Strategy.EMERGENCY_SUPPORT: (
        "Emergency Support",
        "Immediate relief, protecting personal boundaries and stability.",
    ),
    Strategy.COMBINED_APPROACH: (
        "Combined Approach",
        "Blending deep work and expert guidance for transformational change.",
    ),
}
