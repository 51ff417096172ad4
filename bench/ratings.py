"""Seconds of lab 08's bootstrap over prompts (`ratings.rating_intervals`) beside refitting each replicate alone.

    python bench/ratings.py [--players 8] [--games 8000] [--prompts 256] [--boot 200] [--repeats 5] [--json]

Both compute the same 95% intervals of Bradley-Terry ratings on the same synthetic games (players of evenly spaced
skill, random pairs, 10% ties, each game on one of `--prompts` prompts):

- `kit`: `rating_intervals`: one win matrix per prompt, every replicate's wins summed in one product, all
  replicates' Newton fits solved together;
- `refit_each`: the plain way: for every replicate, gather the resampled prompts' games and call
  `bradley_terry_ratings` on them.

The script checks that the two give the same intervals (to 1e-3) and prints the median seconds of each over
`--repeats` rounds (round robin) and the ratio refit_each / kit (above 1: the kit is faster). Lab 08's board uses
the defaults' sizes; this was a timed unit test (under 5 s) before it became a benchmark.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from rlhf_kit import ratings


def games(n_players: int, n_games: int, n_prompts: int, seed: int = 0):
    """(rows (n_games, 3) of (i, j, score_i), prompt ids (n_games,)) between players of skills -1..1."""
    g = torch.Generator().manual_seed(seed)
    skill = torch.linspace(-1, 1, n_players)
    i = torch.randint(n_players, (n_games,), generator=g)
    j = (i + torch.randint(1, n_players, (n_games,), generator=g)) % n_players
    score = (torch.rand(n_games, generator=g) < torch.sigmoid(skill[i] - skill[j])).float()
    score = torch.where(torch.rand(n_games, generator=g) < 0.1, 0.5, score)
    return torch.stack([i.float(), j.float(), score], 1), torch.randint(n_prompts, (n_games,), generator=g)


def refit_each(rows, prompt_ids, n_players: int, n_boot: int, seed: int = 0):
    """The baseline: one `bradley_terry_ratings` fit per replicate, on the games of its resampled prompts (the
    same replicates as `rating_intervals`: the same indices, a prompt drawn twice counts twice)."""
    prompts, group = torch.unique(prompt_ids, return_inverse=True)
    by_prompt = [rows[group == p] for p in range(len(prompts))]
    idx = torch.randint(len(prompts), (n_boot, len(prompts)), generator=torch.Generator().manual_seed(seed))
    boot = torch.stack([ratings.bradley_terry_ratings(torch.cat([by_prompt[p] for p in drawn.tolist()]), n_players)
                        for drawn in idx]).double()
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0).float()
    return low, high


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=8)
    parser.add_argument("--games", type=int, default=8000)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line, last")
    args = parser.parse_args(argv)
    rows, prompt_ids = games(args.players, args.games, args.prompts)
    runs = {"kit": lambda: ratings.rating_intervals(rows, prompt_ids, args.players, n_boot=args.boot)[1:],
            "refit_each": lambda: refit_each(rows, prompt_ids, args.players, args.boot)}
    results = {name: run() for name, run in runs.items()}             # warm-up, and the check
    same = all(torch.allclose(a, b, atol=1e-3) for a, b in zip(results["kit"], results["refit_each"]))
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(seconds["kit"], seconds["refit_each"])]
    out = {"players": args.players, "games": args.games, "prompts": args.prompts, "boot": args.boot,
           "same_intervals": same, **{f"{name}_median_seconds": statistics.median(s) for name, s in seconds.items()},
           "refit_each_over_kit": statistics.median(ratios)}
    print(f"{args.players} players, {args.games} games on {args.prompts} prompts, {args.boot} replicates; "
          f"same intervals: {same}")
    for name in runs:
        print(f"{name:>12}: {out[f'{name}_median_seconds']:.3f} s (median of {args.repeats})")
    print(f"refit_each / kit: {out['refit_each_over_kit']:.1f}x")
    if args.json:
        print(json.dumps(out))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
