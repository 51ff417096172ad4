"""The kit's one evaluator: sample one response per prompt and score it with the gold reward (and the reward
model, when given one). Every "before/after" of the course comes from here, through the same sampler.

    score_policy(model, tokenizer, heldout_prompts(world), max_new_tokens, temperature, seed=ws.seed)
    -> {"gold": mean gold reward, "format_rate": share that follows the format,
        "proxy": mean reward-model score (only with reward_fn), "samples": [{"prompt", "response", "gold", ...}]}
"""

from __future__ import annotations

from typing import Callable

from .sampling import generate
from .world import follows_format, gold_reward


def score_samples(prompts: list[str], responses: list[str], reward_fn: Callable | None = None,
                  gold_fn: Callable | None = gold_reward) -> list[dict]:
    """One row per response: {"prompt", "response", "gold", "format_ok"} and, with reward_fn, "proxy".
    gold_fn None records gold as nan (a task with no known true reward)."""
    rows = [{"prompt": p, "response": r, "gold": gold_fn(p, r) if gold_fn else float("nan"),
             "format_ok": follows_format(r)}
            for p, r in zip(prompts, responses)]
    if reward_fn is not None:
        for row, proxy in zip(rows, [float(x) for x in reward_fn(list(prompts), list(responses))]):
            row["proxy"] = proxy
    return rows


def summarise(rows: list[dict]) -> dict:
    """The means of `score_samples` rows: {"gold", "format_rate", ("proxy"), "samples": rows}."""
    n = len(rows)
    result = {"gold": sum(r["gold"] for r in rows) / n, "format_rate": sum(r["format_ok"] for r in rows) / n}
    if rows and "proxy" in rows[0]:
        result["proxy"] = sum(r["proxy"] for r in rows) / n
    return {**result, "samples": rows}


def score_policy(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 0.7,
                 seed: int = 0, reward_fn: Callable | None = None) -> dict:
    """Sample one response per prompt (`sampling.generate`) and score it: see `summarise`."""
    responses = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                         seed=seed)
    return summarise(score_samples(prompts, responses, reward_fn))


def compare(models: dict, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 0.7,
            seed: int = 0, reward_fn: Callable | None = None) -> dict[str, dict]:
    """`score_policy` for each named model on the same prompts and sampling seed: {name: result}."""
    return {name: score_policy(model, tokenizer, prompts, max_new_tokens, temperature, seed, reward_fn)
            for name, model in models.items()}


def on_heldout(ws, models: dict, tokenizer, reward_fn: Callable | None = None) -> dict[str, dict]:
    """`compare` on the workspace's held-out prompts at its preset's response budget and evaluation temperature,
    with its seed: the setting of every before/after in the course (the sft stage, lab 01, `PPOTrainer.evaluate`)."""
    from .world import heldout_prompts, load_world

    prompts = heldout_prompts(load_world(ws.require("world")))
    return compare(models, tokenizer, prompts, ws.preset.max_new_tokens, ws.preset.eval_temperature, ws.seed,
                   reward_fn)


def score_with_kl(policy, ref_policy, tokenizer, prompts: list[str], reward_fn: Callable | None, max_new_tokens: int,
                  temperature: float, seed: int, gold_fn: Callable | None = gold_reward, batch_size: int = 64) -> dict:
    """`summarise` of one sample per prompt from `policy` at `temperature` (> 0), from the random streams of
    `sampling.generate` with `seed` (row i's stream depends on seed and i only, so two policies measured with the
    same seed differ only by the policy), plus "kl": the mean over those samples of `ppo.rollout_kl` from
    `ref_policy` (nats per response, both at `temperature`), and "response_length": the mean number of response
    tokens, eos included. Each sample row gets its own "kl". The measurement of labs 05-07 (PPO checkpoints,
    DPO, GRPO and TRL's trainers alike)."""
    from .ppo import rollout_kl
    from .sampling import row_seeds, sample

    if not prompts:
        raise ValueError("score_with_kl() got an empty list of prompts.")
    rows, kls, lengths = [], [], []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        rollout = sample(policy, tokenizer, chunk, row_seeds(seed, -1, start, len(chunk)), temperature,
                         max_new_tokens)
        kls += rollout_kl(policy, ref_policy, rollout, temperature).tolist()
        lengths += rollout.mask.sum(1).tolist()
        rows += score_samples(chunk, rollout.responses, reward_fn, gold_fn)
    for row, kl in zip(rows, kls):
        row["kl"] = kl
    return {**summarise(rows), "kl": sum(kls) / len(kls), "response_length": sum(lengths) / len(lengths)}
