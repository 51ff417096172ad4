import pytest

from rlhf_kit.quizzes import QUIZZES, lab_quiz
from rlhf_kit.ui import sample_table, side_by_side, summary_table

SAMPLE = {"prompt": "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n",
          "response": "A <b>great</b> dog & comedy.", "gold": 1.234, "format_ok": True}


def test_sample_table_shows_instruction_response_and_escapes_html():
    page = sample_table([SAMPLE]).data
    assert "Write a positive review of a comedy about a dog." in page
    assert "&lt;b&gt;great&lt;/b&gt;" in page and "<b>great</b>" not in page
    assert "+1.23" in page and "###" not in page.split("</style>")[1]


def test_side_by_side_and_summary():
    results = {"base": {"gold": -0.5, "format_rate": 0.25, "samples": [dict(SAMPLE, format_ok=False)]},
               "SFT": {"gold": 1.5, "format_rate": 1.0, "samples": [SAMPLE]}}
    page = side_by_side(results).data
    assert "<th>base</th>" in page and "<th>SFT</th>" in page and "✗ format" in page
    summary = summary_table(results).data
    assert "-0.50" in summary and "+1.50" in summary and "25%" in summary and "100%" in summary


def test_quizzes_are_well_formed_and_not_always_the_same_option():
    for lab, questions in QUIZZES.items():
        assert len(questions) >= 3
        assert len({q.answer for q in questions}) > 1, f"lab {lab}: every right answer is in the same position"
        quiz = lab_quiz(lab)
        quiz.radios[0].value = quiz.radios[0].options[questions[0].answer]
        quiz.buttons[0].click()
        assert "Correct" in quiz.feedback[0].value
    with pytest.raises(KeyError, match="labs with quizzes"):
        lab_quiz("99")
