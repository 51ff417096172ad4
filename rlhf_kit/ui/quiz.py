"""`Quiz`: multiple-choice self-check questions at the end of a lab.

    quiz([
        {"text": "Which model does the KL penalty compare the policy with?",
         "options": ["The reward model", "The frozen SFT model", "The policy that sampled the batch"],
         "answer": 1,
         "feedback": ["The reward model gives the score; it has no distribution over tokens to compare with.",
                      "Right: the reference never moves, so the penalty charges the total drift.",
                      "That is the ratio's denominator, which moves every batch."]},
    ])

Each question shows its options as radio buttons and a "Check" button. Checking shows the feedback written for
the option that was picked: why it is right, or which misconception it reflects. A question may instead carry one
`explanation` for every pick. Below the questions a "Score: k/n" line counts the questions whose current pick was
checked and is right; changing a pick clears its feedback and takes it out of the score until it is checked again.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets

CORRECT_COLOR = "#1a7f37"
WRONG_COLOR = "#b35900"


@dataclass
class Question:
    """One multiple-choice question; `answer` is the index of the right option in `options`.

    `feedback`, if given, holds one text per option, in the order of `options`: what Check says when that option
    is picked. `explanation` is shown after a right pick (and after every pick when there is no `feedback`).
    """

    text: str
    options: list[str]
    answer: int
    explanation: str = ""
    feedback: list[str] | None = None

    def __post_init__(self):
        self.options = list(self.options)
        if len(self.options) < 2:
            raise ValueError(f"{self.text!r} has {len(self.options)} option(s); a question needs at least two")
        if not 0 <= self.answer < len(self.options):
            raise ValueError(f"answer {self.answer} is not an index into the {len(self.options)} options "
                             f"of {self.text!r}")
        if self.feedback is not None:
            self.feedback = list(self.feedback)
            if len(self.feedback) != len(self.options):
                raise ValueError(f"{self.text!r} has {len(self.options)} options but {len(self.feedback)} feedback "
                                 f"texts; give one per option, in the same order")

    def feedback_for(self, pick: int) -> str:
        """What Check says about option `pick`: its own feedback (then the explanation, if right), else the
        explanation."""
        if self.feedback is None:
            return self.explanation
        parts = [self.feedback[pick]]
        if pick == self.answer and self.explanation:
            parts.append(self.explanation)
        return " ".join(parts)


class Quiz:
    """A column of questions, each with radio buttons, a "Check" button and a feedback line, then a score line.

    `widget` is the ipywidgets VBox; `radios`, `buttons` and `feedback` hold each question's
    RadioButtons, Button and feedback HTML, in question order; `score_line` is the HTML under the questions.
    Displaying a Quiz displays `widget`.
    """

    def __init__(self, questions: list[Question]):
        self.questions = list(questions)
        self.radios = [widgets.RadioButtons(options=q.options, value=None, layout=widgets.Layout(width="auto"))
                       for q in self.questions]
        self.buttons = [widgets.Button(description="Check") for _ in self.questions]
        self.feedback = [widgets.HTML() for _ in self.questions]
        self.score_line = widgets.HTML()
        self._correct = [False] * len(self.questions)
        boxes = []
        for i, q in enumerate(self.questions):
            self.buttons[i].on_click(lambda _button, i=i: self.check(i))
            self.radios[i].observe(lambda _change, i=i: self._picked(i), names="index")
            label = widgets.HTML(value=f"<b>{i + 1}. {html.escape(q.text)}</b>")
            boxes.append(widgets.VBox([label, self.radios[i], widgets.HBox([self.buttons[i], self.feedback[i]])]))
        self._show_score()
        self.widget = widgets.VBox([*boxes, self.score_line])

    def check(self, i) -> bool:
        """Grade question `i`'s current pick, show its feedback and the score, and return whether it is right."""
        question, radio = self.questions[i], self.radios[i]
        if radio.index is None:
            self._correct[i] = False
            self.feedback[i].value = "Pick an answer first."
        else:
            self._correct[i] = radio.index == question.answer
            verdict, color = ("Correct", CORRECT_COLOR) if self._correct[i] else ("Not quite", WRONG_COLOR)
            text = html.escape(question.feedback_for(radio.index))
            self.feedback[i].value = f'<span style="color: {color}">{verdict}: {text}</span>'
        self._show_score()
        return self._correct[i]

    def _picked(self, i):
        """A new pick is not graded yet: clear the old feedback and take the question out of the score."""
        self._correct[i] = False
        self.feedback[i].value = ""
        self._show_score()

    def _show_score(self):
        right, total = self.score
        done = " · all right, well done." if right == total > 0 else ""
        self.score_line.value = f"<b>Score: {right}/{total}</b>{done}"

    @property
    def score(self) -> tuple[int, int]:
        """(questions whose current pick was checked and is right, number of questions)."""
        return sum(self._correct), len(self.questions)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def quiz(questions) -> Quiz:
    """A Quiz from Question objects or dicts with the Question fields (text, options, answer, and explanation
    and/or feedback)."""
    return Quiz([q if isinstance(q, Question) else Question(**q) for q in questions])
