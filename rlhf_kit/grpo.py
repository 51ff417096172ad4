"""GRPO and RLOO (lab 07): PPO's trainer with no critic.

`ppo.PPOTrainer` with `PPOConfig.estimator` "grpo" or "rloo" samples `group_size` responses to each prompt, scores
them, and gives every token of a response the same advantage: its reward against the other responses to the same
prompt (`losses.group_relative_advantages`, `losses.rloo_advantages`). Rollout, scoring, log-probs, the clipped
update and the bookkeeping are PPO's own code; only the advantage estimator changes, and no value model is built
or trained, so each step does less work and holds less memory. Where beta's KL goes follows each method's paper:
GRPO adds beta times the k3 estimate of KL(pi || pi_ref) per token to the loss (`kl_in="loss"`), RLOO subtracts
beta times each response's KL from its reward (`kl_in="reward"`, as PPO does); either can take the other's.

`grpo_config(ws, estimator)` is PPO's preset settings (steps, batch of responses, epochs, lr, beta, clip) with the
preset's group size, so PPO, GRPO and RLOO compare at equal samples per step and equal optimiser steps. `reward`
"verifier" trains against `world.verifier_reward`, a program that checks the world's checkable facts (format,
topic, length) and cannot see sentiment, instead of the learned reward model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from . import losses
from .configs import PPOConfig
from .ppo import PPOLosses, PPOTrainer, record_run, run_ppo
from .reuse import reusable
from .world import verifier_reward

REWARDS = ("rm", "verifier")   # what GRPO/RLOO optimise: the workspace's reward model, or the verifier program


def verifier_scores(prompts: list[str], responses: list[str]) -> torch.Tensor:
    """`world.verifier_reward` of each response, (n,): a reward function with the reward model's signature."""
    return torch.tensor([verifier_reward(p, r) for p, r in zip(prompts, responses)], dtype=torch.float32)


def reward_function(reward: str) -> Callable | None:
    """The trainer's reward_fn for `reward`: None for "rm" (the trainer loads the workspace's reward model),
    `verifier_scores` for "verifier". Anything else is a ValueError naming the choices."""
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)} (rm: the workspace's reward model; verifier: "
                         f"world.verifier_reward); got {reward!r}.")
    return None if reward == "rm" else verifier_scores


def grpo_config(ws, estimator: str = "grpo", **overrides) -> PPOConfig:
    """PPO's preset settings with `estimator` and the preset's `grpo_group_size`: equal samples per step
    (ppo_batch_size responses) and equal optimiser steps. Keyword arguments override PPOConfig fields."""
    defaults = {"estimator": estimator, "group_size": ws.preset.grpo_group_size if estimator != "gae" else 1}
    return PPOConfig.from_preset(ws.preset, ws.seed, **{**defaults, **overrides})


def run_grpo(ws, config: PPOConfig | None = None, reward: str = "rm", save_dir=None, callback: Callable | None = None,
             losses: PPOLosses | None = None) -> dict:
    """`ppo.run_ppo` with a group estimator (default `grpo_config(ws)`) against `reward`: its metrics plus
    "reward". proxy_before/after are then the scores of the reward optimised (the verifier's, for "verifier")."""
    reward_fn = reward_function(reward)
    config = config or grpo_config(ws)
    return {**run_ppo(ws, config, save_dir=save_dir, callback=callback, losses=losses, reward_fn=reward_fn),
            "reward": reward}


def build(ws, out_dir: Path, callback: Callable | None = None, losses: PPOLosses | None = None,
          estimator: str = "grpo", reward: str = "rm", **overrides) -> dict:
    """Workspace stage `grpo`: `run_grpo` with `grpo_config(ws, estimator, **overrides)`, the policy saved to the
    stage directory, so later labs load "the GRPO policy" like any artefact."""
    from dataclasses import asdict

    config = grpo_config(ws, estimator, **overrides)
    return {**run_grpo(ws, config, reward, save_dir=out_dir, callback=callback, losses=losses),
            "config": asdict(config)}


def build_ai(ws, out_dir: Path, callback: Callable | None = None, losses: PPOLosses | None = None,
             **overrides) -> dict:
    """Workspace stage `grpo-ai`: lab 07's last run, GRPO (`grpo_config(ws, **overrides)`) against the reward model
    trained on AI labels (the `ai-reward` stage) instead of lab 03's. proxy_before/after are that model's scores."""
    from dataclasses import asdict

    from .reward import RewardScorer

    config = grpo_config(ws, **overrides)
    scorer = RewardScorer(ws.require("ai-reward"))
    return {**run_ppo(ws, config, save_dir=out_dir, callback=callback, reward_fn=scorer, losses=losses),
            "reward": "ai-reward",
            "config": asdict(config)}


def first_step_updates(ws, estimator: str = "grpo", **overrides) -> list[dict]:
    """"Why is my GRPO loss zero?" measured: one step of a fresh trainer from the SFT policy, every update's
    {"update", "loss", "policy_loss", "grad_norm", "ratio_max_abs_dev"} (`PPOTrainer.updates`), plus "epoch".

    In the first epoch each minibatch is scored by the policy that sampled it, so the ratio is 1 (exactly, on the
    first minibatch) and the clipped objective is just -mean(A): with each group's advantages summing to zero, the
    loss is near 0 though its gradient, sum_i A_i grad log pi(y_i), is not."""
    trainer = PPOTrainer.from_workspace(ws, grpo_config(ws, estimator, **overrides))
    trainer.step()
    per_epoch = len(trainer.updates) // trainer.config.ppo_epochs
    return [{**row, "epoch": i // per_epoch + 1} for i, row in enumerate(trainer.updates)]


def baseline_noise(baselines: dict, group_size: int = 4, trials: int = 2000, seed: int = 0):
    """How much each baseline lowers the noise of the REINFORCE gradient (`losses.reinforce_loss`), on a toy
    policy: for each of two instructions, a softmax over five answers (logits 0), an easy one whose answers score
    about +2 and a hard one whose answers score about -2; `group_size` samples per instruction per estimate.

    baselines: {name: None (no baseline), "batch" (the batch mean), or fn(rewards, group_size) -> (n,) baseline
    per sample}. Returns a pandas DataFrame, one row per name: "gradient noise" (the root mean squared distance of
    one estimate from the mean of all `trials` estimates, summed over the ten logits) and "bias" (the distance of
    that mean from the exact gradient of the expected reward): every baseline should be unbiased up to sampling
    noise; the better the baseline, the smaller the noise.
    """
    import pandas as pd

    rewards_table = torch.tensor([[2.0, 2.2, 1.8, 2.5, 2.1], [-2.0, -1.5, -2.5, -1.0, -2.2]])
    logits = torch.zeros(2, 5, requires_grad=True)
    probs = torch.softmax(logits, -1)
    (exact,) = torch.autograd.grad(-(probs * rewards_table).sum(1).mean(), logits)
    rows = {}
    for name, baseline in baselines.items():
        generator = torch.Generator().manual_seed(seed)
        estimates = []
        for _ in range(trials):
            picks = torch.multinomial(probs.detach(), group_size, replacement=True, generator=generator)
            rewards = rewards_table.gather(1, picks).reshape(-1)
            logprobs = torch.log_softmax(logits, -1).gather(1, picks).reshape(-1, 1)
            if baseline is None:
                base = torch.zeros_like(rewards)
            elif baseline == "batch":
                base = rewards.mean()
            else:
                base = baseline(rewards, group_size)
            loss = losses.reinforce_loss(logprobs, rewards, torch.ones_like(logprobs), base)
            (grad,) = torch.autograd.grad(loss, logits)
            estimates.append(grad.flatten())
        stacked = torch.stack(estimates)
        mean = stacked.mean(0)
        rows[name] = {"gradient noise": (stacked - mean).pow(2).sum(1).mean().sqrt().item(),
                      "bias": (mean - exact.flatten()).norm().item()}
    return pd.DataFrame(rows).T


# ------------------------------------------------------------------------------------------- one table of RL runs
ROW_KEYS = ("trainer", "estimator", "reward", "group_size", "steps", "samples_per_step", "updates_per_step", "gold",
            "proxy", "kl", "format_rate", "response_length", "seconds_per_step", "peak_memory_mib", "memory_method")


def heldout_measurement(ws, policy, ref_policy, tokenizer, scorer=None, samples_per_prompt: int = 4) -> dict:
    """A policy measured like every policy since lab 05 (`evaluate.score_with_kl`): `samples_per_prompt` samples
    of each held-out instruction at the evaluation temperature, from the workspace seed's random streams, scored
    by the gold reward and by the workspace's reward model (proxy), KL from `ref_policy`. Returns its dict."""
    from .evaluate import score_with_kl
    from .hacking import heldout_prompts
    from .reward import RewardScorer

    scorer = scorer or RewardScorer(ws.require("reward"))
    prompts = [p for p in heldout_prompts(ws) for _ in range(samples_per_prompt)]
    return score_with_kl(policy, ref_policy, tokenizer, prompts, scorer, ws.preset.max_new_tokens,
                         ws.preset.eval_temperature, ws.seed)


def _row(result: dict, **fields) -> dict:
    keep = ("gold", "proxy", "kl", "format_rate", "response_length", "samples")
    return {**{key: None for key in ROW_KEYS}, **fields, **{key: result[key] for key in keep}}


def result_row(result: dict, config: PPOConfig, trainer: str, reward: str, seconds_per_step: float, peak) -> dict:
    """One row of lab 07's table: `heldout_measurement`'s `result` of a run of `config` by `trainer` ("kit" or
    "TRL") against `reward`, with its seconds per step and its `device.PeakMemory`."""
    return _row(result, trainer=trainer, estimator=config.estimator, reward=reward, group_size=config.group_size,
                steps=config.steps, samples_per_step=config.batch_size,
                updates_per_step=config.ppo_epochs * config.batch_size // config.minibatch_size,
                seconds_per_step=seconds_per_step, peak_memory_mib=peak.mib, memory_method=peak.method)


def sft_row(ws, samples_per_prompt: int = 4) -> dict:
    """The SFT policy measured by `heldout_measurement` (its KL from itself is 0): the row every run starts from."""
    from .models import load_causal_lm

    policy, tokenizer = load_causal_lm(ws.require("sft"))
    return _row(heldout_measurement(ws, policy, policy, tokenizer, samples_per_prompt=samples_per_prompt),
                trainer="SFT", steps=0)


@reusable
def kit_rl(ws, estimator: str = "grpo", config: PPOConfig | None = None, reward: str = "rm",
           reward_fn: Callable | None = None, losses: PPOLosses | None = None, samples_per_prompt: int = 4) -> dict:
    """One run of the kit's trainer from the SFT policy (estimator "gae" is PPO), default `grpo_config(ws,
    estimator)`, against `reward` ("rm" or "verifier") or any `reward_fn(prompts, responses) -> (n,)`; then
    `heldout_measurement`. Returns {ROW_KEYS..., "samples", "history"}: seconds_per_step is the mean training step;
    peak_memory_mib is what building the trainer and training added (`device.PeakMemory`)."""
    from .device import PeakMemory

    config = config or grpo_config(ws, estimator)
    reward_name = "custom" if reward_fn is not None else reward
    ai_reward = reward_fn is not None and getattr(reward_fn, "path", None) == ws.path("ai-reward")
    reward_fn = reward_fn or reward_function(reward)
    started = time.perf_counter()
    with PeakMemory() as peak:
        trainer = PPOTrainer.from_workspace(ws, config, reward_fn=reward_fn, losses=losses)
        history = trainer.train()
    result = heldout_measurement(ws, trainer.unwrapped_policy, trainer.ref_policy, trainer.tokenizer,
                                 samples_per_prompt=samples_per_prompt)
    # lab 07's PPO, GRPO and GRPO on AI labels are workspace stages lab 08 ranks: recorded, not trained again
    record_run(ws, trainer, "grpo.kit_rl", reward="ai-reward" if ai_reward else reward_name, started=started)
    row = result_row(result, config, "kit", reward_name, sum(s["seconds"] for s in history) / len(history), peak)
    return {**row, "steps": len(history), "history": [{k: v for k, v in s.items() if k != "samples"} for s in history]}


def rl_table(rows: list[dict]):
    """The rows (`sft_row`, `kit_rl`, `trl_grpo.trl_rl`) as one pandas DataFrame, one line per run, rounded."""
    import pandas as pd

    frame = pd.DataFrame([{key: row.get(key) for key in ROW_KEYS} for row in rows])
    frame.insert(0, "run", [f"{row['trainer']} {row['estimator'] or ''}".strip() for row in rows])
    return frame.drop(columns=["trainer", "memory_method"]).set_index("run").round(3)
