"""Lab 08: evaluation's exercises, `win_rate` (with a bootstrap interval over prompts), `bradley_terry_ratings`
and `distinct_n`.

References: `rlhf_kit.ratings.win_rate`, `rlhf_kit.ratings.bradley_terry_ratings`, `rlhf_kit.ratings.distinct_n`.
Scores come a row per prompt, k samples each: scores[p, s] is sample s of prompt p.
"""

from __future__ import annotations

import math

import torch

from .. import ratings
from .checking import Case, Exercise, Mistake, must_reject, randn, show
from .ranking import _number, _same_number, _show_number


# ------------------------------------------------------------------------------------------------ win_rate
def _three_numbers(value) -> list[float] | None:
    """(rate, low, high) as floats, or None when `value` is not three numbers."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        return None
    numbers = [_number(v) for v in value]
    return None if None in numbers else numbers


def _same_triple(expected, got) -> bool:
    numbers = _three_numbers(got)
    return numbers is not None and all(math.isclose(x, float(e), abs_tol=1e-5) for x, e in zip(numbers, expected))


def _triple_mismatch(expected, got) -> str:
    numbers = _three_numbers(got)
    if numbers is None:
        return f"return a tuple of three numbers (rate, ci_low, ci_high); got {show(got)}"
    shown = "({:.6f}, {:.6f}, {:.6f})"
    text = f"expected (rate, ci_low, ci_high) = {shown.format(*expected)}, got {shown.format(*numbers)}"
    if math.isclose(numbers[0], expected[0], abs_tol=1e-5):
        text += (" - the rate is right but not the interval: follow the docstring's recipe exactly, "
                 "g = torch.Generator().manual_seed(seed), idx = torch.randint(n_prompts, (n_boot, n_prompts), "
                 "generator=g), boot = m[idx].mean(1) with m the per-prompt means, then torch.quantile(boot, "
                 "torch.tensor([0.025, 0.975]))")
    return text


def _rows(scores) -> torch.Tensor:
    return scores[:, None] if scores.dim() == 1 else scores


def _win_rate_model(outcome="right", unit="prompt", interval="quantile"):
    """A wrong win_rate: the reference recipe with one ingredient changed."""
    def impl(scores_a, scores_b, tie_margin=0.0, n_boot=1000, seed=0):
        diff = _rows(scores_a) - _rows(scores_b)
        if outcome == "right":
            y = torch.where(diff > tie_margin, 1.0, torch.where(diff < -tie_margin, 0.0, 0.5))
        elif outcome == "no_margin":
            y = torch.where(diff > 0, 1.0, torch.where(diff < 0, 0.0, 0.5))
        elif outcome == "ties_lose":
            y = (diff > tie_margin).float()
        elif outcome == "ties_win":
            y = (diff >= -tie_margin).float()
        else:   # "b": B's win rate
            y = torch.where(diff < -tie_margin, 1.0, torch.where(diff > tie_margin, 0.0, 0.5))
        units = y.mean(1) if unit == "prompt" else y.reshape(-1)
        rate = y.mean()
        g = torch.Generator().manual_seed(seed)
        boot = units[torch.randint(len(units), (n_boot, len(units)), generator=g)].mean(1)
        if interval == "quantile":
            low, high = torch.quantile(boot, torch.tensor([0.025, 0.975]))
        else:   # "normal": rate +- 1.96 standard errors of the mean over the units
            half = 1.96 * units.std() / math.sqrt(len(units))
            low, high = rate - half, rate + half
        return rate.item(), float(low), float(high)
    return impl


def _rate_right(case, got) -> tuple[list[float], list[float]] | None:
    """(got, expected) as numbers when got has the reference's rate, else None."""
    numbers = _three_numbers(got)
    expected = ratings.win_rate(**case.kwargs)
    if numbers is None or not math.isclose(numbers[0], expected[0], abs_tol=1e-5):
        return None
    return numbers, list(expected)


def _bootstrap_rates(case) -> torch.Tensor:
    """(n_boot,) the reference's bootstrap rates on `case`."""
    kwargs = {"tie_margin": 0.0, "n_boot": 1000, "seed": 0, **case.kwargs}
    per_prompt = ratings._outcomes(kwargs["scores_a"], kwargs["scores_b"], kwargs["tie_margin"]).mean(1)
    return per_prompt[ratings._bootstrap_indices(len(per_prompt), kwargs["n_boot"], kwargs["seed"])].mean(1)


def _normal_interval(case, got) -> bool:
    """A (nonzero) interval centred on the rate or on the mean of the bootstrap rates, where the percentile
    interval is not centred there: a mean plus or minus some standard errors."""
    both = _rate_right(case, got)
    if both is None:
        return False
    (rate, low, high), (_, e_low, e_high) = both
    centre = (low + high) / 2
    centred = min(abs(centre - rate), abs(centre - _bootstrap_rates(case).mean().item())) < 1e-5
    reference_centred = abs((e_low + e_high) / 2 - rate) < 1e-3 and e_high > e_low
    return centred and high - low > 1e-6 and not reference_centred


def _too_narrow(case, got) -> bool:
    both = _rate_right(case, got)
    if both is None:
        return False
    (_, low, high), (_, e_low, e_high) = both
    return high - low < 0.8 * (e_high - e_low)


_SAMPLES_HINT = ("You resampled individual samples: the bootstrap resamples *prompts*. The k samples of one prompt "
                 "are not independent (an easy prompt is easy for all of them), so treating them as independent "
                 "makes the interval too narrow: average each prompt's outcomes, m = outcomes.mean(1), and resample "
                 "rows of m, idx = torch.randint(n_prompts, (n_boot, n_prompts), generator=g).")

_WIN_RATE_MISTAKES = [
    Mistake("Ties count as losses: an outcome within tie_margin (|a - b| <= tie_margin) is a tie and counts half, "
            "0.5, so outcome = 1 if a - b > tie_margin, 0 if a - b < -tie_margin, else 0.5.",
            _win_rate_model(outcome="ties_lose")),
    Mistake("Ties count as wins: a tie (|a - b| <= tie_margin) counts half, 0.5, not 1: outcome = 1 if a - b > "
            "tie_margin, 0 if a - b < -tie_margin, else 0.5.", _win_rate_model(outcome="ties_win")),
    Mistake("tie_margin is ignored: a difference within it, |a - b| <= tie_margin, is a tie (0.5), even when it "
            "is not exactly 0.", _win_rate_model(outcome="no_margin")),
    Mistake("That is B's win rate: the rate counts how often *A* beats B, outcome 1 where scores_a - scores_b > "
            "tie_margin.", _win_rate_model(outcome="b")),
    Mistake(_SAMPLES_HINT, _win_rate_model(unit="sample")),
    Mistake("Your interval is the normal approximation (a mean plus or minus about 2 standard errors): the "
            "course's interval is the percentile bootstrap, the 2.5% and 97.5% quantiles of the bootstrap rates, "
            "torch.quantile(boot, torch.tensor([0.025, 0.975])), which need not be symmetric (a rate near 1 "
            "cannot go above 1).",
            _win_rate_model(interval="normal"), detect=_normal_interval),
    Mistake(_SAMPLES_HINT, _win_rate_model(unit="sample", interval="normal"), detect=_too_narrow),
]


def _win_rate_case(n_prompts, k, data_seed, what, step=None, prompt_spread=0.0, **kwargs) -> Case:
    """Scores of shape (n_prompts, k) ((n_prompts,) for k None) with A a little better; prompt_spread > 0 adds a
    per-prompt effect to A's scores, so that the samples of one prompt are alike."""
    g = torch.Generator().manual_seed(data_seed)
    shape = (n_prompts,) if k is None else (n_prompts, k)
    effect = randn(g, *shape[:1], *([1] if k else []), scale=prompt_spread)
    a, b = randn(g, *shape) + 0.3 + effect, randn(g, *shape)
    if step is not None:                      # scores on a grid of `step`: exact ties (and exact margins) happen
        a, b = (a / step).round() * step, (b / step).round() * step
    return Case({"scores_a": a, "scores_b": b, **kwargs}, what)


_WIN_RATE_CASES = [
    # Worked example: prompt 0 (2 vs 1: a win; 1 vs 1: a tie), prompt 1 (a tie, a win), prompt 2 (a tie, a win).
    # Every prompt's mean outcome is (1 + 0.5) / 2 = 0.75, so the rate is 0.75 and so is every bootstrap rate.
    Case({"scores_a": torch.tensor([[2.0, 1.0], [3.0, 3.0], [0.0, 4.0]]),
          "scores_b": torch.tensor([[1.0, 1.0], [3.0, 2.0], [0.0, 1.0]])},
         "worked example: 3 prompts x 2 samples, each prompt one win and one tie: (0.75, 0.75, 0.75)",
         expected=(0.75, 0.75, 0.75)),
    _win_rate_case(12, 4, data_seed=4, prompt_spread=2.0,
                   what="12 prompts x 4 samples, the samples of a prompt alike (some prompts easy for A, some hard)"),
    _win_rate_case(15, None, data_seed=1, step=0.5, what="15 prompts, one sample each, scores on a 0.5 grid (ties)"),
    _win_rate_case(10, 3, data_seed=2, step=0.25, prompt_spread=1.0, tie_margin=0.5,
                   what="10 prompts x 3 samples on a 0.25 grid, tie_margin=0.5 (a difference of exactly 0.5 ties)"),
    _win_rate_case(9, 2, data_seed=3, prompt_spread=1.0, n_boot=300, seed=7,
                   what="9 prompts x 2 samples, n_boot=300, seed=7"),
]

_TWO_PROMPTS = {"scores_a": torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "scores_b": torch.tensor([[0.0, 2.0], [1.0, 1.0]])}

WIN_RATE = Exercise(
    reference=ratings.win_rate,
    cases=_WIN_RATE_CASES,
    mistakes=_WIN_RATE_MISTAKES,
    same=_same_triple,
    mismatch=_triple_mismatch,
    properties=[
        must_reject({**_TWO_PROMPTS, "scores_b": torch.zeros(2, 3)}, "scores of shapes (2, 2) and (2, 3)",
                    "a and b must pair up: the same prompt and sample slot"),
        must_reject({"scores_a": torch.tensor([[1.0, 2.0]]), "scores_b": torch.tensor([[0.0, 3.0]])},
                    "a single prompt", "a bootstrap over prompts needs at least 2 prompts"),
        must_reject({**_TWO_PROMPTS, "tie_margin": -0.1}, "tie_margin = -0.1",
                    "a margin is a distance: tie_margin >= 0"),
    ],
)


# ------------------------------------------------------------------------------------------------ Bradley-Terry
def _bt_model(ties="half", penalty=lambda l2, n_players, n_rows: l2, sign=1.0, anchoring="anchor"):
    """A wrong bradley_terry_ratings: the reference fit with one ingredient changed."""
    def impl(outcomes, n_players, anchor=0, l2=0.01):
        rows = outcomes if ties == "half" else outcomes[(outcomes[:, 2] == 0) | (outcomes[:, 2] == 1)]
        r = sign * ratings.bradley_terry_ratings(rows, n_players, anchor, penalty(l2, n_players, len(rows)))
        if anchoring == "mean":
            return r - r.mean()
        return r - r[0] if anchoring == "first" else r
    return impl


def _reference_ratings(case) -> torch.Tensor:
    return ratings.bradley_terry_ratings(**case.kwargs).double()


def _right_shape(case, got) -> bool:
    return isinstance(got, torch.Tensor) and got.shape == (case.kwargs["n_players"],) and bool(got.isfinite().all())


def _elo_scaled(case, got) -> bool:
    """got = c * reference for a factor c far from 1 (400 / ln 10 = 173.7, 400 ln 10 = 921, 400, ...)."""
    if not _right_shape(case, got):
        return False
    expected, got = _reference_ratings(case), got.detach().double()
    factor = (got @ expected / (expected @ expected)).item()
    return abs(factor) > 10 and bool(torch.allclose(got, factor * expected, rtol=1e-2, atol=1e-2 * abs(factor)))


def _runaway(case, got) -> bool:
    """A rating far beyond the reference's (on a case with an undefeated player): no l2 term held it back."""
    return _right_shape(case, got) and bool(got.abs().max() > _reference_ratings(case).abs().max() + 1)


def _shrunk(case, got) -> bool:
    """The reference's ratings, shrunk towards their mean: the fit stopped before it converged."""
    if not _right_shape(case, got):
        return False
    expected, got = _reference_ratings(case), got.detach().double()
    got, expected = got - got.mean(), expected - expected.mean()
    alike = torch.nn.functional.cosine_similarity(got, expected, dim=0) > 0.95
    return bool(alike) and bool(got.norm() < expected.norm() - 1e-3)


_BT_MISTAKES = [
    Mistake("Your ratings are on the Elo scale (or another multiple of the answer): bradley_terry_ratings returns "
            "log-odds units, r_i - r_j = log(P(i wins) / P(j wins)); elo(ratings) = ratings * 400 / ln(10) "
            "converts them for display.", detect=_elo_scaled),
    Mistake("The sign is flipped: the winner should be rated higher. Row (i, j, s) says i scored s against j, so "
            "its likelihood is sigmoid(r_i - r_j) ** s * sigmoid(r_j - r_i) ** (1 - s).", _bt_model(sign=-1.0)),
    Mistake("Ties were dropped: a tie (score 0.5) is half a win for each side and carries information, so keep "
            "it in the loss with s = 0.5: -[0.5 log sigmoid(r_i - r_j) + 0.5 log sigmoid(r_j - r_i)].",
            _bt_model(ties="dropped")),
    Mistake("Your ratings average 0 (centred, or not anchored at all: the l2 term centres the fit by itself): "
            "shift them so that ratings[anchor] == 0, r = r - r[anchor] (the course anchors SFT at 0).",
            _bt_model(anchoring="mean")),
    Mistake("You anchored player 0: shift the ratings so that player `anchor` is at 0, r = r - r[anchor].",
            _bt_model(anchoring="first")),
    Mistake("The l2 term is l2 * (r ** 2).mean(), a mean over the players, not a sum: the sum pulls the ratings "
            "n_players times harder towards 0.", _bt_model(penalty=lambda l2, n_players, n_rows: l2 * n_players)),
    Mistake("The loss is a *mean* over the rows (plus l2 * mean(r ** 2)): summed over the rows, the data "
            "outweighs the l2 term m times more than it should.",
            _bt_model(penalty=lambda l2, n_players, n_rows: l2 / n_rows)),
    Mistake("The l2 term is missing: add l2 * (r ** 2).mean() to the loss. Without it a player who never lost "
            "runs away (the likelihood keeps rising as its rating goes to infinity).",
            _bt_model(penalty=lambda l2, n_players, n_rows: 0.0), detect=_runaway),
    Mistake("Your ratings are the right ones shrunk towards 0: the fit stopped before it converged. Take more "
            "steps (a few thousand at lr 1 for plain gradient descent), or use torch.optim.LBFGS([r], "
            "line_search_fn='strong_wolfe').", detect=_shrunk),
]


def _bt_case(rows, n_players, what, expected=None, **kwargs) -> Case:
    return Case({"outcomes": torch.tensor(rows, dtype=torch.float32), "n_players": n_players, **kwargs}, what,
                expected=expected)


def _random_games(n_players, n_rows, seed) -> list:
    """Rows (i, j, s) between random pairs: a win, a loss or (one time in five) a tie, weaker players losing
    more often."""
    g = torch.Generator().manual_seed(seed)
    skill = torch.linspace(-1.0, 1.0, n_players)[torch.randperm(n_players, generator=g)]
    rows = []
    for _ in range(n_rows):
        i, j = torch.randperm(n_players, generator=g)[:2].tolist()
        u = torch.rand(2, generator=g)
        s = 0.5 if u[0] < 0.2 else float(u[1] < torch.sigmoid(skill[i] - skill[j]))
        rows.append((i, j, s))
    return rows


_BT_CASES = [
    # Worked example: player 0 wins 3 games of 4 against player 1 (two rows say so from 0's side, one from 1's
    # side, and 1 wins the fourth). Without l2 the fit is sigmoid(r_0 - r_1) = 3/4, so r_0 - r_1 = log 3; anchored
    # at player 0: [0, -log 3] = [0, -1.098612].
    _bt_case([(0, 1, 1.0), (0, 1, 1.0), (1, 0, 0.0), (1, 0, 1.0)], 2,
             "worked example: player 0 beats player 1 in 3 games of 4, l2=0: [0, -log 3]",
             expected=torch.tensor([0.0, -math.log(3)]), l2=0.0),
    _bt_case([(0, 1, 1.0), (1, 2, 0.5), (2, 0, 0.0), (0, 2, 0.5), (1, 0, 1.0), (2, 1, 0.0), (0, 1, 0.5)], 3,
             "3 players, 7 games, 3 of them ties"),
    _bt_case([(3, 0, 1.0), (3, 1, 1.0), (2, 3, 0.0), (0, 1, 0.5), (1, 2, 1.0), (2, 0, 0.5), (0, 1, 1.0),
              (3, 2, 1.0), (2, 1, 0.0), (0, 2, 0.0)], 4,
             "4 players, player 3 won every game it played, anchor=2", anchor=2),
    _bt_case(_random_games(5, 40, seed=0), 5, "5 players, 40 random games with ties, anchor=1, l2=0.1",
             anchor=1, l2=0.1),
]

_TWO_GAMES = {"outcomes": torch.tensor([[0.0, 1.0, 1.0], [1.0, 2.0, 0.5]]), "n_players": 3}

BRADLEY_TERRY_RATINGS = Exercise(
    reference=ratings.bradley_terry_ratings,
    cases=_BT_CASES,
    mistakes=_BT_MISTAKES,
    atol=2e-3,
    properties=[
        must_reject({**_TWO_GAMES, "outcomes": torch.tensor([[0.0, 3.0, 1.0]])}, "player 3 with n_players=3",
                    "player indices run from 0 to n_players - 1"),
        must_reject({**_TWO_GAMES, "outcomes": torch.tensor([[0.0, 1.0, 2.0]])}, "a score of 2",
                    "score_i is 1 (i won), 0 (j won) or 0.5 (a tie)"),
        must_reject({"outcomes": torch.tensor([[0.0, 0.0, 1.0]]), "n_players": 1}, "n_players = 1",
                    "ratings compare players: n_players >= 2"),
        must_reject({**_TWO_GAMES, "outcomes": torch.zeros(0, 3)}, "no games (outcomes of shape (0, 3))",
                    "there is nothing to rate"),
        must_reject({**_TWO_GAMES, "anchor": 3}, "anchor=3 with n_players=3",
                    "the anchor is one of the players, 0 to n_players - 1"),
    ],
)


# ------------------------------------------------------------------------------------------------ distinct_n
def _grams(word_lists, n) -> list:
    return [tuple(words[i:i + n]) for words in word_lists for i in range(len(words) - n + 1)]


def _ratio(grams) -> float:
    return len(set(grams)) / len(grams) if grams else 0.0


def _per_response(skip_empty):
    def impl(responses, n):
        ratios = [_ratio(_grams([r.split()], n)) for r in responses
                  if not skip_empty or len(r.split()) >= n]
        return sum(ratios) / len(ratios) if ratios else 0.0
    return impl


def _any_of(*impls):
    """detect(case, got): got matches one of several spellings of the same mistake."""
    def detect(case, got):
        return any(_same_number(impl(**case.kwargs), got) for impl in impls)
    return detect


_DISTINCT_MISTAKES = [
    Mistake("You averaged distinct-n over the responses: it is one ratio over the whole corpus, the number of "
            "distinct n-grams among all responses over the total number of n-grams. (Per response, a policy "
            "that gives the same answer every time still scores 1.)",
            detect=_any_of(_per_response(skip_empty=True), _per_response(skip_empty=False))),
    Mistake("Your n-grams cross from one response into the next (you joined the texts): take each response's "
            "n-grams separately, response.split(), then pool them.",
            lambda responses, n: _ratio(_grams([" ".join(responses).split()], n))),
    Mistake("Those are character n-grams: distinct-n counts *word* n-grams, words = response.split().",
            lambda responses, n: _ratio(_grams([list(r) for r in responses], n))),
    Mistake("You counted distinct responses: distinct-n counts distinct *n-grams*, over all n-grams of all "
            "responses.", lambda responses, n: len(set(responses)) / len(responses)),
    Mistake("You took the n-grams of the distinct responses only: a repeated response is repeated text, and "
            "its n-grams count again in the total (not in the distinct count).",
            lambda responses, n: _ratio(_grams([r.split() for r in dict.fromkeys(responses)], n))),
    Mistake("Off by one: a response of w words has w - n + 1 n-grams, so range(len(words) - n + 1), not "
            "range(len(words) - n).",
            lambda responses, n: _ratio([tuple(w[i:i + n]) for w in (r.split() for r in responses)
                                         for i in range(len(w) - n)])),
]

_DISTINCT_CASES = [
    # Worked example: bigrams (the cat) (cat sat) | (the cat) (cat ran) | (the cat) (cat sat): 6 in all, 3
    # distinct, so distinct-2 = 3 / 6 = 0.5.
    Case({"responses": ["the cat sat", "the cat ran", "the cat sat"], "n": 2},
         "worked example: ['the cat sat', 'the cat ran', 'the cat sat'], n=2: 3 distinct of 6 bigrams = 0.5",
         expected=0.5),
    Case({"responses": ["The film was good", "the film was bad", "", "good good good", "The film was good"],
          "n": 1}, "n=1: five responses, one empty, 'The' and 'the' differ (case kept)"),
    Case({"responses": ["a dog ran home", "a dog", "a dog ran home fast", "home a dog ran", "a dog ran home"],
          "n": 3}, "n=3, one response shorter than 3 words, repeated phrases"),
    Case({"responses": ["one two", "three", "four five six"], "n": 4},
         "n=4, no response has 4 words: no n-grams at all, 0.0", expected=0.0),
]

DISTINCT_N = Exercise(
    reference=ratings.distinct_n,
    cases=_DISTINCT_CASES,
    mistakes=_DISTINCT_MISTAKES,
    same=_same_number,
    mismatch=_show_number,
    properties=[must_reject({"responses": ["a b c"], "n": 0}, "n = 0", "an n-gram has n >= 1 words")],
)
