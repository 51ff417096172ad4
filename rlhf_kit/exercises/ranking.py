"""Lab 02's exercises: turning a ranking into preference pairs (`ranking_to_pairs`), and the chance-corrected
agreement of two labellers (`cohens_kappa`)."""

from __future__ import annotations

import math
from collections import Counter

from .. import agreement, preferences
from .checking import Case, Exercise, Mistake, must_reject

RANKINGS = [
    ("Write a positive review of a comedy about a dog.", ["Great fun.", "Fine.", "Dull."]),
    ("Write a negative review of a horror film about a robot.", ["Awful.", "Weak.", "Meh.", "Good!"]),
    ("Write a positive review of a drama about a chef.", ["Moving.", "Nice."]),
]


def _pair_keys(pairs) -> list[tuple] | None:
    """The pairs as sorted (prompt, chosen, rejected) tuples, or None when they are not such dicts."""
    try:
        return sorted((p["prompt"], p["chosen"], p["rejected"]) for p in pairs)
    except (TypeError, KeyError):
        return None


def _same_pairs(expected, got) -> bool:
    """Same pairs, in any order."""
    return isinstance(got, list) and _pair_keys(got) is not None and _pair_keys(got) == _pair_keys(expected)


def _adjacent_only(prompt, ranked):
    return [{"prompt": prompt, "chosen": ranked[i], "rejected": ranked[i + 1]} for i in range(len(ranked) - 1)]


def _swapped(prompt, ranked):
    return [{"prompt": prompt, "chosen": p["rejected"], "rejected": p["chosen"]}
            for p in preferences.ranking_to_pairs(prompt, ranked)]


def _both_orders(prompt, ranked):
    return preferences.ranking_to_pairs(prompt, ranked) + _swapped(prompt, ranked)


def _with_self_pairs(prompt, ranked):
    return [{"prompt": prompt, "chosen": ranked[i], "rejected": ranked[j]}
            for i in range(len(ranked)) for j in range(i, len(ranked))]


def _wrong_keys(case, got) -> bool:
    return not isinstance(got, list) or _pair_keys(got) is None


_RANKING_MISTAKES = [
    Mistake("Each pair must be a dict with the keys 'prompt', 'chosen' and 'rejected' (the columns TRL's trainers "
            "read), in a list.", detect=_wrong_keys),
    Mistake("Only neighbours were paired: a ranking of K gives K(K-1)/2 pairs, since every response beats every "
            "response ranked below it, not only the next one.", impl=_adjacent_only),
    Mistake("chosen and rejected are swapped: `ranked` is best-first, so the earlier response is the chosen one.",
            impl=_swapped),
    Mistake("Each pair appears in both orders: (better, worse) is one comparison; its mirror image says the "
            "opposite and cancels it out in the loss.", impl=_both_orders),
    Mistake("A response was paired with itself: a comparison needs two different responses (use j > i).",
            impl=_with_self_pairs),
]


def _missing_and_extra(expected, got) -> str:
    expected_keys, got_keys = _pair_keys(expected), _pair_keys(got) or []
    missing = [k for k in expected_keys if k not in got_keys]
    extra = [k for k in got_keys if k not in expected_keys]
    return (f"expected {len(expected_keys)} pairs, got {len(got_keys)}"
            + (f"; missing (chosen, rejected) = {missing[0][1:]!r}" if missing else "")
            + (f"; unexpected (chosen, rejected) = {extra[0][1:]!r}" if extra else ""))


RANKING_TO_PAIRS = Exercise(
    reference=preferences.ranking_to_pairs,
    cases=[Case({"prompt": p, "ranked": r}, f"a ranking of {len(r)} responses") for p, r in RANKINGS],
    mistakes=_RANKING_MISTAKES,
    same=_same_pairs,
    mismatch=_missing_and_extra,
)


# ------------------------------------------------------------------------------------------------ cohens_kappa
def _number(value) -> float | None:
    """`value` as a float (int, float, numpy or 0-dim torch number), or None when it is not one number."""
    if isinstance(value, (str, bytes, list, tuple, dict)) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _same_number(expected, got) -> bool:
    value = _number(got)
    return value is not None and math.isclose(value, float(expected), rel_tol=1e-6, abs_tol=1e-6)


def _show_number(expected, got) -> str:
    value = _number(got)
    return f"expected {float(expected):.6f}, got " + (f"{value:.6f}" if value is not None else repr(got))


def _shares(labels) -> dict:
    return {k: v / len(labels) for k, v in Counter(labels).items()}


def _kappa_from(p_o: float, p_e: float) -> float:
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def _observed(labels_a, labels_b) -> float:
    return sum(x == y for x, y in zip(labels_a, labels_b)) / len(labels_a)


def _raw_agreement(labels_a, labels_b):
    return _observed(labels_a, labels_b)


def _coin_chance(labels_a, labels_b):
    return _kappa_from(_observed(labels_a, labels_b), 1 / len(set(labels_a) | set(labels_b)))


def _pooled_chance(labels_a, labels_b):       # Scott's pi
    pooled = _shares(list(labels_a) + list(labels_b))
    return _kappa_from(_observed(labels_a, labels_b), sum(p * p for p in pooled.values()))


def _one_labeller_chance(labels_a, labels_b):
    return _kappa_from(_observed(labels_a, labels_b), sum(p * p for p in _shares(labels_a).values()))


def _counts_not_shares(labels_a, labels_b):
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    p_e = sum(count_a[k] * count_b[k] for k in count_a) / len(labels_a)
    return _kappa_from(_observed(labels_a, labels_b), p_e)


def _not_normalised(labels_a, labels_b):
    share_a, share_b = _shares(labels_a), _shares(labels_b)
    return _observed(labels_a, labels_b) - sum(share_a[k] * share_b.get(k, 0.0) for k in share_a)


_KAPPA_MISTAKES = [
    Mistake("You returned the raw agreement p_o: kappa corrects it for chance, (p_o - p_e) / (1 - p_e), so that "
            "two labellers who both say 'A' nine times in ten do not look reliable just because they agree often.",
            impl=_raw_agreement),
    Mistake("Chance is not a fair coin: p_e comes from each labeller's own label frequencies, "
            "p_e = sum over labels k of p_a(k) * p_b(k), not 1 / (number of labels).", impl=_coin_chance),
    Mistake("You pooled both labellers' frequencies, (p_a(k) + p_b(k)) / 2 squared: that is Scott's pi. Cohen's "
            "kappa multiplies each labeller's own shares, p_e = sum over k of p_a(k) * p_b(k).",
            impl=_pooled_chance),
    Mistake("p_e uses one labeller's frequencies twice (p_a(k) squared): multiply labeller a's share of each label "
            "by labeller b's share of it, p_e = sum over k of p_a(k) * p_b(k).", impl=_one_labeller_chance),
    Mistake("p_e must be a probability, between 0 and 1: p_a(k) = count_a(k) / n and p_b(k) = count_b(k) / n, so "
            "the product of the two counts is divided by n squared, not by n.", impl=_counts_not_shares),
    Mistake("You stopped at p_o - p_e: divide by 1 - p_e, the most agreement there is left to gain above chance, "
            "so that perfect agreement gives kappa = 1.", impl=_not_normalised),
]


def _kappa_case(labels_a: str, labels_b: str, what: str, expected: float | None = None) -> Case:
    """Labels written compactly: "AAB" with T for tie -> ["A", "A", "B"]."""
    def unpack(text):
        return ["tie" if c == "T" else c for c in text]

    return Case({"labels_a": unpack(labels_a), "labels_b": unpack(labels_b)}, what, expected=expected)


_KAPPA_CASES = [
    # Worked example: p_o = 9/10; p_a = (0.6, 0.4), p_b = (0.5, 0.5) -> p_e = 0.5; kappa = (0.9 - 0.5) / 0.5 = 0.8.
    _kappa_case("AAAAAABBBB", "AAAAABBBBB", "worked example: p_o 0.9, p_e 0.5, kappa 0.8", expected=0.8),
    _kappa_case("AAAAAAAAAB", "AAAAAAAABA", "both say A nine times in ten: p_o 0.8, p_e 0.82, kappa below 0"),
    _kappa_case("AABBTATBAB", "ABBBTATAAT", "three labels, A, B and tie, one labeller using tie more"),
    _kappa_case("AAAA", "AAAA", "both always say A: p_e = 1, and kappa is taken to be 1", expected=1.0),
]

COHENS_KAPPA = Exercise(
    reference=agreement.cohens_kappa,
    cases=_KAPPA_CASES,
    mistakes=_KAPPA_MISTAKES,
    same=_same_number,
    mismatch=_show_number,
    properties=[must_reject({"labels_a": ["A", "B", "A"], "labels_b": ["A", "B"]},
                            "label lists of different lengths (3 and 2)",
                            "one label from each labeller per item; zip would silently drop the extra item")],
)
