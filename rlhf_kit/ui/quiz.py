"""`Quiz`: multiple-choice self-check questions at the end of a lab.

    quiz([
        {"text": "What does the KL penalty keep close to the reference model?",
         "options": ["The reward model", "The policy", "The tokenizer"],
         "answer": 1,
         "explanation": "It penalises the policy for drifting from the SFT model it started from."},
    ])

Each question shows its options as radio buttons and a "Check" button that says whether the pick is
right and explains why either way.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets

CORRECT_COLOR = "#1a7f37"
WRONG_COLOR = "#b35900"


@dataclass
class Question:
    """One multiple-choice question; `answer` is the index of the right option in `options`."""

    text: str
    options: list[str]
    answer: int
    explanation: str

    def __post_init__(self):
        if not 0 <= self.answer < len(self.options):
            raise ValueError(f"answer {self.answer} is not an index into the {len(self.options)} options "
                             f"of {self.text!r}")


class Quiz:
    """A column of questions, each with radio buttons, a "Check" button and a feedback line.

    `widget` is the ipywidgets VBox; `radios`, `buttons` and `feedback` hold each question's
    RadioButtons, Button and feedback HTML, in question order. Displaying a Quiz displays `widget`.
    """

    def __init__(self, questions: list[Question]):
        self.questions = list(questions)
        self.radios = [widgets.RadioButtons(options=q.options, value=None, layout=widgets.Layout(width="auto"))
                       for q in self.questions]
        self.buttons = [widgets.Button(description="Check") for _ in self.questions]
        self.feedback = [widgets.HTML() for _ in self.questions]
        self._correct = [False] * len(self.questions)
        boxes = []
        for i, q in enumerate(self.questions):
            self.buttons[i].on_click(lambda _button, i=i: self.check(i))
            label = widgets.HTML(value=f"<b>{i + 1}. {html.escape(q.text)}</b>")
            boxes.append(widgets.VBox([label, self.radios[i], widgets.HBox([self.buttons[i], self.feedback[i]])]))
        self.widget = widgets.VBox(boxes)

    def check(self, i) -> bool:
        """Grade question `i`'s current pick, show the feedback, and return whether it is right."""
        question, radio = self.questions[i], self.radios[i]
        if radio.index is None:
            self._correct[i] = False
            self.feedback[i].value = "Pick an answer first."
            return False
        self._correct[i] = radio.index == question.answer
        verdict, color = ("Correct", CORRECT_COLOR) if self._correct[i] else ("Not quite", WRONG_COLOR)
        self.feedback[i].value = f'<span style="color: {color}">{verdict}: {html.escape(question.explanation)}</span>'
        return self._correct[i]

    @property
    def score(self) -> tuple[int, int]:
        """(questions whose last check was right, number of questions)."""
        return sum(self._correct), len(self.questions)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def quiz(questions) -> Quiz:
    """A Quiz from Question objects or dicts with the Question fields (text, options, answer, explanation)."""
    return Quiz([q if isinstance(q, Question) else Question(**q) for q in questions])
