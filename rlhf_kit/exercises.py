"""Exercise checkers: run a learner's function on test vectors, compare with the reference, name the mistake.

    ok, message = verify("sft_loss", my_sft_loss)      # quiet: for tests and tools
    sft_loss = check("sft_loss", my_sft_loss)          # notebook-facing: prints the verdict, returns a function

`check` returns the learner's function when it passes and the reference implementation otherwise, saying so,
so the rest of the lab still runs. When the answer is wrong the message names the likely mistake: each
exercise carries a catalogue of typical wrong implementations, and the learner's output is matched against
them on the same inputs.

Every call gets its own deep copy of the test vector, so no function sees what another changed; a function that
changes one of its inputs in place fails, naming the argument; each call of the learner's function may take
`TIME_LIMIT` seconds, so an endless loop gets a message instead of a hung notebook.

Exercises: sft_loss, bradley_terry_loss, rewards_at_last_token, kl_penalized_rewards, gae, ppo_policy_loss,
value_loss (references in `rlhf_kit.losses`). A test vector may carry a fixed expected value from a worked
example (`_expected`); a function may return a tuple (`outputs`), of which one part is compared (`compare`) and
the rest checked separately (`extra`, e.g. PPO's stats); property checks (`properties`: a gradient, the
ValueErrors for bad arguments) run once every test vector passes.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from . import losses, preferences


@dataclass
class Mistake:
    hint: str                       # what the learner is told
    impl: Callable | None = None    # a model of the wrong implementation, same signature as the reference
    # Or/and a rule: detect(case, got) -> True when the learner's (wrong) output on this case shows the mistake,
    # for mistakes with many spellings (e.g. any mismatch on a huge-margin case is an instability).
    detect: Callable[[dict, object], bool] | None = None


@dataclass
class Exercise:
    reference: Callable
    cases: list[Callable[[], dict]]  # each returns keyword arguments for one test vector, with "_what" describing it,
    #                                  and optionally "_expected": a fixed value (e.g. from a worked example) that
    #                                  the compared output must equal, instead of the reference's
    mistakes: list[Mistake] = field(default_factory=list)
    scalar: bool = False             # the (compared) output must be a 0-dim tensor
    atol: float = 1e-5
    outputs: tuple[str, ...] = ()    # names of the parts when the function returns a tuple, e.g. ("loss", "stats")
    compare: Callable | None = None  # picks the part of the output compared with the reference (default: all)
    # extra(got, expected) -> None or what is wrong with the rest of the output, checked once the compared part
    # matches (e.g. the stats dict next to PPO's loss); `expected` is the reference's full output.
    extra: Callable[[object, object], str | None] | None = None
    # property checks run after every case passes: check(fn) -> None or what is wrong (a gradient, an error)
    properties: list[Callable[[Callable], str | None]] = field(default_factory=list)
    # same(expected, got) -> bool for exercises whose output is not tensors (default: allclose on tensors)
    same: Callable[[object, object], bool] | None = None


def _close(a, b, atol: float) -> bool:
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_close(x, y, atol) for x, y in zip(a, b))
    if not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    return bool(torch.allclose(a.double(), b.detach().double(), atol=atol, rtol=1e-4, equal_nan=False))


def _inputs(case: dict) -> dict:
    """A fresh deep copy of the case's arguments (its keys without a leading "_"): every call, the learner's,
    the reference's and each mistake model's, gets its own, so none of them sees what another changed."""
    return copy.deepcopy({k: v for k, v in case.items() if not k.startswith("_")})


# ------------------------------------------------------------------------------------------------ sft_loss
def _sft_case(batch, seq_len, vocab, prompt_lens, response_lens, seed):
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(batch, seq_len, vocab, generator=g) * 2.0
        input_ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
        mask = torch.zeros(batch, seq_len, dtype=torch.long)
        for row, (p, r) in enumerate(zip(prompt_lens, response_lens)):
            mask[row, p : p + r] = 1
            input_ids[row, p + r:] = vocab - 1          # padding
        return {"logits": logits, "input_ids": input_ids, "response_mask": mask,
                "_what": f"batch={batch}, prompt lengths {prompt_lens}, response lengths {response_lens}"}
    return make


def _sft_token_nll(logits, input_ids):
    logprobs = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return -logprobs


_SFT_MISTAKES = [
    Mistake(
        "Did you shift? The logits at position t-1 predict token t: compare logits[:, :-1] with "
        "input_ids[:, 1:] (and use response_mask[:, 1:]).",
        lambda logits, input_ids, response_mask: (
            -(torch.log_softmax(logits.float(), -1).gather(-1, input_ids[..., None]).squeeze(-1)
              * response_mask).sum() / response_mask.sum()),
    ),
    Mistake(
        "The loss includes prompt and padding tokens: multiply the token losses by the response mask, so only "
        "the response (and its eos) is learned.",
        lambda logits, input_ids, response_mask: _sft_token_nll(logits, input_ids).mean(),
    ),
    Mistake(
        "The mask is not shifted with the targets: the targets are input_ids[:, 1:], so the mask that says which "
        "targets are response tokens is response_mask[:, 1:], not response_mask[:, :-1].",
        lambda logits, input_ids, response_mask: (
            (_sft_token_nll(logits, input_ids) * response_mask[:, :-1]).sum() / response_mask[:, :-1].sum()),
    ),
    Mistake(
        "You summed the masked token losses: divide by the number of response tokens (mask.sum()) to get the mean.",
        lambda logits, input_ids, response_mask: (_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum(),
    ),
    Mistake(
        "You divided by every position instead of by the number of response tokens: use mask.sum() as the "
        "denominator, not mask.numel().",
        lambda logits, input_ids, response_mask: (
            (_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum() / response_mask[:, 1:].numel()),
    ),
    Mistake(
        "You averaged within each sequence and then over the batch. This lab's convention is one mean over all "
        "response tokens in the batch: (nll * mask).sum() / mask.sum().",
        lambda logits, input_ids, response_mask: (
            ((_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum(1)
             / response_mask[:, 1:].sum(1)).mean()),
    ),
    Mistake(
        "Wrong sign: the loss is the negative log-likelihood. Minimising +log p would push the right tokens down.",
        lambda logits, input_ids, response_mask: -losses.sft_loss(logits, input_ids, response_mask),
    ),
]


# ------------------------------------------------------------------------------------------------ shared helpers
def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def _right_mask(lengths, seq_len):
    """(batch, seq_len) 0/1 mask, 1 on the first `lengths[b]` positions of each row (right padding)."""
    return (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()


def _left_mask(lengths, seq_len):
    """(batch, seq_len) 0/1 mask, 1 on the last `lengths[b]` positions of each row (left padding)."""
    return (torch.arange(seq_len)[None, :] >= seq_len - torch.tensor(lengths)[:, None]).long()


def _last(mask):
    return (mask.long() * torch.arange(mask.shape[1])).argmax(1)


def _mmean(x, mask):
    return (x * mask).sum() / mask.sum()


def _raises_value_error(fn, kwargs: dict, what: str, why: str) -> str | None:
    """A property check: `fn(**kwargs)` must raise ValueError."""
    try:
        fn(**kwargs)
    except ValueError:
        return None
    except NotImplementedError:
        return f"it does not reject {what}: raise ValueError ({why})."
    except Exception as error:  # noqa: BLE001
        return f"for {what} it raised {type(error).__name__} ({error}); raise ValueError instead ({why})."
    return f"it does not reject {what}: raise ValueError ({why})."


# ------------------------------------------------------------------------------------------------ bradley_terry_loss
def _bt_case(r_chosen, r_rejected, what, expected=None, large=False):
    def make() -> dict:
        case = {"r_chosen": torch.tensor(r_chosen), "r_rejected": torch.tensor(r_rejected), "_what": what}
        if expected is not None:
            case["_expected"] = torch.tensor(expected)
        if large:
            case["_large_margin"] = True
        return case
    return make


def _bt_random_case(batch, seed, with_margin, what):
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        case = {"r_chosen": _randn(g, batch, scale=2.0), "r_rejected": _randn(g, batch, scale=2.0), "_what": what}
        if with_margin:
            case["margin"] = 0.5 + 1.5 * torch.rand(batch, generator=g)
        return case
    return make


def _bt_delta(r_chosen, r_rejected, margin):
    return r_chosen - r_rejected - (0 if margin is None else margin)


def _bt_gradient(fn) -> str | None:
    """dL/dr_chosen = (sigmoid(delta) - 1) / batch and dL/dr_rejected = -dL/dr_chosen."""
    g = torch.Generator().manual_seed(7)
    r_chosen = _randn(g, 6, scale=2.0).requires_grad_()
    r_rejected = _randn(g, 6, scale=2.0).requires_grad_()
    loss = fn(r_chosen=r_chosen, r_rejected=r_rejected)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return ("its loss carries no gradient, so the reward model would not learn: build it from r_chosen and "
                "r_rejected with torch operations (no .item(), .detach() or torch.tensor(...) on the way).")
    grads = torch.autograd.grad(loss, [r_chosen, r_rejected], allow_unused=True)
    want = (torch.sigmoid(r_chosen - r_rejected) - 1).detach() / 6
    if any(grad is None for grad in grads) or not (_close(want, grads[0], 1e-5) and _close(-want, grads[1], 1e-5)):
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
        detect=lambda case, got: case.get("_large_margin", False),
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
    _bt_case([-100.0, 0.3, 2.0, -1.0], [100.0, -0.2, 1.0, 0.5], large=True,
             what="4 pairs, one with delta = -200: the loss must be finite, about 200 / 4"),
]


# ------------------------------------------------------------------------------------------------ rewards_at_last_token
def _last_token_case(lengths, seq_len, left, seed, what):
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = (_left_mask if left else _right_mask)(lengths, seq_len)
        return {"values": _randn(g, len(lengths), seq_len), "attention_mask": mask, "_what": what}
    return make


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


# ------------------------------------------------------------------------------------------------ kl_penalized_rewards
def _kl_case(lengths, response_len, beta, estimator, seed):
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        batch = len(lengths)
        logprobs = -(0.1 + 3 * torch.rand(batch, response_len, generator=g))
        case = {"scores": _randn(g, batch, scale=2.0), "logprobs": logprobs,
                "ref_logprobs": logprobs + _randn(g, batch, response_len, scale=0.5),
                "mask": _right_mask(lengths, response_len), "beta": beta,
                "_what": f"{estimator or 'default (k1)'} estimator, beta={beta}, response lengths {lengths}"}
        if estimator is not None:
            case["estimator"] = estimator
        return case
    return make


def _kl_est(logprobs, ref_logprobs, estimator):
    if estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        return log_ratio.exp() - 1 - log_ratio
    return logprobs - ref_logprobs


def _at_last(scores, mask):
    return torch.zeros(mask.shape).scatter(1, _last(mask)[:, None], scores[:, None].float())


def _kl_mistake(kl=_kl_est, score="last", beta_used=True, masked=True):
    """A wrong kl_penalized_rewards, built from the reference recipe with one ingredient changed."""
    def impl(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
        rewards = -(beta if beta_used else 1.0) * kl(logprobs, ref_logprobs, estimator)
        if score == "every":
            rewards = rewards + scores[:, None]
        elif score == "last":
            rewards = rewards + _at_last(scores, mask)
        if score == "-1 before mask":
            rewards = rewards.clone()
            rewards[:, -1] += scores
        if masked:
            rewards = rewards * mask
        if score == "-1 after mask":
            rewards = rewards.clone()
            rewards[:, -1] += scores
        return rewards
    return impl


_SCORE_AT_MINUS_ONE = (
    "The score went to position -1, which is padding for every response shorter than the batch: add scores[b] "
    "at the last real response token of row b, the last 1 in mask.")

_KL_MISTAKES = [
    Mistake("The score was added to every token: the reward model scores the whole response once, so add scores[b] "
            "only at the last response token (the last 1 in mask), and give the other tokens only -beta * kl_t.",
            _kl_mistake(score="every")),
    Mistake(_SCORE_AT_MINUS_ONE, _kl_mistake(score="-1 after mask")),
    Mistake(_SCORE_AT_MINUS_ONE, _kl_mistake(score="-1 before mask")),
    Mistake("The KL penalty is not scaled: did you multiply by the KL coefficient beta? Each token gets "
            "-beta * kl_t.", _kl_mistake(beta_used=False)),
    Mistake("The KL sign is flipped: k1 is kl_t = logprobs - ref_logprobs (log pi / pi_ref), and the reward is "
            "-beta * kl_t, so tokens the policy now likes more than the reference did are penalised.",
            _kl_mistake(kl=lambda logprobs, ref_logprobs, estimator: ref_logprobs - logprobs)),
    Mistake("Padding positions got rewards: multiply by mask, so positions after the response get no KL penalty "
            "and no score (they are not actions the policy took).", _kl_mistake(masked=False)),
    Mistake("estimator='k3' was ignored: k3 is kl_t = (exp(logp_ref - logp) - 1) - (logp_ref - logp), which is "
            "never negative, unlike k1 = logp - logp_ref.",
            _kl_mistake(kl=lambda logprobs, ref_logprobs, estimator: logprobs - ref_logprobs)),
    Mistake("k3 is built from the ratio pi_ref / pi: with log_ratio = ref_logprobs - logprobs, "
            "kl_t = (exp(log_ratio) - 1) - log_ratio. Yours uses pi / pi_ref, which estimates the other KL.",
            _kl_mistake(kl=lambda logprobs, ref_logprobs, estimator: (
                (logprobs - ref_logprobs).exp() - 1 - (logprobs - ref_logprobs)) if estimator == "k3"
                else logprobs - ref_logprobs)),
]


def _kl_small_kwargs(**changes) -> dict:
    kwargs = {"scores": torch.tensor([1.0]), "logprobs": torch.tensor([[-1.0, -2.0]]),
              "ref_logprobs": torch.tensor([[-1.5, -1.0]]), "mask": torch.tensor([[1, 1]]), "beta": 0.1}
    kwargs.update(changes)
    return kwargs


_KL_PROPERTIES = [
    lambda fn: _raises_value_error(fn, _kl_small_kwargs(beta=-0.1), "beta = -0.1",
                                   "beta must be >= 0: a negative coefficient would reward drifting from the reference"),
    lambda fn: _raises_value_error(fn, _kl_small_kwargs(estimator="k2"), "estimator='k2'",
                                   "only 'k1' and 'k3' are known"),
]

_KL_CASES = [
    _kl_case([6, 4, 2], 6, beta=0.1, estimator=None, seed=0),
    _kl_case([2, 5, 3], 5, beta=0.05, estimator="k3", seed=1),
    _kl_case([1, 3], 4, beta=0.2, estimator="k1", seed=2),
]


# ------------------------------------------------------------------------------------------------ gae
def _gae_case(lengths, T, seed, **params):
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = _right_mask(lengths, T)
        case = {"rewards": _randn(g, len(lengths), T) * mask, "values": _randn(g, len(lengths), T),
                "mask": mask, "_what": f"response lengths {lengths} of {T}"
                + (f", {', '.join(f'{k}={v}' for k, v in params.items())}" if params else ", default gamma and lam")}
        case.update(params)
        return case
    return make


def _gae_model(rewards, values, mask, gamma, lam, *, bootstrap_past_end=False, forward=False, mask_inside=True,
               mask_outputs=True, returns_are_advantages=False, mask_returns=True):
    """GAE with one ingredient changed, for the mistake catalogue."""
    mask = mask.float()
    v = values * mask if mask_inside and not bootstrap_past_end else values
    vnext = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1)
    deltas = rewards + gamma * vnext - (values * mask if mask_inside else values)
    step_mask = mask if mask_inside else torch.ones_like(mask)
    adv = torch.zeros_like(values)
    carry = torch.zeros_like(values[:, 0])
    order = range(values.shape[1]) if forward else reversed(range(values.shape[1]))
    for t in order:
        carry = step_mask[:, t] * (deltas[:, t] + gamma * lam * carry)
        adv[:, t] = carry
    if mask_outputs:
        adv = adv * mask
    returns = adv if returns_are_advantages else adv + values
    if mask_outputs and mask_returns:
        returns = returns * mask
    return adv, returns


def _gae_mistake(**change):
    return lambda rewards, values, mask, gamma=1.0, lam=0.95: _gae_model(rewards, values, mask, gamma, lam, **change)


_GAE_MASK_IGNORED = (
    "The mask was ignored: padding must not feed the recursion (V and A are 0 after the last real token) and "
    "both outputs must be 0 where mask is 0.")

_GAE_MISTAKES = [
    Mistake("You bootstrapped from the value after the end: past the last real token there is no next state, so "
            "V_{t+1} there counts as 0 and the last token's delta is r_t - V_t (values on padding are arbitrary).",
            _gae_mistake(bootstrap_past_end=True)),
    Mistake("Forward recursion: A_t depends on the future, A_t = delta_t + gamma * lam * A_{t+1}, so compute it "
            "backwards, for t from T-1 down to 0.", _gae_mistake(forward=True)),
    Mistake("The recursion is missing lam: A_t = delta_t + gamma * lam * A_{t+1}; without lam you get the "
            "lam = 1 (Monte-Carlo, high-variance) advantage.",
            lambda rewards, values, mask, gamma=1.0, lam=0.95: _gae_model(rewards, values, mask, gamma, 1.0)),
    Mistake("returns should be advantages + values (the value head's regression target), not the advantages alone.",
            _gae_mistake(returns_are_advantages=True)),
    Mistake(_GAE_MASK_IGNORED, _gae_mistake(mask_inside=False, mask_outputs=False)),
    Mistake(_GAE_MASK_IGNORED, _gae_mistake(mask_inside=False, mask_outputs=True)),
    Mistake("returns are not zero on padding: use (advantages + values) * mask, since values on padding are "
            "arbitrary.", _gae_mistake(mask_returns=False)),
]

_GAE_CASES = [
    _gae_case([5, 3, 2], 5, seed=0),
    _gae_case([4, 6], 6, seed=1, gamma=0.99, lam=0.9),
    _gae_case([1, 4, 2], 4, seed=2, gamma=1.0, lam=0.5),
]


# ------------------------------------------------------------------------------------------------ ppo_policy_loss
def _ppo_worked_case(p_new, p_old, advantage, expected, what):
    def make() -> dict:
        return {"logprobs": torch.tensor([[p_new]]).log(), "old_logprobs": torch.tensor([[p_old]]).log(),
                "advantages": torch.tensor([[advantage]]), "mask": torch.tensor([[1]]), "clip_eps": 0.2,
                "_expected": torch.tensor(expected), "_what": what}
    return make


def _ppo_random_case(lengths, T, clip_eps, seed):
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        batch = len(lengths)
        old = -(0.1 + 3 * torch.rand(batch, T, generator=g))
        return {"logprobs": old + _randn(g, batch, T, scale=0.3), "old_logprobs": old,
                "advantages": _randn(g, batch, T), "mask": _right_mask(lengths, T), "clip_eps": clip_eps,
                "_what": f"response lengths {lengths} of {T}, clip_eps={clip_eps}"}
    return make


def _ppo_mistake(ratio_fn=lambda new, old: (new - old).exp(), combine=torch.min, clip_advantage=False,
                 reduce=_mmean, sign=-1.0):
    def impl(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
        ratio = ratio_fn(logprobs, old_logprobs)
        if clip_advantage:
            clipped = ratio * advantages.clamp(1 - clip_eps, 1 + clip_eps)
        else:
            clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
        loss = sign * reduce(combine(ratio * advantages, clipped), mask)
        # the stats are right: these models are about the loss
        return loss, losses.ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps)[1]
    return impl


_PPO_MAX_HINT = (
    "PPO takes the min of the unclipped and clipped terms, never the max, whatever the sign of the advantage. "
    "The min is pessimistic: clipping only removes the incentive to push the ratio further in the direction the "
    "advantage favours, and it never rescues a ratio that moved the wrong way. With a negative advantage and "
    "ratio > 1 + eps the unclipped, more negative term wins: ratio 1.3, A = -3, eps 0.2 gives "
    "min(-3.9, -3.6) = -3.9 (loss 3.9), not -3.6.")


def _where_max_if_negative(unclipped, clipped):
    # The "max for negative advantages" rule: min when A >= 0, max when A < 0. Since clipped and unclipped share
    # A's sign, taking the max exactly where both terms are negative reproduces it.
    return torch.where((unclipped < 0) | (clipped < 0), torch.max(unclipped, clipped), torch.min(unclipped, clipped))


_PPO_MISTAKES = [
    Mistake(_PPO_MAX_HINT, _ppo_mistake(combine=torch.max)),
    Mistake(_PPO_MAX_HINT, _ppo_mistake(combine=_where_max_if_negative)),
    Mistake("You clipped the advantage: clip the probability ratio, clip(ratio, 1 - eps, 1 + eps) * A; the "
            "advantage is used as it is.", _ppo_mistake(clip_advantage=True)),
    Mistake("That is a mean over every position, padding included: use the masked mean "
            "sum(objective * mask) / mask.sum().", _ppo_mistake(reduce=lambda x, mask: x.mean())),
    Mistake("That is a mean over every position, padding included: use the masked mean "
            "sum(objective * mask) / mask.sum().", _ppo_mistake(reduce=lambda x, mask: (x * mask).mean())),
    Mistake("ratio = logprobs / old_logprobs divides log-probabilities, which means nothing: the probability ratio "
            "is pi / pi_old = exp(logprobs - old_logprobs).", _ppo_mistake(ratio_fn=lambda new, old: new / old)),
    Mistake("logprobs - old_logprobs is the log of the ratio: exponentiate it, "
            "ratio = exp(logprobs - old_logprobs).", _ppo_mistake(ratio_fn=lambda new, old: new - old)),
    Mistake("You returned the objective: PPO maximises it, so the loss to minimise is its negative, "
            "-masked_mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)).", _ppo_mistake(sign=1.0)),
]

_PPO_STATS_ADVICE = {
    "clip_fraction": "stats['clip_fraction'] should be the masked mean of (|ratio - 1| > clip_eps) as a float: "
                     "the share of response tokens whose ratio left [1 - eps, 1 + eps].",
    "approx_kl": "stats['approx_kl'] should be the masked mean of the k3 estimator (ratio - 1) - log(ratio), "
                 "which is never negative and is 0 when ratio == 1.",
}


def _ppo_stats_problem(got, expected) -> str | None:
    stats = got[1]
    if not isinstance(stats, dict) or not all(key in stats for key in _PPO_STATS_ADVICE):
        return "the loss is right, but stats should be a dict with keys 'clip_fraction' and 'approx_kl'."
    for key, advice in _PPO_STATS_ADVICE.items():
        value = stats[key]
        if isinstance(value, (int, float)):
            value = torch.tensor(float(value))
        if not _close(expected[1][key], value, 1e-5):
            return f"the loss is right, but {advice} Expected {_show(expected[1][key])}, got {_show(value)}."
    return None


def _ppo_small_kwargs(**changes) -> dict:
    kwargs = {"logprobs": torch.tensor([[-1.0, -2.0]]), "old_logprobs": torch.tensor([[-1.1, -1.8]]),
              "advantages": torch.tensor([[1.0, -1.0]]), "mask": torch.tensor([[1, 1]]), "clip_eps": 0.2}
    kwargs.update(changes)
    return kwargs


_PPO_CASES = [
    # Worked examples. Probabilities 0.06 vs 0.02: ratio 3, A = +4 -> min(12, 4.8) = 4.8, loss -4.8.
    _ppo_worked_case(0.06, 0.02, 4.0, -4.8, "worked example: ratio 3, A = +4, eps 0.2 -> objective 4.8"),
    # Probabilities 0.13 vs 0.10: ratio 1.3, A = -3 -> min(-3.9, -3.6) = -3.9, loss 3.9. (A source document
    # claims PPO takes the max here and answers -3.6: that is the mistake the max hint names.)
    _ppo_worked_case(0.13, 0.10, -3.0, 3.9, "worked example: ratio 1.3, A = -3, eps 0.2 -> objective -3.9"),
    _ppo_random_case([6, 4, 2], 6, clip_eps=0.2, seed=0),
    _ppo_random_case([3, 5], 5, clip_eps=0.1, seed=1),
]


# ------------------------------------------------------------------------------------------------ value_loss
def _value_case(lengths, T, clip_eps, seed):
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        batch = len(lengths)
        old = _randn(g, batch, T)
        return {"values": old + _randn(g, batch, T, scale=0.4), "old_values": old,
                "returns": old + _randn(g, batch, T), "mask": _right_mask(lengths, T), "clip_eps": clip_eps,
                "_what": f"response lengths {lengths} of {T}, clip_eps={clip_eps}"}
    return make


def _value_worked_case() -> dict:
    # old 0, new 1, target 1, eps 0.2: unclipped error 0, clipped value 0.2 -> error 0.64; max 0.64; loss 0.32.
    return {"values": torch.tensor([[1.0]]), "old_values": torch.tensor([[0.0]]), "returns": torch.tensor([[1.0]]),
            "mask": torch.tensor([[1]]), "clip_eps": 0.2, "_expected": torch.tensor(0.32),
            "_what": "one token: old value 0, new 1, return 1, eps 0.2 -> 0.5 * max(0, 0.64) = 0.32"}


def _value_mistake(combine=torch.max, clip=True, half=0.5, reduce=_mmean):
    def impl(values, old_values, returns, mask, clip_eps=0.2):
        unclipped = (values - returns) ** 2
        if not clip:
            return half * reduce(unclipped, mask)
        v_clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
        return half * reduce(combine(unclipped, (v_clipped - returns) ** 2), mask)
    return impl


_VALUE_UNMASKED = ("That is a mean over every position, padding included: use the masked mean "
                   "sum(x * mask) / mask.sum().")

_VALUE_MISTAKES = [
    Mistake("You took the min of the two squared errors: the clipped value loss takes the max (pessimistic, like "
            "the policy loss's min), so moving the value more than eps from old_values never lowers the loss.",
            _value_mistake(combine=torch.min)),
    Mistake("The value is not clipped: compare (values - returns)^2 with (v_clipped - returns)^2, where "
            "v_clipped = old_values + clamp(values - old_values, -eps, eps), and take the max.",
            _value_mistake(clip=False)),
    Mistake("Twice the expected value: this course uses 0.5 * squared error (so the gradient is simply "
            "values - returns).", _value_mistake(half=1.0)),
    Mistake(_VALUE_UNMASKED, _value_mistake(reduce=lambda x, mask: x.mean())),
    Mistake(_VALUE_UNMASKED, _value_mistake(reduce=lambda x, mask: (x * mask).mean())),
]

_VALUE_CASES = [
    _value_case([6, 4, 2], 6, clip_eps=0.2, seed=0),
    _value_worked_case,
    _value_case([3, 5], 5, clip_eps=0.5, seed=1),
]


def _value_small_kwargs(**changes) -> dict:
    kwargs = {"values": torch.tensor([[1.0]]), "old_values": torch.tensor([[0.0]]), "returns": torch.tensor([[1.0]]),
              "mask": torch.tensor([[1]]), "clip_eps": 0.2}
    kwargs.update(changes)
    return kwargs


# ---------------------------------------------------------------------------------------- ranking_to_pairs
RANKINGS = [
    ("Write a positive review of a comedy about a dog.", ["Great fun.", "Fine.", "Dull."]),
    ("Write a negative review of a horror film about a robot.", ["Awful.", "Weak.", "Meh.", "Good!"]),
    ("Write a positive review of a drama about a chef.", ["Moving.", "Nice."]),
]


def _ranking_case(prompt, ranked):
    def make() -> dict:
        return {"prompt": prompt, "ranked": list(ranked), "_what": f"a ranking of {len(ranked)} responses"}
    return make


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


EXERCISES: dict[str, Exercise] = {
    "sft_loss": Exercise(
        reference=losses.sft_loss,
        cases=[
            _sft_case(3, 9, 11, prompt_lens=[2, 4, 3], response_lens=[5, 2, 6], seed=0),
            _sft_case(2, 6, 7, prompt_lens=[1, 3], response_lens=[5, 3], seed=1),
            _sft_case(4, 12, 13, prompt_lens=[5, 2, 7, 3], response_lens=[4, 9, 1, 6], seed=2),
        ],
        mistakes=_SFT_MISTAKES,
        scalar=True,
    ),
    "bradley_terry_loss": Exercise(
        reference=losses.bradley_terry_loss,
        cases=_BT_CASES,
        mistakes=_BT_MISTAKES,
        scalar=True,
        properties=[_bt_gradient],
    ),
    "rewards_at_last_token": Exercise(
        reference=losses.rewards_at_last_token,
        cases=_LAST_TOKEN_CASES,
        mistakes=_LAST_TOKEN_MISTAKES,
    ),
    "kl_penalized_rewards": Exercise(
        reference=losses.kl_penalized_rewards,
        cases=_KL_CASES,
        mistakes=_KL_MISTAKES,
        properties=_KL_PROPERTIES,
    ),
    "gae": Exercise(
        reference=losses.gae,
        cases=_GAE_CASES,
        mistakes=_GAE_MISTAKES,
        outputs=("advantages", "returns"),
    ),
    "ppo_policy_loss": Exercise(
        reference=losses.ppo_policy_loss,
        cases=_PPO_CASES,
        mistakes=_PPO_MISTAKES,
        scalar=True,
        outputs=("loss", "stats"),
        compare=lambda output: output[0],
        extra=_ppo_stats_problem,
        properties=[lambda fn: _raises_value_error(fn, _ppo_small_kwargs(clip_eps=0.0), "clip_eps = 0",
                                                   "clip_eps must be > 0")],
    ),
    "ranking_to_pairs": Exercise(
        reference=preferences.ranking_to_pairs,
        cases=[_ranking_case(p, r) for p, r in RANKINGS],
        mistakes=_RANKING_MISTAKES,
        same=_same_pairs,
    ),
    "value_loss": Exercise(
        reference=losses.value_loss,
        cases=_VALUE_CASES,
        mistakes=_VALUE_MISTAKES,
        scalar=True,
        properties=[lambda fn: _raises_value_error(fn, _value_small_kwargs(clip_eps=-0.1), "clip_eps = -0.1",
                                                   "clip_eps must be > 0")],
    ),
}


def _exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"No exercise called {name!r}. Known exercises: {', '.join(EXERCISES)}.")
    return EXERCISES[name]


# ------------------------------------------------------------------------------ in-place changes, time limit
def _same_value(a, b) -> bool:
    """Exactly equal, tensors included (same shape, dtype and values; NaN equals NaN), containers recursively."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        equal = a == b
        if a.is_floating_point() or a.is_complex():
            equal |= a.isnan() & b.isnan()
        return bool(equal.all())
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same_value(x, y) for x, y in zip(a, b)))
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(_same_value(a[k], b[k]) for k in a))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - something that cannot even be compared has changed
        return False


def _changed_input(given: dict, case: dict) -> str | None:
    """The name of the first argument the learner's function changed in place (compared with a fresh copy of
    the case), or None."""
    for name, before in _inputs(case).items():
        if not _same_value(before, given[name]):
            return name
    return None


def _in_place_message(name: str, where: str, arg: str, value) -> str:
    if isinstance(value, torch.Tensor):
        fix = (f"build new tensors instead (x = x * mask, not x *= mask, x.zero_() or x[...] = ...), or start "
               f"from a copy, {arg} = {arg}.clone()")
    else:
        fix = (f"work on a copy instead (sorted({arg}), {arg}[::-1] or list({arg}), not {arg}.sort(), "
               f"{arg}.reverse() or {arg}.pop())")
    return (f"{name} is wrong on {where}: your function changed its input `{arg}` in place; the code that calls "
            f"it still uses `{arg}` afterwards, so that is a bug even when the result is right: {fix}.")


# --------------------------------------------------------------------------------------------- the time limit
TIME_LIMIT = 10.0   # seconds one call of a learner's function may take in `verify` (the test vectors are tiny)


class _TooSlow(BaseException):
    """Raised into a learner's function whose time is up. A BaseException, so that an `except Exception` in
    the learner's loop cannot swallow it (a bare `except:` still can)."""

    def __init__(self, still_running: bool):
        super().__init__("time limit")
        self.still_running = still_running


def _raise_too_slow(signum, frame):
    raise _TooSlow(still_running=False)


def _can_use_alarm() -> bool:
    """SIGALRM is ours to use: POSIX, the main thread, and no one else's timer or handler in place."""
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
            and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None))


def _call(fn: Callable, limit: float, *args, **kwargs):
    """fn(*args, **kwargs), or _TooSlow once it has run `limit` seconds.

    Where `_can_use_alarm` (a notebook kernel or pytest on Linux/macOS), a SIGALRM timer raises _TooSlow inside
    the function, which really stops it (between Python operations: one long torch call finishes first).
    Elsewhere (Windows, a call from another thread, someone else's alarm armed) the function runs in a daemon
    thread that is abandoned after `limit` seconds: Python cannot kill a thread, so an endless loop then keeps
    running in the background until the kernel restarts, and the message says so.
    """
    if _can_use_alarm():
        previous = signal.signal(signal.SIGALRM, _raise_too_slow)
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                return fn(*args, **kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)
    outcome = {}

    def run():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed back to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"rlhf_kit verify {getattr(fn, '__name__', 'fn')}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise _TooSlow(still_running=True)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _too_slow_message(name: str, where: str, limit: float, slow: _TooSlow) -> str:
    after = ("It is still running in the background (Python cannot stop a thread): restart the kernel once "
             "you have fixed it." if slow.still_running else "It was stopped.")
    return (f"{name} took longer than {limit:g} s on {where}, where the reference takes milliseconds: is there "
            f"a loop that never ends (a while whose condition never changes, a loop over a list it appends "
            f"to)? {after}")


def verify(name: str, fn: Callable, time_limit: float = TIME_LIMIT) -> tuple[bool, str]:
    """Check `fn` against the reference of exercise `name` on every test vector. Prints nothing.

    Returns (True, summary) when every case matches, else (False, message naming the likely mistake).
    Each call gets its own deep copy of the inputs (the reference and each mistake model theirs); a function
    that changes an input in place fails, naming the argument, even when its result is right. Each call of
    `fn` may take `time_limit` seconds (see `_call` for how it is stopped).
    """
    exercise = _exercise(name)
    if not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    for number, make_case in enumerate(exercise.cases, start=1):
        case = make_case()
        where = f"test case {number} ({case['_what']})"
        given = _inputs(case)
        try:
            got = _call(fn, time_limit, **given)
        except NotImplementedError:
            return False, f"{name} is not implemented yet."
        except _TooSlow as slow:
            return False, _too_slow_message(name, where, time_limit, slow)
        except Exception as error:  # the learner's code may fail in any way; report it, do not crash the lab
            return False, f"{name} raised {type(error).__name__}: {error} on {where}."
        changed = _changed_input(given, case)
        if changed:
            return False, _in_place_message(name, where, changed, given[changed])
        full_expected = exercise.reference(**_inputs(case))
        if exercise.outputs:
            if not isinstance(got, (tuple, list)) or len(got) != len(exercise.outputs):
                return False, (f"{name} should return a tuple ({', '.join(exercise.outputs)}); it returned "
                               f"{_show(got)} on {where}.")
        elif exercise.same is None and not isinstance(got, (torch.Tensor, tuple, list)):
            return False, f"{name} should return a torch tensor; it returned {type(got).__name__} on {where}."
        compared = _compared(exercise, got)
        if exercise.outputs and not isinstance(compared, (torch.Tensor, tuple, list)):
            return False, (f"{name}'s {exercise.outputs[0]} should be a torch tensor; it is "
                           f"{type(compared).__name__} on {where}.")
        if exercise.scalar and isinstance(compared, torch.Tensor) and compared.dim() != 0:
            return False, (f"{name} should return a single number (a 0-dim tensor); yours has shape "
                           f"{tuple(compared.shape)} on {where}. Did you forget to reduce with .sum() / .mean()?")
        expected = case["_expected"] if "_expected" in case else _compared(exercise, full_expected)
        if _matches(exercise, expected, compared):
            problem = exercise.extra(got, full_expected) if exercise.extra else None
            if problem:
                return False, f"{name} is wrong on {where}: {problem}"
            continue
        for mistake in exercise.mistakes:
            if _shows(mistake, exercise, case, compared):
                return False, f"{name} is wrong on {where}. {mistake.hint}"
        return False, f"{name} is wrong on {where}: {_mismatch(expected, compared, exercise)}."
    for prop in exercise.properties:
        try:
            problem = prop(lambda *args, **kwargs: _call(fn, time_limit, *args, **kwargs))
        except _TooSlow as slow:
            return False, _too_slow_message(name, where="a property check", limit=time_limit, slow=slow)
        except Exception as error:  # noqa: BLE001 - the learner's code, again
            problem = f"it raised {type(error).__name__}: {error}"
        if problem:
            return False, f"{name} gives the right values but {problem}"
    return True, f"{name} passed all {len(exercise.cases) + len(exercise.properties)} checks."


def _matches(exercise: Exercise, expected, got) -> bool:
    return exercise.same(expected, got) if exercise.same else _close(expected, got, exercise.atol)


def _compared(exercise: Exercise, output):
    return exercise.compare(output) if exercise.compare else output


def _shows(mistake: Mistake, exercise: Exercise, case: dict, compared) -> bool:
    """Does the learner's (wrong) output on `case` look like `mistake`?"""
    if mistake.detect is not None and mistake.detect(case, compared):
        return True
    if mistake.impl is None:
        return False
    try:
        modelled = _compared(exercise, mistake.impl(**_inputs(case)))
    except Exception:  # noqa: BLE001 - a mistake model that cannot run on this case does not match it
        return False
    return _matches(exercise, modelled, compared)


def _mismatch(expected, got, exercise: Exercise) -> str:
    """Where a wrong output differs from the expected one, part by part for a tuple of named outputs."""
    if exercise.same is not None:
        expected_keys, got_keys = _pair_keys(expected), _pair_keys(got) or []
        missing = [k for k in expected_keys if k not in got_keys]
        extra = [k for k in got_keys if k not in expected_keys]
        return (f"expected {len(expected_keys)} pairs, got {len(got_keys)}"
                + (f"; missing (chosen, rejected) = {missing[0][1:]!r}" if missing else "")
                + (f"; unexpected (chosen, rejected) = {extra[0][1:]!r}" if extra else ""))
    if (exercise.outputs and exercise.compare is None and isinstance(got, (tuple, list))
            and len(got) == len(expected)):
        return "; ".join(f"{part}: {_mismatch(e, g, Exercise(None, []))}"
                         for part, e, g in zip(exercise.outputs, expected, got) if not _close(e, g, exercise.atol))
    if (isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor) and got.shape == expected.shape
            and got.numel() > 8):
        difference = (got.detach().double() - expected.double()).abs().nan_to_num(math.inf)
        at = tuple(int(i) for i in torch.unravel_index(difference.argmax(), difference.shape))
        return (f"the largest difference is at index {at} (of shape {tuple(got.shape)}): expected "
                f"{expected[at].item():.6f}, got {got[at].item():.6f}")
    return f"expected {_show(expected)}, got {_show(got)}"


def _show(value) -> str:
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return f"{value.item():.6f}"
    if isinstance(value, torch.Tensor):
        if value.numel() <= 8:
            return f"{[round(x, 6) for x in value.detach().double().flatten().tolist()]} (shape {tuple(value.shape)})"
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def check(name: str, fn: Callable, time_limit: float = TIME_LIMIT) -> Callable:
    """Notebook-facing: print the verdict; return `fn` if it passes, else the reference (and say so).

    The verdict is `verify`'s, so a function that changes its inputs in place or runs past the time limit is
    reported as failing and the rest of the lab (PPO included) runs on the reference, never on it."""
    ok, message = verify(name, fn, time_limit)
    if ok:
        print(f"✅ {message}")
        return fn
    print(f"❌ {message}")
    print(f"   Using the reference implementation of {name} for the rest of this lab, so everything below "
          f"still runs. Fix your function and re-run this cell to use your own.")
    return _exercise(name).reference
