"""The label exercises of labs 02 and 03: `cohens_kappa`, `agreement_with_labels` and `swap_sentiment`. The
checker accepts the references and independently written correct answers, and names each catalogued mistake."""

from collections import Counter

import numpy as np
import pytest
import torch
from exercise_contract import contract

from rlhf_kit.agreement import agreement_with_labels, cohens_kappa
from rlhf_kit.exercises import EXERCISES, verify
from rlhf_kit.reward import swap_sentiment

LABEL_EXERCISES = ["cohens_kappa", "agreement_with_labels", "swap_sentiment"]


# ------------------------------------------------------------------ correct answers, written independently
def kappa_loop(labels_a, labels_b):
    if len(labels_a) != len(labels_b):
        raise ValueError("one label per item from each labeller")
    n = len(labels_a)
    p_o = 0.0
    for x, y in zip(labels_a, labels_b):
        p_o += (x == y) / n
    p_e = 0.0
    for k in set(labels_a) | set(labels_b):
        p_e += labels_a.count(k) / n * labels_b.count(k) / n
    if p_e == 1:
        return 1.0
    return (p_o - p_e) / (1 - p_e)


def kappa_numpy(labels_a, labels_b):              # returns a numpy float
    a, b = np.array(labels_a), np.array(labels_b)
    if a.shape != b.shape:
        raise ValueError("different lengths")
    p_o = (a == b).mean()
    p_e = sum((a == k).mean() * (b == k).mean() for k in np.union1d(a, b))
    return np.float64(1.0) if p_e == 1 else (p_o - p_e) / (1 - p_e)


def agreement_tensor(label_accuracy, model_accuracy):   # returns a 0-dim tensor
    a, c = torch.tensor(label_accuracy), torch.tensor(model_accuracy)
    return 1 - a - c + 2 * a * c


def swap_by_words(prompt):
    if "positive review" in prompt:
        return prompt.replace("positive review", "negative review")
    return prompt.replace("negative review", "positive review")


CORRECT = [("cohens_kappa", cohens_kappa), ("cohens_kappa", kappa_loop), ("cohens_kappa", kappa_numpy),
           ("agreement_with_labels", agreement_with_labels), ("agreement_with_labels", agreement_tensor),
           ("swap_sentiment", swap_sentiment), ("swap_sentiment", swap_by_words)]


# ------------------------------------------------------------------ wrong answers, each a typical mistake
def _checked(labels_a, labels_b):
    if len(labels_a) != len(labels_b):
        raise ValueError("different lengths")
    return len(labels_a)


def kappa_raw(labels_a, labels_b):
    n = _checked(labels_a, labels_b)
    return sum(x == y for x, y in zip(labels_a, labels_b)) / n


def kappa_coin(labels_a, labels_b):
    n = _checked(labels_a, labels_b)
    p_o = sum(x == y for x, y in zip(labels_a, labels_b)) / n
    p_e = 1 / len(set(labels_a + labels_b))
    return (p_o - p_e) / (1 - p_e)


def kappa_scott(labels_a, labels_b):
    n = _checked(labels_a, labels_b)
    p_o = sum(x == y for x, y in zip(labels_a, labels_b)) / n
    both = Counter(labels_a) + Counter(labels_b)
    p_e = sum((count / (2 * n)) ** 2 for count in both.values())
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def kappa_squared_a(labels_a, labels_b):
    n = _checked(labels_a, labels_b)
    p_o = sum(x == y for x, y in zip(labels_a, labels_b)) / n
    p_e = sum((count / n) ** 2 for count in Counter(labels_a).values())
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def kappa_counts(labels_a, labels_b):
    n = _checked(labels_a, labels_b)
    p_o = sum(x == y for x, y in zip(labels_a, labels_b)) / n
    ca, cb = Counter(labels_a), Counter(labels_b)
    p_e = sum(ca[k] * cb[k] for k in ca) / n
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def kappa_no_division(labels_a, labels_b):
    n = _checked(labels_a, labels_b)
    p_o = sum(x == y for x, y in zip(labels_a, labels_b)) / n
    ca, cb = Counter(labels_a), Counter(labels_b)
    return p_o - sum(ca[k] * cb[k] for k in ca) / n ** 2


def kappa_no_length_check(labels_a, labels_b):     # right values, but zip silently drops an unmatched item
    n = min(len(labels_a), len(labels_b))
    return cohens_kappa(labels_a[:n], labels_b[:n])


def kappa_divides_by_zero(labels_a, labels_b):     # right except when p_e == 1
    n = _checked(labels_a, labels_b)
    p_o = sum(x == y for x, y in zip(labels_a, labels_b)) / n
    ca, cb = Counter(labels_a), Counter(labels_b)
    p_e = sum(ca[k] * cb[k] for k in ca) / n ** 2
    return (p_o - p_e) / (1 - p_e)


def both_right_only(label_accuracy, model_accuracy):
    return label_accuracy * model_accuracy


def both_wrong_half(label_accuracy, model_accuracy):
    a, c = label_accuracy, model_accuracy
    return a * c + 0.5 * (1 - a) * (1 - c)


def the_ceiling(label_accuracy, model_accuracy):
    return label_accuracy


def the_smaller(label_accuracy, model_accuracy):
    return min(model_accuracy, label_accuracy)


def swap_chained(prompt):
    return prompt.replace("positive", "negative").replace("negative", "positive")


def swap_chained_other_way(prompt):
    return prompt.replace("negative", "positive").replace("positive", "negative")


def swap_one_way(prompt):
    return prompt.replace("positive", "negative")


def swap_bare(prompt):
    from rlhf_kit.world import Attributes, instruction_for, parse_prompt

    attrs = parse_prompt(prompt)
    other = "negative" if attrs.sentiment == "positive" else "positive"
    return instruction_for(Attributes(other, attrs.genre, attrs.subject))


def swap_attributes(prompt):
    from rlhf_kit.world import Attributes, parse_prompt

    attrs = parse_prompt(prompt)
    return Attributes("negative" if attrs.sentiment == "positive" else "positive", attrs.genre, attrs.subject)


WRONG = [
    ("cohens_kappa", kappa_raw, "raw agreement p_o"),
    ("cohens_kappa", kappa_coin, "Chance is not a fair coin"),
    ("cohens_kappa", kappa_scott, "Scott's pi"),
    ("cohens_kappa", kappa_squared_a, "one labeller's frequencies twice"),
    ("cohens_kappa", kappa_counts, "divided by n squared, not by n"),
    ("cohens_kappa", kappa_no_division, "You stopped at p_o - p_e"),
    ("agreement_with_labels", both_right_only, "only the pairs where both are right"),
    ("agreement_with_labels", both_wrong_half, "two wrong answers are the same answer"),
    ("agreement_with_labels", the_ceiling, "the ceiling"),
    ("agreement_with_labels", the_smaller, "smaller of the two accuracies"),
    ("swap_sentiment", swap_chained, "A positive request came back still asking for a positive review"),
    ("swap_sentiment", swap_chained_other_way, "A negative request came back still asking for a negative review"),
    ("swap_sentiment", swap_one_way, "A negative request came back still asking for a negative review"),
    ("swap_sentiment", swap_bare, "The template was lost"),
    ("swap_sentiment", swap_attributes, "must be the new prompt, a str"),
]


def test_kappa_without_a_length_check_is_told_to_raise():
    ok, message = verify("cohens_kappa", kappa_no_length_check)
    assert not ok and "different lengths" in message and "ValueError" in message, message


def test_kappa_dividing_by_zero_is_shown_the_case():
    ok, message = verify("cohens_kappa", kappa_divides_by_zero)
    assert not ok and "ZeroDivisionError" in message and "p_e = 1" in message, message


def test_worked_examples_agree_with_the_references():
    assert cohens_kappa(list("AAAAAABBBB"), list("AAAAABBBBB")) == pytest.approx(0.8)
    assert cohens_kappa(list("AAAAAAAAAB"), list("AAAAAAAABA")) == pytest.approx((0.8 - 0.82) / 0.18)
    assert agreement_with_labels(0.75, 0.725) == pytest.approx(0.6125)
    for name in LABEL_EXERCISES:
        for case in EXERCISES[name].cases:
            if case.expected is not None:
                assert EXERCISES[name].same(case.expected, EXERCISES[name].reference(**case.kwargs))


def test_a_wrong_kappa_is_not_a_string_match():
    """The comparison is numeric: a string or a list is wrong, a nearby but different number is wrong."""
    assert not EXERCISES["cohens_kappa"].same(0.8, "0.8")
    assert not EXERCISES["cohens_kappa"].same(0.8, [0.8])
    assert not EXERCISES["cohens_kappa"].same(0.8, 0.8001)
    assert EXERCISES["cohens_kappa"].same(0.8, torch.tensor(0.8, dtype=torch.float64))


# ------------------------------------------------------------------ the package functions behind them
def test_two_simulated_labellers_agree_as_the_formula_says():
    """Two independent labellers, right with probability p on each pair, agree with probability p^2 + (1-p)^2
    on average: measured with two SimulatedAnnotators, and at least a^2 + (1-a)^2 for their mean accuracy a
    (the formula at one accuracy for all pairs; uneven difficulty only raises agreement)."""
    from rlhf_kit.agreement import labeller_vs_labeller
    from rlhf_kit.world import SimulatedAnnotator, gold_reward, reference_pairs

    temperature = SimulatedAnnotator(seed=0).temperature          # calibrated: 73% agreement with the gold
    first, second = SimulatedAnnotator(temperature, seed=1), SimulatedAnnotator(temperature, seed=2)
    rows = []
    for prompt, a, b in reference_pairs(seed=3, n=2000):
        if gold_reward(prompt, a) != gold_reward(prompt, b):
            better, worse = (a, b) if gold_reward(prompt, a) > gold_reward(prompt, b) else (b, a)
            rows.append({"prompt": prompt, "chosen": better, "rejected": worse})
    rate, n = labeller_vs_labeller(rows, first, second)
    p = [first.prob_a(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    expected = sum(q * q + (1 - q) * (1 - q) for q in p) / n
    accuracy = sum(p) / n
    assert n == len(rows) > 1000
    assert abs(rate - expected) < 0.03, (rate, expected)
    assert expected >= agreement_with_labels(accuracy, accuracy) - 1e-9
    assert rate < accuracy                      # two noisy labellers agree less often than either is right


def test_labeller_vs_labeller_counts_same_choices():
    from rlhf_kit.agreement import labeller_vs_labeller

    class Always:
        def __init__(self, choice):
            self.choice = choice

        def prefer(self, prompt, response_a, response_b):
            return self.choice

    rows = [{"prompt": "p", "chosen": "x", "rejected": "y"}] * 4
    assert labeller_vs_labeller(rows, Always("A"), Always("A")) == (1.0, 4)
    assert labeller_vs_labeller(rows, Always("A"), Always("B")) == (0.0, 4)
    rate, n = labeller_vs_labeller([], Always("A"), Always("A"))
    assert n == 0 and rate != rate                     # nan


def test_kappa_between_uses_the_given_kappa_function():
    from rlhf_kit.agreement import kappa_between

    decisions = [{"pair_id": f"p{i}", "annotator": who, "choice": choice}
                 for i, (x, y) in enumerate(["AA", "AB", "BB", "BB"]) for who, choice in (("ann", x), ("bob", y))]
    assert kappa_between(decisions, "ann", "bob") == (cohens_kappa(list("AABB"), list("ABBB")), 4)
    seen = []
    assert kappa_between(decisions, "ann", "bob", kappa_fn=lambda a, b: seen.append((a, b)) or 0.25) == (0.25, 4)
    assert seen == [(list("AABB"), list("ABBB"))]


def test_agreement_by_pair_uses_each_pairs_own_difficulty():
    from rlhf_kit.agreement import agreement_by_pair

    gold = {"x": 2.0, "y": 1.0, "u": 0.0, "v": 3.0, "s": 1.0, "t": 1.0}
    follow = {("x", "y"): 0.9, ("v", "u"): 0.6}             # P(labeller orders the pair like the gold reward)

    class Labeller:
        def prob_a(self, prompt, response_a, response_b):
            return follow[(response_a, response_b)]

    rows = [{"prompt": "p", "chosen": "x", "rejected": "y"},   # gold agrees with the row, model right: 0.9
            {"prompt": "p", "chosen": "u", "rejected": "v"},   # gold prefers v, model picks u (wrong): 1 - 0.6
            {"prompt": "p", "chosen": "s", "rejected": "t"}]   # a gold tie: 1/2 whatever the model does
    result = agreement_by_pair(rows, [True, True, False], Labeller(), lambda prompt, r: gold[r])
    assert result["n"] == 3
    assert result["model_vs_labels"] == pytest.approx((0.9 + 0.4 + 0.5) / 3)
    assert result["labeller_vs_labeller"] == pytest.approx((0.82 + 0.52 + 0.5) / 3)
    calls = []
    agreement_by_pair(rows[:1], [True], Labeller(), lambda prompt, r: gold[r],
                      agreement_fn=lambda a, c: calls.append((a, c)) or 0.0)
    assert calls == [(0.9, 1.0), (0.9, 0.9)]


(test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
 test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(LABEL_EXERCISES, WRONG, CORRECT)
