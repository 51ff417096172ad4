"""Reward hacking and over-optimisation (lab 05): optimise the proxy harder and watch the gold reward.

Two ways to push a policy towards high reward-model (proxy) scores, both measured by how far they move from
the SFT policy, in nats of KL, and by both rewards on the held-out instructions:

- `beta_sweep`: PPO at several KL coefficients, evaluated at a few checkpoints, so each beta gives a curve;
- `best_of_n`: no training at all; sample n responses from the SFT policy and keep the one the reward model
  likes best. Its KL from the SFT policy has a closed form, log(n) - (n - 1) / n.

`ui.plots.overoptimisation_plot` puts both on the same axes (the shape of Gao et al. 2022, "Scaling laws for reward
model overoptimization"), and `term_shift` / `hacked_samples` / `word_shift` say which terms of the gold
reward (`world.gold_breakdown`) a hacked policy gave up, and which words it wrote instead.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from . import world
from .evaluate import score_samples
from .models import load_causal_lm
from .ppo import PPOConfig, PPOTrainer
from .reward import RewardScorer
from .sampling import generate
from .world import NEGATIVE_WORDS, POSITIVE_WORDS, gold_breakdown, load_world, parse_prompt, words

TERMS = ("sentiment", "topic", "ending", "length", "repetition", "new_block")


def heldout_prompts(ws) -> list[str]:
    """The workspace world's held-out instructions: never trained on, used for every evaluation in this lab."""
    return world.heldout_prompts(load_world(ws.require("world")))


# ------------------------------------------------------------------------------------------- beta sweep
def beta_sweep(ws, betas, steps: int | None = None, n_checkpoints: int = 4, prompts: list[str] | None = None,
               samples_per_prompt: int = 4, **overrides) -> list[dict]:
    """One PPO run per beta, each from the SFT policy with the same seed, evaluated on held-out prompts at step 0
    and at `n_checkpoints` evenly spaced steps (the last one is the end of the run).

    `steps` defaults to the preset's PPO steps; other keyword arguments override `PPOConfig` fields (e.g.
    `lr=2e-4`, `seed=1`, or `adaptive_kl=True, kl_target=2.0`). Returns one row per (beta, checkpoint):

        {"beta": the beta the run started with, "beta_now": beta at the checkpoint (differs with adaptive_kl),
         "step": PPO steps done, "kl": KL from the SFT policy in nats per response, "proxy": mean reward-model
         score (normalised), "gold": mean gold reward, "format_rate", "samples": evaluate()'s rows}

    kl is 0 at step 0 and otherwise the mean of the training batches' KL over the (up to) 3 steps before the
    checkpoint (sampled at the training temperature); proxy and gold are `PPOTrainer.evaluate` on
    `samples_per_prompt` samples of each of `prompts` (default: the held-out prompts), at the evaluation
    temperature, from the same random streams every time. One sample per prompt is too noisy to see a change
    of a tenth in the gold reward on 32 prompts.
    """
    prompts = [p for p in (prompts or heldout_prompts(ws)) for _ in range(samples_per_prompt)]
    seed = overrides.pop("seed", ws.seed)
    rows = []
    for beta in tqdm(list(betas), desc="beta sweep", leave=False):
        config = PPOConfig.from_preset(ws.preset, seed, beta=beta,
                                       **({} if steps is None else {"steps": steps}), **overrides)
        trainer = PPOTrainer.from_workspace(ws, config)
        every = max(1, config.steps // n_checkpoints)
        checkpoints = sorted({0, config.steps, *range(every, config.steps, every)})
        for start, stop in zip([0, *checkpoints], checkpoints):
            if stop > start:
                trainer.train(stop - start)
            recent = [stats["kl"] for stats in trainer.history[-3:]]
            result = trainer.evaluate(prompts)
            rows.append({"beta": beta, "beta_now": trainer.beta, "step": stop,
                         "kl": sum(recent) / len(recent) if recent else 0.0, "proxy": result["proxy"],
                         "gold": result["gold"], "format_rate": result["format_rate"],
                         "samples": result["samples"]})
    return rows


# ------------------------------------------------------------------------------------------ best of n
def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || policy) in nats: log(n) - (n - 1) / n (0 for n = 1; grows like log n)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 samples; got n={n}.")
    return math.log(n) - (n - 1) / n


def best_of_n(ws, ns=(1, 2, 4, 8, 16), prompts: list[str] | None = None, temperature: float | None = None,
              seed: int | None = None) -> list[dict]:
    """Best-of-n sampling from the SFT policy, judged by the reward model; no training.

    For each prompt, max(ns) responses are sampled once (at `temperature`, default the preset's evaluation
    temperature) and scored by the reward model and the gold reward. For each n they are split into
    max(ns) // n disjoint groups of n; each group keeps its highest-proxy response, and the kept responses'
    proxy and gold are averaged over groups and prompts. Returns one row per n:

        {"n", "kl": best_of_n_kl(n), "proxy", "gold", "samples": the first group's pick per prompt}
    """
    ns = sorted(set(ns))
    if not ns or ns[0] < 1:
        raise ValueError(f"best_of_n needs sizes n >= 1; got {ns}.")
    prompts = prompts or heldout_prompts(ws)
    temperature = ws.preset.eval_temperature if temperature is None else temperature
    largest = ns[-1]
    policy, tokenizer = load_causal_lm(ws.require("sft"))
    repeated = [p for p in prompts for _ in range(largest)]
    flat = generate(policy, tokenizer, repeated, ws.preset.max_new_tokens, temperature,
                    seed=ws.seed if seed is None else seed)
    scored = score_samples(repeated, flat, RewardScorer(ws.require("reward")))
    proxy = torch.tensor([row["proxy"] for row in scored]).reshape(len(prompts), largest)
    gold = torch.tensor([row["gold"] for row in scored]).reshape(len(prompts), largest)
    rows = []
    for n in ns:
        groups = largest // n
        picked = proxy[:, : groups * n].reshape(len(prompts), groups, n).argmax(-1)     # (prompts, groups)
        index = picked + torch.arange(groups) * n
        samples = [scored[i * largest + index[i, 0]] for i in range(len(prompts))]
        rows.append({"n": n, "kl": best_of_n_kl(n), "proxy": proxy.gather(1, index).mean().item(),
                     "gold": gold.gather(1, index).mean().item(), "samples": samples})
    return rows


def sweep_run(sweep: list[dict], beta: float) -> list[dict]:
    """The rows of the sweep's run at `beta`, in step order (the first is the SFT policy, the last the end of the
    run). Raises ValueError, naming the betas there are, when the sweep has no such run."""
    run = sorted((row for row in sweep if row["beta"] == beta), key=lambda row: row["step"])
    if not run:
        raise ValueError(f"The sweep has no run at beta={beta}; it has betas "
                         f"{sorted(set(row['beta'] for row in sweep))}.")
    return run


# --------------------------------------------------------------------------------- what was given up
def mean_terms(samples: list[dict]) -> dict[str, float]:
    """The mean of each `gold_breakdown` term (and the total) over samples [{"prompt", "response"}, ...]."""
    parts = [gold_breakdown(s["prompt"], s["response"]) for s in samples]
    return {term: sum(p[term] for p in parts) / len(parts) for term in (*TERMS, "total")}


def term_shift(sweep: list[dict], beta: float) -> list[dict]:
    """How each gold term moved in the run at `beta`, from its step-0 evaluation (the SFT policy) to its last:
    [{"term", "SFT", "after PPO", "change"}], the total last. A negative change is a term the policy gave up."""
    run = sweep_run(sweep, beta)
    before, after = mean_terms(run[0]["samples"]), mean_terms(run[-1]["samples"])
    return [{"term": term, "SFT": before[term], "after PPO": after[term], "change": after[term] - before[term]}
            for term in before]


def hacked_samples(sweep: list[dict], beta: float = 0.0, k: int = 5) -> list[dict]:
    """The k held-out samples of the run at `beta`'s last checkpoint with the largest proxy-minus-gold gap
    (both standardised over the batch), each with its proxy, gold and gold terms:
    [{"prompt", "response", "proxy", "gold", "sentiment", "topic", ...}]."""
    samples = sweep_run(sweep, beta)[-1]["samples"]

    def standardise(values):
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
        return [(v - mean) / std for v in values]

    gaps = [p - g for p, g in zip(standardise([s["proxy"] for s in samples]),
                                  standardise([s["gold"] for s in samples]))]
    order = sorted(range(len(samples)), key=lambda i: -gaps[i])[:k]
    rows = []
    for i in order:
        s = samples[i]
        parts = gold_breakdown(s["prompt"], s["response"])
        rows.append({"prompt": s["prompt"], "response": s["response"], "proxy": s["proxy"], "gold": s["gold"],
                     **{term: parts[term] for term in TERMS}})
    return rows


def word_shift(sweep: list[dict], beta: float, asked: str | None = None, k: int = 8) -> list[dict]:
    """The k words whose share of responses rose most in the run at `beta`, from its step-0 evaluation (the SFT
    policy) to its last; `asked="positive"` (or "negative") keeps only the responses to requests for that
    sentiment. A hacked policy's new favourite words are the feature it found the reward model overrates.

    Returns [{"word", "SFT", "after PPO", "change", "lexicon"}], where SFT and after PPO are the fractions of
    responses containing the word and lexicon is "positive", "negative" or "" (the toy world's sentiment words).
    """
    if asked not in (None, "positive", "negative"):
        raise ValueError(f'word_shift: asked must be None, "positive" or "negative"; got {asked!r}.')
    run = sweep_run(sweep, beta)

    def share(samples) -> dict[str, float]:
        kept = [s for s in samples if asked is None or parse_prompt(s["prompt"]).sentiment == asked]
        if not kept:
            raise ValueError(f"The run at beta={beta} has no responses to {asked} requests.")
        counts: dict[str, int] = {}
        for s in kept:
            for word in set(words(s["response"])):
                counts[word] = counts.get(word, 0) + 1
        return {word: n / len(kept) for word, n in counts.items()}

    before, after = share(run[0]["samples"]), share(run[-1]["samples"])
    change = {word: after.get(word, 0.0) - before.get(word, 0.0) for word in {*before, *after}}
    top = sorted(change, key=lambda word: (-change[word], word))[:k]
    lexicon = {**{w: "positive" for w in POSITIVE_WORDS}, **{w: "negative" for w in NEGATIVE_WORDS}}
    return [{"word": w, "SFT": before.get(w, 0.0), "after PPO": after.get(w, 0.0), "change": change[w],
             "lexicon": lexicon.get(w, "")} for w in top]
