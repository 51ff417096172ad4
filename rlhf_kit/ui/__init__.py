"""Notebook widgets and views: a live training curve, self-check quizzes, sample tables, the preference collector."""

from .collector import PreferenceCollector
from .live import LiveCurve
from .quiz import Question, Quiz, quiz
from .tables import sample_table, side_by_side, summary_table

__all__ = ["LiveCurve", "PreferenceCollector", "Question", "Quiz", "quiz", "sample_table", "side_by_side",
           "summary_table"]
