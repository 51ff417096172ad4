"""Lab 08's statistics: how sure a comparison of two policies is, a leaderboard of several, and how varied a
policy's answers are.

- `win_rate`: the share of paired comparisons A wins (ties count half), with a 95% bootstrap interval over prompts.
- `bradley_terry_ratings` / `fit_bradley_terry`: one rating per player (policy) from pairwise outcomes, the same
  model as lab 03's reward model, P(i beats j) = sigmoid(r_i - r_j); `elo` puts them on the Elo scale and
  `rating_intervals` adds bootstrap intervals over prompts.
- `distinct_n`: the share of distinct word n-grams over a corpus of responses (Li et al. 2016).
- `length_controlled_win_rate`: the win rate at equal length (AlpacaEval 2's idea in its simplest form).

Everything is torch on the CPU and deterministic: a bootstrap draws from its own generator seeded with `seed`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

QUANTILES = (0.025, 0.975)   # a 95% percentile interval


# ------------------------------------------------------------------------------------------------ win rate
def _paired_scores(scores_a, scores_b) -> tuple[torch.Tensor, torch.Tensor]:
    """The two score tensors as (n_prompts, k), after checking that they pair up."""
    scores_a, scores_b = torch.as_tensor(scores_a), torch.as_tensor(scores_b)
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"scores_a has shape {tuple(scores_a.shape)} and scores_b {tuple(scores_b.shape)}: they "
                         f"must pair up, one score of each policy per (prompt, sample slot)")
    if scores_a.dim() not in (1, 2):
        raise ValueError(f"scores must have shape (n_prompts,) or (n_prompts, k), got {tuple(scores_a.shape)}")
    if scores_a.dim() == 1:
        scores_a, scores_b = scores_a[:, None], scores_b[:, None]
    return scores_a, scores_b


def _outcomes(scores_a, scores_b, tie_margin: float) -> torch.Tensor:
    """(n_prompts, k) float32: 1 where a - b > tie_margin, 0 where a - b < -tie_margin, 0.5 otherwise."""
    if not tie_margin >= 0:
        raise ValueError(f"tie_margin must be >= 0 (a score difference within it is a tie), got {tie_margin!r}")
    scores_a, scores_b = _paired_scores(scores_a, scores_b)
    diff = scores_a - scores_b
    return torch.where(diff > tie_margin, 1.0, torch.where(diff < -tie_margin, 0.0, 0.5)).float()


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> torch.Tensor:
    """(n_boot, n) indices drawn with replacement: the resampled prompts of each bootstrap replicate."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1 bootstrap replicate (1000 is usual), got {n_boot!r}")
    return torch.randint(n, (n_boot, n), generator=torch.Generator().manual_seed(seed))


def win_rate(scores_a, scores_b, tie_margin: float = 0.0, n_boot: int = 1000,
             seed: int = 0) -> tuple[float, float, float]:
    """How often policy A beats policy B on paired comparisons, with a 95% bootstrap interval over prompts.

    scores_a, scores_b: (n_prompts,) or (n_prompts, k) - k samples per prompt, a row per prompt; scores_a[p, s]
    and scores_b[p, s] are compared (same prompt, same sample slot).

        outcome = 1 if a - b > tie_margin, 0 if a - b < -tie_margin, else 0.5 (a tie counts half)
        rate = mean outcome over all n_prompts * k comparisons

    The interval resamples *prompts*, not samples: the k samples of one prompt are not independent (an easy
    prompt is easy for all of them), so resampling samples would make the interval too narrow. The recipe, to
    be followed exactly so that the numbers match:

        m = outcomes.mean(1)                                        # (n_prompts,) each prompt's mean outcome
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(n_prompts, (n_boot, n_prompts), generator=g)
        boot = m[idx].mean(1)                                       # (n_boot,) the rate of each replicate
        low, high = torch.quantile(boot, torch.tensor([0.025, 0.975]))

    Returns (rate, low, high) as Python floats. ValueError when the shapes differ, with fewer than 2 prompts, or
    a negative tie_margin.
    """
    outcomes = _outcomes(scores_a, scores_b, tie_margin)
    n_prompts = outcomes.shape[0]
    if n_prompts < 2:
        raise ValueError(f"a bootstrap over prompts needs at least 2 prompts, got {n_prompts}: pass scores of "
                         f"shape (n_prompts, k), one row per prompt")
    per_prompt = outcomes.mean(1)
    boot = per_prompt[_bootstrap_indices(n_prompts, n_boot, seed)].mean(1)
    low, high = torch.quantile(boot, torch.tensor(QUANTILES))
    return outcomes.mean().item(), low.item(), high.item()


# ------------------------------------------------------------------------------------------------ Bradley-Terry
def _check_outcomes(outcomes, n_players: int, anchor: int) -> torch.Tensor:
    """`outcomes` as a float64 (m, 3) tensor after checking it, n_players and anchor."""
    if n_players < 2:
        raise ValueError(f"n_players must be >= 2 (a rating compares players), got {n_players!r}")
    if not 0 <= anchor < n_players:
        raise ValueError(f"anchor must be a player index in [0, {n_players}), got {anchor!r}")
    outcomes = torch.as_tensor(outcomes, dtype=torch.float64)
    if outcomes.dim() != 2 or outcomes.shape[1] != 3:
        raise ValueError(f"outcomes must have shape (m, 3), rows (player_i, player_j, score_i), got "
                         f"{tuple(outcomes.shape)}")
    if outcomes.shape[0] == 0:
        raise ValueError("outcomes has no rows: there is nothing to rate; pass at least one game")
    players, scores = outcomes[:, :2], outcomes[:, 2]
    if not bool((players == players.round()).all()) or players.min() < 0 or players.max() >= n_players:
        row = int(((players != players.round()) | (players < 0) | (players >= n_players)).any(1).nonzero()[0])
        raise ValueError(f"outcomes row {row} names player(s) {players[row].tolist()}: player indices must be "
                         f"whole numbers in [0, {n_players}) (n_players = {n_players})")
    if not bool(((scores >= 0) & (scores <= 1)).all()):
        row = int((~((scores >= 0) & (scores <= 1))).nonzero()[0])
        raise ValueError(f"outcomes row {row} has score {scores[row].item()}: score_i must be in [0, 1] (1: i won, "
                         f"0: j won, 0.5: a tie)")
    if bool((players[:, 0] == players[:, 1]).any()):
        row = int((players[:, 0] == players[:, 1]).nonzero()[0])
        raise ValueError(f"outcomes row {row} has player {int(players[row, 0])} playing itself: a game needs two "
                         f"different players")
    return outcomes


def _win_matrices(outcomes: torch.Tensor, n_players: int, groups: torch.Tensor | None = None,
                  n_groups: int = 1) -> torch.Tensor:
    """(n_groups, P, P) float64: wins[g, i, j] = the score of i against j in the rows of group g (a row
    (i, j, s) adds s to [i, j] and 1 - s to [j, i])."""
    i, j, s = outcomes[:, 0].long(), outcomes[:, 1].long(), outcomes[:, 2]
    groups = torch.zeros_like(i) if groups is None else groups
    wins = torch.zeros(n_groups, n_players, n_players, dtype=torch.float64)
    wins.index_put_((groups, i, j), s, accumulate=True)
    wins.index_put_((groups, j, i), 1 - s, accumulate=True)
    return wins


def _strongly_connected(wins: torch.Tensor) -> bool:
    """Every player beat (or tied), directly or through others, every other player: then and only then do
    maximum-likelihood ratings (l2 = 0) exist (Zermelo 1929)."""
    n = wins.shape[0]
    reach = (wins > 0) | torch.eye(n, dtype=torch.bool)
    for _ in range(max(1, math.ceil(math.log2(n)))):
        reach = reach | ((reach.double() @ reach.double()) > 0)
    return bool(reach.all())


def _newton_bradley_terry(wins: torch.Tensor, games: torch.Tensor, l2: float, max_steps: int = 100,
                          tol: float = 1e-11) -> torch.Tensor:
    """Unanchored ratings (B, P) minimising, for each of B win matrices (B, P, P) float64,

        f(r) = sum_ij wins[i, j] * softplus(r_j - r_i) / n_games + l2 * mean(r ** 2),   n_games = games.sum() / 2

    by Newton's method with a backtracking line search (f is convex; strictly so for l2 > 0, and up to a common
    shift for l2 = 0, where the shift is fixed by keeping the mean at 0)."""
    batch, n = wins.shape[:2]
    n_games = games.sum((1, 2)) / 2                                                       # (B,)
    flat = torch.ones(n, n, dtype=torch.float64) / n if l2 == 0 else torch.zeros(n, n, dtype=torch.float64)

    def objective(r):
        diff = r[:, None, :] - r[:, :, None]                                              # [b, i, j] = r_j - r_i
        return (wins * F.softplus(diff)).sum((1, 2)) / n_games + l2 * (r ** 2).mean(1)

    r = torch.zeros(batch, n, dtype=torch.float64)
    for _ in range(max_steps):
        p = torch.sigmoid(r[:, :, None] - r[:, None, :])                                  # [b, i, j] = P(i beats j)
        grad = ((games * p).sum(2) - wins.sum(2)) / n_games[:, None] + 2 * l2 * r / n
        curvature = games * p * (1 - p) / n_games[:, None, None]
        hessian = torch.diag_embed(curvature.sum(2) + 2 * l2 / n) - curvature + flat
        step = torch.linalg.solve(hessian, -grad)
        if step.abs().max() < tol:
            break
        f, slope, t = objective(r), (grad * step).sum(1), torch.ones(batch, dtype=torch.float64)
        for _ in range(50):                                                   # halve t where f does not drop enough
            bad = objective(r + t[:, None] * step) > f + 1e-4 * t * slope
            if not bool(bad.any()):
                break
            t = torch.where(bad, t / 2, t)
        r = r + t[:, None] * step
    return r


def fit_bradley_terry(wins, games, anchor: int = 0, l2: float = 0.01) -> torch.Tensor:
    """Bradley-Terry ratings (P,) float32 from a win matrix, P(i beats j) = sigmoid(r_i - r_j).

    wins:  (P, P) wins[i, j] = the total score of i against j (a win 1, a tie 0.5 to each side)
    games: (P, P) games[i, j] = the number of games between i and j (symmetric: wins + wins.T)

    Minimises, exactly as `bradley_terry_ratings` does on the games behind the matrices,

        sum_ij wins[i, j] * softplus(r_j - r_i) / n_games + l2 * mean(r ** 2),   n_games = games.sum() / 2

    to convergence (Newton's method), then shifts the ratings so that ratings[anchor] == 0. With l2 = 0 the
    ratings exist only when every player has beaten (or tied) every other, directly or through others
    (ValueError otherwise); l2 > 0 keeps an undefeated player's rating finite.
    """
    wins = torch.as_tensor(wins, dtype=torch.float64)
    games = torch.as_tensor(games, dtype=torch.float64)
    if wins.dim() != 2 or wins.shape[0] != wins.shape[1] or games.shape != wins.shape:
        raise ValueError(f"wins and games must be square (n_players, n_players) matrices of the same shape, got "
                         f"{tuple(wins.shape)} and {tuple(games.shape)}")
    n = wins.shape[0]
    if n < 2:
        raise ValueError(f"a rating compares players: need n_players >= 2, got {n}")
    if not 0 <= anchor < n:
        raise ValueError(f"anchor must be a player index in [0, {n}), got {anchor!r}")
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0 (0.01 keeps an undefeated player's rating finite), got {l2!r}")
    if bool((wins < 0).any()) or not torch.allclose(wins + wins.T, games) or bool(wins.diagonal().any()):
        raise ValueError("wins must be >= 0 with a zero diagonal, and games = wins + wins.T (each game's score "
                         "split between its two players: 1 and 0, or 0.5 each for a tie)")
    if games.sum() == 0:
        raise ValueError("games is all zeros: there is nothing to rate; pass at least one game")
    if l2 == 0 and not _strongly_connected(wins):
        raise ValueError("with l2 = 0 no finite ratings fit these games: some player (or group of players) never "
                         "lost, or never won, against the others. Use l2 > 0 (e.g. the default 0.01)")
    ratings = _newton_bradley_terry(wins[None], games[None], l2)[0]
    return (ratings - ratings[anchor]).float()


def bradley_terry_ratings(outcomes, n_players: int, anchor: int = 0, l2: float = 0.01) -> torch.Tensor:
    """Bradley-Terry ratings (n_players,) float32 from pairwise games: lab 03's reward-model model, with one
    free number per player instead of a network.

    outcomes: (m, 3) float rows (player_i, player_j, score_i), score_i = 1 (i won), 0 (j won) or 0.5 (a tie).

        P(i beats j) = sigmoid(r_i - r_j)
        loss(r) = mean over rows of -[s log sigmoid(r_i - r_j) + (1 - s) log sigmoid(r_j - r_i)] + l2 * mean(r ** 2)

    The ratings minimise the loss (solved to convergence), then are shifted so that ratings[anchor] == 0 (the
    course anchors the SFT policy at 0). r_i - r_j is the log-odds that i beats j: a rating 1.1 above another
    wins 3 games in 4. The l2 term keeps an undefeated player's rating finite.

    To fit it yourself: r = torch.zeros(n_players, requires_grad=True), then torch.optim.LBFGS([r],
    line_search_fn="strong_wolfe") or plain gradient descent (torch.optim.SGD([r], lr=1.0), a few thousand
    steps) on the loss, and finally r - r[anchor].

    ValueError for a player index out of range, a score outside [0, 1], n_players < 2, no rows, or an anchor out
    of range.
    """
    outcomes = _check_outcomes(outcomes, n_players, anchor)
    wins = _win_matrices(outcomes, n_players)[0]
    return fit_bradley_terry(wins, wins + wins.T, anchor, l2)


def elo(ratings) -> torch.Tensor:
    """Bradley-Terry ratings (log-odds units) on the Elo scale, where 400 points mean 10:1 odds:
    ratings * 400 / ln(10), so 1.0 becomes 173.7."""
    return torch.as_tensor(ratings) * 400 / math.log(10)


def rating_intervals(outcomes, prompt_ids, n_players: int, anchor: int = 0, n_boot: int = 200, seed: int = 0,
                     l2: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bradley-Terry ratings with 95% bootstrap intervals over prompts.

    outcomes: (m, 3) rows (player_i, player_j, score_i) as in `bradley_terry_ratings`; prompt_ids: (m,) the
    prompt each game was played on. Each replicate resamples the prompts with replacement (a prompt drawn twice
    counts twice), sums the chosen prompts' win matrices and refits:

        idx = torch.randint(n_prompts, (n_boot, n_prompts), generator=torch.Generator().manual_seed(seed))

    Returns (ratings, low, high), each (n_players,) float32: the ratings on all the games (equal to
    `bradley_terry_ratings(outcomes, n_players, anchor, l2)`) and the 2.5% and 97.5% quantiles of the replicates'
    ratings. The anchor's interval is [0, 0]: every replicate is anchored there too. Needs l2 > 0 (a replicate
    may leave a player undefeated).
    """
    outcomes = _check_outcomes(outcomes, n_players, anchor)
    prompt_ids = torch.as_tensor(prompt_ids)
    if prompt_ids.shape != (outcomes.shape[0],):
        raise ValueError(f"prompt_ids must have shape ({outcomes.shape[0]},), one prompt per outcomes row, got "
                         f"{tuple(prompt_ids.shape)}")
    if not l2 > 0:
        raise ValueError(f"rating_intervals needs l2 > 0: a resample may leave a player undefeated, whose rating "
                         f"is then infinite without it; got l2 = {l2!r}")
    prompts, group = torch.unique(prompt_ids, return_inverse=True)
    per_prompt = _win_matrices(outcomes, n_players, group, len(prompts))               # (n_prompts, P, P)
    ratings = bradley_terry_ratings(outcomes, n_players, anchor, l2)
    idx = _bootstrap_indices(len(prompts), n_boot, seed)
    counts = torch.zeros(n_boot, len(prompts), dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    wins = torch.einsum("bp,pij->bij", counts, per_prompt)
    boot = _newton_bradley_terry(wins, wins + wins.transpose(1, 2), l2)
    boot = boot - boot[:, anchor:anchor + 1]
    low, high = torch.quantile(boot, torch.tensor(QUANTILES, dtype=torch.float64), dim=0).float()
    return ratings, low, high


# ------------------------------------------------------------------------------------------------ distinct-n
def distinct_n(responses, n: int) -> float:
    """Corpus-level distinct-n (Li et al. 2016): the number of distinct word n-grams over all responses divided
    by the total number of word n-grams.

    Words are response.split() (case kept); a response of w words has max(w - n + 1, 0) n-grams, and n-grams
    never cross from one response into the next. 1.0: no n-gram repeats anywhere; near 0: the same phrases
    over and over. Returns a float, 0.0 when there are no n-grams at all. ValueError for n < 1 or a single
    string instead of a list of responses.
    """
    if isinstance(responses, str):
        raise ValueError("responses must be a list of strings, got one string: wrap it, [response]")
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a whole number >= 1 (1: words, 2: word pairs, ...), got {n!r}")
    grams = [tuple(words[i:i + n]) for words in (response.split() for response in responses)
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


# ------------------------------------------------------------------------------------------------ length control
def length_controlled_win_rate(scores_a, scores_b, length_a, length_b, tie_margin: float = 0.0) -> dict:
    """The win rate of A over B at equal length: AlpacaEval 2's length control in its simplest form.

    scores_*, length_*: (n_prompts,) or (n_prompts, k), paired as in `win_rate`. Each comparison's outcome y
    (1, 0.5 or 0, as in `win_rate`) is regressed on the standardised length difference
    d = (length_a - length_b) / std(length_a - length_b) (over all comparisons; d = 0 when the std is 0):

        P(A wins) = sigmoid(w0 + w1 * d)

    fitted by maximum likelihood with y as soft labels (Newton's method; a tiny penalty 1e-6 * w1 ** 2 keeps
    the slope finite when length alone separates wins from losses). A judge that rewards length shows up as
    w1 > 0, and sigmoid(w0) is the win rate it would give two responses of equal length.

    Returns {"win_rate": the raw mean outcome, "lc_win_rate": sigmoid(w0), "length_slope": w1}, floats.
    """
    y = _outcomes(scores_a, scores_b, tie_margin).reshape(-1).double()
    length_a, length_b = _paired_scores(length_a, length_b)
    if length_a.shape[0] * length_a.shape[1] != y.numel():
        raise ValueError(f"the lengths have {length_a.numel()} entries and the scores {y.numel()}: pass one length "
                         f"per score, in the same shape")
    diff = (length_a.double() - length_b.double()).reshape(-1)
    spread = diff.std() if diff.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)
    d = diff / spread if spread > 0 else torch.zeros_like(diff)
    x = torch.stack([torch.ones_like(d), d], 1)                                              # (N, 2)
    penalty = torch.tensor([0.0, 1e-6], dtype=torch.float64)
    if spread == 0:
        penalty[1] = 1.0          # no length difference to learn from: keep w1 = 0 (and the Hessian invertible)
    w = torch.zeros(2, dtype=torch.float64)

    def objective(w):
        logits = x @ w
        return F.binary_cross_entropy_with_logits(logits, y, reduction="sum") + (penalty * w ** 2).sum()

    for _ in range(100):
        p = torch.sigmoid(x @ w)
        grad = x.T @ (p - y) + 2 * penalty * w
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + torch.diag(2 * penalty + 1e-12)
        step = torch.linalg.solve(hessian, -grad)
        if step.abs().max() < 1e-10:
            break
        t, f = 1.0, objective(w)
        while objective(w + t * step) > f + 1e-4 * t * (grad @ step) and t > 1e-8:
            t /= 2
        w = w + t * step
    return {"win_rate": y.mean().item(), "lc_win_rate": torch.sigmoid(w[0]).item(), "length_slope": w[1].item()}
