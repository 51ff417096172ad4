"""Direct tests of the RLHF math in rlhf_kit.losses: worked examples, hand-computed values, edge cases."""

import math

import pytest
import torch

from rlhf_kit.losses import (
    bradley_terry_loss,
    gae,
    kl_penalized_rewards,
    ppo_policy_loss,
    reinforce_loss,
    rewards_at_last_token,
    sequence_kl,
    value_loss,
)


# ------------------------------------------------------------------------------------------------ Bradley-Terry
def test_bradley_terry_worked_example():
    """delta = -0.5: P(chosen preferred) = sigmoid(-0.5) = 0.3775 and the loss is -log(0.3775) = 0.9741."""
    r_chosen, r_rejected = torch.tensor([1.0]), torch.tensor([1.5])
    assert torch.sigmoid(r_chosen - r_rejected).item() == pytest.approx(0.3775, abs=1e-4)
    assert bradley_terry_loss(r_chosen, r_rejected).item() == pytest.approx(0.9741, abs=1e-4)


def test_bradley_terry_is_a_mean_and_prefers_the_right_order():
    r_chosen, r_rejected = torch.tensor([2.1, 0.0, -1.0]), torch.tensor([0.4, 0.5, -3.0])
    expected = sum(math.log1p(math.exp(-(c - r))) for c, r in zip([2.1, 0.0, -1.0], [0.4, 0.5, -3.0])) / 3
    assert bradley_terry_loss(r_chosen, r_rejected).item() == pytest.approx(expected, rel=1e-5)
    assert bradley_terry_loss(r_chosen, r_rejected) < bradley_terry_loss(r_rejected, r_chosen)


def test_bradley_terry_gradient_is_sigmoid_delta_minus_one_over_batch():
    g = torch.Generator().manual_seed(0)
    r_chosen = torch.randn(5, generator=g).requires_grad_()
    r_rejected = torch.randn(5, generator=g).requires_grad_()
    bradley_terry_loss(r_chosen, r_rejected).backward()
    want = (torch.sigmoid(r_chosen - r_rejected) - 1).detach() / 5
    torch.testing.assert_close(r_chosen.grad, want)
    torch.testing.assert_close(r_rejected.grad, -want)
    assert (r_chosen.grad < 0).all()          # descending the loss raises the chosen reward


def test_bradley_terry_is_stable_at_huge_margins():
    loss = bradley_terry_loss(torch.tensor([-100.0]), torch.tensor([100.0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(200.0, rel=1e-6)
    naive = -torch.log(torch.sigmoid(torch.tensor([-200.0]))).mean()
    assert not torch.isfinite(naive)          # the reason for F.logsigmoid
    r_chosen = torch.tensor([-100.0], requires_grad=True)
    bradley_terry_loss(r_chosen, torch.tensor([100.0])).backward()
    assert r_chosen.grad.item() == pytest.approx(-1.0)


def test_bradley_terry_margin_is_subtracted():
    r_chosen, r_rejected, margin = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.5]), torch.tensor([0.5, 1.0])
    with_margin = bradley_terry_loss(r_chosen, r_rejected, margin)
    torch.testing.assert_close(with_margin, bradley_terry_loss(r_chosen - margin, r_rejected))
    assert with_margin > bradley_terry_loss(r_chosen, r_rejected)
    torch.testing.assert_close(bradley_terry_loss(r_chosen, r_rejected, torch.zeros(2)),
                               bradley_terry_loss(r_chosen, r_rejected))


# ------------------------------------------------------------------------------------------------ last token
def test_rewards_at_last_token_right_and_left_padding():
    values = torch.arange(12, dtype=torch.float32).view(3, 4)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    torch.testing.assert_close(rewards_at_last_token(values, right), torch.tensor([1.0, 7.0, 8.0]))
    torch.testing.assert_close(rewards_at_last_token(values, left), torch.tensor([3.0, 7.0, 11.0]))
    torch.testing.assert_close(rewards_at_last_token(values, right.bool()), torch.tensor([1.0, 7.0, 8.0]))


def test_rewards_at_last_token_passes_gradients_to_that_position_only():
    values = torch.zeros(2, 3, requires_grad=True)
    rewards_at_last_token(values, torch.tensor([[1, 1, 0], [1, 1, 1]])).sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


# ------------------------------------------------------------------------------------------------ KL-penalised rewards
def test_kl_penalized_rewards_k1_and_k3_values():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.25, 0.9]]))      # last position is padding: anything
    mask = torch.tensor([[1, 1, 0]])
    k1 = math.log(2.0)                                      # log(0.5 / 0.25)
    k3 = (0.5 - 1) + math.log(2.0)                          # (exp(ref - logp) - 1) - (ref - logp) = 0.1931
    out1 = kl_penalized_rewards(torch.tensor([2.0]), logp, ref, mask, beta=0.1)
    out3 = kl_penalized_rewards(torch.tensor([2.0]), logp, ref, mask, beta=0.1, estimator="k3")
    torch.testing.assert_close(out1, torch.tensor([[-0.1 * k1, -0.1 * k1 + 2.0, 0.0]]))
    torch.testing.assert_close(out3, torch.tensor([[-0.1 * k3, -0.1 * k3 + 2.0, 0.0]]))
    assert k3 == pytest.approx(0.1931, abs=1e-4)


def test_k3_is_never_negative_but_k1_can_be():
    g = torch.Generator().manual_seed(0)
    logp = -3 * torch.rand(4, 8, generator=g)
    ref = logp + torch.randn(4, 8, generator=g)
    mask, zero = torch.ones(4, 8), torch.zeros(4)
    k3 = -kl_penalized_rewards(zero, logp, ref, mask, beta=1.0, estimator="k3")
    k1 = -kl_penalized_rewards(zero, logp, ref, mask, beta=1.0, estimator="k1")
    assert (k3 >= 0).all() and (k1 < 0).any()
    assert kl_penalized_rewards(zero, logp, logp, mask, beta=1.0, estimator="k3").abs().max() == 0


def test_kl_score_lands_on_last_real_token_for_each_padding():
    zeros = torch.zeros(2, 4)
    right = kl_penalized_rewards(torch.tensor([1.0, 2.0]), zeros, zeros, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]),
                                 0.1)
    torch.testing.assert_close(right, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]))
    # beta = 0 switches the penalty off but keeps the score
    out = kl_penalized_rewards(torch.tensor([3.0]), torch.tensor([[-1.0, -2.0]]), torch.tensor([[-2.0, -1.0]]),
                               torch.tensor([[1, 1]]), beta=0.0)
    torch.testing.assert_close(out, torch.tensor([[0.0, 3.0]]))


def test_kl_penalized_rewards_rejects_bad_arguments():
    args = (torch.tensor([1.0]), torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="beta must be >= 0"):
        kl_penalized_rewards(*args, beta=-0.01)
    with pytest.raises(ValueError, match="estimator"):
        kl_penalized_rewards(*args, beta=0.1, estimator="k2")


# ------------------------------------------------------------------------------------------------ GAE
REWARDS, VALUES = [0.0, 0.0, 1.0], [0.5, 0.4, 0.8]


def test_gae_hand_computed_three_steps():
    # delta = r_t + V_{t+1} - V_t (V_3 = 0): [0 + 0.4 - 0.5, 0 + 0.8 - 0.4, 1 - 0.8] = [-0.1, 0.4, 0.2]
    # A_2 = 0.2; A_1 = 0.4 + 0.95 * 0.2 = 0.59; A_0 = -0.1 + 0.95 * 0.59 = 0.4605
    adv, ret = gae(torch.tensor([REWARDS]), torch.tensor([VALUES]), torch.ones(1, 3), gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.4605, 0.59, 0.2]]))
    torch.testing.assert_close(ret, torch.tensor([[0.9605, 0.99, 1.0]]))


def test_gae_with_lam_one_is_reward_to_go_minus_value():
    adv, ret = gae(torch.tensor([REWARDS]), torch.tensor([VALUES]), torch.ones(1, 3), gamma=1.0, lam=1.0)
    reward_to_go = torch.tensor([[1.0, 1.0, 1.0]])
    torch.testing.assert_close(adv, reward_to_go - torch.tensor([VALUES]))
    torch.testing.assert_close(ret, reward_to_go)


def test_gae_with_lam_zero_is_the_td_error():
    adv, _ = gae(torch.tensor([REWARDS]), torch.tensor([VALUES]), torch.ones(1, 3), gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv, torch.tensor([[0.9 * 0.4 - 0.5, 0.9 * 0.8 - 0.4, 1.0 - 0.8]]))


def test_gae_padded_row_matches_unpadded_and_is_zero_on_padding():
    rewards = torch.tensor([REWARDS + [0.0, 0.0], [0.1, 0.2, 0.3, 0.4, 0.5]])
    values = torch.tensor([VALUES + [9.0, -7.0], [0.0, 0.1, 0.2, 0.3, 0.4]])   # garbage values on padding
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    alone_adv, alone_ret = gae(torch.tensor([REWARDS]), torch.tensor([VALUES]), torch.ones(1, 3))
    torch.testing.assert_close(adv[0, :3], alone_adv[0])
    torch.testing.assert_close(ret[0, :3], alone_ret[0])
    assert (adv[0, 3:] == 0).all() and (ret[0, 3:] == 0).all()
    torch.testing.assert_close(adv[1], gae(rewards[1:], values[1:], mask[1:])[0][0])


# ------------------------------------------------------------------------------------------------ PPO policy loss
def _one_token(p_new, p_old, advantage, clip_eps=0.2):
    return ppo_policy_loss(torch.tensor([[p_new]]).log(), torch.tensor([[p_old]]).log(),
                           torch.tensor([[advantage]]), torch.ones(1, 1), clip_eps)


def test_ppo_worked_example_positive_advantage():
    """ratio 0.06 / 0.02 = 3, A = +4, eps 0.2: min(3 * 4, 1.2 * 4) = min(12, 4.8) = 4.8."""
    loss, stats = _one_token(0.06, 0.02, 4.0)
    assert loss.item() == pytest.approx(-4.8, abs=1e-5)
    assert stats["clip_fraction"].item() == 1.0


def test_ppo_worked_example_negative_advantage_takes_the_min_not_the_max():
    """ratio 0.13 / 0.10 = 1.3, A = -3: min(-3.9, -3.6) = -3.9. Taking the max (as one source says) gives -3.6."""
    loss, _ = _one_token(0.13, 0.10, -3.0)
    assert loss.item() == pytest.approx(3.9, abs=1e-5)
    ratio = torch.tensor(0.13 / 0.10)
    unclipped, clipped = ratio * -3.0, ratio.clamp(0.8, 1.2) * -3.0
    assert torch.max(unclipped, clipped).item() == pytest.approx(-3.6, abs=1e-5)   # the wrong answer
    assert torch.min(unclipped, clipped).item() == pytest.approx(-3.9, abs=1e-5)


def test_ppo_ratio_one_gives_no_clipping_and_no_kl():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    loss, stats = ppo_policy_loss(logp, logp.clone(), torch.tensor([[1.0, -2.0, 7.0]]), torch.tensor([[1, 1, 0]]))
    assert loss.item() == pytest.approx(0.5)           # -mean(1, -2) over the two response tokens
    assert stats["clip_fraction"].item() == 0.0 and stats["approx_kl"].item() == 0.0
    assert stats["clip_fraction"].dtype.is_floating_point


def test_ppo_stats_are_masked_means():
    logp = torch.log(torch.tensor([[0.3, 0.5, 0.9]]))
    old = torch.log(torch.tensor([[0.2, 0.5, 0.1]]))          # ratios 1.5, 1.0, 9 (the 9 is padding)
    _, stats = ppo_policy_loss(logp, old, torch.ones(1, 3), torch.tensor([[1, 1, 0]]), clip_eps=0.2)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["approx_kl"].item() == pytest.approx((0.5 - math.log(1.5)) / 2, rel=1e-5)


def test_ppo_rejects_non_positive_clip_eps():
    with pytest.raises(ValueError, match="clip_eps"):
        _one_token(0.5, 0.5, 1.0, clip_eps=0.0)


# ------------------------------------------------------------------------------------------------ value loss
def test_value_loss_clipping_example():
    """Old value 0, new 1, return 1, eps 0.2: the clipped value is 0.2, whose error 0.64 beats the unclipped 0."""
    one = torch.tensor([[1.0]])
    assert value_loss(one, torch.zeros(1, 1), one, torch.ones(1, 1), clip_eps=0.2).item() == pytest.approx(0.32)
    # inside the clip range the clipped and unclipped values coincide: plain 0.5 * squared error
    assert value_loss(torch.tensor([[0.1]]), torch.zeros(1, 1), one, torch.ones(1, 1)).item() == pytest.approx(
        0.5 * 0.81)


def test_value_loss_is_a_masked_mean():
    values = torch.tensor([[1.0, 2.0, 50.0]])
    loss = value_loss(values, values.clone(), torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[1, 1, 0]]))
    assert loss.item() == pytest.approx(0.5 * (1 + 4) / 2)


def test_value_loss_rejects_non_positive_clip_eps():
    with pytest.raises(ValueError, match="clip_eps"):
        value_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), clip_eps=-0.1)


# ------------------------------------------------------------------------------------------------ REINFORCE
def test_reinforce_worked_example_and_its_gradient():
    """Sequence log-probs -1.7 and -2.1 (padding ignored), returns 2 and -1, baseline the mean 0.5: loss -0.3, and
    d loss / d logprobs[b, t] = -(R_b - 0.5) * mask[b, t] / 2."""
    logprobs = torch.tensor([[-1.0, -0.5, -0.2], [-2.0, -0.1, -3.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss = reinforce_loss(logprobs, torch.tensor([2.0, -1.0]), mask)
    assert loss.item() == pytest.approx(-0.3, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.75, -0.75, -0.75], [0.75, 0.75, 0.0]]))
    assert reinforce_loss(logprobs, torch.tensor([2.0, -1.0]), mask, baseline=0.0).item() == pytest.approx(
        -(2.0 * -1.7 - 1.0 * -2.1) / 2, abs=1e-6)


def _bandit_gradient(baseline: float) -> torch.Tensor:
    """The exact expected REINFORCE gradient over a 4-armed bandit: sum over every arm y of pi(y) times the
    gradient of reinforce_loss on that one sample, with a fixed baseline."""
    logits = torch.tensor([0.3, -0.2, 1.0, 0.0], requires_grad=True)
    rewards = torch.tensor([1.0, 3.0, -2.0, 0.5])
    log_pi = torch.log_softmax(logits, 0)
    expected = sum(log_pi[y].exp().detach() * reinforce_loss(log_pi[y].view(1, 1), rewards[y].view(1),
                                                             torch.ones(1, 1), baseline=baseline)
                   for y in range(4))
    (grad,) = torch.autograd.grad(expected, logits)
    return grad


def test_a_baseline_leaves_the_expected_policy_gradient_unchanged():
    """E_y[grad log pi(y) * b] = b * grad sum_y pi(y) = 0, so any constant baseline gives the same expected
    gradient, and that gradient is minus the exact grad E[R]."""
    logits = torch.tensor([0.3, -0.2, 1.0, 0.0], requires_grad=True)
    (true,) = torch.autograd.grad(-(torch.softmax(logits, 0) * torch.tensor([1.0, 3.0, -2.0, 0.5])).sum(), logits)
    for baseline in (0.0, 0.7, -5.0):
        torch.testing.assert_close(_bandit_gradient(baseline), true)


def test_ratio_surrogate_gradient_at_ratio_one_is_the_policy_gradient():
    """d/dtheta [exp(logp - logp_old) * A] at logp = logp_old is A * grad logp: PPO's unclipped surrogate, summed
    over a response's tokens, has REINFORCE's gradient (with the same advantage on every token)."""
    logprobs = torch.tensor([[-1.0, -0.5, -0.2], [-2.0, -0.1, -3.0]], requires_grad=True)
    mask, returns = torch.tensor([[1, 1, 1], [1, 1, 0]]), torch.tensor([2.0, -1.0])
    (pg,) = torch.autograd.grad(reinforce_loss(logprobs, returns, mask), logprobs)
    advantages = (returns - returns.mean())[:, None].expand(-1, 3)
    ratio = (logprobs - logprobs.detach()).exp()
    surrogate = -((ratio * advantages * mask).sum(1)).mean()
    (grad,) = torch.autograd.grad(surrogate, logprobs)
    torch.testing.assert_close(grad, pg)


def test_sequence_kl_k1_is_the_sequence_log_ratio_and_k3_is_never_negative():
    g = torch.Generator().manual_seed(3)
    logp = -3 * torch.rand(5, 7, generator=g)
    ref = logp + torch.randn(5, 7, generator=g)
    mask = (torch.arange(7)[None, :] < torch.tensor([7, 5, 3, 1, 6])[:, None]).long()
    torch.testing.assert_close(sequence_kl(logp, ref, mask), ((logp - ref) * mask).sum(1))
    assert (sequence_kl(logp, ref, mask, "k3") >= 0).all()
    # one sample's k1 is negative where the policy made its tokens less likely than the reference did
    assert sequence_kl(ref - 0.5, ref, mask).lt(0).all()
