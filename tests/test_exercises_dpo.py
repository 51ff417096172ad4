"""Lab 06's checkers (sequence_logprobs, dpo_loss, ipo_loss): each accepts the reference and an independently
written correct version, and names each typical mistake.

As in test_exercises_rlhf.py, the wrong implementations are written the way a learner would write them, apart
from the checker's catalogue, so a test fails if the test vectors stop telling a mistake apart.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from exercise_contract import contract

from rlhf_kit import losses
from rlhf_kit.exercises import EXERCISES, verify

DPO_EXERCISES = ["sequence_logprobs", "dpo_loss", "ipo_loss"]


# ------------------------------------------------------------------------------------------------ sequence_logprobs
def seq_loop(logits, input_ids, response_mask):
    """Correct, written as a loop over rows and positions."""
    out = []
    for b in range(logits.shape[0]):
        total = torch.zeros(())
        for t in range(1, logits.shape[1]):
            if response_mask[b, t]:
                total = total + torch.log_softmax(logits[b, t - 1], dim=-1)[input_ids[b, t]]
        out.append(total)
    return torch.stack(out)


def seq_cross_entropy(logits, input_ids, response_mask):
    """Correct, from F.cross_entropy with the non-response targets ignored."""
    targets = input_ids[:, 1:].masked_fill(response_mask[:, 1:] == 0, -100)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return -nll.sum(-1)


def _lp(logits, input_ids):
    return torch.log_softmax(logits, -1)[:, :-1].gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)


def seq_no_shift(logits, input_ids, response_mask):
    lp = torch.log_softmax(logits, -1).gather(2, input_ids.unsqueeze(2)).squeeze(2)
    return (lp * response_mask).sum(-1)


def seq_mask_unshifted(logits, input_ids, response_mask):
    return (_lp(logits, input_ids) * response_mask[:, :-1]).sum(-1)


def seq_mean(logits, input_ids, response_mask):
    m = response_mask[:, 1:].float()
    return (_lp(logits, input_ids) * m).sum(-1) / m.sum(-1)


def seq_prompt_counted(logits, input_ids, response_mask):
    m = response_mask[:, 1:].clone()
    for b in range(m.shape[0]):
        last = int(torch.nonzero(m[b]).max())
        m[b, : last + 1] = 1
    return (_lp(logits, input_ids) * m).sum(-1)


def seq_padding_counted(logits, input_ids, response_mask):
    m = response_mask[:, 1:].clone()
    for b in range(m.shape[0]):
        first = int(torch.nonzero(m[b]).min())
        m[b, first:] = 1
    return (_lp(logits, input_ids) * m).sum(-1)


def seq_everything(logits, input_ids, response_mask):
    return _lp(logits, input_ids).sum(-1)


def seq_raw_logits(logits, input_ids, response_mask):
    picked = logits[:, :-1].gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)
    return (picked * response_mask[:, 1:]).sum(-1)


def seq_probabilities(logits, input_ids, response_mask):
    p = torch.softmax(logits, -1)[:, :-1].gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)
    return (p * response_mask[:, 1:]).sum(-1)


def seq_batch_total(logits, input_ids, response_mask):
    return (_lp(logits, input_ids) * response_mask[:, 1:]).sum()


def seq_batch_mean(logits, input_ids, response_mask):
    return (_lp(logits, input_ids) * response_mask[:, 1:]).sum(-1).mean()


# ------------------------------------------------------------------------------------------------ dpo_loss
def _stats(c, r):
    c, r = c.detach(), r.detach()
    return {"chosen_reward": c, "rejected_reward": r, "margin": c - r, "accuracy": (c > r).float().mean()}


def dpo_softplus(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    """Correct, with softplus(-x) = -log sigmoid(x)."""
    if beta <= 0:
        raise ValueError("beta must be positive")
    c = beta * (policy_chosen_logps - ref_chosen_logps)
    r = beta * (policy_rejected_logps - ref_rejected_logps)
    return F.softplus(r - c).mean(), _stats(c, r)


def _dpo(pc, pr, rc, rr, beta, h=None, per_pair=None, reduce=torch.mean):
    h = (pc - rc) - (pr - rr) if h is None else h
    per_pair = per_pair or (lambda h: -F.logsigmoid(beta * h))
    return reduce(per_pair(h)), _stats(beta * (pc - rc), beta * (pr - rr))


def dpo_log_sigmoid(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: -torch.log(torch.sigmoid(beta * h)))


def dpo_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    h = (policy_rejected_logps - ref_rejected_logps) - (policy_chosen_logps - ref_chosen_logps)
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, h=h)


def dpo_beta_outside(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: -beta * F.logsigmoid(h))


def dpo_no_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: -F.logsigmoid(h))


def dpo_over_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: F.softplus(-h / beta))


def dpo_no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                h=policy_chosen_logps - policy_rejected_logps)


def dpo_reference_added(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    h = (policy_chosen_logps + ref_chosen_logps) - (policy_rejected_logps + ref_rejected_logps)
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, h=h)


def dpo_log_likelihood(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: F.logsigmoid(beta * h))


def dpo_no_log(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: 1 - torch.sigmoid(beta * h))


def dpo_summed(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                reduce=torch.sum)


def dpo_no_beta_check(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)


def dpo_stats_attached(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    if beta <= 0:
        raise ValueError("beta must be positive")
    c = beta * (policy_chosen_logps - ref_chosen_logps)
    r = beta * (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(c - r).mean(), {"chosen_reward": c, "rejected_reward": r, "margin": c - r,
                                         "accuracy": (c > r).float().mean()}


def dpo_mean_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    loss, stats = dpo_softplus(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                               beta)
    return loss, {**stats, "margin": stats["margin"].mean()}


# ------------------------------------------------------------------------------------------------ ipo_loss
def ipo_correct(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    """Correct, written out pair by pair."""
    if not beta > 0:
        raise ValueError("beta must be positive")
    total = 0.0
    n = len(policy_chosen_logps)
    for i in range(n):
        h = (policy_chosen_logps[i] - ref_chosen_logps[i]) - (policy_rejected_logps[i] - ref_rejected_logps[i])
        total = total + (h - 0.5 / beta) ** 2
    c, r = beta * (policy_chosen_logps - ref_chosen_logps), beta * (policy_rejected_logps - ref_rejected_logps)
    return total / n, _stats(c, r)


def _ipo(pc, pr, rc, rr, beta, h=None, per_pair=None, reduce=torch.mean):
    return _dpo(pc, pr, rc, rr, beta, h=h, per_pair=per_pair or (lambda h: (h - 1 / (2 * beta)) ** 2),
                reduce=reduce)


def ipo_target_one_over_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                             beta=0.1):
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: (h - 1 / beta) ** 2)


def ipo_target_two_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: (h - 2 * beta) ** 2)


def ipo_beta_inside(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: (beta * h - 1 / (2 * beta)) ** 2)


def ipo_rescaled(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: (beta * h - 0.5) ** 2)


def ipo_no_target(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: h ** 2)


def ipo_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    h = (policy_rejected_logps - ref_rejected_logps) - (policy_chosen_logps - ref_chosen_logps)
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, h=h)


def ipo_no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                h=policy_chosen_logps - policy_rejected_logps)


def ipo_absolute(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                per_pair=lambda h: (h - 1 / (2 * beta)).abs())


def ipo_is_dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return dpo_softplus(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)


def ipo_summed(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    return _ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                reduce=torch.sum)


WRONG = [
    ("sequence_logprobs", seq_no_shift, "Did you shift?"),
    ("sequence_logprobs", seq_mask_unshifted, "mask is not shifted"),
    ("sequence_logprobs", seq_mean, "mean log-probability per token"),
    ("sequence_logprobs", seq_prompt_counted, "prompt tokens were counted"),
    ("sequence_logprobs", seq_padding_counted, "padding was counted"),
    ("sequence_logprobs", seq_everything, "Every position was counted"),
    ("sequence_logprobs", seq_raw_logits, "raw logits"),
    ("sequence_logprobs", seq_probabilities, "Those are probabilities"),
    ("sequence_logprobs", seq_batch_total, "not over the batch too"),
    ("sequence_logprobs", seq_batch_mean, "not the batch's mean"),
    ("dpo_loss", dpo_log_sigmoid, "Numerically unstable"),
    ("dpo_loss", dpo_swapped, "sign is swapped"),
    ("dpo_loss", dpo_beta_outside, "beta is outside the sigmoid"),
    ("dpo_loss", dpo_no_beta, "beta is missing"),
    ("dpo_loss", dpo_over_beta, "You divided by beta"),
    ("dpo_loss", dpo_no_reference, "reference terms were dropped"),
    ("dpo_loss", dpo_reference_added, "reference terms have the wrong sign"),
    ("dpo_loss", dpo_log_likelihood, "returned the log-likelihood"),
    ("dpo_loss", dpo_no_log, "not -log sigmoid(beta * h)"),
    ("dpo_loss", dpo_summed, "summed over pairs"),
    ("ipo_loss", ipo_target_one_over_beta, "not 1 / beta"),
    ("ipo_loss", ipo_target_two_beta, "not 2 beta"),
    ("ipo_loss", ipo_beta_inside, "beta went inside"),
    ("ipo_loss", ipo_rescaled, "beta^2 times the IPO loss"),
    ("ipo_loss", ipo_no_target, "The target is missing"),
    ("ipo_loss", ipo_swapped, "sign is swapped"),
    ("ipo_loss", ipo_no_reference, "reference terms were dropped"),
    ("ipo_loss", ipo_absolute, "Square the distance"),
    ("ipo_loss", ipo_is_dpo, "That is the DPO loss"),
    ("ipo_loss", ipo_summed, "summed over pairs"),
]


CORRECT_DPO = [("sequence_logprobs", seq_loop), ("sequence_logprobs", seq_cross_entropy), ("dpo_loss", dpo_softplus),
               ("ipo_loss", ipo_correct)]


# ------------------------------------------------------------------------------------------------ the tests
def test_fixed_worked_examples_agree_with_the_references():
    checked = 0
    for name in DPO_EXERCISES:
        exercise = EXERCISES[name]
        for case in exercise.cases:
            if case.expected is not None:
                got = exercise.reference(**case.kwargs)
                got = exercise.compare(got) if exercise.compare else got
                torch.testing.assert_close(got, case.expected.to(got.dtype), atol=1e-5, rtol=1e-5)
                checked += 1
    assert checked == 4


@pytest.mark.parametrize("name", ["dpo_loss", "ipo_loss"])
def test_beta_must_be_positive(name):
    """The references raise a ValueError that names the fix; a learner's function that does not is told so."""
    fn = getattr(losses, name)
    one = torch.tensor([-1.0])
    for beta in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"beta must be a finite number > 0.*use e\.g\. beta=0\.1"):
            fn(one, one, one, one, beta=beta)
    ok, message = verify("dpo_loss", dpo_no_beta_check)
    assert not ok and "beta = 0" in message and "ValueError" in message


def test_dpo_is_stable_at_margins_of_a_thousand():
    pc = torch.tensor([0.0, 0.0], requires_grad=True)
    loss, stats = losses.dpo_loss(pc, torch.zeros(2), torch.tensor([-1000.0, 1000.0]), torch.zeros(2), beta=1.0)
    assert loss.item() == pytest.approx(500.0)
    loss.backward()
    assert torch.isfinite(pc.grad).all() and pc.grad.tolist() == pytest.approx([0.0, -0.5])
    assert stats["accuracy"].item() == 0.5


def test_dpo_starts_at_log_two_and_its_stats_are_the_implicit_rewards():
    ref_c, ref_r = torch.tensor([-30.0, -12.0]), torch.tensor([-25.0, -14.0])
    loss, stats = losses.dpo_loss(ref_c, ref_r, ref_c, ref_r, beta=0.3)
    assert loss.item() == pytest.approx(math.log(2))
    assert stats["margin"].tolist() == [0.0, 0.0] and stats["accuracy"].item() == 0.0
    loss, stats = losses.dpo_loss(torch.tensor([-9.0]), torch.tensor([-13.0]), torch.tensor([-10.0]),
                                  torch.tensor([-12.0]), beta=0.1)
    assert loss.item() == pytest.approx(0.5981, abs=1e-4)
    assert stats["chosen_reward"].item() == pytest.approx(0.1)
    assert stats["rejected_reward"].item() == pytest.approx(-0.1)


def test_ipo_has_its_minimum_at_one_over_two_beta():
    """IPO pulls the margin to 1 / (2 beta) and no further; DPO keeps rewarding a larger one."""
    hs = torch.linspace(0, 20, 201)
    zero = torch.zeros_like(hs)
    ipo = torch.stack([losses.ipo_loss(h[None], zero[:1], zero[:1], zero[:1], beta=0.1)[0] for h in hs])
    dpo = torch.stack([losses.dpo_loss(h[None], zero[:1], zero[:1], zero[:1], beta=0.1)[0] for h in hs])
    assert hs[ipo.argmin()].item() == pytest.approx(5.0)
    assert (dpo[1:] < dpo[:-1]).all()


def test_stats_are_checked():
    ok, message = verify("dpo_loss", dpo_stats_attached)
    assert not ok and "still carries a gradient" in message
    ok, message = verify("dpo_loss", dpo_mean_margin)
    assert not ok and "stats['margin'] should be chosen_reward - rejected_reward" in message


def test_sequence_logprobs_is_what_the_sft_loss_averages():
    """sum of response log-probs = -(sft_loss) * number of response targets, for a one-row batch."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 8, 9, generator=g)
    ids = torch.randint(0, 9, (1, 8), generator=g)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0]])
    total = losses.sequence_logprobs(logits, ids, mask)
    assert total.shape == (1,)
    assert total.item() == pytest.approx(-losses.sft_loss(logits, ids, mask).item() * 4, rel=1e-5)


(test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
 test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(DPO_EXERCISES, WRONG, CORRECT_DPO)
