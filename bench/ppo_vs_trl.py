"""Samples per second of one step of the kit's PPO, RLOO and GRPO beside one step of TRL's RLOOTrainer and
GRPOTrainer.

    python bench/ppo_vs_trl.py --preset ci --steps 5 --batch 16 [--json]

All five run in this one process, one after the other, on the same device, from the same SFT policy (each loads
its own fresh copy from the workspace's `sft` directory), against the same reward model (one `RewardScorer`, which
reads text), on the same prompt set (the world's training prompts), with the same batch, generation length,
sampling temperature, KL coefficient, clip range, learning rate and number of optimiser updates:

- a *step* is one rollout of `batch` samples followed by all the updates made on it;
  the kit's PPO: `batch` prompts x 1 sample, then `ppo_epochs` passes over `batch / minibatch` minibatches;
  the kit's RLOO and GRPO (`PPOConfig.estimator`, `group_size = generations`, each with its own place for the
  KL: RLOO's in the reward, GRPO's in the loss, as TRL's) and TRL's:
  `batch / generations` prompts x `generations` samples (GRPO and RLOO need a group per prompt), then
  `num_iterations = ppo_epochs` passes over `steps_per_generation = batch / minibatch` minibatches of
  `per_device_train_batch_size = minibatch`: the same `ppo_epochs * batch / minibatch` optimiser updates;
- `minibatch` keeps the preset's number of minibatches per batch (ci: 16 / 8 -> 2);
- each trainer runs one warm-up step, then `--steps` timed steps; the kit's step is timed around
  `PPOTrainer.step()`, TRL's from `on_step_begin` of the step's first update to `on_step_end` of its last
  (generation, reward, reference and old log-probs happen inside the first update);
- samples/s = batch / median seconds per step; a ratio is the kit's samples/s over TRL's (above 1: the kit is
  faster): `kit_over_trl_*` is the kit's PPO over TRL's trainer, `kit_rloo_over_trl_rloo` and
  `kit_grpo_over_trl_grpo` the same algorithm against itself;
- each kit step is also split into its phases (rollout, score, logprobs, update, other), median seconds.

What each step computes beyond the shared work is the algorithms' own: the kit's PPO also runs and trains a value
model (critic) and records the gold reward; RLOO and GRPO are critic-free. Mean response lengths are printed so
that equal generation lengths can be checked (generation stops when every sample in the batch has ended).

The device is the kit's (`rlhf_kit.device.pick_device`: a GPU when there is one, $RLHF_KIT_DEVICE to force one),
bf16 autocast on a GPU that supports it, fp32 elsewhere, for the kit and TRL alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time

from rlhf_kit.presets import PRESETS
from rlhf_kit.workspace import Workspace

TRAINERS = ("kit_ppo", "kit_rloo", "kit_grpo", "trl_rloo", "trl_grpo")
KIT_TRAINERS = {"kit_ppo": "gae", "kit_rloo": "rloo", "kit_grpo": "grpo"}     # name: PPOConfig.estimator
LIKE_FOR_LIKE = (("kit_rloo", "trl_rloo"), ("kit_grpo", "trl_grpo"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="ci", help="run size (default: ci)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per trainer, after one warm-up step")
    parser.add_argument("--batch", type=int, default=None,
                        help="samples per step (default: the preset's ppo_batch_size)")
    parser.add_argument("--generations", type=int, default=4,
                        help="TRL: samples per prompt; must divide --batch (default: 4)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="response budget in tokens (default: the preset's)")
    parser.add_argument("--workspace", default=None, help="workspace home (default: $RLHF_KIT_HOME or ./workspace)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    return parser


def check_sizes(steps: int, batch: int, generations: int, minibatches: int) -> None:
    """Raise a ValueError naming the flag when the sizes cannot give all three trainers the same batch."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1; got {steps}.")
    if generations < 2:
        raise ValueError(f"--generations must be >= 2 (RLOO and GRPO compare samples of one prompt); got "
                         f"{generations}.")
    if batch < 1 or batch % generations:
        raise ValueError(f"--batch={batch} must be a positive multiple of --generations={generations} "
                         f"(TRL samples batch / generations prompts x generations each).")
    if batch % minibatches:
        raise ValueError(f"--batch={batch} must be a multiple of {minibatches}, the preset's number of minibatches "
                         f"per batch (ppo_batch_size / ppo_minibatch_size).")


# ------------------------------------------------------------------------------------------------ the kit
KIT_PHASES = {"rollout": "_rollout", "score": "_score", "logprobs": "_logprobs_and_values", "update": "_update"}


def time_kit(ws, config, reward_fn, steps: int) -> dict:
    """Wall seconds of `steps` PPO steps of the kit after one warm-up step, their mean response length, and the
    median seconds of each phase of a step (`KIT_PHASES`: the trainer's own methods, timed by wrapping them;
    "other" is the rest: advantages and the step's records)."""
    from rlhf_kit.ppo import PPOTrainer

    trainer = PPOTrainer.from_workspace(ws, config, reward_fn=reward_fn)
    spent = {phase: [] for phase in KIT_PHASES}

    def timer(phase, inner):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[phase].append(time.perf_counter() - started)
        return timed

    for phase, method in KIT_PHASES.items():
        setattr(trainer, method, timer(phase, getattr(trainer, method)))
    seconds, lengths = [], []
    for i in range(1 + steps):
        started = time.perf_counter()
        stats = trainer.step()
        if i > 0:
            seconds.append(time.perf_counter() - started)
            lengths.append(stats["response_length"])
    phases = {phase: statistics.median(times[1:]) for phase, times in spent.items()}
    phases["other"] = max(0.0, statistics.median(seconds) - sum(phases.values()))
    return {"step_seconds": seconds, "response_tokens": statistics.mean(lengths), "phases": phases}


# ------------------------------------------------------------------------------------------------- TRL
def time_trl(kind: str, ws, config, reward_fn, prompts: list[str], generations: int, steps: int,
             output_dir: str) -> dict:
    """Wall seconds of `steps` steps (a generation and its updates) of TRL's RLOOTrainer (kind "rloo") or
    GRPOTrainer ("grpo") after one warm-up step, and their mean completion length (eos included)."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from rlhf_kit.device import autocast_dtype, pick_device
    from rlhf_kit.models import load_causal_lm

    device = pick_device()
    # A fresh policy loaded from the saved SFT directory: TRL rebuilds the reference from config._name_or_path.
    policy, tokenizer = load_causal_lm(ws.require("sft"), device=device)
    updates = config.ppo_epochs * (config.batch_size // config.minibatch_size)
    Config, Trainer = {"rloo": (RLOOConfig, RLOOTrainer), "grpo": (GRPOConfig, GRPOTrainer)}[kind]
    args = Config(
        output_dir=output_dir, max_steps=updates * (1 + steps),
        per_device_train_batch_size=config.minibatch_size,
        steps_per_generation=config.batch_size // config.minibatch_size, num_iterations=config.ppo_epochs,
        num_generations=generations, max_completion_length=config.max_new_tokens,
        temperature=config.temperature, top_p=1.0, top_k=0,
        learning_rate=config.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=config.max_grad_norm, beta=config.beta, epsilon=config.clip_eps, seed=config.seed,
        use_cpu=device.type == "cpu", bf16=autocast_dtype(device) is not None, activation_checkpointing=False,
        disable_dropout=True, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    lengths: list[float] = []

    def reward(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        if len(completions) != config.batch_size:
            raise RuntimeError(f"TRL {kind} generated {len(completions)} samples at once; expected the batch, "
                               f"{config.batch_size}.")
        lengths.append(statistics.mean(len(ids) for ids in completion_ids))
        return reward_fn(prompts, completions).tolist()

    reward.__name__ = "kit_reward_model"

    class StepClock(TrainerCallback):
        """Start at the first update of each step, stop at its last."""

        def __init__(self):
            self.begin, self.seconds = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step % updates == 0:
                self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % updates == 0:             # global_step already counts this update
                self.seconds.append(time.perf_counter() - self.begin[-1])

    clock = StepClock()
    trainer = Trainer(model=policy, reward_funcs=[reward], args=args,
                      train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                      callbacks=[clock])
    trainer.remove_callback(PrinterCallback)                # it prints the final metrics dict to stdout
    trainer.train()
    if len(clock.seconds) != 1 + steps or len(lengths) != 1 + steps:
        raise RuntimeError(f"TRL {kind}: expected {1 + steps} steps of {updates} updates and one generation each; "
                           f"timed {len(clock.seconds)} steps and {len(lengths)} generations.")
    return {"step_seconds": clock.seconds[1:], "response_tokens": statistics.mean(lengths[1:])}


# ------------------------------------------------------------------------------------------------- main
def run(ws, steps: int, batch: int | None = None, generations: int = 4, max_new_tokens: int | None = None) -> dict:
    """Time the five trainers on the workspace `ws` (built up to `reward` if missing); returns the results."""
    import torch

    from rlhf_kit.device import describe_device, pick_device
    from rlhf_kit.ppo import PPOConfig
    from rlhf_kit.reward import RewardScorer
    from rlhf_kit.world import load_world, training_prompts

    p = ws.preset
    batch = batch or p.ppo_batch_size
    minibatches = p.ppo_batch_size // p.ppo_minibatch_size
    check_sizes(steps, batch, generations, minibatches)
    config = PPOConfig.from_preset(p, ws.seed, batch_size=batch, minibatch_size=batch // minibatches,
                                   max_new_tokens=max_new_tokens or p.max_new_tokens)
    ws.ensure("reward")
    device = pick_device()
    reward_fn = RewardScorer(ws.require("reward"), device=device)
    prompts = training_prompts(load_world(ws.require("world")))

    timings = {}
    for name, estimator in KIT_TRAINERS.items():     # the kit's critic-free trainers sample as TRL's do: groups
        group = {} if estimator == "gae" else {"estimator": estimator, "group_size": generations, "kl_in": None}
        timings[name] = time_kit(ws, dataclasses.replace(config, **group), reward_fn, steps)
    for kind in ("rloo", "grpo"):
        with tempfile.TemporaryDirectory(prefix=f"bench-trl-{kind}-") as output_dir:     # TRL saves nothing here
            timings[f"trl_{kind}"] = time_trl(kind, ws, config, reward_fn, prompts, generations, steps, output_dir)

    result = {"preset": p.name, "device": describe_device(device), "torch_threads": torch.get_num_threads(),
              "steps": steps, "batch": batch, "generations": generations, "minibatch": config.minibatch_size,
              "epochs": config.ppo_epochs, "updates_per_step": config.ppo_epochs * minibatches,
              "max_new_tokens": config.max_new_tokens, "temperature": config.temperature, "beta": config.beta}
    for name in TRAINERS:
        median = statistics.median(timings[name]["step_seconds"])
        result[f"{name}_median_seconds_per_step"] = round(median, 4)
        result[f"{name}_samples_per_second"] = round(batch / median, 3)
        result[f"{name}_response_tokens"] = round(timings[name]["response_tokens"], 2)
        result[f"{name}_step_seconds"] = [round(s, 4) for s in timings[name]["step_seconds"]]
    for name in KIT_TRAINERS:
        result[f"{name}_phase_seconds"] = {k: round(v, 4) for k, v in timings[name]["phases"].items()}
    for name in TRAINERS[1:]:
        result[f"kit_over_{name}"] = round(result["kit_ppo_samples_per_second"] /
                                           result[f"{name}_samples_per_second"], 3)
    for kit, trl in LIKE_FOR_LIKE:
        result[f"{kit}_over_{trl}"] = round(result[f"{kit}_samples_per_second"] / result[f"{trl}_samples_per_second"],
                                            3)
    return result


def table(result: dict) -> str:
    b, g = result["batch"], result["generations"]
    lines = [f"preset {result['preset']} on {result['device']}, {result['torch_threads']} torch thread(s); "
             f"{result['steps']} timed steps after 1 warm-up",
             f"step = {b} samples (kit: {b} prompts x 1; TRL: {b // g} prompts x {g}), then "
             f"{result['epochs']} epochs x {b // result['minibatch']} minibatches of {result['minibatch']} = "
             f"{result['updates_per_step']} updates; max_new_tokens {result['max_new_tokens']}, "
             f"temperature {result['temperature']}, beta {result['beta']}",
             "",
             f"{'trainer':<10} {'s/step (median)':>16} {'samples/s':>10} {'resp. tokens':>13} {'kit / this':>11}"]
    for name in TRAINERS:
        ratio = "1.000" if name == "kit_ppo" else f"{result[f'kit_over_{name}']:.3f}"
        lines.append(f"{name:<10} {result[f'{name}_median_seconds_per_step']:>16.3f} "
                     f"{result[f'{name}_samples_per_second']:>10.2f} {result[f'{name}_response_tokens']:>13.1f} "
                     f"{ratio:>11}")
    lines += [""] + [f"{kit} / {trl}: {result[f'{kit}_over_{trl}']:.3f}" for kit, trl in LIKE_FOR_LIKE]
    lines += [""] + [f"{name}, one step (median s): " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                result[f"{name}_phase_seconds"].items())
                     for name in KIT_TRAINERS]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = run(Workspace(args.preset, args.workspace, args.seed), args.steps, args.batch, args.generations,
                     args.max_new_tokens)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
