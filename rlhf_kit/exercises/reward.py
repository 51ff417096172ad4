"""Lab 03: the reward model's exercises, `bradley_terry_loss`, `rewards_at_last_token`, `agreement_with_labels`
(what noisy labels do to a measured accuracy) and `swap_sentiment` (the request behind the swap probe)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import agreement, losses
from .checking import Case, Exercise, Mistake, close, left_mask, randn, right_mask


# ------------------------------------------------------------------------------------------------ bradley_terry_loss
def _bt_case(r_chosen, r_rejected, what, expected=None) -> Case:
    return Case({"r_chosen": torch.tensor(r_chosen), "r_rejected": torch.tensor(r_rejected)}, what,
                expected=None if expected is None else torch.tensor(expected))


def _bt_random_case(batch, seed, with_margin, what) -> Case:
    g = torch.Generator().manual_seed(seed)
    kwargs = {"r_chosen": randn(g, batch, scale=2.0), "r_rejected": randn(g, batch, scale=2.0)}
    if with_margin:
        kwargs["margin"] = 0.5 + 1.5 * torch.rand(batch, generator=g)
    return Case(kwargs, what)


def _bt_delta(r_chosen, r_rejected, margin=None):
    return r_chosen - r_rejected - (0 if margin is None else margin)


def _huge_margin(case: Case, got) -> bool:
    """A case with some delta below -100, where log(sigmoid(delta)) underflows in float32: there any wrong
    answer, whatever its spelling, is the instability."""
    return bool(_bt_delta(**case.kwargs).min() < -100)


def _bt_gradient(fn) -> str | None:
    """dL/dr_chosen = (sigmoid(delta) - 1) / batch and dL/dr_rejected = -dL/dr_chosen."""
    g = torch.Generator().manual_seed(7)
    r_chosen = randn(g, 6, scale=2.0).requires_grad_()
    r_rejected = randn(g, 6, scale=2.0).requires_grad_()
    loss = fn(r_chosen=r_chosen, r_rejected=r_rejected)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return ("its loss carries no gradient, so the reward model would not learn: build it from r_chosen and "
                "r_rejected with torch operations (no .item(), .detach() or torch.tensor(...) on the way).")
    grads = torch.autograd.grad(loss, [r_chosen, r_rejected], allow_unused=True)
    want = (torch.sigmoid(r_chosen - r_rejected) - 1).detach() / 6
    if any(grad is None for grad in grads) or not (close(want, grads[0], 1e-5) and close(-want, grads[1], 1e-5)):
        return ("its gradient is wrong: dL/dr_chosen should be (sigmoid(delta) - 1) / batch, which is negative "
                "(gradient descent pushes r_chosen up), and dL/dr_rejected its opposite (pushing r_rejected "
                "down). Did you .detach() one of the rewards?")
    return None


_BT_MISTAKES = [
    Mistake(
        "Numerically unstable at large margins: use F.logsigmoid. torch.log(torch.sigmoid(x)) underflows to "
        "log(0) = -inf once x is below about -100 in float32 (and log(1 + exp(-x)) overflows), while "
        "F.logsigmoid(x) stays finite (about x).",
        lambda r_chosen, r_rejected, margin=None: -torch.log(
            torch.sigmoid(_bt_delta(r_chosen, r_rejected, margin))).mean(),
        detect=_huge_margin,
    ),
    Mistake(
        "Flipped sign: the chosen response should score higher, so the loss is -log sigmoid(r_chosen - "
        "r_rejected); yours uses r_rejected - r_chosen and would teach the reward model to prefer the rejected one.",
        lambda r_chosen, r_rejected, margin=None: -F.logsigmoid(-_bt_delta(r_chosen, r_rejected, margin)).mean(),
    ),
    Mistake(
        "You returned the log-likelihood: the loss is its negative, -log sigmoid(delta). Minimising "
        "+log sigmoid(delta) would push the chosen reward down.",
        lambda r_chosen, r_rejected, margin=None: F.logsigmoid(_bt_delta(r_chosen, r_rejected, margin)).mean(),
    ),
    Mistake(
        "You summed over pairs: average with .mean(), so the loss (and the learning rate that suits it) does not "
        "grow with the batch size.",
        lambda r_chosen, r_rejected, margin=None: -F.logsigmoid(_bt_delta(r_chosen, r_rejected, margin)).sum(),
    ),
    Mistake(
        "The margin is ignored: when a margin is given, the chosen reward must beat the rejected one by at least "
        "that much, delta = r_chosen - r_rejected - margin.",
        lambda r_chosen, r_rejected, margin=None: -F.logsigmoid(r_chosen - r_rejected).mean(),
    ),
    Mistake(
        "The margin has the wrong sign: subtract it, delta = r_chosen - r_rejected - margin, so the loss stays "
        "high until r_chosen exceeds r_rejected by the margin (adding it makes the pair easier, not harder).",
        lambda r_chosen, r_rejected, margin=None: -F.logsigmoid(
            r_chosen - r_rejected + (0 if margin is None else margin)).mean(),
    ),
]

_BT_CASES = [
    # Worked example: delta = -0.5 -> P = sigmoid(-0.5) = 0.3775, loss = -log(0.3775) = 0.9741 (exactly log(1 + e^0.5)).
    _bt_case([1.0], [1.5], what="worked example: delta = -0.5, loss 0.9741", expected=math.log1p(math.exp(0.5))),
    _bt_random_case(6, seed=0, with_margin=False, what="6 random pairs, no margin"),
    _bt_random_case(5, seed=1, with_margin=True, what="5 random pairs with margins between 0.5 and 2"),
    _bt_case([-100.0, 0.3, 2.0, -1.0], [100.0, -0.2, 1.0, 0.5],
             what="4 pairs, one with delta = -200: the loss must be finite, about 200 / 4"),
]

BRADLEY_TERRY_LOSS = Exercise(
    reference=losses.bradley_terry_loss,
    cases=_BT_CASES,
    mistakes=_BT_MISTAKES,
    scalar=True,
    properties=[_bt_gradient],
)


# ------------------------------------------------------------------------------------------------ rewards_at_last_token
def _last_token_case(lengths, seq_len, left, seed, what) -> Case:
    g = torch.Generator().manual_seed(seed)
    mask = (left_mask if left else right_mask)(lengths, seq_len)
    return Case({"values": randn(g, len(lengths), seq_len), "attention_mask": mask}, what)


def _values_at(values, index):
    return values.gather(1, index.long().unsqueeze(1)).squeeze(1)


_LAST_TOKEN_MISTAKES = [
    Mistake(
        "You read position -1, which is padding in every right-padded row shorter than the batch: the reward "
        "lives at the last real token, the last 1 in attention_mask.",
        lambda values, attention_mask: values[:, -1],
    ),
    Mistake(
        "Off by one, one past the end: attention_mask.sum(1) is the length, so it indexes the first pad token; "
        "the last real token is at length - 1.",
        lambda values, attention_mask: _values_at(values, attention_mask.sum(1)),
    ),
    Mistake(
        "Off by one, one before the end: the last real token is at attention_mask.sum(1) - 1 (for right padding), "
        "not - 2; that final token (the eos) is the one that has read the whole response.",
        lambda values, attention_mask: _values_at(values, attention_mask.sum(1) - 2),
    ),
    Mistake(
        "You read the first token: in a causal model it has seen nothing of the response. Read the last real "
        "token, which has attended to the whole sequence.",
        lambda values, attention_mask: values[:, 0],
    ),
    Mistake(
        "Right for right padding, wrong for left padding: there the last real token is at position -1 and "
        "attention_mask.sum(1) - 1 points into the middle. Take the index of the last 1 in the mask, e.g. "
        "(attention_mask * torch.arange(seq_len)).argmax(1), which works for both.",
        lambda values, attention_mask: _values_at(values, attention_mask.sum(1) - 1),
    ),
]

_LAST_TOKEN_CASES = [
    _last_token_case([3, 5, 2, 6], 7, left=False, seed=0, what="right padding, lengths 3, 5, 2, 6 of 7"),
    _last_token_case([7, 1, 4], 7, left=False, seed=1, what="right padding, a full row and a one-token row"),
    _last_token_case([3, 7, 5, 1], 7, left=True, seed=2, what="LEFT padding, lengths 3, 7, 5, 1 of 7"),
]

REWARDS_AT_LAST_TOKEN = Exercise(
    reference=losses.rewards_at_last_token,
    cases=_LAST_TOKEN_CASES,
    mistakes=_LAST_TOKEN_MISTAKES,
)


# ------------------------------------------------------------------------------------------------ agreement_with_labels
def _accuracy_case(a, c, what, expected=None) -> Case:
    return Case({"label_accuracy": a, "model_accuracy": c}, what, expected=expected)


_AGREEMENT_MISTAKES = [
    Mistake("You counted only the pairs where both are right (a * c): when both are wrong on a comparison they "
            "both picked the other response, so they agree there too: add (1 - a) * (1 - c).",
            lambda label_accuracy, model_accuracy: label_accuracy * model_accuracy),
    Mistake("When both are wrong they do not agree only half the time: a comparison has just two answers, so two "
            "wrong answers are the same answer. The term is (1 - a) * (1 - c), not half of it.",
            lambda label_accuracy, model_accuracy: (label_accuracy * model_accuracy
                                                    + (1 - label_accuracy) * (1 - model_accuracy) / 2)),
    Mistake("You returned the label accuracy a, the ceiling: only a perfect model (c = 1) reaches it; a model that "
            "is right with probability c < 1 agrees with the labels less often.",
            lambda label_accuracy, model_accuracy: label_accuracy),
    Mistake("The smaller of the two accuracies is not the agreement: two independent judges agree when both are "
            "right (a * c) or both wrong ((1 - a) * (1 - c)).",
            lambda label_accuracy, model_accuracy: min(label_accuracy, model_accuracy)),
]

_AGREEMENT_CASES = [
    _accuracy_case(0.75, 0.725, "labels right 75%, model right 72.5%: 0.75 * 0.725 + 0.25 * 0.275 = 0.6125",
                   expected=0.6125),
    _accuracy_case(1.0, 0.8, "perfect labels: agreement is the model's accuracy"),
    _accuracy_case(0.5, 0.9, "coin-flip labels: anything agrees with them half the time"),
    _accuracy_case(0.73, 0.73, "two labellers, each right 73% of the time"),
    _accuracy_case(0.8, 0.3, "a model worse than chance"),
]


def _same_float(expected, got) -> bool:
    try:
        return not isinstance(got, (str, list, tuple, dict)) and math.isclose(float(got), float(expected),
                                                                              rel_tol=1e-6, abs_tol=1e-6)
    except (TypeError, ValueError):
        return False


def _float_mismatch(expected, got) -> str:
    return f"expected {float(expected):.6f}, got {got!r}"


AGREEMENT_WITH_LABELS = Exercise(
    reference=agreement.agreement_with_labels,
    cases=_AGREEMENT_CASES,
    mistakes=_AGREEMENT_MISTAKES,
    same=_same_float,
    mismatch=_float_mismatch,
)


# ------------------------------------------------------------------------------------------------ swap_sentiment
_SWAP_PROMPTS = [
    ("### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n", "a positive request"),
    ("### Instruction:\nWrite a negative review of a musical about a robot.\n### Response:\n",
     "a negative request"),
    ("Write a negative review of a horror about an astronaut.", "a bare instruction, no template"),
]


def _swap_with(mapping):
    def swap(prompt):
        for old, new in mapping:
            prompt = prompt.replace(old, new)
        return prompt
    return swap


def _not_a_string(case, got) -> bool:
    return not isinstance(got, str)


_SWAP_MISTAKES = [
    Mistake("The answer must be the new prompt, a str.", detect=_not_a_string),
    Mistake("A positive request came back still asking for a positive review. If you wrote two replaces in a row, "
            "the second undoes the first: .replace('positive', 'negative') makes every prompt say 'negative', then "
            ".replace('negative', 'positive') makes every one say 'positive'. Decide the new word first (one "
            "if/else on the prompt's sentiment), then replace once.",
            _swap_with([("positive", "negative"), ("negative", "positive")])),
    Mistake("A negative request came back still asking for a negative review. If you wrote two replaces in a row, "
            "the second undoes the first: .replace('negative', 'positive') makes every prompt say 'positive', then "
            ".replace('positive', 'negative') makes every one say 'negative'. Decide the new word first (one "
            "if/else on the prompt's sentiment), then replace once.",
            _swap_with([("negative", "positive"), ("positive", "negative")])),
]


def swap_sentiment(prompt):
    """`rlhf_kit.reward.swap_sentiment`, imported when first called (that module loads transformers)."""
    from .. import reward as reward_stage

    return reward_stage.swap_sentiment(prompt)


def _template_kept(case, got) -> bool:
    return isinstance(got, str) and case.kwargs["prompt"].startswith("###") and not got.startswith("###")


_SWAP_MISTAKES.append(Mistake("The template was lost: keep everything around the instruction ('### Instruction:' "
                              "... '### Response:'), since the reward model only ever read prompts in it; change "
                              "only the sentiment word.", detect=_template_kept))

SWAP_SENTIMENT = Exercise(
    reference=swap_sentiment,
    cases=[Case({"prompt": p}, what) for p, what in _SWAP_PROMPTS],
    mistakes=_SWAP_MISTAKES,
    same=lambda expected, got: isinstance(got, str) and got == expected,
    mismatch=lambda expected, got: f"expected {expected!r}, got {got!r}",
)
