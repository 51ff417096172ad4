"""Pooling labellers' preference files and measuring how far they agree, with each other and with the gold reward.

`merge` pools several `PreferenceStore` files into one list of decisions. On such a list `pairwise_agreement`,
`cohens_kappa` / `kappa_between` and `majority_vote` compare labellers; `agreement_panel` compares one learner with
the simulated labeller and the gold reward, and `gold_agreement` any labels (a majority vote, say) with the gold
reward. The simulated labeller and the gold reward are passed in (those of `rlhf_kit.gold` in the labs).
`agreement_with_labels` converts accuracies against the truth into agreement with noisy labels (or with another
labeller), `agreement_by_pair` does it pair by pair, and `labeller_vs_labeller` measures two labellers on the
same pairs.

Like the label store, this module imports only the standard library (and `rlhf_kit.preferences` in `merge`);
`rlhf_kit.preferences` re-exports its public names, which is where the labs import them from.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

# How often InstructGPT's labellers agreed with each other (72.6%, Ouyang et al. 2022). The kit also calibrates the
# simulated labeller's agreement with the gold ordering to it: a different quantity (see agreement_with_labels).
INSTRUCTGPT_AGREEMENT = 0.73


# ----------------------------------------------------------------------------------------------------- pooling
def merge(paths, unreadable: list | None = None) -> list[dict]:
    """The effective decisions of several stores, one after the other (each keeps its annotator).

    Agreement compares choices by pair_id, so a pair_id must name the same ordered (prompt, response_a,
    response_b) everywhere: ValueError otherwise, and FileNotFoundError for a missing file. With a list as
    `unreadable`, a file that cannot be read (missing, damaged, or disagreeing with an earlier file about a pair)
    is left out instead, and (path, why) is appended to the list: the other files are still pooled.
    """
    from .preferences import PreferenceStore  # here, not at the top: preferences imports this module

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    pooled, pairs = [], {}
    for path in paths:
        try:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no preference file at {path}")
            decisions, known = PreferenceStore(path).load(), dict(pairs)
            for d in decisions:
                pair = (d["prompt"], d["response_a"], d["response_b"])
                first_pair, first_path = known.setdefault(d["pair_id"], (pair, path))
                if pair != first_pair:
                    raise ValueError(f"pair_id {d['pair_id']!r} names different texts (or A and B swapped) in "
                                     f"{path} and in {first_path}; give each ordered pair its own id with "
                                     f"pair_id(prompt, response_a, response_b)")
        except (OSError, ValueError) as error:
            if unreadable is None:
                raise
            unreadable.append((Path(path), str(error)))
            continue
        pairs = known
        pooled += decisions
    return pooled


# ---------------------------------------------------------------------------------- agreement between labellers
def _choices(decisions, annotator: str) -> dict[str, str]:
    """pair_id -> `annotator`'s choice (a later decision on the same pair wins)."""
    return {d["pair_id"]: d["choice"] for d in decisions if d["annotator"] == annotator}


def pairwise_agreement(decisions, annotator_a: str, annotator_b: str) -> tuple[float, int]:
    """(rate, n_shared): over the n_shared pairs both annotators labelled A or B (ties and skips left out), the
    share on which they chose the same response; rate is nan when n_shared is 0."""
    a, b = _choices(decisions, annotator_a), _choices(decisions, annotator_b)
    shared = [p for p in a if p in b and a[p] in ("A", "B") and b[p] in ("A", "B")]
    if not shared:
        return math.nan, 0
    return sum(a[p] == b[p] for p in shared) / len(shared), len(shared)


def cohens_kappa(labels_a: list[str], labels_b: list[str]) -> float:
    """Cohen's kappa, the agreement of two labellers corrected for chance:

        kappa = (p_o - p_e) / (1 - p_e)
        p_o = share of items given the same label;  p_e = sum over labels k of p_a(k) * p_b(k)

    1 is perfect agreement, 0 what two labellers drawing independently from their own label frequencies get.
    When p_e == 1 (both always give the same single label) kappa is 1.
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(f"cohens_kappa needs one label from each labeller per item; got {len(labels_a)} and "
                         f"{len(labels_b)} labels")
    if not labels_a:
        raise ValueError("cohens_kappa needs at least one item; got empty label lists")
    n = len(labels_a)
    p_o = sum(x == y for x, y in zip(labels_a, labels_b)) / n
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    p_e = sum(count_a[k] * count_b[k] for k in count_a) / n ** 2
    if p_e == 1:
        return 1.0
    return (p_o - p_e) / (1 - p_e)


def kappa_between(decisions, annotator_a: str, annotator_b: str, kappa_fn=None) -> tuple[float, int]:
    """(kappa, n_shared): `cohens_kappa` (or `kappa_fn(labels_a, labels_b)`, e.g. a learner's own) over the pairs
    both annotators labelled A, B or tie (skips are not labels); kappa is nan when n_shared is 0."""
    a, b = _choices(decisions, annotator_a), _choices(decisions, annotator_b)
    shared = [p for p in a if p in b and a[p] != "skip" and b[p] != "skip"]
    if not shared:
        return math.nan, 0
    return (kappa_fn or cohens_kappa)([a[p] for p in shared], [b[p] for p in shared]), len(shared)


def agreement_with_labels(label_accuracy: float, model_accuracy: float) -> float:
    """How often a judge that orders pairs like the truth with probability `model_accuracy` (c) agrees with
    labels that order them like the truth with probability `label_accuracy` (a), when the two err independently:

        agreement = a c + (1 - a)(1 - c)

    A comparison has two answers, so they agree when both are right or both are wrong. With c = 1 this is a (the
    ceiling a perfect model reaches against noisy labels); with a = 0.5 it is 0.5 whatever c is; with c = a it
    is a^2 + (1 - a)^2, how often two independent labellers of accuracy a agree with each other. (When both
    find the same pairs hard, their errors are not independent and they agree more often than this.)
    """
    a, c = label_accuracy, model_accuracy
    return a * c + (1 - a) * (1 - c)


def agreement_by_pair(rows, model_prefers_chosen, simulated, gold_fn, agreement_fn=None) -> dict:
    """`agreement_with_labels` applied pair by pair, where each pair has its own difficulty.

    For each prompt/chosen/rejected row whose two gold rewards differ, p = the chance that `simulated` (an object
    with `.prob_a(prompt, response_a, response_b)`) orders the pair like `gold_fn`, and m = 1 when the model
    (`model_prefers_chosen[i]`: True when it scores the row's chosen response higher) orders it like the gold
    reward, else 0. Rows whose gold rewards tie have p = 1/2. Returns the means over all rows of
        "model_vs_labels"       agreement_fn(p, m): how often the model is expected to agree with labels drawn by
                                `simulated` (the expectation over the labeller's noise, given the model's choices)
        "labeller_vs_labeller"  agreement_fn(p, p): how often two such labellers are expected to agree
    and "n". `agreement_fn` defaults to `agreement_with_labels`. Unlike one formula on the average accuracies,
    this counts that the pairs a labeller finds hard (small gold differences) are often the ones a model gets
    wrong too.
    """
    agreement_fn = agreement_fn or agreement_with_labels
    model, labellers = [], []
    for row, prefers_chosen in zip(rows, model_prefers_chosen):
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        gold_chosen, gold_rejected = gold_fn(prompt, chosen), gold_fn(prompt, rejected)
        if gold_chosen == gold_rejected:
            p, m = 0.5, 1.0
        else:
            better, worse = (chosen, rejected) if gold_chosen > gold_rejected else (rejected, chosen)
            p = simulated.prob_a(prompt, better, worse)
            m = 1.0 if bool(prefers_chosen) == (gold_chosen > gold_rejected) else 0.0
        model.append(float(agreement_fn(p, m)))
        labellers.append(float(agreement_fn(p, p)))
    return {"model_vs_labels": _mean(model), "labeller_vs_labeller": _mean(labellers), "n": len(model)}


def labeller_vs_labeller(rows, labeller_a, labeller_b) -> tuple[float, int]:
    """(rate, n): two labellers (objects with `.prefer(prompt, response_a, response_b) -> "A" or "B"`, e.g. two
    `SimulatedAnnotator`s with different seeds) each label every row's pair, shown as A = chosen, B = rejected;
    rate is the share of rows on which they made the same choice (nan when `rows` is empty).
    `rows` are prompt/chosen/rejected dicts."""
    same = [labeller_a.prefer(r["prompt"], r["chosen"], r["rejected"])
            == labeller_b.prefer(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    return _mean(same), len(same)


def majority_vote(decisions) -> dict[str, str]:
    """pair_id -> the label most annotators gave ("A", "B" or "tie"); "tie" too when the most votes are shared
    by several labels. Each annotator votes once (their latest decision); skips do not vote, and a pair with
    only skips is left out."""
    votes = {}
    for d in decisions:
        votes.setdefault(d["pair_id"], {})[d["annotator"]] = d["choice"]
    result = {}
    for p, by_annotator in votes.items():
        ranked = Counter(c for c in by_annotator.values() if c != "skip").most_common()
        if ranked:
            result[p] = "tie" if len(ranked) > 1 and ranked[1][1] == ranked[0][1] else ranked[0][0]
    return result


# ------------------------------------------------------------------- against the simulated labeller and the gold
def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def agreement_panel(decisions, annotator: str, simulated, gold_fn) -> dict:
    """How `annotator`'s A/B decisions compare with the simulated labeller and with the gold reward.

        n                         the annotator's A/B decisions
        agree_simulated           share where simulated.prefer(prompt, a, b) drew the same choice (one noisy draw)
        agree_simulated_expected  mean of p if the annotator chose A else 1 - p, p = simulated.prob_a(prompt, a, b):
                                  what that draw gives on average
        agree_gold                share where the annotator chose the response with the higher gold_fn(prompt, .),
                                  over the n_gold pairs whose gold rewards differ
        instructgpt_reference     0.73: how often InstructGPT's labellers agreed with each other, and the
                                  agreement with the gold ordering the simulated labeller is calibrated to

    Rates are nan when there is nothing to compare.
    """
    mine = {d["pair_id"]: d for d in decisions if d["annotator"] == annotator}
    sim, expected, gold = [], [], []
    for d in mine.values():
        if d["choice"] not in ("A", "B"):
            continue
        prompt, a, b = d["prompt"], d["response_a"], d["response_b"]
        sim.append(simulated.prefer(prompt, a, b) == d["choice"])
        p = simulated.prob_a(prompt, a, b)
        expected.append(p if d["choice"] == "A" else 1.0 - p)
        gold_a, gold_b = gold_fn(prompt, a), gold_fn(prompt, b)
        if gold_a != gold_b:
            gold.append(("A" if gold_a > gold_b else "B") == d["choice"])
    return {"n": len(sim), "agree_simulated": _mean(sim), "agree_simulated_expected": _mean(expected),
            "agree_gold": _mean(gold), "n_gold": len(gold), "instructgpt_reference": INSTRUCTGPT_AGREEMENT}


def gold_agreement(choices: dict[str, str], pairs, gold_fn) -> tuple[float, int]:
    """(rate, n): over the pairs in `choices` (pair_id -> "A"/"B"/...) labelled A or B whose gold rewards differ,
    the share where the label picks the response with the higher `gold_fn(prompt, response)`; nan when n is 0.
    `pairs` holds the texts: [{"pair_id", "prompt", "response_a", "response_b"}]."""
    by_id = {p["pair_id"]: p for p in pairs}
    hits = []
    for pid, choice in choices.items():
        if choice not in ("A", "B") or pid not in by_id:
            continue
        p = by_id[pid]
        gold_a, gold_b = gold_fn(p["prompt"], p["response_a"]), gold_fn(p["prompt"], p["response_b"])
        if gold_a != gold_b:
            hits.append(("A" if gold_a > gold_b else "B") == choice)
    return _mean(hits), len(hits)
