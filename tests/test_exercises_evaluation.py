"""Lab 08's checkers (win_rate, bradley_terry_ratings, distinct_n): each accepts the reference and independently
written correct versions, and names each typical mistake. The wrong versions are written the way a learner would
write them, apart from the checker's catalogue, so a test fails if the test vectors stop telling a mistake apart."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from exercise_contract import contract

from rlhf_kit import ratings
from rlhf_kit.exercises import EXERCISES, verify

NAMES = ["win_rate", "bradley_terry_ratings", "distinct_n"]


# ------------------------------------------------------------------------------------------------ win_rate
def _check_scores(a, b, tie_margin):
    if a.shape != b.shape or len(a) < 2 or tie_margin < 0:
        raise ValueError("bad scores or tie_margin")


def _quantiles(boot):
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975]))
    return low.item(), high.item()


def win_rate_loop(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    """Correct, prompt by prompt in plain Python, drawing from the global generator (seeded: the same stream)."""
    _check_scores(scores_a, scores_b, tie_margin)
    rows_a = scores_a.tolist() if scores_a.dim() == 2 else [[x] for x in scores_a.tolist()]
    rows_b = scores_b.tolist() if scores_b.dim() == 2 else [[x] for x in scores_b.tolist()]
    per_prompt = []
    for row_a, row_b in zip(rows_a, rows_b):
        outcomes = [1.0 if x - y > tie_margin else 0.0 if y - x > tie_margin else 0.5 for x, y in zip(row_a, row_b)]
        per_prompt.append(sum(outcomes) / len(outcomes))
    m = torch.tensor(per_prompt, dtype=torch.float64)
    torch.manual_seed(seed)
    boot = m[torch.randint(len(m), (n_boot, len(m)))].mean(1)
    return sum(per_prompt) / len(per_prompt), *_quantiles(boot.float())


def _outcomes(scores_a, scores_b, tie_margin, strict=None):
    diff = scores_a - scores_b
    if diff.dim() == 1:
        diff = diff[:, None]
    if strict == "lose":
        return (diff > tie_margin).float()
    if strict == "win":
        return (diff >= 0).float()
    wins, losses = (diff > tie_margin).float(), (diff < -tie_margin).float()
    return wins + 0.5 * (1 - wins - losses)


def _percentile_bootstrap(y, n_boot, seed):
    m = y.mean(1)
    g = torch.Generator().manual_seed(seed)
    return (y.mean().item(), *_quantiles(m[torch.randint(len(m), (n_boot, len(m)), generator=g)].mean(1)))


def win_rate_ties_lose(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    return _percentile_bootstrap(_outcomes(scores_a, scores_b, tie_margin, strict="lose"), n_boot, seed)


def win_rate_ties_win(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    return _percentile_bootstrap(_outcomes(scores_a, scores_b, tie_margin, strict="win"), n_boot, seed)


def win_rate_no_margin(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    return _percentile_bootstrap(_outcomes(scores_a, scores_b, 0.0), n_boot, seed)


def win_rate_of_b(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    return _percentile_bootstrap(_outcomes(scores_b, scores_a, tie_margin), n_boot, seed)


def win_rate_resamples_samples(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    y = _outcomes(scores_a, scores_b, tie_margin).flatten()
    g = torch.Generator().manual_seed(seed)
    return (y.mean().item(), *_quantiles(y[torch.randint(len(y), (n_boot, len(y)), generator=g)].mean(1)))


def win_rate_normal(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    m = _outcomes(scores_a, scores_b, tie_margin).mean(1)
    rate, se = m.mean().item(), m.std().item() / math.sqrt(len(m))
    return rate, rate - 1.96 * se, rate + 1.96 * se


def win_rate_binomial(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    y = _outcomes(scores_a, scores_b, tie_margin)
    rate = y.mean().item()
    se = math.sqrt(rate * (1 - rate) / y.numel())
    return rate, rate - 1.96 * se, rate + 1.96 * se


def win_rate_bootstrap_std(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    m = _outcomes(scores_a, scores_b, tie_margin).mean(1)
    g = torch.Generator().manual_seed(seed)
    boot = m[torch.randint(len(m), (n_boot, len(m)), generator=g)].mean(1)
    return m.mean().item(), (boot.mean() - 2 * boot.std()).item(), (boot.mean() + 2 * boot.std()).item()


def win_rate_other_rng(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
    """Right rate, a bootstrap drawn another way (multinomial): the message says to follow the recipe."""
    m = _outcomes(scores_a, scores_b, tie_margin).mean(1)
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(torch.ones(len(m)), n_boot * len(m), replacement=True, generator=g).view(n_boot, -1)
    return (m.mean().item(), *_quantiles(m[idx].mean(1)))


# ------------------------------------------------------------------------------------------------ Bradley-Terry
def _check_games(outcomes, n_players, anchor):
    if n_players < 2 or len(outcomes) == 0 or not 0 <= anchor < n_players:
        raise ValueError("bad n_players, outcomes or anchor")
    if outcomes[:, :2].min() < 0 or outcomes[:, :2].max() >= n_players:
        raise ValueError("player index out of range")
    if outcomes[:, 2].min() < 0 or outcomes[:, 2].max() > 1:
        raise ValueError("score outside [0, 1]")


def bt_lbfgs(outcomes, n_players, anchor=0, l2=0.01):
    """Correct: autograd and LBFGS with a strong Wolfe line search, in float64."""
    _check_games(outcomes, n_players, anchor)
    i, j, s = outcomes[:, 0].long(), outcomes[:, 1].long(), outcomes[:, 2].double()
    r = torch.zeros(n_players, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([r], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        d = r[i] - r[j]
        loss = -(s * F.logsigmoid(d) + (1 - s) * F.logsigmoid(-d)).mean() + l2 * (r ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    r = r.detach()
    return r - r[anchor]


def descend(outcomes, n_players, l2, steps=3000, lr=1.0, summed=False):
    """Plain gradient descent with the gradient written out: d loss / d r_i = mean over i's rows of
    (sigmoid(r_i - r_j) - s), minus the same over j's rows, plus 2 l2 r / n_players. Unanchored."""
    i, j, s = outcomes[:, 0].long(), outcomes[:, 1].long(), outcomes[:, 2]
    r = torch.zeros(n_players)
    for _ in range(steps):
        push = torch.sigmoid(r[i] - r[j]) - s
        push = push if summed else push / len(s)
        r = r - lr * (torch.zeros(n_players).index_add(0, i, push).index_add(0, j, -push) + 2 * l2 * r / n_players)
    return r


def bt_gradient_descent(outcomes, n_players, anchor=0, l2=0.01):
    """Correct: 3000 steps of plain gradient descent at lr 1, as the docstring suggests."""
    _check_games(outcomes, n_players, anchor)
    r = descend(outcomes, n_players, l2)
    return r - r[anchor]


def bt_autograd_sgd(outcomes, n_players, anchor=0, l2=0.01):
    """Correct: what a learner most likely writes, autograd and torch.optim.SGD at lr 1 for 3000 steps (about 1 s
    a case): it lands within the checker's tolerance."""
    _check_games(outcomes, n_players, anchor)
    r = torch.zeros(n_players, requires_grad=True)
    opt = torch.optim.SGD([r], lr=1.0)
    i, j, s = outcomes[:, 0].long(), outcomes[:, 1].long(), outcomes[:, 2]
    for _ in range(3000):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(r[i] - r[j], s) + l2 * (r ** 2).mean()
        loss.backward()
        opt.step()
    return (r - r[anchor]).detach()


def bt_elo(outcomes, n_players, anchor=0, l2=0.01):
    return bt_lbfgs(outcomes, n_players, anchor, l2) * 400 / math.log(10)


def bt_elo_log10(outcomes, n_players, anchor=0, l2=0.01):
    return bt_lbfgs(outcomes, n_players, anchor, l2) * 400 / math.log10(math.e)


def bt_flipped(outcomes, n_players, anchor=0, l2=0.01):
    r = descend(outcomes[:, [1, 0, 2]], n_players, l2)     # i and j mixed up: s becomes j's score
    return r - r[anchor]


def bt_drops_ties(outcomes, n_players, anchor=0, l2=0.01):
    decided = outcomes[outcomes[:, 2] != 0.5]
    return bt_lbfgs(decided, n_players, anchor, l2)


def bt_centred(outcomes, n_players, anchor=0, l2=0.01):
    r = descend(outcomes, n_players, l2)
    return r - r.mean()


def bt_unanchored(outcomes, n_players, anchor=0, l2=0.01):
    return descend(outcomes, n_players, l2)


def bt_anchor_zero(outcomes, n_players, anchor=0, l2=0.01):
    r = descend(outcomes, n_players, l2)
    return r - r[0]


def bt_l2_sum(outcomes, n_players, anchor=0, l2=0.01):
    r = descend(outcomes, n_players, l2 * n_players)          # l2 * (r ** 2).sum(): n_players times the mean's
    return r - r[anchor]


def bt_summed_loss(outcomes, n_players, anchor=0, l2=0.01):
    """The loss summed over the rows (lr scaled down so the descent stays stable), l2 * mean(r ** 2) kept."""
    i, j, s = outcomes[:, 0].long(), outcomes[:, 1].long(), outcomes[:, 2].double()
    r = torch.zeros(n_players, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([r], max_iter=1000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(r[i] - r[j], s, reduction="sum") + l2 * (r ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return (r - r[anchor]).detach()


def bt_no_l2(outcomes, n_players, anchor=0, l2=0.01):
    r = descend(outcomes, n_players, 0.0)
    return r - r[anchor]


def bt_few_steps(outcomes, n_players, anchor=0, l2=0.01):
    r = descend(outcomes, n_players, l2, steps=30)
    return r - r[anchor]


# ------------------------------------------------------------------------------------------------ distinct_n
def distinct_counter(responses, n):
    """Correct: a Counter of n-grams built with zip."""
    if n < 1:
        raise ValueError("n >= 1")
    counts = Counter()
    for response in responses:
        words = response.split()
        counts.update(zip(*(words[k:] for k in range(n))))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def _ngrams(words, n):
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_per_response(responses, n):
    ratios = []
    for response in responses:
        grams = _ngrams(response.split(), n)
        if grams:
            ratios.append(len(set(grams)) / len(grams))
    return sum(ratios) / len(ratios) if ratios else 0.0


def distinct_per_response_zeros(responses, n):
    ratios = [len(set(g)) / len(g) if g else 0.0 for g in (_ngrams(r.split(), n) for r in responses)]
    return sum(ratios) / len(ratios)


def distinct_joined(responses, n):
    grams = _ngrams(" ".join(responses).split(), n)
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_characters(responses, n):
    grams = [r[i:i + n] for r in responses for i in range(len(r) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_responses(responses, n):
    return len(set(responses)) / len(responses)


def distinct_of_unique_responses(responses, n):
    grams = [g for r in set(responses) for g in _ngrams(r.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_off_by_one(responses, n):
    grams = [tuple(r.split()[i:i + n]) for r in responses for i in range(len(r.split()) - n)]
    return len(set(grams)) / len(grams) if grams else 0.0


WRONG = [
    ("win_rate", win_rate_ties_lose, "Ties count as losses"),
    ("win_rate", win_rate_ties_win, "Ties count as wins"),
    ("win_rate", win_rate_no_margin, "tie_margin is ignored"),
    ("win_rate", win_rate_of_b, "That is B's win rate"),
    ("win_rate", win_rate_resamples_samples, "You resampled individual samples"),
    ("win_rate", win_rate_normal, "normal approximation"),
    ("win_rate", win_rate_binomial, "normal approximation"),
    ("win_rate", win_rate_bootstrap_std, "normal approximation"),
    ("win_rate", win_rate_other_rng, "follow the docstring's recipe exactly"),
    ("bradley_terry_ratings", bt_elo, "Elo scale"),
    ("bradley_terry_ratings", bt_elo_log10, "Elo scale"),
    ("bradley_terry_ratings", bt_flipped, "sign is flipped"),
    ("bradley_terry_ratings", bt_drops_ties, "Ties were dropped"),
    ("bradley_terry_ratings", bt_centred, "average 0"),
    ("bradley_terry_ratings", bt_unanchored, "average 0"),
    ("bradley_terry_ratings", bt_anchor_zero, "You anchored player 0"),
    ("bradley_terry_ratings", bt_l2_sum, "not a sum"),
    ("bradley_terry_ratings", bt_summed_loss, "*mean* over the rows"),
    ("bradley_terry_ratings", bt_no_l2, "The l2 term is missing"),
    ("bradley_terry_ratings", bt_few_steps, "stopped before it converged"),
    ("distinct_n", distinct_per_response, "averaged distinct-n over the responses"),
    ("distinct_n", distinct_per_response_zeros, "averaged distinct-n over the responses"),
    ("distinct_n", distinct_joined, "cross from one response into the next"),
    ("distinct_n", distinct_characters, "character n-grams"),
    ("distinct_n", distinct_responses, "You counted distinct responses"),
    ("distinct_n", distinct_of_unique_responses, "n-grams of the distinct responses only"),
    ("distinct_n", distinct_off_by_one, "Off by one"),
]
CORRECT = [("win_rate", win_rate_loop), ("bradley_terry_ratings", bt_lbfgs),
           ("bradley_terry_ratings", bt_gradient_descent), ("bradley_terry_ratings", bt_autograd_sgd),
           ("distinct_n", distinct_counter)]

(test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
 test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(NAMES, WRONG, CORRECT)


def test_fixed_worked_examples_agree_with_the_references():
    checked = 0
    for name in NAMES:
        exercise = EXERCISES[name]
        for case in exercise.cases:
            if case.expected is not None:
                got = exercise.reference(**case.kwargs)
                if isinstance(case.expected, torch.Tensor):
                    torch.testing.assert_close(got.double(), case.expected.double(), atol=1e-6, rtol=0)
                else:
                    assert got == pytest.approx(case.expected, abs=1e-7)
                checked += 1
    assert checked == 4


def test_the_samples_case_tells_prompts_from_samples():
    """The case with alike samples per prompt is where resampling samples gives a visibly narrower interval."""
    case = EXERCISES["win_rate"].cases[1]
    _, low, high = ratings.win_rate(**case.kwargs)
    _, s_low, s_high = win_rate_resamples_samples(**case.kwargs)
    assert s_high - s_low < 0.8 * (high - low)


def test_argument_checks_are_named():
    def no_checks(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
        return ratings.win_rate(scores_a, scores_b, abs(tie_margin), n_boot, seed)

    ok, message = verify("win_rate", no_checks)
    assert not ok and "tie_margin = -0.1" in message and "ValueError" in message

    def index_error(outcomes, n_players, anchor=0, l2=0.01):
        if outcomes[:, 2].max() > 1 or n_players < 2 or len(outcomes) == 0 or anchor >= n_players:
            raise ValueError("bad")
        return bt_lbfgs(outcomes, n_players, anchor, l2) if outcomes[:, :2].max() < n_players else torch.zeros(1)[5]

    ok, message = verify("bradley_terry_ratings", index_error)
    assert not ok and "player 3 with n_players=3" in message and "raised IndexError" in message

    ok, message = verify("distinct_n", lambda responses, n: ratings.distinct_n(responses, max(n, 1)))
    assert not ok and "n = 0" in message
