"""Notebook widgets driven from code: quiz feedback and score, live-curve history and throttled redraws."""

import pytest

from rlhf_kit.ui import LiveCurve, Question, Quiz, live, quiz

QUESTIONS = [
    {"text": "Which model does the KL penalty compare the policy with?",
     "options": ["The reward model", "The reference model", "The value head"],
     "answer": 1, "explanation": "The frozen SFT model the policy started from."},
    {"text": "Does a reward model output one number per sequence?",
     "options": ["Yes", "No"], "answer": 0, "explanation": "It scores the whole response."},
]


def test_quiz_feedback_and_score():
    q = quiz(QUESTIONS)
    assert isinstance(q, Quiz) and isinstance(q.questions[0], Question)
    assert all(radio.value is None for radio in q.radios)
    assert q.score == (0, 2)

    q.buttons[0].click()
    assert q.feedback[0].value == "Pick an answer first."

    q.radios[0].value = "The reward model"
    q.buttons[0].click()
    assert "Not quite: The frozen SFT model the policy started from." in q.feedback[0].value
    assert q.score == (0, 2)

    q.radios[0].value = "The reference model"
    q.buttons[0].click()
    assert "Correct: The frozen SFT model the policy started from." in q.feedback[0].value
    assert q.check(1) is False
    q.radios[1].value = "Yes"
    assert q.check(1) is True
    assert q.score == (2, 2)


def test_quiz_displays_its_widget():
    q = quiz([Question(**QUESTIONS[1])])
    assert "application/vnd.jupyter.widget-view+json" in q._repr_mimebundle_()
    assert q.widget.children


def test_question_rejects_bad_answer_index():
    with pytest.raises(ValueError):
        Question(text="?", options=["a", "b"], answer=2, explanation="")


PER_OPTION = {"text": "Which model does the KL penalty compare the policy with?",
              "options": ["The policy that sampled the batch", "The frozen SFT model", "The reward model"],
              "answer": 1,
              "feedback": ["That is the ratio's denominator; it moves every batch.",
                           "It never moves, so the penalty charges the total drift.",
                           "It scores; it has no next-token distribution."]}


def test_question_rejects_feedback_that_does_not_match_its_options():
    with pytest.raises(ValueError, match=r"'Which model does the KL penalty.*' has 3 options but 2 feedback"):
        Question(**dict(PER_OPTION, feedback=PER_OPTION["feedback"][:2]))
    with pytest.raises(ValueError, match="has 3 options but 4 feedback"):
        quiz([dict(PER_OPTION, feedback=[*PER_OPTION["feedback"], "one too many"])])


def test_quiz_shows_the_feedback_of_the_option_picked_and_a_running_score():
    q = quiz([PER_OPTION, dict(QUESTIONS[1], feedback=["Right: one number.", "It is one number."],
                               explanation="Read at the last real token.")])
    assert q.score_line.value == "<b>Score: 0/2</b>" and q.score_line in q.widget.children

    q.radios[0].value = "The policy that sampled the batch"          # a wrong pick: its own feedback
    q.buttons[0].click()
    assert "Not quite: That is the ratio&#x27;s denominator; it moves every batch." in q.feedback[0].value
    assert "total drift" not in q.feedback[0].value
    assert q.score_line.value == "<b>Score: 0/2</b>"

    q.radios[0].value = "The frozen SFT model"                       # a new pick clears the old verdict
    assert q.feedback[0].value == ""
    q.buttons[0].click()                                              # the right pick: its own feedback
    assert "Correct: It never moves, so the penalty charges the total drift." in q.feedback[0].value
    assert "denominator" not in q.feedback[0].value
    assert q.score_line.value == "<b>Score: 1/2</b>"

    q.radios[1].value = "Yes"                                         # right, with the general explanation after
    q.buttons[1].click()
    assert "Correct: Right: one number. Read at the last real token." in q.feedback[1].value
    assert q.score == (2, 2) and q.score_line.value.startswith("<b>Score: 2/2</b>")

    q.radios[1].value = "No"                                          # changing a right pick takes it out
    assert q.score == (1, 2) and q.score_line.value == "<b>Score: 1/2</b>"
    q.buttons[1].click()
    assert "Not quite: It is one number." in q.feedback[1].value
    assert "last real token" not in q.feedback[1].value


class FakeHandle:
    """Stands in for IPython's DisplayHandle, counting in-place updates."""

    def __init__(self):
        self.updates = 0

    def update(self, obj):
        self.updates += 1


@pytest.fixture
def fake_display(monkeypatch):
    """Replace live.display with one that records what was displayed and returns a FakeHandle."""
    shown = []

    def display(obj):
        shown.append(FakeHandle())
        return shown[-1]

    monkeypatch.setattr(live, "display", display)
    return shown


def test_curve_outside_ipython_keeps_history():
    curve = LiveCurve(metrics=("loss", ("reward", "kl")), every_seconds=0)
    for step in range(100):
        curve(step, loss=1.0 / (step + 1), reward=step, kl=0.5)
    curve.update(100, lr=1e-3)
    curve.close()
    assert len(curve.history["loss"]) == 100
    assert curve.history["loss"][-1] == (99, 0.01)
    assert curve.history["reward"][3] == (3, 3.0)
    assert curve.history["lr"] == [(100, 0.001)]


def test_curve_updates_in_place_every_call(fake_display):
    curve = LiveCurve(every_seconds=0)
    for step in range(5):
        curve(step, loss=float(step))
    assert len(fake_display) == 1
    assert fake_display[0].updates == 4
    curve.close()
    assert fake_display[0].updates == 5


def test_curve_throttles_redraws(fake_display):
    curve = LiveCurve(every_seconds=3600)
    for step in range(50):
        curve(step, loss=float(step))
    assert len(fake_display) == 1
    assert fake_display[0].updates == 0
    curve.close()
    assert fake_display[0].updates == 1


def test_curve_renders_png():
    curve = LiveCurve(metrics=("loss", ("reward", "kl"), "entropy"), title="PPO", ncols=2)
    for step in range(10):
        curve(step, loss=1.0 / (step + 1), reward=step, kl=0.01 * step, entropy=2.0)
    assert curve._repr_png_().startswith(b"\x89PNG")


def test_the_classroom_page_and_the_quizzes_do_not_load_torch():
    """Every Voila student kernel imports the classroom page, every lab its quiz: neither may load torch (about
    400 MB per kernel) nor transformers (35 MB). Only the widgets that need it (playground, live curve, tables)
    import torch, on first use; transformers' progress bars are still off once it is imported."""
    import subprocess
    import sys

    code = ("import sys, rlhf_kit.ui.classroom, rlhf_kit.ui.claims, rlhf_kit.quizzes; from rlhf_kit.ui import quiz, "
            "Quiz, PreferenceCollector, ClassroomCollector; loaded = [m for m in ('torch', 'transformers') if m in "
            "sys.modules]; assert not loaded, f'{loaded} imported'; from transformers.utils import logging; "
            "assert not logging.is_progress_bar_enabled(), 'transformers progress bars are on'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_ui_name_imports_lazily():
    import rlhf_kit.ui as ui

    for name in ui.__all__:
        assert getattr(ui, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = ui.Nope
