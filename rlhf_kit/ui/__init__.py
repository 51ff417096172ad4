"""Notebook widgets and views: a live training curve, self-check quizzes, sample tables, the preference collector
(alone, or for a classroom) and the PPO playground."""

from .classroom import ClassroomCollector
from .collector import PreferenceCollector
from .live import LiveCurve
from .playground import Playground
from .quiz import Question, Quiz, quiz
from .tables import sample_table, side_by_side, summary_table

__all__ = ["ClassroomCollector", "LiveCurve", "Playground", "PreferenceCollector", "Question", "Quiz", "quiz",
           "sample_table", "side_by_side", "summary_table"]
