"""rlhf_kit.ratings: lab 08's statistics, checked against what can be worked out by hand and against properties
(a bootstrap over prompts is wider than one over samples, ratings shift with the anchor, ...)."""

import math

import pytest
import torch

from rlhf_kit import ratings


def _games(skill, n_rows, seed, tie_share=0.1, n_prompts=None):
    """Rows (i, j, s) between random pairs of players of the given skills; prompt ids too when n_prompts."""
    g = torch.Generator().manual_seed(seed)
    n = len(skill)
    i = torch.randint(n, (n_rows,), generator=g)
    j = (i + torch.randint(1, n, (n_rows,), generator=g)) % n
    s = (torch.rand(n_rows, generator=g) < torch.sigmoid(skill[i] - skill[j])).float()
    s = torch.where(torch.rand(n_rows, generator=g) < tie_share, 0.5, s)
    rows = torch.stack([i.float(), j.float(), s], 1)
    return rows if n_prompts is None else (rows, torch.randint(n_prompts, (n_rows,), generator=g))


# ------------------------------------------------------------------------------------------------ win_rate
def test_all_wins_and_all_losses():
    a, b = torch.ones(5, 3), torch.zeros(5, 3)
    assert ratings.win_rate(a, b) == (1.0, 1.0, 1.0)
    assert ratings.win_rate(b, a) == (0.0, 0.0, 0.0)
    assert ratings.win_rate(a, a) == (0.5, 0.5, 0.5)


def test_ties_and_the_margin():
    a = torch.tensor([1.0, 1.0, 1.0, 1.0])
    b = torch.tensor([0.0, 0.75, 1.0, 1.5])          # differences 1, 0.25, 0, -0.5
    assert ratings.win_rate(a, b)[0] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert ratings.win_rate(a, b, tie_margin=0.25)[0] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert ratings.win_rate(a, b, tie_margin=0.5)[0] == pytest.approx((1 + 0.5 + 0.5 + 0.5) / 4)


def test_the_interval_follows_the_documented_recipe():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(20, 3, generator=g), torch.randn(20, 3, generator=g)
    m = torch.where(a > b, 1.0, torch.where(a < b, 0.0, 0.5)).mean(1)
    boot = m[torch.randint(20, (500, 20), generator=torch.Generator().manual_seed(4))].mean(1)
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975])).tolist()
    assert ratings.win_rate(a, b, n_boot=500, seed=4) == (m.mean().item(), low, high)
    assert ratings.win_rate(a, b, n_boot=500, seed=4) == ratings.win_rate(a, b, n_boot=500, seed=4)
    rate, low, high = ratings.win_rate(a, b)
    assert low <= rate <= high


def test_a_bootstrap_over_prompts_is_wider_than_over_samples_when_samples_are_alike():
    """Samples of one prompt share an easy/hard prompt effect: resampling them as if independent is too sure."""
    g = torch.Generator().manual_seed(0)
    n_prompts, k = 40, 8
    prompt_effect = 2.0 * torch.randn(n_prompts, 1, generator=g)
    a, b = prompt_effect + torch.randn(n_prompts, k, generator=g), torch.randn(n_prompts, k, generator=g)
    _, low, high = ratings.win_rate(a, b)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)       # every sample its own "prompt"
    _, s_low, s_high = ratings.win_rate(flat_a, flat_b)
    assert high - low > 1.5 * (s_high - s_low)
    independent = torch.randn(n_prompts, k, generator=g)           # no prompt effect: the two agree roughly
    _, low, high = ratings.win_rate(independent, b)
    _, s_low, s_high = ratings.win_rate(independent.reshape(-1), b.reshape(-1))
    assert 0.7 < (high - low) / (s_high - s_low) < 1.4


def test_win_rate_errors():
    with pytest.raises(ValueError, match="must pair up"):
        ratings.win_rate(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        ratings.win_rate(torch.zeros(1, 4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="tie_margin must be >= 0"):
        ratings.win_rate(torch.zeros(3), torch.zeros(3), tie_margin=-1.0)
    with pytest.raises(ValueError, match="n_boot must be >= 1"):
        ratings.win_rate(torch.zeros(3), torch.zeros(3), n_boot=0)


# ------------------------------------------------------------------------------------------------ Bradley-Terry
def test_two_players_without_l2_recover_the_log_odds():
    """Player 0 wins 3 games of 4: the fit says sigmoid(r_0 - r_1) = 3/4, so r_0 - r_1 = log 3."""
    rows = torch.tensor([[0, 1, 1.0], [0, 1, 1.0], [1, 0, 0.0], [1, 0, 1.0]])
    r = ratings.bradley_terry_ratings(rows, 2, l2=0.0)
    assert r.tolist() == pytest.approx([0.0, -math.log(3)], abs=1e-6)
    # a tie is half a win to each side: 2 wins and 2 ties for player 0 out of 4 games is a score of 3 of 4 too
    ties = torch.tensor([[0, 1, 1.0], [0, 1, 1.0], [0, 1, 0.5], [1, 0, 0.5]])
    assert ratings.bradley_terry_ratings(ties, 2, l2=0.0).tolist() == pytest.approx([0.0, -math.log(3)], abs=1e-6)
    # l2 pulls the two ratings together, anchoring the second: log 3 shrinks
    shrunk = ratings.bradley_terry_ratings(rows, 2, anchor=1)
    assert shrunk[1] == 0 and 0 < shrunk[0] < math.log(3)


def test_the_fit_is_at_the_minimum_of_the_documented_loss():
    rows = _games(torch.tensor([0.0, 0.5, -1.0, 1.5]), 60, seed=3)
    r = ratings.bradley_terry_ratings(rows, 4, l2=0.05).double().requires_grad_(True)
    i, j, s = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2].double()

    def loss(r):
        d = r[i] - r[j]
        return (-(s * torch.nn.functional.logsigmoid(d) + (1 - s) * torch.nn.functional.logsigmoid(-d)).mean()
                + 0.05 * (r ** 2).mean())

    # the anchor shift moves the ratings off the l2 term's minimum along (1, 1, 1, 1): the gradient there is that
    # direction only; shifted back to mean 0 (where the unanchored fit is), the gradient vanishes
    centred = (r - r.mean()).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(centred), centred)
    assert grad.abs().max() < 1e-6


def test_ratings_move_with_the_anchor_only_by_a_shift():
    rows = _games(torch.tensor([0.0, 1.0, -0.5, 2.0, 0.3]), 80, seed=0)
    base = ratings.bradley_terry_ratings(rows, 5, anchor=0)
    assert base[0] == 0
    for anchor in range(1, 5):
        other = ratings.bradley_terry_ratings(rows, 5, anchor=anchor)
        assert other[anchor] == 0
        torch.testing.assert_close(other, base - base[anchor], atol=1e-6, rtol=0)


def test_an_undefeated_player_stays_finite_with_l2_and_is_refused_without():
    rows = torch.tensor([[2, 0, 1.0], [2, 1, 1.0], [0, 1, 1.0], [1, 0, 1.0], [2, 0, 1.0]])
    r = ratings.bradley_terry_ratings(rows, 3)
    assert r.isfinite().all() and r[2] == r.max() and 2 < r[2] < 10
    with pytest.raises(ValueError, match="never lost, or never won"):
        ratings.bradley_terry_ratings(rows, 3, l2=0.0)


def test_many_games_recover_the_skills():
    skill = torch.tensor([0.0, 1.0, -1.0, 0.5])
    rows = _games(skill, 4000, seed=1, tie_share=0.0)
    r = ratings.bradley_terry_ratings(rows, 4, l2=0.0)
    torch.testing.assert_close(r, skill, atol=0.15, rtol=0)


def test_fit_from_matrices_equals_fit_from_rows():
    rows = _games(torch.tensor([0.0, 1.0, -1.0]), 30, seed=5)
    wins = torch.zeros(3, 3)
    for i, j, s in rows.tolist():
        wins[int(i), int(j)] += s
        wins[int(j), int(i)] += 1 - s
    torch.testing.assert_close(ratings.fit_bradley_terry(wins, wins + wins.T, anchor=1),
                               ratings.bradley_terry_ratings(rows, 3, anchor=1), atol=0, rtol=0)
    with pytest.raises(ValueError, match="games = wins \\+ wins.T"):
        ratings.fit_bradley_terry(wins, wins)


def test_elo_scale():
    assert ratings.elo(torch.tensor([0.0, math.log(10)])).tolist() == pytest.approx([0.0, 400.0])
    assert ratings.elo(torch.tensor([1.0])).item() == pytest.approx(173.72, abs=0.01)


@pytest.mark.parametrize("rows, n_players, anchor, match", [
    ([[0, 3, 1.0]], 3, 0, "whole numbers in \\[0, 3\\)"),
    ([[0, -1, 1.0]], 3, 0, "whole numbers in \\[0, 3\\)"),
    ([[0, 1.5, 1.0]], 3, 0, "whole numbers"),
    ([[0, 1, 1.5]], 3, 0, "score_i must be in \\[0, 1\\]"),
    ([[0, 1, -0.5]], 3, 0, "score_i must be in \\[0, 1\\]"),
    ([[0, 0, 1.0]], 1, 0, "n_players must be >= 2"),
    ([[0, 1, 1.0]], 3, 3, "anchor must be a player index"),
    ([[1, 1, 1.0]], 3, 0, "playing itself"),
])
def test_bradley_terry_errors(rows, n_players, anchor, match):
    with pytest.raises(ValueError, match=match):
        ratings.bradley_terry_ratings(torch.tensor(rows), n_players, anchor)


def test_no_rows_is_an_error():
    with pytest.raises(ValueError, match="no rows"):
        ratings.bradley_terry_ratings(torch.zeros(0, 3), 3)


# ------------------------------------------------------------------------------------------------ rating_intervals
def test_rating_intervals_contain_the_fit_and_pin_the_anchor():
    rows, prompt_ids = _games(torch.tensor([0.0, 0.8, -0.6, 1.5]), 400, seed=2, n_prompts=40)
    r, low, high = ratings.rating_intervals(rows, prompt_ids, 4, anchor=0, n_boot=100)
    torch.testing.assert_close(r, ratings.bradley_terry_ratings(rows, 4), atol=0, rtol=0)
    assert low[0] == high[0] == 0
    assert bool((low <= r).all()) and bool((r <= high).all())
    assert bool((high[1:] - low[1:] > 0.05).all())
    again = ratings.rating_intervals(rows, prompt_ids, 4, anchor=0, n_boot=100)
    assert all(torch.equal(x, y) for x, y in zip(again, (r, low, high)))


def test_one_replicate_of_rating_intervals_is_a_fit_on_the_resampled_prompts():
    """n_boot=1: the interval collapses onto one refit, on the games of the prompts drawn (repeats counted)."""
    rows, prompt_ids = _games(torch.tensor([0.0, 0.8, -0.6]), 90, seed=6, n_prompts=9)
    _, low, high = ratings.rating_intervals(rows, prompt_ids, 3, n_boot=1, seed=3)
    drawn = torch.randint(9, (1, 9), generator=torch.Generator().manual_seed(3))[0]
    resampled = torch.cat([rows[prompt_ids == p] for p in drawn.tolist()])
    torch.testing.assert_close(low, ratings.bradley_terry_ratings(resampled, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(high, low, atol=0, rtol=0)


def test_rating_intervals_errors():
    rows = torch.tensor([[0, 1, 1.0], [1, 0, 0.5]])
    with pytest.raises(ValueError, match="one prompt per outcomes row"):
        ratings.rating_intervals(rows, torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="needs l2 > 0"):
        ratings.rating_intervals(rows, torch.tensor([0, 1]), 2, l2=0.0)


# ------------------------------------------------------------------------------------------------ distinct_n
@pytest.mark.parametrize("responses, n, expected", [
    (["the cat sat", "the cat ran", "the cat sat"], 2, 3 / 6),
    (["the cat sat", "the cat ran", "the cat sat"], 1, 4 / 9),
    (["a b", "c d"], 2, 1.0),                       # (b c) would cross the boundary: not counted
    (["A a a"], 1, 2 / 3),                          # case kept
    (["one two", "three"], 3, 0.0),                 # no trigrams at all
    ([], 1, 0.0),
    (["x y z w"], 4, 1.0),
])
def test_distinct_n_examples(responses, n, expected):
    assert ratings.distinct_n(responses, n) == pytest.approx(expected)


def test_distinct_n_errors():
    with pytest.raises(ValueError, match="n must be a whole number >= 1"):
        ratings.distinct_n(["a b"], 0)
    with pytest.raises(ValueError, match="got one string"):
        ratings.distinct_n("a b c", 1)


# ------------------------------------------------------------------------------------------------ length control
def test_length_explains_everything():
    """A judge that only likes length: A is longer on 80% of prompts, so its raw win rate is high, but at equal
    length it wins half the time."""
    g = torch.Generator().manual_seed(0)
    n = 400
    length_a = torch.randint(20, 80, (n,), generator=g).float() + 15 * (torch.rand(n, generator=g) < 0.8)
    length_b = torch.randint(20, 80, (n,), generator=g).float()
    gap = (length_a - length_b) / 20
    scores_a = (torch.rand(n, generator=g) < torch.sigmoid(2 * gap)).float()    # noisy, but only length
    result = ratings.length_controlled_win_rate(scores_a, torch.full((n,), 0.5), length_a, length_b)
    assert result["win_rate"] > 0.6
    assert abs(result["lc_win_rate"] - 0.5) < 0.07
    assert result["length_slope"] > 1


def test_length_does_not_matter():
    g = torch.Generator().manual_seed(1)
    n = 500
    length_a, length_b = torch.randint(10, 90, (2, n), generator=g).float()
    scores_a, scores_b = torch.randn(n, generator=g) + 0.6, torch.randn(n, generator=g)
    result = ratings.length_controlled_win_rate(scores_a, scores_b, length_a, length_b)
    assert result["win_rate"] == pytest.approx(ratings.win_rate(scores_a, scores_b)[0])
    assert result["lc_win_rate"] == pytest.approx(result["win_rate"], abs=0.03)
    assert abs(result["length_slope"]) < 0.25


def test_separable_lengths_and_equal_lengths_stay_finite():
    length_a = torch.tensor([10.0, 20.0, 30.0, 40.0])
    length_b = torch.full((4,), 25.0)
    wins = torch.tensor([0.0, 0.0, 1.0, 1.0])                    # exactly the longer one wins
    result = ratings.length_controlled_win_rate(wins, torch.full((4,), 0.5), length_a, length_b)
    assert all(math.isfinite(v) for v in result.values()) and result["length_slope"] > 5
    same = ratings.length_controlled_win_rate(wins, torch.full((4,), 0.5), length_b, length_b)
    assert same == {"win_rate": 0.5, "lc_win_rate": pytest.approx(0.5), "length_slope": 0.0}
    with pytest.raises(ValueError, match="one length per score"):
        ratings.length_controlled_win_rate(wins, wins, length_a[:3], length_b[:3])
