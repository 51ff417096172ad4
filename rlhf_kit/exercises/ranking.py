"""Lab 02: turning a ranking into preference pairs (`ranking_to_pairs`)."""

from __future__ import annotations

from .. import preferences
from .checking import Case, Exercise, Mistake

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
