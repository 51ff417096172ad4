"""Lab 04: PPO's exercises, `kl_penalized_rewards`, `reinforce_loss`, `gae`, `ppo_policy_loss` and `value_loss`."""

from __future__ import annotations

import torch

from .. import losses
from .checking import Case, Exercise, Mistake, close, must_reject, randn, right_mask, show


def _last(mask):
    """The index of the last 1 in each row of `mask`."""
    return (mask.long() * torch.arange(mask.shape[1])).argmax(1)


def _mmean(x, mask):
    """The mean of `x` over the positions where `mask` is 1."""
    return (x * mask).sum() / mask.sum()


# ------------------------------------------------------------------------------------------------ kl_penalized_rewards
def _kl_case(lengths, response_len, beta, estimator, seed) -> Case:
    g = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    logprobs = -(0.1 + 3 * torch.rand(batch, response_len, generator=g))
    kwargs = {"scores": randn(g, batch, scale=2.0), "logprobs": logprobs,
              "ref_logprobs": logprobs + randn(g, batch, response_len, scale=0.5),
              "mask": right_mask(lengths, response_len), "beta": beta}
    if estimator is not None:
        kwargs["estimator"] = estimator
    return Case(kwargs, f"{estimator or 'default (k1)'} estimator, beta={beta}, response lengths {lengths}")


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


_KL_VALID_ARGS = {"scores": torch.tensor([1.0]), "logprobs": torch.tensor([[-1.0, -2.0]]),
                  "ref_logprobs": torch.tensor([[-1.5, -1.0]]), "mask": torch.tensor([[1, 1]]), "beta": 0.1}

_KL_PROPERTIES = [
    must_reject({**_KL_VALID_ARGS, "beta": -0.1}, "beta = -0.1",
                "beta must be >= 0: a negative coefficient would reward drifting from the reference"),
    must_reject({**_KL_VALID_ARGS, "estimator": "k2"}, "estimator='k2'", "only 'k1' and 'k3' are known"),
]

_KL_CASES = [
    _kl_case([6, 4, 2], 6, beta=0.1, estimator=None, seed=0),
    _kl_case([2, 5, 3], 5, beta=0.05, estimator="k3", seed=1),
    _kl_case([1, 3], 4, beta=0.2, estimator="k1", seed=2),
]

KL_PENALIZED_REWARDS = Exercise(
    reference=losses.kl_penalized_rewards,
    cases=_KL_CASES,
    mistakes=_KL_MISTAKES,
    properties=_KL_PROPERTIES,
)


# ------------------------------------------------------------------------------------------------ reinforce_loss
def _reinforce_case(lengths, T, seed, baseline="none", what="") -> Case:
    g = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    kwargs = {"logprobs": -(0.1 + 3 * torch.rand(batch, T, generator=g)), "returns": 1.0 + randn(g, batch, scale=2.0),
              "mask": right_mask(lengths, T)}
    if baseline == "tensor":
        kwargs["baseline"] = randn(g, batch)
    elif baseline != "none":
        kwargs["baseline"] = baseline
    return Case(kwargs, f"response lengths {lengths} of {T}, {what or f'baseline={baseline}'}")


# The notebook's worked example: sequence log-probs -1.7 and -2.1 (the pad's -3.0 must not count), returns 2 and -1,
# batch-mean baseline 0.5, advantages +1.5 and -1.5: loss -(1.5 * -1.7 - 1.5 * -2.1) / 2 = -0.3.
_REINFORCE_WORKED_CASE = Case(
    {"logprobs": torch.tensor([[-1.0, -0.5, -0.2], [-2.0, -0.1, -3.0]]), "returns": torch.tensor([2.0, -1.0]),
     "mask": torch.tensor([[1, 1, 1], [1, 1, 0]])},
    "worked example: returns 2 and -1, baseline None (the mean, 0.5) -> loss -0.3", expected=torch.tensor(-0.3))


def _reinforce_mistake(baseline_rule="given", reduce="per response", sign=-1.0, masked=True, whiten=False):
    """A wrong reinforce_loss, built from the reference recipe with one ingredient changed."""
    def impl(logprobs, returns, mask, baseline=None):
        if baseline_rule == "none":
            base = 0.0
        elif baseline_rule == "mean" or baseline is None:
            base = returns.mean()
        else:
            base = baseline
        advantages = returns - base
        if whiten:
            advantages = advantages / (advantages.std() + 1e-8)
        m = mask.float() if masked else torch.ones_like(logprobs)
        weighted = advantages[:, None] * logprobs * m
        if reduce == "per response":
            loss = weighted.sum(1).mean()
        elif reduce == "summed":
            loss = weighted.sum()
        elif reduce == "token mean":
            loss = weighted.sum() / m.sum()
        else:                                                   # "length-normalised"
            loss = (weighted.sum(1) / m.sum(1)).mean()
        return sign * loss
    return impl


_REINFORCE_MISTAKES = [
    Mistake("You returned the objective: REINFORCE maximises E[(R - b) * log pi(y)], so the loss to minimise is its "
            "negative, -mean_b (R_b - b) * sum_t mask * logprobs. With your sign gradient descent would make the "
            "responses with a high return LESS likely.", _reinforce_mistake(sign=1.0)),
    Mistake("The baseline is not subtracted: weight each response by R_b - b, where b is the `baseline` argument, or "
            "the batch mean of `returns` when baseline is None. Without it every response with a positive return is "
            "pushed up, and the gradient is far noisier.", _reinforce_mistake(baseline_rule="none")),
    Mistake("The baseline argument was ignored (or baseline=0.0 was taken for None): subtract the baseline you are "
            "given, and use the batch mean of returns only when baseline is None. Test `baseline is None`, not "
            "`not baseline`: 0.0 is a real baseline (it subtracts nothing).", _reinforce_mistake(baseline_rule="mean")),
    Mistake("Padding counted: a response's log-probability is the sum over its own tokens only, "
            "sum_t mask[b, t] * logprobs[b, t]; positions after the eos are not actions the policy took.",
            _reinforce_mistake(masked=False)),
    Mistake("That is a mean over tokens: this loss weights each response's whole log-probability, "
            "log pi(y_b) = sum_t mask[b, t] * logprobs[b, t] (a SUM over its tokens), by its advantage, then takes "
            "the mean over the batch's responses.", _reinforce_mistake(reduce="token mean")),
    Mistake("That is a mean over tokens: this loss weights each response's whole log-probability, "
            "log pi(y_b) = sum_t mask[b, t] * logprobs[b, t] (a SUM over its tokens, not divided by its length), "
            "by its advantage, then takes the mean over the batch's responses.",
            _reinforce_mistake(reduce="length-normalised")),
    Mistake("You summed over the responses: take the mean over the batch, so the gradient (and the learning rate "
            "that suits it) does not grow with the batch size.", _reinforce_mistake(reduce="summed")),
    Mistake("You divided the advantages by their standard deviation: that normalisation is a separate choice (the "
            "PPO trainer whitens its per-token advantages); here only subtract the baseline, A_b = R_b - b.",
            _reinforce_mistake(whiten=True)),
]


def _reinforce_gradient(fn) -> str | None:
    """The gradient flows through log pi only: with a return that depends on the policy, as r - beta * log-ratio
    does, d loss / d logprobs[b, t] must still be -(R_b - mean R) * mask[b, t] / batch."""
    g = torch.Generator().manual_seed(11)
    mask = right_mask([5, 3, 4], 5)
    logprobs = (-(0.1 + 3 * torch.rand(3, 5, generator=g))).requires_grad_()
    ref_logprobs = logprobs.detach() + randn(g, 3, 5, scale=0.5)
    returns = randn(g, 3) - 0.1 * ((logprobs - ref_logprobs) * mask).sum(1)     # r - beta * sum_t k1_t
    loss = fn(logprobs=logprobs, returns=returns, mask=mask)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return ("its loss carries no gradient, so the policy would not learn: build it from logprobs with torch "
                "operations (detach the advantages, never the log-probabilities; no .item() or torch.tensor(...)).")
    (grad,) = torch.autograd.grad(loss, [logprobs], allow_unused=True)
    advantages = (returns - returns.mean()).detach()
    want = -(advantages[:, None] * mask) / 3
    if grad is None or not close(want, grad, 1e-5):
        return ("its gradient is wrong when the returns depend on the policy (as r - beta * log-ratio does): the "
                "gradient went through the returns (or the baseline computed from them). Detach the advantage, "
                "(returns - baseline).detach(): REINFORCE's gradient is -(R - b) * grad log pi, with R - b a "
                "constant weight.")
    return None


_REINFORCE_CASES = [
    _REINFORCE_WORKED_CASE,
    _reinforce_case([6, 4, 2], 6, seed=0, what="baseline None (the batch mean)"),
    _reinforce_case([3, 5, 5, 1], 5, seed=1, baseline=0.5),
    _reinforce_case([4, 2, 3], 4, seed=2, baseline="tensor", what="baseline a (batch,) tensor"),
    _reinforce_case([2, 4], 4, seed=3, baseline=0.0, what="baseline=0.0 (none subtracted)"),
]

REINFORCE_LOSS = Exercise(
    reference=losses.reinforce_loss,
    cases=_REINFORCE_CASES,
    mistakes=_REINFORCE_MISTAKES,
    scalar=True,
    properties=[_reinforce_gradient],
)


# ------------------------------------------------------------------------------------------------ gae
def _gae_case(lengths, T, seed, **params) -> Case:
    g = torch.Generator().manual_seed(seed)
    mask = right_mask(lengths, T)
    kwargs = {"rewards": randn(g, len(lengths), T) * mask, "values": randn(g, len(lengths), T), "mask": mask}
    settings = ", ".join(f"{k}={v}" for k, v in params.items()) if params else "default gamma and lam"
    return Case({**kwargs, **params}, f"response lengths {lengths} of {T}, {settings}")


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

GAE = Exercise(
    reference=losses.gae,
    cases=_GAE_CASES,
    mistakes=_GAE_MISTAKES,
    outputs=("advantages", "returns"),
)


# ------------------------------------------------------------------------------------------------ ppo_policy_loss
def _ppo_worked_case(p_new, p_old, advantage, expected, what) -> Case:
    return Case({"logprobs": torch.tensor([[p_new]]).log(), "old_logprobs": torch.tensor([[p_old]]).log(),
                 "advantages": torch.tensor([[advantage]]), "mask": torch.tensor([[1]]), "clip_eps": 0.2},
                what, expected=torch.tensor(expected))


def _ppo_random_case(lengths, T, clip_eps, seed) -> Case:
    g = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    old = -(0.1 + 3 * torch.rand(batch, T, generator=g))
    return Case({"logprobs": old + randn(g, batch, T, scale=0.3), "old_logprobs": old,
                 "advantages": randn(g, batch, T), "mask": right_mask(lengths, T), "clip_eps": clip_eps},
                f"response lengths {lengths} of {T}, clip_eps={clip_eps}")


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
        if not close(expected[1][key], value, 1e-5):
            return f"the loss is right, but {advice} Expected {show(expected[1][key])}, got {show(value)}."
    return None


_PPO_VALID_ARGS = {"logprobs": torch.tensor([[-1.0, -2.0]]), "old_logprobs": torch.tensor([[-1.1, -1.8]]),
                   "advantages": torch.tensor([[1.0, -1.0]]), "mask": torch.tensor([[1, 1]]), "clip_eps": 0.2}


_PPO_CASES = [
    # Worked examples. Probabilities 0.06 vs 0.02: ratio 3, A = +4 -> min(12, 4.8) = 4.8, loss -4.8.
    _ppo_worked_case(0.06, 0.02, 4.0, -4.8, "worked example: ratio 3, A = +4, eps 0.2 -> objective 4.8"),
    # Probabilities 0.13 vs 0.10: ratio 1.3, A = -3 -> min(-3.9, -3.6) = -3.9, loss 3.9. (A source document
    # claims PPO takes the max here and answers -3.6: that is the mistake the max hint names.)
    _ppo_worked_case(0.13, 0.10, -3.0, 3.9, "worked example: ratio 1.3, A = -3, eps 0.2 -> objective -3.9"),
    _ppo_random_case([6, 4, 2], 6, clip_eps=0.2, seed=0),
    _ppo_random_case([3, 5], 5, clip_eps=0.1, seed=1),
]

PPO_POLICY_LOSS = Exercise(
    reference=losses.ppo_policy_loss,
    cases=_PPO_CASES,
    mistakes=_PPO_MISTAKES,
    scalar=True,
    outputs=("loss", "stats"),
    compare=lambda output: output[0],
    extra=_ppo_stats_problem,
    properties=[must_reject({**_PPO_VALID_ARGS, "clip_eps": 0.0}, "clip_eps = 0", "clip_eps must be > 0")],
)


# ------------------------------------------------------------------------------------------------ value_loss
def _value_case(lengths, T, clip_eps, seed) -> Case:
    g = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    old = randn(g, batch, T)
    return Case({"values": old + randn(g, batch, T, scale=0.4), "old_values": old,
                 "returns": old + randn(g, batch, T), "mask": right_mask(lengths, T), "clip_eps": clip_eps},
                f"response lengths {lengths} of {T}, clip_eps={clip_eps}")


# old 0, new 1, target 1, eps 0.2: unclipped error 0, clipped value 0.2 -> error 0.64; max 0.64; loss 0.32.
_VALUE_WORKED_CASE = Case(
    {"values": torch.tensor([[1.0]]), "old_values": torch.tensor([[0.0]]), "returns": torch.tensor([[1.0]]),
     "mask": torch.tensor([[1]]), "clip_eps": 0.2},
    "one token: old value 0, new 1, return 1, eps 0.2 -> 0.5 * max(0, 0.64) = 0.32", expected=torch.tensor(0.32))


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
    _VALUE_WORKED_CASE,
    _value_case([3, 5], 5, clip_eps=0.5, seed=1),
]

VALUE_LOSS = Exercise(
    reference=losses.value_loss,
    cases=_VALUE_CASES,
    mistakes=_VALUE_MISTAKES,
    scalar=True,
    properties=[must_reject({**_VALUE_WORKED_CASE.kwargs, "clip_eps": -0.1}, "clip_eps = -0.1",
                            "clip_eps must be > 0")],
)
