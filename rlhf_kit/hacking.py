"""Reward hacking and over-optimisation (lab 05): optimise the proxy harder and watch the gold reward.

Two ways to push a policy towards high reward-model (proxy) scores, both measured on the same held-out
instructions, at the same (evaluation) temperature, by both rewards and by how far they moved from the SFT policy,
in nats of KL per response:

- `beta_sweep`: PPO at several KL coefficients, evaluated at a few checkpoints, so each beta gives a curve; each
  checkpoint's KL is estimated from its own evaluation samples (`evaluate_with_kl`);
- `best_of_n`: no training at all; sample n responses from the SFT policy and keep the one the reward model
  likes best (`best_of_n_select`). Its KL is computed exactly for the empirical distribution of the samples
  (`empirical_best_of_n_kl`, Beirami et al. 2024); log(n) - (n - 1) / n (`best_of_n_kl`) is only an upper bound.

`ui.plots.overoptimisation_plot` puts both on the same axes (the shape of Gao et al. 2022, "Scaling laws for reward
model overoptimization"), `gao_fit` fits Gao et al.'s functional forms to them, and `term_shift` / `hacked_samples`
/ `word_shift` / `common_opening` say which terms of the gold reward (`world.gold_breakdown`) a hacked policy gave
up, and what it wrote instead.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import torch
from tqdm.auto import tqdm

from . import world
from .evaluate import score_samples, score_with_kl
from .models import load_causal_lm
from .ppo import PPOConfig, PPOTrainer, adaptive_kl_update, record_run, rollout_kl  # noqa: F401
from .reuse import reusable
from .reward import RewardScorer
from .sampling import generate
from .world import NEGATIVE_WORDS, POSITIVE_WORDS, gold_breakdown, load_world, parse_prompt, words

TERMS = ("sentiment", "topic", "ending", "length", "repetition", "new_block")


def heldout_prompts(ws) -> list[str]:
    """The workspace world's held-out instructions: never trained on, used for every evaluation in this lab."""
    return world.heldout_prompts(load_world(ws.require("world")))


def distinct_heldout_prompts(ws) -> list[str]:
    """`heldout_prompts` without repeats, in order: the world repeats its 32 held-out instructions when n_heldout
    is larger (twice in `lab`), and a measurement over instructions (lab 08's bootstrap, lab 09) counts each once."""
    return list(dict.fromkeys(heldout_prompts(ws)))


# ------------------------------------------------------------------------------------------- KL, measured
@torch.no_grad()
def evaluate_with_kl(trainer: PPOTrainer, prompts: list[str], batch_size: int = 64) -> dict:
    """`PPOTrainer.evaluate` (the same samples: one per prompt, at the evaluation temperature, from the same random
    streams), plus "kl": the mean over those samples of `ppo.rollout_kl` from the trainer's reference (the SFT
    policy), so every point of the sweep is measured on the held-out prompts at the evaluation temperature.
    One process (a notebook); each sample row gets its own "kl" too."""
    cfg = trainer.config
    return score_with_kl(trainer.unwrapped_policy, trainer.ref_policy, trainer.tokenizer, prompts,
                         lambda p, r: trainer._proxy(p, r).tolist(), cfg.max_new_tokens, cfg.eval_temperature,
                         cfg.seed, trainer.gold_fn, batch_size)


# ------------------------------------------------------------------------------------------- beta sweep
@reusable
def beta_sweep(ws, betas, steps: int | None = None, n_checkpoints: int = 4, prompts: list[str] | None = None,
               samples_per_prompt: int = 4, **overrides) -> list[dict]:
    """One PPO run per beta, each from the SFT policy with the same seed, evaluated on held-out prompts at step 0
    and at `n_checkpoints` evenly spaced steps (the last one is the end of the run).

    `steps` defaults to the preset's PPO steps; other keyword arguments override `PPOConfig` fields (e.g.
    `lr=2e-4`, `seed=1`, or `adaptive_kl=True, kl_target=2.0`). Returns one row per (beta, checkpoint):

        {"beta": the beta the run started with, "beta_now": beta at the checkpoint (differs with adaptive_kl),
         "step": PPO steps done, "kl": KL from the SFT policy in nats per response, measured on the evaluation
         samples, "proxy": mean reward-model score (normalised), "gold": mean gold reward, "format_rate",
         "train_kl": the mean KL of the (up to) 3 training batches before the checkpoint, "history": every
         training step so far as {"step", "kl", "beta"}, "samples": the evaluation samples}

    proxy, gold and kl are `evaluate_with_kl` on `samples_per_prompt` samples of each of `prompts` (default: the
    held-out prompts), at the evaluation temperature, from the same random streams every time: the same
    measurement as best-of-n's. One sample per prompt is too noisy to see a change of a tenth in the gold reward
    on 32 prompts. train_kl is what the KL penalty and the adaptive controller saw: training prompts, sampled at
    the training temperature.
    """
    prompts = [p for p in (prompts or heldout_prompts(ws)) for _ in range(samples_per_prompt)]
    seed = overrides.pop("seed", ws.seed)
    rows = []
    for beta in tqdm(list(betas), desc="beta sweep", leave=False):
        config = PPOConfig.from_preset(ws.preset, seed, beta=beta,
                                       **({} if steps is None else {"steps": steps}), **overrides)
        started = time.perf_counter()
        trainer = PPOTrainer.from_workspace(ws, config)
        every = max(1, config.steps // n_checkpoints)
        checkpoints = sorted({0, config.steps, *range(every, config.steps, every)})
        for start, stop in zip([0, *checkpoints], checkpoints):
            if stop > start:
                trainer.train(stop - start)
            recent = [stats["kl"] for stats in trainer.history[-3:]]
            result = evaluate_with_kl(trainer, prompts)
            rows.append({"beta": beta, "beta_now": trainer.beta, "step": stop, "kl": result["kl"],
                         "proxy": result["proxy"], "gold": result["gold"], "format_rate": result["format_rate"],
                         "train_kl": sum(recent) / len(recent) if recent else 0.0,
                         "history": [{k: stats[k] for k in ("step", "kl", "beta")} for stats in trainer.history],
                         "samples": result["samples"]})
        record_run(ws, trainer, "hacking.beta_sweep", started=started)    # lab 05's beta = 0 run, lab 06's PPO
    return rows


HACK_LR_FACTOR = 4        # lab 05's push: four times the preset's PPO learning rate, the same number of steps


def hacked_config(ws, **overrides) -> PPOConfig:
    """Lab 05's reward-hacking run: PPO at beta = 0 with HACK_LR_FACTOR times the preset's learning rate."""
    return PPOConfig.from_preset(ws.preset, ws.seed, **{"beta": 0.0, "lr": HACK_LR_FACTOR * ws.preset.ppo_lr,
                                                       **overrides})


def build(ws, out_dir, callback=None, losses=None, **overrides) -> dict:
    """Workspace stage `hacked`: `ppo.run_ppo` with `hacked_config` (lab 05's beta = 0 run), the policy saved to the
    stage directory, so lab 08 ranks "the reward-hacked policy" beside the others. (Lab 05's sweep records its
    beta = 0 run as this stage: `ppo.record_run`.)"""
    from dataclasses import asdict

    from .ppo import run_ppo

    config = hacked_config(ws, **overrides)
    return {**run_ppo(ws, config, save_dir=out_dir, callback=callback, losses=losses), "config": asdict(config)}


# ------------------------------------------------------------------------------------------ best of n
def best_of_n_select(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Best-of-n picks: rewards (prompts, k) holds the proxy scores of k samples per prompt; split each row into
    k // n groups of n consecutive samples (group g: columns g*n .. g*n + n - 1) and return, for every prompt and
    group, the column of the group's highest reward: (prompts, k // n), long. ValueError unless n >= 1 and n
    divides k."""
    prompts, k = rewards.shape
    if n < 1 or k % n:
        raise ValueError(f"best_of_n_select needs n >= 1 dividing the {k} samples per prompt; got n={n}.")
    groups = k // n
    return rewards.reshape(prompts, groups, n).argmax(-1) + torch.arange(groups) * n


def best_of_n_kl(n: int) -> float:
    """log(n) - (n - 1) / n: KL(best-of-n || policy) in nats when all samples are distinct (a continuous
    distribution), and an upper bound on it otherwise (Stiennon et al. 2020, appendix; Beirami et al. 2024). 0 for
    n = 1; grows like log n."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 samples; got n={n}.")
    return math.log(n) - (n - 1) / n


def empirical_best_of_n_kl(rewards, n: int, responses: list[str] | None = None) -> float:
    """KL(best-of-n || pi) in nats, exactly, for pi the empirical distribution of one prompt's samples (Beirami et
    al. 2024): each distinct response y (identical texts merged, `responses`) is an atom of probability
    (its count) / k, and best-of-n picks it with probability

        pi_n(y) = F(y)^n - F_<(y)^n,   F(y) = pi(reward <= r(y)),  F_<(y) = pi(reward < r(y))

    (ties between different texts broken by order). Never above `best_of_n_kl(n)`; below it when samples repeat,
    and, slightly, because k samples make at most k atoms (k = 16 distinct: 1.79 nats for n = 16 against 1.83)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 samples; got n={n}.")
    rewards = [float(r) for r in rewards]
    keys = list(responses) if responses is not None else list(range(len(rewards)))
    counts = Counter(keys)
    reward_of = dict(zip(keys, rewards))
    atoms = sorted(counts, key=lambda key: reward_of[key])
    k, below, kl = len(rewards), 0, 0.0
    for key in atoms:
        p = counts[key] / k
        p_n = (below + p) ** n - below ** n
        if p_n > 0:
            kl += p_n * math.log(p_n / p)
        below += p
    return max(kl, 0.0)


@reusable
def best_of_n(ws, ns=(1, 2, 4, 8, 16), prompts: list[str] | None = None, temperature: float | None = None,
              seed: int | None = None, select=best_of_n_select) -> list[dict]:
    """Best-of-n sampling from the SFT policy, judged by the reward model; no training.

    For each prompt, k = max(ns) responses are sampled once (at `temperature`, default the preset's evaluation
    temperature: the sweep's) and scored by the reward model and the gold reward. For each n, `select` (your
    `best_of_n_select` or the kit's) splits them into k // n disjoint groups of n and picks each group's
    highest-proxy response; the picks' proxy and gold are averaged over groups and prompts. Returns one row per n:

        {"n", "kl": `empirical_best_of_n_kl` averaged over prompts (measured), "kl_bound": `best_of_n_kl(n)`,
         "proxy", "gold", "distinct": mean share of distinct responses among a prompt's k, "samples": the first
         group's pick per prompt}
    """
    ns = sorted(set(ns))
    if not ns or ns[0] < 1:
        raise ValueError(f"best_of_n needs sizes n >= 1; got {ns}.")
    prompts = prompts or heldout_prompts(ws)
    temperature = ws.preset.eval_temperature if temperature is None else temperature
    largest = ns[-1]
    if any(largest % n for n in ns):
        raise ValueError(f"best_of_n: every n must divide the largest, {largest}; got {ns}.")
    policy, tokenizer = load_causal_lm(ws.require("sft"))
    repeated = [p for p in prompts for _ in range(largest)]
    flat = generate(policy, tokenizer, repeated, ws.preset.max_new_tokens, temperature,
                    seed=ws.seed if seed is None else seed)
    scored = score_samples(repeated, flat, RewardScorer(ws.require("reward")))
    proxy = torch.tensor([row["proxy"] for row in scored]).reshape(len(prompts), largest)
    gold = torch.tensor([row["gold"] for row in scored]).reshape(len(prompts), largest)
    texts = [flat[i * largest:(i + 1) * largest] for i in range(len(prompts))]
    distinct = sum(len(set(t)) for t in texts) / (largest * len(prompts))
    rows = []
    for n in ns:
        index = torch.as_tensor(select(proxy.clone(), n)).long()          # (prompts, largest // n)
        samples = [scored[i * largest + int(index[i, 0])] for i in range(len(prompts))]
        kl = sum(empirical_best_of_n_kl(proxy[i].tolist(), n, texts[i]) for i in range(len(prompts))) / len(prompts)
        rows.append({"n": n, "kl": kl, "kl_bound": best_of_n_kl(n), "proxy": proxy.gather(1, index).mean().item(),
                     "gold": gold.gather(1, index).mean().item(), "distinct": distinct, "samples": samples})
    return rows


# ------------------------------------------------------------------------------------------- Gao et al.'s forms
GAO_FORMS = ("bon", "rl")


def _gao_feature(d: torch.Tensor, form: str) -> torch.Tensor:
    if form not in GAO_FORMS:
        raise ValueError(f"form must be 'bon' (best-of-n: d (alpha - beta d)) or 'rl' (d (alpha - beta log d)); "
                         f"got {form!r}.")
    return d * d if form == "bon" else torch.xlogy(d, d)          # d log d, 0 at d = 0


def gao_fit(kl: torch.Tensor, gain: torch.Tensor, form: str) -> torch.Tensor:
    """Least-squares fit of Gao et al. (2022)'s functional form of the gold reward's gain over the initial policy,
    against d = sqrt(KL):

        best-of-n ("bon"):  gain = d (alpha - beta d)       = alpha d - beta d^2
        RL ("rl"):          gain = d (alpha - beta log d)   = alpha d - beta d log d   (d log d = 0 at d = 0)

    Both are linear in (alpha, beta): solve X [alpha, beta] = gain with the columns X = [d, -d^2] or
    [d, -d log d], no intercept (no optimisation, no gain). kl, gain: (points,). Returns tensor([alpha, beta]).
    """
    d = kl.sqrt()
    design = torch.stack([d, -_gao_feature(d, form)], 1)
    return torch.linalg.lstsq(design, gain[:, None]).solution[:, 0]


def gao_curve(kl: torch.Tensor, alpha: float, beta: float, form: str) -> torch.Tensor:
    """The fitted gain at each KL: d (alpha - beta d) or d (alpha - beta log d), d = sqrt(kl)."""
    d = torch.as_tensor(kl, dtype=torch.float64).clamp(min=0).sqrt()
    return alpha * d - beta * _gao_feature(d, form)


def r_squared(y: torch.Tensor, fitted: torch.Tensor) -> float:
    """1 - SS_residual / SS_total: 1 for a perfect fit, 0 for no better than the mean, negative for worse."""
    y, fitted = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(fitted, dtype=torch.float64)
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - fitted) ** 2).sum() / total) if total > 0 else float("nan")


def gao_peak_kl(alpha: float, beta: float, form: str) -> float:
    """The KL at which a fitted curve's gain peaks: d* = alpha / (2 beta) for best-of-n, d* = exp(alpha / beta - 1)
    for RL, KL = d*^2; inf when beta <= 0 (the fit has not turned down)."""
    if form not in GAO_FORMS:
        raise ValueError(f"form must be 'bon' or 'rl'; got {form!r}.")
    if beta <= 0:
        return math.inf
    d = alpha / (2 * beta) if form == "bon" else math.exp(min(alpha / beta - 1, 350.0))
    return max(d, 0.0) ** 2


def gold_gain(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(kl, gain), float64 (points,), from a curve's rows in order (a run's checkpoints from `sweep_run`, or
    `best_of_n`'s rows), its first row the starting policy: gain = gold - the first row's gold; kl clamped at 0 (a
    sampled estimate near 0 can dip below it)."""
    kl = torch.tensor([max(row["kl"], 0.0) for row in rows], dtype=torch.float64)
    gain = torch.tensor([row["gold"] - rows[0]["gold"] for row in rows], dtype=torch.float64)
    return kl, gain


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


def common_opening(samples: list[dict], n_words: int = 6) -> dict:
    """The most common opening (first `n_words` words, case kept) among samples [{"prompt", "response"}, ...]:
    {"opening", "share": fraction of responses that start with it, "example": one full response that does}. A
    hacked policy writes one template whatever was asked: its opening is that template."""
    openings = [" ".join(s["response"].split()[:n_words]) for s in samples]
    opening, count = Counter(openings).most_common(1)[0]
    example = next(s["response"] for s, o in zip(samples, openings) if o == opening)
    return {"opening": opening, "share": count / len(samples), "example": example}
