"""The RLHF exercise checkers: each accepts the reference and names typical mistakes.

As in test_exercises.py, the wrong implementations are written independently of the checker's catalogue, the
way a learner would write them, so a test fails if the test vectors stop telling a mistake apart.
"""

import io
from contextlib import redirect_stdout

import pytest
import torch
import torch.nn.functional as F
from exercise_contract import contract

from rlhf_kit import losses
from rlhf_kit.exercises import EXERCISES, check, verify

RLHF_EXERCISES = ["bradley_terry_loss", "rewards_at_last_token", "kl_penalized_rewards", "reinforce_loss", "gae",
                  "ppo_policy_loss", "value_loss"]


# ------------------------------------------------------------------------------------------------ learners' attempts
def bt_flipped(r_chosen, r_rejected, margin=None):
    m = 0 if margin is None else margin
    return -F.logsigmoid(r_rejected - r_chosen - m).mean()


def bt_log_of_sigmoid(r_chosen, r_rejected, margin=None):
    m = 0 if margin is None else margin
    return -torch.log(torch.sigmoid(r_chosen - r_rejected - m)).mean()


def bt_log_one_plus_exp(r_chosen, r_rejected, margin=None):           # another unstable spelling
    m = 0 if margin is None else margin
    return torch.log(1 + torch.exp(-(r_chosen - r_rejected - m))).mean()


def bt_log_likelihood(r_chosen, r_rejected, margin=None):
    m = 0 if margin is None else margin
    return F.logsigmoid(r_chosen - r_rejected - m).mean()


def bt_summed(r_chosen, r_rejected, margin=None):
    m = 0 if margin is None else margin
    return -F.logsigmoid(r_chosen - r_rejected - m).sum()


def bt_no_margin(r_chosen, r_rejected, margin=None):
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def bt_plus_margin(r_chosen, r_rejected, margin=None):
    if margin is None:
        margin = torch.zeros_like(r_chosen)
    return F.softplus(-(r_chosen - r_rejected + margin)).mean()


def last_pad(values, attention_mask):
    return values[:, -1]


def last_length(values, attention_mask):
    lengths = attention_mask.sum(dim=1)
    return values[torch.arange(values.shape[0]), lengths]


def last_minus_two(values, attention_mask):
    return torch.stack([row[int(m.sum()) - 2] for row, m in zip(values, attention_mask)])


def last_first(values, attention_mask):
    return values[:, 0].clone()


def last_right_padding_only(values, attention_mask):
    idx = attention_mask.sum(-1) - 1
    return values[torch.arange(len(values)), idx]


def _learner_kl(logprobs, ref_logprobs, estimator):
    if estimator == "k3":
        x = ref_logprobs - logprobs
        return torch.exp(x) - 1 - x
    return logprobs - ref_logprobs


def _learner_last(mask):
    return [int(torch.nonzero(row).max()) for row in mask]


def kl_score_everywhere(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    kl = _learner_kl(logprobs, ref_logprobs, estimator)
    return (scores.unsqueeze(-1) - beta * kl) * mask


def kl_score_on_pad(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    out = -beta * _learner_kl(logprobs, ref_logprobs, estimator) * mask
    out[:, -1] = out[:, -1] + scores
    return out


def kl_no_beta(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    out = -_learner_kl(logprobs, ref_logprobs, estimator) * mask
    for b, t in enumerate(_learner_last(mask)):
        out[b, t] += scores[b]
    return out


def kl_flipped(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    out = -beta * (ref_logprobs - logprobs) * mask
    for b, t in enumerate(_learner_last(mask)):
        out[b, t] += scores[b]
    return out


def kl_unmasked(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    out = -beta * _learner_kl(logprobs, ref_logprobs, estimator)
    for b, t in enumerate(_learner_last(mask)):
        out[b, t] += scores[b]
    return out


def kl_only_k1(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    if beta < 0 or estimator not in ("k1", "k3"):
        raise ValueError("bad argument")
    out = -beta * (logprobs - ref_logprobs) * mask
    for b, t in enumerate(_learner_last(mask)):
        out[b, t] += scores[b]
    return out


def kl_k3_inverted(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    log_r = logprobs - ref_logprobs
    kl = (log_r.exp() - 1 - log_r) if estimator == "k3" else log_r
    out = -beta * kl * mask
    for b, t in enumerate(_learner_last(mask)):
        out[b, t] += scores[b]
    return out


def kl_no_validation(scores, logprobs, ref_logprobs, mask, beta, estimator="k1"):
    out = -beta * _learner_kl(logprobs, ref_logprobs, estimator) * mask
    for b, t in enumerate(_learner_last(mask)):
        out[b, t] += scores[b]
    return out


def _rf(logprobs, returns, mask, baseline, *, use_baseline=True, honour_given=True, falsy_check=False, sign=-1.0,
        masked=True, reduce="mean", whiten=False):
    """A learner's REINFORCE, written loop by loop, with one thing changed."""
    if falsy_check:
        b = returns.mean() if not baseline else baseline
    elif baseline is None or not honour_given:
        b = returns.mean()
    else:
        b = baseline
    adv = (returns - b if use_baseline else returns).detach()
    if whiten:
        adv = adv / adv.std()
    per_response, n_tokens = [], 0
    for i in range(len(returns)):
        n = int(mask[i].sum()) if masked else logprobs.shape[1]
        n_tokens += n
        total = logprobs[i, :n].sum()
        per_response.append(adv[i] * (total / n if reduce == "length" else total))
    stacked = torch.stack(per_response)
    if reduce == "sum":
        out = stacked.sum()
    elif reduce == "tokens":
        out = stacked.sum() / n_tokens
    else:
        out = stacked.mean()
    return sign * out


def rf_ascent(logprobs, returns, mask, baseline=None):
    return _rf(logprobs, returns, mask, baseline, sign=1.0)


def rf_no_baseline(logprobs, returns, mask, baseline=None):
    return _rf(logprobs, returns, mask, baseline, use_baseline=False)


def rf_always_the_mean(logprobs, returns, mask, baseline=None):
    return _rf(logprobs, returns, mask, baseline, honour_given=False)


def rf_falsy_baseline(logprobs, returns, mask, baseline=None):
    if isinstance(baseline, torch.Tensor):        # avoid the ambiguous truth value of a tensor
        return _rf(logprobs, returns, mask, baseline)
    return _rf(logprobs, returns, mask, baseline, falsy_check=True)


def rf_unmasked(logprobs, returns, mask, baseline=None):
    return _rf(logprobs, returns, mask, baseline, masked=False)


def rf_token_mean(logprobs, returns, mask, baseline=None):
    return _rf(logprobs, returns, mask, baseline, reduce="tokens")


def rf_length_normalised(logprobs, returns, mask, baseline=None):
    return _rf(logprobs, returns, mask, baseline, reduce="length")


def rf_summed(logprobs, returns, mask, baseline=None):
    return _rf(logprobs, returns, mask, baseline, reduce="sum")


def rf_whitened(logprobs, returns, mask, baseline=None):
    return _rf(logprobs, returns, mask, baseline, whiten=True)


def rf_through_the_reward(logprobs, returns, mask, baseline=None):
    b = returns.mean() if baseline is None else baseline
    return -((returns - b) * (logprobs * mask).sum(1)).mean()          # no detach


def rf_through_the_baseline(logprobs, returns, mask, baseline=None):
    b = returns.mean() if baseline is None else baseline
    return -((returns.detach() - b) * (logprobs * mask).sum(1)).mean()  # the baseline still carries a gradient


def rf_detached_everything(logprobs, returns, mask, baseline=None):
    return losses.reinforce_loss(logprobs.detach(), returns, mask, baseline)


def _learner_gae(rewards, values, mask, gamma, lam, *, zero_v_after_end=True, backwards=True, use_lam=True,
                 add_values=True, use_mask=True):
    batch, T = rewards.shape
    adv = torch.zeros(batch, T)
    for b in range(batch):
        n = int(mask[b].sum()) if use_mask else T
        running = 0.0
        steps = range(n - 1, -1, -1) if backwards else range(n)
        for t in steps:
            if t + 1 < n or (not zero_v_after_end and t + 1 < T):
                v_next = values[b, t + 1]
            else:
                v_next = 0.0
            delta = rewards[b, t] + gamma * v_next - values[b, t]
            running = delta + gamma * (lam if use_lam else 1.0) * running
            adv[b, t] = running
    ret = adv + values if add_values else adv.clone()
    if use_mask:
        ret = ret * mask
    return adv, ret


def gae_bootstrap(rewards, values, mask, gamma=1.0, lam=0.95):
    return _learner_gae(rewards, values, mask, gamma, lam, zero_v_after_end=False)


def gae_forward(rewards, values, mask, gamma=1.0, lam=0.95):
    return _learner_gae(rewards, values, mask, gamma, lam, backwards=False)


def gae_no_lam(rewards, values, mask, gamma=1.0, lam=0.95):
    return _learner_gae(rewards, values, mask, gamma, lam, use_lam=False)


def gae_returns_are_advantages(rewards, values, mask, gamma=1.0, lam=0.95):
    return _learner_gae(rewards, values, mask, gamma, lam, add_values=False)


def gae_no_mask(rewards, values, mask, gamma=1.0, lam=0.95):
    return _learner_gae(rewards, values, mask, gamma, lam, use_mask=False)


def gae_returns_unmasked(rewards, values, mask, gamma=1.0, lam=0.95):
    adv, _ = _learner_gae(rewards, values, mask, gamma, lam)
    return adv, adv + values


def _learner_stats(logprobs, old_logprobs, mask, clip_eps):
    r = torch.exp(logprobs - old_logprobs)
    m = mask.float()
    return {"clip_fraction": (((r - 1).abs() > clip_eps).float() * m).sum() / m.sum(),
            "approx_kl": ((r - 1 - torch.log(r)) * m).sum() / m.sum()}


def _ppo(logprobs, old_logprobs, advantages, mask, clip_eps, ratio=None, pick=torch.minimum, clip_adv=False,
         reduce=None, negate=True):
    if ratio is None:
        ratio = torch.exp(logprobs - old_logprobs)
    surr1 = ratio * advantages
    surr2 = ratio * torch.clamp(advantages, 1 - clip_eps, 1 + clip_eps) if clip_adv \
        else torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    obj = pick(surr1, surr2)
    mean = reduce(obj) if reduce else (obj * mask).sum() / mask.sum()
    return (-mean if negate else mean), _learner_stats(logprobs, old_logprobs, mask, clip_eps)


def ppo_max(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps, pick=torch.maximum)


def ppo_max_for_negative_advantage(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    """What the flawed source document teaches: min for positive advantages, max for negative ones."""
    def pick(a, b):
        return torch.where(advantages >= 0, torch.minimum(a, b), torch.maximum(a, b))
    return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps, pick=pick)


def ppo_clip_advantage(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps, clip_adv=True)


def ppo_no_mask(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps, reduce=torch.mean)


def ppo_divide_logprobs(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps, ratio=logprobs / old_logprobs)


def ppo_no_exp(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps, ratio=logprobs - old_logprobs)


def ppo_objective(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps, negate=False)


def _value(values, old_values, returns, mask, clip_eps, pick=torch.maximum, clip=True, scale=0.5, masked=True):
    err = (values - returns).pow(2)
    if clip:
        clipped = torch.clamp(values, old_values - clip_eps, old_values + clip_eps)
        err = pick(err, (clipped - returns).pow(2))
    mean = (err * mask).sum() / mask.sum() if masked else err.mean()
    return scale * mean


def value_min(values, old_values, returns, mask, clip_eps=0.2):
    return _value(values, old_values, returns, mask, clip_eps, pick=torch.minimum)


def value_unclipped(values, old_values, returns, mask, clip_eps=0.2):
    return _value(values, old_values, returns, mask, clip_eps, clip=False)


def value_no_half(values, old_values, returns, mask, clip_eps=0.2):
    return _value(values, old_values, returns, mask, clip_eps, scale=1.0)


def value_no_mask(values, old_values, returns, mask, clip_eps=0.2):
    return _value(values, old_values, returns, mask, clip_eps, masked=False)


# (exercise, wrong implementation, a distinctive phrase of the hint it must get)
WRONG = [
    ("bradley_terry_loss", bt_flipped, "Flipped sign"),
    ("bradley_terry_loss", bt_log_of_sigmoid, "unstable at large margins: use F.logsigmoid"),
    ("bradley_terry_loss", bt_log_one_plus_exp, "unstable at large margins: use F.logsigmoid"),
    ("bradley_terry_loss", bt_log_likelihood, "returned the log-likelihood"),
    ("bradley_terry_loss", bt_summed, "summed over pairs"),
    ("bradley_terry_loss", bt_no_margin, "margin is ignored"),
    ("bradley_terry_loss", bt_plus_margin, "margin has the wrong sign"),
    ("rewards_at_last_token", last_pad, "position -1"),
    ("rewards_at_last_token", last_length, "one past the end"),
    ("rewards_at_last_token", last_minus_two, "one before the end"),
    ("rewards_at_last_token", last_first, "first token"),
    ("rewards_at_last_token", last_right_padding_only, "wrong for left padding"),
    ("kl_penalized_rewards", kl_score_everywhere, "added to every token"),
    ("kl_penalized_rewards", kl_score_on_pad, "position -1"),
    ("kl_penalized_rewards", kl_no_beta, "did you multiply by the KL coefficient beta?"),
    ("kl_penalized_rewards", kl_flipped, "KL sign is flipped"),
    ("kl_penalized_rewards", kl_unmasked, "Padding positions got rewards"),
    ("kl_penalized_rewards", kl_only_k1, "estimator='k3' was ignored"),
    ("kl_penalized_rewards", kl_k3_inverted, "ratio pi_ref / pi"),
    ("reinforce_loss", rf_ascent, "returned the objective"),
    ("reinforce_loss", rf_no_baseline, "baseline is not subtracted"),
    ("reinforce_loss", rf_always_the_mean, "baseline argument was ignored"),
    ("reinforce_loss", rf_falsy_baseline, "0.0 is a real baseline"),
    ("reinforce_loss", rf_unmasked, "Padding counted"),
    ("reinforce_loss", rf_token_mean, "mean over tokens"),
    ("reinforce_loss", rf_length_normalised, "not divided by its length"),
    ("reinforce_loss", rf_summed, "summed over the responses"),
    ("reinforce_loss", rf_whitened, "standard deviation"),
    ("gae", gae_bootstrap, "bootstrapped from the value after the end"),
    ("gae", gae_forward, "Forward recursion"),
    ("gae", gae_no_lam, "missing lam"),
    ("gae", gae_returns_are_advantages, "advantages + values"),
    ("gae", gae_no_mask, "mask was ignored"),
    ("gae", gae_returns_unmasked, "not zero on padding"),
    ("ppo_policy_loss", ppo_max, "PPO takes the min"),
    ("ppo_policy_loss", ppo_max_for_negative_advantage, "never rescues a ratio that moved the wrong way"),
    ("ppo_policy_loss", ppo_clip_advantage, "clipped the advantage"),
    ("ppo_policy_loss", ppo_no_mask, "padding included"),
    ("ppo_policy_loss", ppo_divide_logprobs, "divides log-probabilities"),
    ("ppo_policy_loss", ppo_no_exp, "log of the ratio"),
    ("ppo_policy_loss", ppo_objective, "returned the objective"),
    ("value_loss", value_min, "took the min"),
    ("value_loss", value_unclipped, "not clipped"),
    ("value_loss", value_no_half, "this course uses 0.5 * squared error"),
    ("value_loss", value_no_mask, "padding included"),
]


# ------------------------------------------------------------------------------------------------ the tests
def test_fixed_worked_examples_agree_with_the_references():
    """Cases with a fixed expected value (from worked examples) agree with the reference implementation."""
    checked = 0
    for name in RLHF_EXERCISES:
        exercise = EXERCISES[name]
        for case in exercise.cases:
            if case.expected is not None:
                got = exercise.reference(**case.kwargs)
                got = exercise.compare(got) if exercise.compare else got
                torch.testing.assert_close(got, case.expected, atol=1e-5, rtol=1e-5)
                checked += 1
    assert checked >= 4


def test_the_wrong_source_answer_is_rejected_with_the_min_explanation():
    """A function that reproduces the source's -3.6 (max for a negative advantage) is told why PPO takes the min."""
    ok, message = verify("ppo_policy_loss", ppo_max_for_negative_advantage)
    assert not ok
    assert "ratio 1.3, A = -3" in message and "-3.9" in message and "not -3.6" in message


def test_bradley_terry_gradient_check():
    def no_gradient(r_chosen, r_rejected, margin=None):
        return torch.tensor(losses.bradley_terry_loss(r_chosen, r_rejected, margin).item())

    def detached_rejected(r_chosen, r_rejected, margin=None):
        m = 0 if margin is None else margin
        return -F.logsigmoid(r_chosen - r_rejected.detach() - m).mean()

    ok, message = verify("bradley_terry_loss", no_gradient)
    assert not ok and "no gradient" in message
    ok, message = verify("bradley_terry_loss", detached_rejected)
    assert not ok and "gradient is wrong" in message and "sigmoid(delta) - 1" in message


def test_argument_checks():
    ok, message = verify("kl_penalized_rewards", kl_no_validation)
    assert not ok and "beta = -0.1" in message and "ValueError" in message

    def ppo_no_validation(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
        return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps)

    def value_no_validation(values, old_values, returns, mask, clip_eps=0.2):
        return _value(values, old_values, returns, mask, clip_eps)

    for name, fn in [("ppo_policy_loss", ppo_no_validation), ("value_loss", value_no_validation)]:
        ok, message = verify(name, fn)
        assert not ok and "clip_eps" in message and "ValueError" in message


def test_ppo_stats_are_checked():
    def no_stats(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
        return losses.ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps)[0], {}

    def k1_kl(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
        loss, stats = losses.ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps)
        return loss, {**stats, "approx_kl": ((old_logprobs - logprobs) * mask).sum() / mask.sum()}

    def unmasked_clip_fraction(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
        loss, stats = losses.ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps)
        ratio = (logprobs - old_logprobs).exp()
        return loss, {**stats, "clip_fraction": ((ratio - 1).abs() > clip_eps).float().mean()}

    def loss_only(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
        return losses.ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps)[0]

    for fn, phrase in [(no_stats, "keys 'clip_fraction' and 'approx_kl'"), (k1_kl, "k3 estimator"),
                       (unmasked_clip_fraction, "stats['clip_fraction']"), (loss_only, "tuple (loss, stats)")]:
        ok, message = verify("ppo_policy_loss", fn)
        assert not ok and phrase in message, message


def test_gae_must_return_a_pair():
    ok, message = verify("gae", lambda rewards, values, mask, gamma=1.0, lam=0.95: losses.gae(
        rewards, values, mask, gamma, lam)[0])
    assert not ok and "tuple (advantages, returns)" in message


def test_alternative_correct_implementations_pass():
    """Correct but differently written answers are accepted: the checker compares values, not code."""
    def loop_last(values, attention_mask):
        return torch.stack([values[b, _learner_last(attention_mask)[b]] for b in range(len(values))])

    def loop_gae(rewards, values, mask, gamma=1.0, lam=0.95):
        return _learner_gae(rewards, values, mask, gamma, lam)

    def softplus_bt(r_chosen, r_rejected, margin=None):
        m = 0 if margin is None else margin
        return F.softplus(r_rejected + m - r_chosen).mean()

    def ratio_of_probs_ppo(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
        if clip_eps <= 0:
            raise ValueError("clip_eps must be > 0")
        return _ppo(logprobs, old_logprobs, advantages, mask, clip_eps,
                    ratio=logprobs.exp() / old_logprobs.exp())

    for name, fn in [("rewards_at_last_token", loop_last), ("gae", loop_gae), ("bradley_terry_loss", softplus_bt),
                     ("ppo_policy_loss", ratio_of_probs_ppo)]:
        ok, message = verify(name, fn)
        assert ok, message


def gae_zeroes_values(rewards, values, mask, gamma=1.0, lam=0.95):
    """Right advantages and returns, but the caller's values are zeroed on the way out."""
    advantages, returns = _learner_gae(rewards, values, mask, gamma, lam)
    values.zero_()
    return advantages, returns


def gae_masks_values_in_place(rewards, values, mask, gamma=1.0, lam=0.95):
    values *= mask                                       # right result (padding values are ignored anyway)
    return _learner_gae(rewards, values, mask, gamma, lam)


@pytest.mark.parametrize("fn", [gae_zeroes_values, gae_masks_values_in_place])
def test_a_gae_that_changes_values_in_place_is_not_handed_to_ppo(fn):
    ok, message = verify("gae", fn)
    assert not ok and "your function changed its input `values` in place" in message, message
    out = io.StringIO()
    with redirect_stdout(out):
        assert check("gae", fn) is EXERCISES["gae"].reference   # PPO runs on the reference, and the verdict says so
    assert "❌" in out.getvalue() and "`values` in place" in out.getvalue()
    assert "Using the reference implementation of gae" in out.getvalue()


@pytest.mark.parametrize("fn, phrase", [(rf_through_the_reward, "gradient went through the returns"),
                                        (rf_through_the_baseline, "gradient went through the returns"),
                                        (rf_detached_everything, "carries no gradient")])
def test_reinforce_gradient_must_not_flow_through_the_return(fn, phrase):
    """Right values, wrong gradient: only a property check with a policy-dependent return (r - beta * log-ratio)
    can tell, and it names the missing detach."""
    ok, message = verify("reinforce_loss", fn)
    assert not ok and "gives the right values but" in message and phrase in message, message


def test_reinforce_alternative_correct_implementation_passes():
    """Written as a loop over responses, or as one einsum: accepted (values and gradient alike)."""
    def loop_reinforce(logprobs, returns, mask, baseline=None):
        return _rf(logprobs, returns, mask, baseline)

    def einsum_reinforce(logprobs, returns, mask, baseline=None):
        b = returns.detach().mean() if baseline is None else torch.as_tensor(baseline)
        return -torch.einsum("b,bt->", returns.detach() - b, logprobs * mask) / len(returns)

    for fn in (loop_reinforce, einsum_reinforce):
        ok, message = verify("reinforce_loss", fn)
        assert ok, message


(test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
 test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(RLHF_EXERCISES, WRONG)
