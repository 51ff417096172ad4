"""Lab 03: the reward model's exercises, `bradley_terry_loss` and `rewards_at_last_token`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import losses
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
