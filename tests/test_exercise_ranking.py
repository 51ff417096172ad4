"""The ranking -> pairs exercise of lab 02: the checker accepts correct spellings and names typical mistakes."""

import itertools

import pytest

from rlhf_kit.exercises import EXERCISES, verify
from rlhf_kit.preferences import ranking_to_pairs


def nested_loops(prompt, ranked):                     # correct, another order
    pairs = []
    for j in range(len(ranked)):
        for i in range(j):
            pairs.append({"rejected": ranked[j], "chosen": ranked[i], "prompt": prompt})
    return pairs


def neighbours(prompt, ranked):
    return [{"prompt": prompt, "chosen": a, "rejected": b} for a, b in zip(ranked, ranked[1:])]


def worst_first(prompt, ranked):
    return [{"prompt": prompt, "chosen": b, "rejected": a} for a, b in itertools.combinations(ranked, 2)]


def permutations(prompt, ranked):
    return [{"prompt": prompt, "chosen": a, "rejected": b} for a, b in itertools.permutations(ranked, 2)]


def with_itself(prompt, ranked):
    return [{"prompt": prompt, "chosen": ranked[i], "rejected": ranked[j]}
            for i in range(len(ranked)) for j in range(len(ranked)) if j >= i]


def tuples(prompt, ranked):
    return [(prompt, a, b) for a, b in itertools.combinations(ranked, 2)]


def trl_names_wrong(prompt, ranked):
    return [{"prompt": prompt, "better": a, "worse": b} for a, b in itertools.combinations(ranked, 2)]


def missing_one(prompt, ranked):
    return ranking_to_pairs(prompt, ranked)[:-1]


WRONG = [(neighbours, "Only neighbours were paired"), (worst_first, "swapped"), (permutations, "both orders"),
         (with_itself, "paired with itself"), (tuples, "keys 'prompt', 'chosen' and 'rejected'"),
         (trl_names_wrong, "keys 'prompt', 'chosen' and 'rejected'")]


@pytest.mark.parametrize("fn", [ranking_to_pairs, nested_loops])
def test_correct_implementations_pass(fn):
    ok, message = verify("ranking_to_pairs", fn)
    assert ok, message


@pytest.mark.parametrize("wrong, phrase", WRONG, ids=[w.__name__ for w, _ in WRONG])
def test_typical_mistakes_are_named(wrong, phrase):
    ok, message = verify("ranking_to_pairs", wrong)
    assert not ok
    assert phrase in message, message


def test_every_hint_is_reached():
    for mistake in EXERCISES["ranking_to_pairs"].mistakes:
        assert any(phrase in mistake.hint for _, phrase in WRONG), mistake.hint


def test_an_unmodelled_mistake_says_what_is_missing():
    ok, message = verify("ranking_to_pairs", missing_one)
    assert not ok
    assert "expected 3 pairs, got 2" in message and "missing" in message, message


def reverses_its_argument(prompt, ranked):             # wrong (worst first), and hides it by reversing `ranked`
    ranked.reverse()
    return [{"prompt": prompt, "chosen": a, "rejected": b} for a, b in itertools.combinations(ranked, 2)]


def sorts_its_argument(prompt, ranked):                # right pairs, but the caller's ranking is now alphabetical
    pairs = [{"prompt": prompt, "chosen": a, "rejected": b} for a, b in itertools.combinations(ranked, 2)]
    ranked.sort()
    return pairs


@pytest.mark.parametrize("fn", [reverses_its_argument, sorts_its_argument])
def test_changing_the_ranking_in_place_is_named_not_hidden_or_misread(fn):
    """The reference used to get the learner's (changed) list: reversing passed, and sorting got the 'swapped'
    hint. Each call now gets its own copy, and the change itself is the mistake named."""
    ok, message = verify("ranking_to_pairs", fn)
    assert not ok
    assert "your function changed its input `ranked` in place" in message and "sorted(ranked)" in message
    assert "swapped" not in message


def test_stub():
    def stub(prompt, ranked):
        raise NotImplementedError

    assert verify("ranking_to_pairs", stub) == (False, "ranking_to_pairs is not implemented yet.")
