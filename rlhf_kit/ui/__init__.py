"""Notebook widgets and views: a live training curve, self-check quizzes, sample tables, the preference collector
(alone, or for a classroom)."""

from .classroom import ClassroomCollector
from .collector import PreferenceCollector
from .live import LiveCurve
from .quiz import Question, Quiz, quiz
from .tables import sample_table, side_by_side, summary_table

__all__ = ["ClassroomCollector", "LiveCurve", "PreferenceCollector", "Question", "Quiz", "quiz", "sample_table",
           "side_by_side", "summary_table"]
