"""Small notebook widgets: a live training curve and self-check quizzes."""

from .live import LiveCurve
from .quiz import Question, Quiz, quiz

__all__ = ["LiveCurve", "Question", "Quiz", "quiz"]
