"""The pure math of RLHF. Every function takes and returns torch tensors and opens with its formula and shapes.

These are the reference implementations the lab exercises are checked against (see `rlhf_kit.exercises`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Response-only (prompt-masked) next-token cross-entropy, averaged over response tokens.

        loss = - sum_{b, t>=1} m[b,t] * log p(x[b,t] | x[b,<t]) / sum_{b, t>=1} m[b,t]

    where p(. | x[b,<t]) = softmax(logits[b, t-1]): the logits at position t-1 predict token t.

    Shapes:
        logits:        (batch, seq_len, vocab)   the model's output for input_ids
        input_ids:     (batch, seq_len)          prompt tokens, then response tokens (ending with eos), then padding
        response_mask: (batch, seq_len)          1 on response tokens (including the final eos), 0 on prompt and pad
    Returns a scalar: the mean negative log-likelihood per response token, in nats.
    """
    shift_logits = logits[:, :-1, :]          # position t-1 predicts token t
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(shift_logits.dtype)
    logprobs = F.log_softmax(shift_logits.float(), dim=-1)
    token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)   # (batch, seq_len - 1)
    return -(token_logprobs * mask).sum() / mask.sum().clamp(min=1)


def build_response_mask(prompt_lengths: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The SFT response mask of a right-padded batch: 0 on the prompt, 1 on the response and its eos, 0 on padding.

        m[b, t] = 1 if prompt_lengths[b] <= t and attention_mask[b, t] == 1, else 0

    Shapes:
        prompt_lengths: (batch,)           number of prompt tokens at the start of each row
        attention_mask: (batch, seq_len)   1 on the row's tokens (prompt, response, eos), 0 on the padding after them
    Returns (batch, seq_len) int64: the `response_mask` that `sft_loss` reads.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    after_prompt = positions[None, :] >= prompt_lengths[:, None]
    return (after_prompt & attention_mask.bool()).long()


# ------------------------------------------------------------------------------------------------ helpers
def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * mask) / sum(mask): the mean over the positions where mask is 1."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum()


def _last_one(mask: torch.Tensor) -> torch.Tensor:
    """(batch,) index of the last 1 in each row of a (batch, seq_len) 0/1 mask.

    `mask * arange` is largest at the last 1, so its argmax finds it for right *and* left padding
    (for left padding that is position -1; a row whose only 1 is at position 0 gives 0, as it should).
    """
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * positions).argmax(dim=1)


# ------------------------------------------------------------------------------------------------ reward model
def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                       margin: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley-Terry pairwise loss of a reward model, averaged over pairs.

        delta_i = r_chosen[i] - r_rejected[i] - margin[i]          (margin defaults to 0)
        P(chosen preferred) = sigmoid(delta_i)
        loss = - (1 / batch) * sum_i log sigmoid(delta_i)

    computed with F.logsigmoid, which stays finite when delta is very negative (log(sigmoid(-200)) is
    log(0) = -inf in float32; logsigmoid(-200) = -200).

        dloss/dr_chosen[i] = (sigmoid(delta_i) - 1) / batch  (< 0: raising r_chosen lowers the loss)
        dloss/dr_rejected[i] = -dloss/dr_chosen[i]

    Worked example: delta = -0.5 -> P = sigmoid(-0.5) = 0.3775, loss = -log(0.3775) = 0.9741.

    Shapes:
        r_chosen:   (batch,)   the reward model's score of the preferred response
        r_rejected: (batch,)   its score of the rejected response
        margin:     (batch,) or None   how much r_chosen should exceed r_rejected (e.g. from preference strength)
    Returns a scalar.
    """
    delta = r_chosen - r_rejected
    if margin is not None:
        delta = delta - margin
    return -F.logsigmoid(delta).mean()


def rewards_at_last_token(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The sequence reward: the per-token score at the last real (non-pad) token of each row.

        reward[b] = values[b, last[b]]    where last[b] = the index of the last 1 in attention_mask[b]

    With right padding last[b] = attention_mask[b].sum() - 1; with left padding it is seq_len - 1. The index of
    the last 1, `(attention_mask * arange(seq_len)).argmax(1)`, is right for both.

    Shapes:
        values:         (batch, seq_len)   a sequence-classification head's score at every position
        attention_mask: (batch, seq_len)   1 on real tokens, 0 on padding
    Returns (batch,).
    """
    last = _last_one(attention_mask)
    return values.gather(1, last.unsqueeze(1)).squeeze(1)


# ------------------------------------------------------------------------------------------------ PPO
def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probabilities:

        k1: kl_t = logp_t - logp_ref_t                                     (unbiased, can be negative)
        k3: kl_t = (exp(logp_ref_t - logp_t) - 1) - (logp_ref_t - logp_t)  (unbiased, always >= 0)

    Shapes: logprobs, ref_logprobs (batch, response_len) -> (batch, response_len); padding is not masked here.
    Worked example: logp = -1.0, logp_ref = -1.5 gives k1 = 0.5 and k3 = (e^-0.5 - 1) + 0.5 = 0.1065.
    """
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}: use 'k1' or 'k3'.")


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                estimator: str = "k1") -> torch.Tensor:
    """Each response's KL estimate: the sum of the per-token estimates over its tokens, in nats.

        kl[b] = sum_t mask[b, t] * kl_t      (kl_t from `kl_estimate`)

    With k1 this is exactly the sequence log-ratio log pi(y_b | x_b) - log pi_ref(y_b | x_b), since a response's
    log-probability is the sum of its tokens' (the chain rule). Its mean over responses sampled from pi estimates
    KL(pi || pi_ref) per response, which is >= 0; the k1 estimate can still be negative for one batch, the k3
    estimate never.

    Shapes: logprobs, ref_logprobs, mask (batch, response_len) -> (batch,).
    """
    return (kl_estimate(logprobs, ref_logprobs, estimator) * mask.to(logprobs.dtype)).sum(1)


def reinforce_loss(logprobs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   baseline: float | torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE with a baseline (Williams 1992), as a loss to minimise, one return per response.

        logp_b = sum_t mask[b, t] * logprobs[b, t]           log pi(y_b | x_b), the whole response
        base   = mean_b returns[b]   if baseline is None, else baseline (a number or (batch,))
        A_b    = stop_gradient(returns[b] - base)
        loss   = -(1 / batch) * sum_b A_b * logp_b

    Its gradient, -(1 / batch) * sum_b (R_b - base) * grad log pi(y_b | x_b), is minus the sample estimate of
    the policy gradient grad E[R]: gradient descent on it makes responses with a return above the baseline more
    likely. The baseline leaves the expected gradient unchanged (E[grad log pi(y)] = 0) and lowers its variance.
    The batch mean includes each response's own return, which scales its A_b by (batch - 1) / batch relative to
    the leave-one-out baseline: the direction is unbiased, the length slightly shorter. The advantage is detached:
    a return that depends on the policy (such as r - beta * log-ratio) must not be differentiated through.

    Worked example: logprobs [[-1, -0.5, -0.2], [-2, -0.1, pad]], returns [2, -1], baseline None (mean 0.5):
    logp = [-1.7, -2.1], A = [1.5, -1.5], loss = -(1.5 * -1.7 + -1.5 * -2.1) / 2 = -0.3.

    Shapes:
        logprobs: (batch, response_len)   log pi(token_t | ...) of the sampled tokens, with gradient
        returns:  (batch,)                each response's return R_b
        mask:     (batch, response_len)   1 on response tokens, 0 on padding
    Returns a scalar.
    """
    if baseline is None:
        baseline = returns.mean()
    advantages = (returns - baseline).detach()
    sequence_logprobs = (logprobs * mask.to(logprobs.dtype)).sum(1)
    return -(advantages * sequence_logprobs).mean()


def kl_penalized_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, beta: float, estimator: str = "k1") -> torch.Tensor:
    """Per-token PPO rewards: a KL penalty on every response token, plus the reward model's score at the end.

        rewards[b, t] = mask[b, t] * ( -beta * kl[b, t] + scores[b] * [t == last[b]] )

    where last[b] is the last response token of row b (the last 1 in mask[b]) and kl[b, t] estimates the
    per-token KL(policy || reference) from the sampled token's log-probabilities:

        k1: kl_t = logp_t - logp_ref_t                                     (unbiased, can be negative)
        k3: kl_t = (exp(logp_ref_t - logp_t) - 1) - (logp_ref_t - logp_t)  (unbiased, always >= 0)

    Shapes:
        scores:       (batch,)                 reward-model score of each whole response
        logprobs:     (batch, response_len)    log pi(token_t | ...) under the policy that sampled it
        ref_logprobs: (batch, response_len)    log pi_ref(token_t | ...) under the frozen reference (SFT) model
        mask:         (batch, response_len)    1 on response tokens, 0 on padding
        beta:         the KL coefficient, >= 0
    Returns (batch, response_len), zero where mask is 0.
    Raises ValueError for beta < 0 or an unknown estimator.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0 (it is the weight of a KL *penalty*); got {beta}.")
    kl = kl_estimate(logprobs, ref_logprobs, estimator)
    m = mask.to(kl.dtype)
    last = _last_one(mask).unsqueeze(1)
    score_at_end = torch.zeros_like(kl).scatter(1, last, scores.to(kl.dtype).unsqueeze(1))
    return (-beta * kl + score_at_end) * m


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, computed backwards over each response.

        V'_t    = mask_t * V_t                               (no value after the last real token)
        delta_t = r_t + gamma * V'_{t+1} - V'_t              (V'_T = 0)
        A_t     = mask_t * (delta_t + gamma * lam * A_{t+1})   for t = T-1 down to 0   (A_T = 0)
        R_t     = mask_t * (A_t + V_t)                       (the value head's regression target)

    lam = 1 gives A_t = (sum_{k>=t} gamma^(k-t) r_k) - V_t, reward-to-go minus value; lam = 0 gives A_t = delta_t.

    Shapes:
        rewards: (batch, T)   per-token rewards (e.g. from kl_penalized_rewards)
        values:  (batch, T)   the value head's estimates V_t (arbitrary on padding)
        mask:    (batch, T)   1 on response tokens, 0 on padding
    Returns (advantages, returns), each (batch, T), zero where mask is 0.
    """
    m = mask.to(values.dtype)
    v = values * m
    r = rewards * m
    T = rewards.shape[1]
    advantages = torch.zeros_like(v)
    next_value = torch.zeros_like(v[:, 0])
    next_advantage = torch.zeros_like(v[:, 0])
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        next_advantage = m[:, t] * (delta + gamma * lam * next_advantage)
        advantages[:, t] = next_advantage
        next_value = v[:, t]
    returns = (advantages + values) * m
    return advantages, returns


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_eps: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate loss, a masked mean over response tokens.

        ratio_t     = exp(logp_t - logp_old_t)
        objective_t = min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t)
        loss        = - sum(objective * mask) / sum(mask)

    The min is pessimistic: clipping removes the incentive to push the ratio beyond 1 +- eps in the direction
    the advantage favours, and never rescues a ratio that moved the wrong way. Worked examples (one token):
    ratio 3, A = +4, eps 0.2 -> min(12, 4.8) = 4.8, loss -4.8; ratio 1.3, A = -3 -> min(-3.9, -3.6) = -3.9,
    loss 3.9 (taking the max would give -3.6: that is a common mistake).

    stats (detached diagnostics, masked means over response tokens):
        clip_fraction: share of tokens with |ratio - 1| > eps, a float tensor
        approx_kl:     the k3 estimate of KL(old || new): (ratio - 1) - log(ratio), >= 0, 0 when ratio == 1

    Shapes:
        logprobs:     (batch, response_len)   log pi_theta(token_t | ...) under the policy being updated
        old_logprobs: (batch, response_len)   the same under the policy that sampled the rollout
        advantages:   (batch, response_len)
        mask:         (batch, response_len)   1 on response tokens, 0 on padding
    Returns (loss, stats): a scalar and a dict of two scalars. Raises ValueError for clip_eps <= 0.
    """
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0; got {clip_eps}.")
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -_masked_mean(torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": _masked_mean(((ratio - 1).abs() > clip_eps).to(ratio.dtype), mask),
            "approx_kl": _masked_mean((ratio - 1) - log_ratio, mask),
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_eps: float = 0.2) -> torch.Tensor:
    """PPO's clipped value loss, a masked mean over response tokens.

        v_clipped = old_values + clip(values - old_values, -eps, eps)
        loss      = 0.5 * sum(max((values - returns)^2, (v_clipped - returns)^2) * mask) / sum(mask)

    The max is pessimistic, like the policy loss's min: moving the value more than eps away from old_values
    earns no reduction in loss. The 0.5 is this course's convention (0.5 * squared error).

    Shapes:
        values, old_values, returns, mask: (batch, response_len); mask is 1 on response tokens, 0 on padding
    Returns a scalar. Raises ValueError for clip_eps <= 0.
    """
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0; got {clip_eps}.")
    v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    worst = torch.max((values - returns) ** 2, (v_clipped - returns) ** 2)
    return 0.5 * _masked_mean(worst, mask)


# ------------------------------------------------------------------------------------------------ GRPO and RLOO
def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """rewards (n,) -> (n // group_size, group_size): row g holds group g's samples, which lie consecutively."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be a whole number >= 2 (a group needs other samples of its prompt to "
                         f"compare with); got {group_size!r}.")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be one score per sample, shape (n,), with n a multiple of group_size "
                         f"{group_size} (each prompt's {group_size} samples consecutively); got shape "
                         f"{tuple(rewards.shape)}.")
    return rewards.reshape(-1, group_size)


def group_relative_advantages(rewards: torch.Tensor, group_size: int, normalize_std: bool = True,
                              eps: float = 1e-6) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's advantages (Shao et al. 2024): each sample's reward against the other samples of its own prompt.

        groups: rewards laid out prompt by prompt, group_size samples each: [p0 p0 p0 p0 p1 p1 p1 p1 ...]
        A_i = (r_i - mean_group(r)) / (std_group(r) + eps)     normalize_std=True  (GRPO)
        A_i =  r_i - mean_group(r)                             normalize_std=False (Dr. GRPO, Liu et al. 2025)

    std is the sample standard deviation (divisor group_size - 1, torch's default, as TRL's GRPOTrainer). A group
    whose samples all scored the same has A = 0 for each, and eps keeps the division finite. Dividing by the std
    gives a prompt whose samples barely differ (too easy or too hard: all near the same score) the same weight as
    one with a real spread; Dr. GRPO's point is that this biases the update towards such prompts, so it drops it.
    Each group's advantages sum to zero either way.

    Worked example: rewards [1, 2, 3, 6, 0, 0], group_size 3: group means 2 and 2, stds 1 and 3.464;
    A = [-1, 0, 1, 1.1547, -0.5774, -0.5774] (normalize_std) or [-1, 0, 1, 4, -2, -2] (without).

    Shapes: rewards (n,) -> advantages (n,); stats {"group_mean": (n / group_size,), "group_std": (same),
    "zero_std_groups": the share of groups whose rewards are all equal (a 0-dim tensor)}: their samples get no
    gradient. Raises ValueError for group_size < 2 or n not a multiple of it.
    """
    groups = _groups(rewards, group_size)
    mean, std = groups.mean(1, keepdim=True), groups.std(1, keepdim=True)
    centred = groups - mean
    advantages = centred / (std + eps) if normalize_std else centred
    stats = {"group_mean": mean.squeeze(1).detach(), "group_std": std.squeeze(1).detach(),
             "zero_std_groups": (groups == groups[:, :1]).all(1).to(rewards.dtype).mean().detach()}
    return advantages.reshape(-1), stats


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024): each sample's reward minus
    the mean reward of the *other* group_size - 1 samples of its prompt.

        A_i = r_i - (sum_group(r) - r_i) / (group_size - 1)  =  group_size / (group_size - 1) * (r_i - mean_group(r))

    The baseline never contains r_i itself, so it is independent of sample i and the gradient estimate is
    unbiased; the plain group mean contains r_i and shrinks each advantage by (group_size - 1) / group_size.
    Groups are laid out as in `group_relative_advantages`; each group's advantages sum to zero.

    Worked example: rewards [1, 2, 3, 6, 0, 0], group_size 3: A = [-1.5, 0, 1.5, 6, -3, -3].

    Shapes: rewards (n,) -> (n,). Raises ValueError for group_size < 2 or n not a multiple of it.
    """
    groups = _groups(rewards, group_size)
    others = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).reshape(-1)


# ------------------------------------------------------------------------------------------------ DPO and IPO
def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """The summed log-probability of each sequence's response tokens, log pi(y | x), the quantity DPO compares.

        logp[b] = sum_{t>=1} m[b,t] * log softmax(logits[b, t-1])[x[b,t]]

    The logits at position t-1 predict token t (shift by one); m is 1 on response tokens (including the final eos)
    and 0 on the prompt and the padding, so neither counts. A sum, not a mean: log pi(y | x) of a whole response
    is the sum of its tokens' log-probabilities.

    Shapes:
        logits:        (batch, seq_len, vocab)   the model's output for input_ids
        input_ids:     (batch, seq_len)          prompt tokens, then response tokens (ending with eos), then padding
        response_mask: (batch, seq_len)          1 on response tokens, 0 on prompt and padding
    Returns (batch,), in nats (each <= 0).
    """
    logprobs = F.log_softmax(logits[:, :-1, :].float(), dim=-1)
    token_logprobs = logprobs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)   # (batch, seq_len - 1)
    return (token_logprobs * response_mask[:, 1:].to(token_logprobs.dtype)).sum(dim=1)


def _check_beta(beta: float) -> None:
    if not 0 < beta < float("inf"):
        raise ValueError(f"beta must be a finite number > 0; got {beta}. It scales the log-ratios into implicit "
                         f"rewards (beta = 0 divides by zero in the derivation, and IPO's target is 1/(2 beta)): "
                         f"use e.g. beta=0.1.")


def _implicit_reward_stats(chosen_reward: torch.Tensor, rejected_reward: torch.Tensor) -> dict[str, torch.Tensor]:
    """The detached implicit rewards of a batch of pairs, their margins and the share the policy orders right."""
    chosen_reward, rejected_reward = chosen_reward.detach(), rejected_reward.detach()
    margin = chosen_reward - rejected_reward
    return {"chosen_reward": chosen_reward, "rejected_reward": rejected_reward, "margin": margin,
            "accuracy": (margin > 0).to(margin.dtype).mean()}


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Direct Preference Optimization (Rafailov et al. 2023): Bradley-Terry on implicit rewards.

        r_chosen   = beta * (log pi(y_w | x) - log pi_ref(y_w | x))        the implicit reward of the chosen response
        r_rejected = beta * (log pi(y_l | x) - log pi_ref(y_l | x))        and of the rejected one
        loss       = - (1 / batch) * sum_i log sigmoid(r_chosen[i] - r_rejected[i])

    computed with F.logsigmoid, finite at any margin (at a margin of -1000 the loss is 1000, not inf). While the
    policy equals the reference every margin is 0 and the loss is log 2 = 0.6931.

    Worked example: policy (chosen, rejected) = (-9, -13), reference (-10, -12), beta = 0.1: the log-ratio margin
    is (+1) - (-1) = 2, r_chosen = 0.1, r_rejected = -0.1, loss = -log sigmoid(0.2) = 0.5981.

    stats (detached): chosen_reward, rejected_reward, margin = chosen_reward - rejected_reward, each (batch,);
    accuracy, the share of pairs with margin > 0, a 0-dim float tensor.

    Shapes: the four log-probability tensors are (batch,), summed over each response (`sequence_logprobs`).
    Returns (loss, stats). Raises ValueError for beta <= 0.
    """
    _check_beta(beta)
    chosen_reward = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_reward = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, _implicit_reward_stats(chosen_reward, rejected_reward)


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO (Azar et al. 2023, "A general theoretical paradigm to understand learning from human preferences"):
    a squared loss that pulls the log-ratio margin to a finite target instead of pushing it to infinity.

        h_i  = (log pi(y_w | x) - log pi_ref(y_w | x)) - (log pi(y_l | x) - log pi_ref(y_l | x))
        loss = (1 / batch) * sum_i (h_i - 1 / (2 beta))^2

    DPO's -log sigmoid(beta h) keeps falling as h grows, so on a pair labelled the same way every time the margin
    is pushed without end (and the KL from the reference with it); IPO's minimum sits at h = 1 / (2 beta), so a
    smaller beta allows a larger margin. (Azar et al. use mean per-token log-probabilities; the course passes sums.)

    Worked example: h = 2, beta = 0.1: target 5, loss (2 - 5)^2 = 9.

    stats: as `dpo_loss`'s (implicit rewards beta * log-ratio, margins, accuracy), detached.
    Shapes: the four log-probability tensors are (batch,). Returns (loss, stats). Raises ValueError for beta <= 0.
    """
    _check_beta(beta)
    chosen_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    loss = ((chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2).mean()
    return loss, _implicit_reward_stats(beta * chosen_ratio, beta * rejected_ratio)
