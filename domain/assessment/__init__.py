"""Scoring of standardised questionnaires: one module per instrument, plus change over
time. Pure functions; a submission that cannot be scored gets a ``Rejection`` with the
reason, never a guess."""

from domain.assessment.scoring import Rejection, Score, score_submission

__all__ = ["Rejection", "Score", "score_submission"]
