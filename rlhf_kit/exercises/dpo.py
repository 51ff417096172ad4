"""Lab 06: DPO's exercises, `sequence_logprobs`, `dpo_loss` and `ipo_loss`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import losses
from .checking import Case, Exercise, Mistake, close, must_reject, randn, show


# ------------------------------------------------------------------------------------------------ sequence_logprobs
def _seq_case(prompt_lens, response_lens, seq_len, vocab, seed) -> Case:
    """Rows of prompt, then response (the mask's 1s), then padding (the last token id), logits at random."""
    g = torch.Generator().manual_seed(seed)
    batch = len(prompt_lens)
    logits = randn(g, batch, seq_len, vocab, scale=2.0)
    input_ids = torch.randint(0, vocab - 1, (batch, seq_len), generator=g)
    mask = torch.zeros(batch, seq_len, dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        mask[row, p:p + r] = 1
        input_ids[row, p + r:] = vocab - 1
    return Case({"logits": logits, "input_ids": input_ids, "response_mask": mask},
                f"prompt lengths {prompt_lens}, response lengths {response_lens}, right-padded to {seq_len}")


def _token_logprobs(logits, input_ids):
    """(batch, seq_len - 1): log p(x_t | x_<t) from the logits at t - 1."""
    return F.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def _positions(mask):
    return torch.arange(mask.shape[1])[None, :].expand_as(mask)


def _first_and_last(mask):
    positions = _positions(mask)
    first = torch.where(mask.bool(), positions, mask.shape[1]).min(1).values
    last = (mask * positions).argmax(1)
    return first[:, None], last[:, None]


def _with_prompt(mask):
    """1 from the start of the row to the last response token: the prompt counted too."""
    return (_positions(mask) <= _first_and_last(mask)[1]).long()


def _with_padding(mask):
    """1 from the first response token to the end of the row: the padding counted too."""
    return (_positions(mask) >= _first_and_last(mask)[0]).long()


def _seq_mistake(token_fn=_token_logprobs, mask_fn=lambda m: m[:, 1:], reduce="sum"):
    """A wrong sequence_logprobs, built from the reference recipe with one ingredient changed."""
    def impl(logits, input_ids, response_mask):
        tokens = token_fn(logits, input_ids)
        mask = mask_fn(response_mask).to(tokens.dtype)
        total = (tokens * mask).sum(1)
        if reduce == "mean":
            return total / mask.sum(1).clamp(min=1)
        if reduce == "batch sum":
            return total.sum()
        if reduce == "batch mean":
            return total.mean()
        return total
    return impl


_SEQ_MISTAKES = [
    Mistake("Did you shift? The logits at position t-1 predict token t: gather log_softmax(logits[:, :-1]) at "
            "input_ids[:, 1:] and weight by response_mask[:, 1:].",
            _seq_mistake(token_fn=lambda logits, ids: F.log_softmax(logits.float(), -1).gather(
                -1, ids[..., None]).squeeze(-1), mask_fn=lambda m: m)),
    Mistake("The mask is not shifted with the targets: the targets are input_ids[:, 1:], so the mask saying which "
            "targets are response tokens is response_mask[:, 1:], not response_mask[:, :-1].",
            _seq_mistake(mask_fn=lambda m: m[:, :-1])),
    Mistake("That is the mean log-probability per token: DPO compares log pi(y | x) of whole responses, the SUM "
            "of the response tokens' log-probabilities (dividing by the length changes the loss, and with it which "
            "responses DPO favours).", _seq_mistake(reduce="mean")),
    Mistake("The prompt tokens were counted: they are the same in the chosen and the rejected sequence and are not "
            "what the policy wrote. Weight each token by response_mask[:, 1:], which is 0 on the prompt.",
            _seq_mistake(mask_fn=lambda m: _with_prompt(m)[:, 1:])),
    Mistake("The padding was counted: positions after the eos are filler, and their log-probabilities would make "
            "a response's score depend on the longest row in its batch. Weight each token by response_mask[:, 1:], "
            "which is 0 on padding.", _seq_mistake(mask_fn=lambda m: _with_padding(m)[:, 1:])),
    Mistake("Every position was counted, prompt and padding included: weight each token's log-probability by "
            "response_mask[:, 1:], so only the response (and its eos) counts.",
            _seq_mistake(mask_fn=lambda m: torch.ones_like(m[:, 1:]))),
    Mistake("Those are raw logits, not log-probabilities: apply log_softmax over the vocabulary before gathering "
            "the tokens' entries.",
            _seq_mistake(token_fn=lambda logits, ids: logits[:, :-1].float().gather(-1, ids[:, 1:, None]).squeeze(-1))),
    Mistake("Those are probabilities: use log_softmax, not softmax. The log-probability of a sequence is the sum of "
            "its tokens' LOG-probabilities (the log of the product of their probabilities).",
            _seq_mistake(token_fn=lambda logits, ids: F.softmax(logits[:, :-1].float(), -1).gather(
                -1, ids[:, 1:, None]).squeeze(-1))),
    Mistake("Return one number per sequence, shape (batch,): sum over the positions (dim=1), not over the batch too.",
            _seq_mistake(reduce="batch sum")),
    Mistake("Return one number per sequence, shape (batch,): DPO needs each response's own log-probability, not "
            "the batch's mean.", _seq_mistake(reduce="batch mean")),
]

_SEQ_CASES = [
    _seq_case([2, 4, 3], [5, 2, 6], seq_len=10, vocab=11, seed=0),
    _seq_case([1, 3], [5, 3], seq_len=7, vocab=7, seed=1),
    _seq_case([5, 2, 7, 3], [4, 9, 1, 6], seq_len=12, vocab=13, seed=2),
]

SEQUENCE_LOGPROBS = Exercise(
    reference=losses.sequence_logprobs,
    cases=_SEQ_CASES,
    mistakes=_SEQ_MISTAKES,
)


# ------------------------------------------------------------------------------------------------ dpo_loss, ipo_loss
NAMES = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _pair_case(pc, pr, rc, rr, beta, what, expected=None) -> Case:
    return Case({**dict(zip(NAMES, map(torch.tensor, (pc, pr, rc, rr)))), "beta": beta}, what,
                expected=None if expected is None else torch.tensor(expected))


def _random_pair_case(batch, beta, seed, spread=3.0) -> Case:
    """Summed log-probabilities of responses of 20-60 tokens, the policy moved by up to `spread` nats."""
    g = torch.Generator().manual_seed(seed)
    rc, rr = -(20 + 40 * torch.rand(batch, generator=g)), -(20 + 40 * torch.rand(batch, generator=g))
    pc, pr = rc + randn(g, batch, scale=spread), rr + randn(g, batch, scale=spread)
    return Case(dict(zip(NAMES, (pc, pr, rc, rr))) | {"beta": beta}, f"{batch} random pairs, beta={beta}")


def _margin(pc, pr, rc, rr):
    """h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))."""
    return (pc - rc) - (pr - rr)


def _swapped(pc, pr, rc, rr):
    return (pr - rr) - (pc - rc)


def _no_reference(pc, pr, rc, rr):
    return pc - pr


def _reference_added(pc, pr, rc, rr):
    return (pc + rc) - (pr + rr)


def _huge(case: Case, got) -> bool:
    """A case whose scaled margin passes +-100, where log(sigmoid(x)) underflows in float32: there any wrong answer,
    whatever its spelling, is the instability."""
    kw = case.kwargs
    return bool((kw["beta"] * _margin(*(kw[n] for n in NAMES))).abs().max() > 100)


def _dpo_mistake(h_fn=_margin, outer=lambda h, beta: -F.logsigmoid(beta * h), reduce=torch.mean):
    """A wrong dpo_loss (or ipo_loss): the margin h_fn(pc, pr, rc, rr), a per-pair loss outer(h, beta), a reduction."""
    def impl(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
        logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
        chosen, rejected = logps[0] - logps[2], logps[1] - logps[3]
        # the stats are right: these models are about the loss
        return reduce(outer(h_fn(*logps), beta)), losses._implicit_reward_stats(beta * chosen, beta * rejected)
    return impl


_DPO_MISTAKES = [
    Mistake("Numerically unstable at large margins: use F.logsigmoid. torch.log(torch.sigmoid(x)) underflows to "
            "log(0) = -inf once x is below about -100 in float32 (and log(1 + exp(-x)) overflows), while "
            "F.logsigmoid(x) stays finite.",
            _dpo_mistake(outer=lambda h, beta: -torch.log(torch.sigmoid(beta * h))), detect=_huge),
    Mistake("The sign is swapped: the chosen response's log-ratio comes first, "
            "h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)); yours would teach the policy to "
            "prefer the rejected response.", _dpo_mistake(h_fn=_swapped)),
    Mistake("beta is outside the sigmoid: it scales the log-ratios into implicit rewards, "
            "loss = -log sigmoid(beta * h), not -beta * log sigmoid(h).",
            _dpo_mistake(outer=lambda h, beta: -beta * F.logsigmoid(h))),
    Mistake("beta is missing: the implicit reward is beta * log(pi / pi_ref), so the loss is -log sigmoid(beta * h).",
            _dpo_mistake(outer=lambda h, beta: -F.logsigmoid(h))),
    Mistake("You divided by beta: the implicit reward is beta * log(pi / pi_ref), so multiply, "
            "-log sigmoid(beta * h).", _dpo_mistake(outer=lambda h, beta: -F.logsigmoid(h / beta))),
    Mistake("The reference terms were dropped: DPO compares log-RATIOS, log pi(y) - log pi_ref(y), for each "
            "response. Without the reference the loss rewards whatever the policy already found likely, and nothing "
            "keeps the policy near the SFT model.", _dpo_mistake(h_fn=_no_reference)),
    Mistake("The reference terms have the wrong sign: each log-ratio is log pi(y) - log pi_ref(y) (policy minus "
            "reference).", _dpo_mistake(h_fn=_reference_added)),
    Mistake("You returned the log-likelihood: the loss is its negative, -log sigmoid(beta * h). Minimising "
            "+log sigmoid would push the chosen response down.",
            _dpo_mistake(outer=lambda h, beta: F.logsigmoid(beta * h))),
    Mistake("That is -sigmoid(beta * h) (or 1 - sigmoid), not -log sigmoid(beta * h): without the log the "
            "gradient vanishes for pairs the policy gets badly wrong, the ones it should learn most from.",
            _dpo_mistake(outer=lambda h, beta: -torch.sigmoid(beta * h))),
    Mistake("That is -sigmoid(beta * h) (or 1 - sigmoid), not -log sigmoid(beta * h): without the log the "
            "gradient vanishes for pairs the policy gets badly wrong, the ones it should learn most from.",
            _dpo_mistake(outer=lambda h, beta: 1 - torch.sigmoid(beta * h))),
    Mistake("You summed over pairs: average with .mean(), so the loss (and the learning rate that suits it) does "
            "not grow with the batch size.", _dpo_mistake(reduce=torch.sum)),
]

_STATS_ADVICE = {
    "chosen_reward": "stats['chosen_reward'] should be the implicit rewards of the chosen responses, "
                     "beta * (policy_chosen_logps - ref_chosen_logps), shape (batch,).",
    "rejected_reward": "stats['rejected_reward'] should be beta * (policy_rejected_logps - ref_rejected_logps), "
                       "shape (batch,).",
    "margin": "stats['margin'] should be chosen_reward - rejected_reward for each pair, shape (batch,).",
    "accuracy": "stats['accuracy'] should be the share of pairs with margin > 0, a float between 0 and 1.",
}


def _stats_problem(got, expected) -> str | None:
    stats = got[1]
    if not isinstance(stats, dict) or not all(key in stats for key in _STATS_ADVICE):
        return ("the loss is right, but stats should be a dict with keys "
                + ", ".join(map(repr, _STATS_ADVICE)) + ".")
    for key, advice in _STATS_ADVICE.items():
        value = stats[key]
        if isinstance(value, (int, float)):
            value = torch.tensor(float(value))
        if not close(expected[1][key], value, 1e-5):
            return f"the loss is right, but {advice} Expected {show(expected[1][key])}, got {show(value)}."
    return None


def _gradient_and_detached(loss_name: str, d_loss_d_h):
    """A property check: the loss's gradient with respect to the policy's log-probabilities is d_loss_d_h(h, beta)
    / batch (and its opposite for the rejected), none reaches the reference, and the stats carry no gradient."""
    def prop(fn) -> str | None:
        g = torch.Generator().manual_seed(11)
        beta = 0.2
        tensors = [-(20 + 10 * torch.rand(5, generator=g)) for _ in NAMES]
        tensors[0], tensors[1] = tensors[2] + randn(g, 5, scale=2.0), tensors[3] + randn(g, 5, scale=2.0)
        tensors = [t.clone().requires_grad_() for t in tensors]
        loss, stats = fn(**dict(zip(NAMES, tensors)), beta=beta)
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            return ("its loss carries no gradient, so the policy would not learn: build it from the log-probabilities "
                    "with torch operations (no .item(), .detach() or torch.tensor(...) on the way).")
        grads = torch.autograd.grad(loss, tensors[:2], allow_unused=True)
        h = ((tensors[0] - tensors[2]) - (tensors[1] - tensors[3])).detach()
        want = d_loss_d_h(h, beta) / 5
        if any(grad is None for grad in grads) or not (close(want, grads[0], 1e-5) and close(-want, grads[1], 1e-5)):
            return (f"its gradient is wrong: d {loss_name} / d policy_chosen_logps should be {show(want)} here and "
                    f"d / d policy_rejected_logps its opposite. Did you .detach() a policy term?")
        for key, value in (stats.items() if isinstance(stats, dict) else ()):
            if isinstance(value, torch.Tensor) and value.requires_grad:
                return (f"stats[{key!r}] still carries a gradient: stats are for watching training, so .detach() "
                        f"them (a logged tensor that keeps its graph keeps the whole batch's activations in memory).")
        return None
    return prop


def _stable(fn) -> str | None:
    """Margins of beta * h = +-1000: the loss must be finite (1000 / 2 here) and so must its gradient."""
    pc = torch.tensor([-10.0, -10.0], requires_grad=True)
    pr = torch.tensor([-10.0, -10.0], requires_grad=True)
    loss, _ = fn(policy_chosen_logps=pc, policy_rejected_logps=pr, ref_chosen_logps=torch.tensor([-1010.0, 990.0]),
                 ref_rejected_logps=torch.tensor([-10.0, -10.0]), beta=1.0)
    if not isinstance(loss, torch.Tensor) or not torch.isfinite(loss) or abs(loss.item() - 500.0) > 1e-2:
        return (f"at margins beta * h = +1000 and -1000 the loss should be finite, (0 + 1000) / 2 = 500; yours "
                f"gives {show(loss)}. Use F.logsigmoid, which never underflows to log(0).")
    grads = torch.autograd.grad(loss, [pc, pr], allow_unused=True)
    if any(grad is None or not torch.isfinite(grad).all() for grad in grads):
        return "at margins of +-1000 its gradient is not finite: use F.logsigmoid."
    return None


_BETA_ZERO = {**dict(zip(NAMES, (torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]),
                                 torch.tensor([-1.5])))), "beta": 0.0}
_BETA_CHECKS = [
    must_reject(_BETA_ZERO, "beta = 0", "beta must be > 0: it scales log(pi / pi_ref) into the implicit reward"),
    must_reject({**_BETA_ZERO, "beta": -0.1}, "beta = -0.1",
                "beta must be > 0: a negative beta would reward moving away from the preferred response"),
]

_DPO_CASES = [
    # Worked example: log-ratios -9 - (-10) = +1 (chosen) and -13 - (-12) = -1 (rejected), h = 2, beta 0.1:
    # -log sigmoid(0.2) = 0.5981. (Dropping the reference would give h = 4: the example tells the two apart.)
    _pair_case([-9.0], [-13.0], [-10.0], [-12.0], 0.1, "worked example: h = 2, beta = 0.1, loss 0.5981",
               expected=math.log1p(math.exp(-0.2))),
    # The policy equals the reference: every margin 0, loss log 2, whatever beta.
    _pair_case([-30.0, -42.5], [-25.0, -50.0], [-30.0, -42.5], [-25.0, -50.0], 0.5,
               "policy = reference: loss log 2 = 0.6931", expected=math.log(2)),
    _random_pair_case(6, beta=0.1, seed=0),
    _random_pair_case(5, beta=0.5, seed=1),
    _pair_case([-10.0, -20.0, -5.0], [-10.0, -21.0, -7.0], [-10.0, -20.5, -6.0], [-2010.0, -21.5, -6.5], 0.5,
               "3 pairs, one with beta * h = -1000: the loss must be finite, about 1000 / 3"),
]

DPO_LOSS = Exercise(
    reference=losses.dpo_loss,
    cases=_DPO_CASES,
    mistakes=_DPO_MISTAKES,
    scalar=True,
    outputs=("loss", "stats"),
    compare=lambda output: output[0],
    extra=_stats_problem,
    properties=[*_BETA_CHECKS, _stable,
                _gradient_and_detached("loss", lambda h, beta: -beta * torch.sigmoid(-beta * h))],
)


# ------------------------------------------------------------------------------------------------ ipo_loss
def _ipo(target=lambda beta: 1 / (2 * beta), scale_h=lambda h, beta: h, power=2):
    def outer(h, beta):
        gap = scale_h(h, beta) - target(beta)
        return gap.abs() if power == 1 else gap ** 2
    return outer


_IPO_MISTAKES = [
    Mistake("The target is 1 / (2 beta), not 1 / beta: IPO pulls the log-ratio margin h to 1 / (2 beta) "
            "(Azar et al. 2023), loss = (h - 1 / (2 beta))^2.", _dpo_mistake(outer=_ipo(target=lambda b: 1 / b))),
    Mistake("The target is 1 / (2 beta), not 2 beta: a SMALLER beta must allow a LARGER margin, as in DPO, where "
            "a small beta lets the policy move further from the reference.",
            _dpo_mistake(outer=_ipo(target=lambda b: 2 * b))),
    Mistake("beta went inside, onto h: IPO compares the raw log-ratio margin h with 1 / (2 beta), "
            "(h - 1 / (2 beta))^2, not (beta h - 1 / (2 beta))^2.",
            _dpo_mistake(outer=_ipo(scale_h=lambda h, b: b * h))),
    Mistake("(beta h - 1/2)^2 is beta^2 times the IPO loss: the same minimum, but a gradient beta^2 times smaller, "
            "so the learning rate no longer means the same. Use (h - 1 / (2 beta))^2.",
            _dpo_mistake(outer=_ipo(target=lambda b: 0.5, scale_h=lambda h, b: b * h))),
    Mistake("The target is missing: (h - 1 / (2 beta))^2 pulls the margin towards 1 / (2 beta); h^2 pulls it to 0, "
            "which teaches no preference at all.", _dpo_mistake(outer=_ipo(target=lambda b: 0.0))),
    Mistake("The sign is swapped: h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)), the "
            "chosen response's log-ratio first.", _dpo_mistake(h_fn=_swapped, outer=_ipo())),
    Mistake("The reference terms were dropped: h is a difference of log-RATIOS, log pi(y) - log pi_ref(y).",
            _dpo_mistake(h_fn=_no_reference, outer=_ipo())),
    Mistake("Square the distance: IPO's loss is (h - 1 / (2 beta))^2, a parabola with its minimum at the target; "
            "|h - 1 / (2 beta)| has a gradient of constant size that never settles.",
            _dpo_mistake(outer=_ipo(power=1))),
    Mistake("That is the DPO loss, -log sigmoid(beta h): IPO replaces it by the squared distance "
            "(h - 1 / (2 beta))^2, whose minimum is at a finite margin.", _dpo_mistake()),
    Mistake("You summed over pairs: average with .mean().", _dpo_mistake(outer=_ipo(), reduce=torch.sum)),
]

_IPO_CASES = [
    # Worked example: h = 2, beta = 0.1 -> target 5, (2 - 5)^2 = 9.
    _pair_case([-9.0], [-13.0], [-10.0], [-12.0], 0.1, "worked example: h = 2, beta = 0.1, loss (2 - 5)^2 = 9",
               expected=9.0),
    # At the target the loss is 0: beta 0.25 -> 1 / (2 beta) = 2.
    _pair_case([-9.0], [-13.0], [-10.0], [-12.0], 0.25, "h = 2 = 1 / (2 beta) at beta = 0.25: loss 0",
               expected=0.0),
    _random_pair_case(6, beta=0.1, seed=2),
    _random_pair_case(5, beta=0.5, seed=3),
]

IPO_LOSS = Exercise(
    reference=losses.ipo_loss,
    cases=_IPO_CASES,
    mistakes=_IPO_MISTAKES,
    scalar=True,
    outputs=("loss", "stats"),
    compare=lambda output: output[0],
    extra=_stats_problem,
    properties=[*_BETA_CHECKS, _gradient_and_detached("loss", lambda h, beta: 2 * (h - 1 / (2 * beta)))],
)
