import html
from collections import Counter

import pytest

from rlhf_kit.quizzes import QUIZZES, lab_quiz
from rlhf_kit.ui import Question, sample_table, side_by_side, summary_table

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


def test_quizzes_are_well_formed():
    assert list(QUIZZES) == ["00", "01", "02", "03", "04", "05", "06", "07", "08", "09"]
    for lab, questions in QUIZZES.items():
        assert 4 <= len(questions) <= 6, f"lab {lab} has {len(questions)} questions"
        assert len({q.answer for q in questions}) > 1, f"lab {lab}: every right answer is in the same position"
        for q in questions:
            assert len(q.options) >= 3 and len(set(q.options)) == len(q.options), q.text
            assert q.feedback is not None and len(q.feedback) == len(q.options), q.text
            assert all(text.strip() for text in q.feedback) and len(set(q.feedback)) == len(q.feedback), q.text
    with pytest.raises(KeyError, match="labs with quizzes"):
        lab_quiz("99")


def _share_where_right_is(questions, pick) -> float:
    """The share of questions whose right option is the `pick` (max or min) length, ties included."""
    hits = [len(q.options[q.answer]) == pick(len(option) for option in q.options) for q in questions]
    return sum(hits) / len(hits)


ALL_QUESTIONS = [q for questions in QUIZZES.values() for q in questions]


def test_the_measure_flags_a_quiz_whose_right_answer_is_the_longest():
    """The balance test below can fail: on questions written right-answer-longest the measure says 100%."""
    revealing = [Question("?", ["a short one", "the right answer, carefully qualified", "no"], 1, "")] * 3
    assert _share_where_right_is(revealing, max) == 1.0


def test_option_lengths_and_positions_do_not_give_the_answer_away():
    longest = _share_where_right_is(ALL_QUESTIONS, max)
    shortest = _share_where_right_is(ALL_QUESTIONS, min)
    assert longest <= 1 / 3, f"the right option is the longest in {longest:.0%} of the questions"
    assert shortest <= 1 / 3, f"the right option is the shortest in {shortest:.0%} of the questions"
    positions = Counter(q.answer for q in ALL_QUESTIONS)
    assert set(positions) == {0, 1, 2, 3}, positions
    assert max(positions.values()) <= 0.4 * len(ALL_QUESTIONS), positions


def test_every_option_shows_its_own_feedback_and_the_score_follows():
    for lab, questions in QUIZZES.items():
        quiz = lab_quiz(lab)
        assert quiz.score_line.value.startswith(f"<b>Score: 0/{len(questions)}</b>")
        for i, q in enumerate(questions):
            for pick, option in enumerate(q.options):
                quiz.radios[i].value = option
                quiz.buttons[i].click()
                shown = quiz.feedback[i].value
                assert html.escape(q.feedback[pick]) in shown, (lab, q.text, option)
                assert ("Correct" in shown) == (pick == q.answer)
                others = [html.escape(text) for j, text in enumerate(q.feedback) if j != pick]
                assert not any(text in shown for text in others)
            quiz.radios[i].value = q.options[q.answer]
            quiz.buttons[i].click()
            assert f"Score: {i + 1}/{len(questions)}" in quiz.score_line.value
        assert quiz.score == (len(questions), len(questions))


def test_a_wrong_then_a_right_pick_in_the_ppo_quiz():
    """Lab 04's clipping question, driven like a learner: -3.6 is named as the misconception, -3.9 is right."""
    quiz = lab_quiz("04")
    q = quiz.questions[0]
    quiz.radios[0].value = "-3.6"
    quiz.buttons[0].click()
    assert "Not quite" in quiz.feedback[0].value and "the max, not the min" in quiz.feedback[0].value
    assert "Score: 0/6" in quiz.score_line.value
    quiz.radios[0].value = "-3.9"
    assert quiz.feedback[0].value == ""                  # a new pick clears the old verdict until it is checked
    quiz.buttons[0].click()
    assert "Correct" in quiz.feedback[0].value and "Clipping never rescues" in quiz.feedback[0].value
    assert "Score: 1/6" in quiz.score_line.value and q.options[q.answer] == "-3.9"
