"""TRL's `GRPOTrainer` and `RLOOTrainer` beside the kit's GRPO and RLOO (lab 07): the same settings, measured the
same way.

`trl_rl(ws, estimator)` trains TRL 1.16's GRPOTrainer ("grpo") or RLOOTrainer ("rloo") from the workspace's `sft`
policy on the world's training prompts against the kit's reward model (or the verifier); `grpo.kit_rl(ws,
estimator)` does the same with the kit's `ppo.PPOTrainer` ("gae": PPO, "grpo", "rloo"). Both then measure the
trained policy as labs 05-07 measure every policy (`grpo.heldout_measurement`: `samples_per_prompt` samples of each
held-out prompt at the evaluation temperature, gold, proxy, KL from the SFT policy, format rate, response length),
and time and weigh the training (`device.PeakMemory` around loading the models, building the trainer and training
it), so `grpo.rl_table(rows)` compares kit PPO / GRPO / RLOO and TRL GRPO / RLOO at equal samples and equal
optimiser steps.

How a kit `PPOConfig` maps onto TRL's config (`trl_settings`; B = batch_size responses per step, M =
minibatch_size responses per update, G = group_size, E = ppo_epochs, one process):

    kit                               TRL (GRPOConfig / RLOOConfig)
    B responses = B/G prompts x G     num_generations = G; generation_batch_size = B (derived:
                                      per_device_train_batch_size x steps_per_generation)
    M responses per update            per_device_train_batch_size = M, gradient_accumulation_steps = 1
    B/M updates per pass              steps_per_generation = B/M (the generation batch is cut into B/M slices)
    E passes over each batch          num_iterations = E (the slices are reused E times before generating again)
    steps (rollouts)                  max_steps = steps x E x B/M (TRL counts optimiser updates)
    lr, constant, no warm-up          learning_rate = lr, lr_scheduler_type = "constant"
    AdamW, no weight decay            HF's default optimiser, torch's AdamW ("adamw_torch_fused"): weight_decay 0,
                                      betas 0.9 / 0.999, eps 1e-8, as the kit's `training.adamw`
    max_grad_norm                     max_grad_norm
    clip_eps                          epsilon (and epsilon_high = epsilon: the same clip both ways)
    beta                              beta
    temperature, max_new_tokens       temperature (top_p 1, top_k 0: plain sampling), max_completion_length
    dropout off                       disable_dropout = True
    group_std (grpo)                  scale_rewards = "group" (True) or "none" (False: Dr. GRPO)
    token mean per minibatch (grpo)   loss_type = "bnpo": sum over the minibatch's response tokens / their count,
                                      which with one process and no accumulation is the kit's mean. (TRL's default
                                      "dapo" divides by the generation batch's tokens / steps_per_generation, the
                                      average over minibatches; "grpo" averages per response first.)
    GRPO: beta x k3 per token, loss   use_bias_correction_kl = False (TRL's default multiplies the k3 term by the
                                      ratio, DeepSeek-V3.2's unbiased gradient; the kit does not)
    RLOO: beta x k1 sum, in reward    TRL's RLOO always does this (no setting); normalize_advantages = False
    no_eos_penalty                    the reward function sees `completion_ids`: a completion whose last id is not
                                      eos gets no_eos_penalty instead of its score, as in the kit

Differences that remain (TRL has no setting for them):

- RLOO's ratio: TRL 1.16's RLOOTrainer clips one ratio per *response*, exp(sum_t log pi - sum_t log pi_old), and
  averages the clipped objective over responses; the kit (as PPO and GRPO) clips each token's ratio and averages
  over tokens. On the first update both ratios are 1, so TRL's gradient, mean_i A_i sum_t grad log pi, is the
  kit's, sum_i A_i sum_t grad log pi / tokens, times the mean response length: the same direction, a step about
  that many times larger unless max_grad_norm clips it. Later updates clip differently (a whole response leaves the
  clip range at once).
- Epochs: TRL shuffles a generation batch once and replays the same minibatches in each of the E passes; the kit
  reshuffles per pass.
- Advantage eps: TRL divides by (std + 1e-4), the kit by (std + 1e-6); both use the sample std (divisor G - 1).
- Positions: TRL's training forward passes give GPT-2 no position ids, so a left-padded prompt is read at positions
  shifted by its padding (generation counts them from the first real token); the kit passes position ids. The
  old, new and reference log-probs are all shifted alike, so the ratio stays consistent, but they are not quite
  those of the policy that sampled. On the course's workspaces this never happens: every training and held-out
  prompt is the same number of tokens (24 at `ci` seed 0, 20 at `lab` seeds 1 and 2), so none is padded; at
  `micro` (a 320-token vocabulary) they range from 54 to 61.
- Sampling streams and prompt order: TRL samples from torch's global generator and shuffles prompts with its own
  sampler; the kit draws each response from its own seeded stream and shuffles with `random.Random(seed)`.
- The reference: TRL reloads it from the policy's `config._name_or_path` (the `sft` directory); the kit copies the
  policy in memory. Both are the SFT weights.

Memory and time: `peak_memory_mib` is `device.PeakMemory` around loading the policy and the reward model, building
the trainer (TRL: its reference; kit PPO: its value model) and training (TRL's modules are imported before it). On
a CPU it is the growth of the process's peak resident memory over that block, so at the course's sizes (models of
a few MB) it is mostly allocator and library state: the first run in a process also pays one-time allocations
(about 30 MiB more at `ci`), and a later run can reuse memory an earlier one freed without the resident size
growing (about 1 MiB) unless freed memory is first handed back (`malloc_trim`). On a GPU it is the CUDA
allocator's peak, which counts tensors only.
`seconds_per_step` is training time per rollout step: the kit's mean of its history's "seconds" (the whole of
`step()`), TRL's summed update times over steps (`StepClock`: each update from its start to its end, generation,
scoring and the optimiser step included; `train()`'s setup and logging not).
"""

from __future__ import annotations

import tempfile
import time

from tqdm.auto import tqdm
from transformers import TrainerCallback

from .configs import PPOConfig
from .device import PeakMemory, pick_device
from .grpo import grpo_config, heldout_measurement, result_row, reward_function
from .models import load_causal_lm
from .reuse import reusable
from .training import quiet_trl, trl_cpu_args
from .world import load_world, training_prompts

TRL_ESTIMATORS = ("grpo", "rloo")            # TRL's GRPOTrainer and RLOOTrainer


def check_estimator(estimator) -> None:
    """A ValueError naming the accepted values when `estimator` is not one TRL runs here."""
    if estimator not in TRL_ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not one TRL's trainers run here: "
                         f"{', '.join(map(repr, TRL_ESTIMATORS))} (PPO, 'gae', is the kit's own: TRL 1.16 has no "
                         f"PPO trainer; see grpo.kit_rl).")


def updates_per_step(config: PPOConfig) -> int:
    """Optimiser updates per rollout step: ppo_epochs x batch_size / minibatch_size (the same for kit and TRL)."""
    return config.ppo_epochs * config.batch_size // config.minibatch_size


def trl_settings(config: PPOConfig) -> dict:
    """TRL config fields (GRPOConfig for estimator "grpo", RLOOConfig for "rloo") that run `config`'s settings:
    the same samples per step, optimiser updates, learning rate, clip, KL and loss normalisation (the module
    docstring's table), for one process. `max_steps` counts TRL's optimiser updates: steps x updates_per_step.

    Raises ValueError for a config TRL cannot follow: estimator "gae", GRPO with its KL in the reward or RLOO with it
    in the loss (TRL fixes each), RLOO with the k3 KL estimate (TRL's RLOO uses k1), an adaptive KL, or LoRA."""
    check_estimator(config.estimator)
    fixed = {"grpo": "loss", "rloo": "reward"}[config.estimator]
    if config.kl_in != fixed:
        raise ValueError(f"TRL's {config.estimator.upper()} puts beta's KL in the {fixed}; got kl_in="
                         f"{config.kl_in!r}. Use kl_in={fixed!r} (the default) to compare with TRL.")
    if config.estimator == "rloo" and config.kl_estimator != "k1":
        raise ValueError(f"TRL's RLOO subtracts beta x the k1 KL (log pi - log pi_ref summed over the response) from "
                         f"the reward; got kl_estimator={config.kl_estimator!r}. Use kl_estimator='k1'.")
    if config.adaptive_kl:
        raise ValueError("TRL's GRPO and RLOO have no adaptive KL coefficient: use adaptive_kl=False.")
    if config.lora_rank:
        raise ValueError(f"the comparison with TRL trains every weight; got lora_rank={config.lora_rank}. Use "
                         f"lora_rank=0.")
    slices = config.batch_size // config.minibatch_size
    settings = dict(
        num_generations=config.group_size, per_device_train_batch_size=config.minibatch_size,
        gradient_accumulation_steps=1, steps_per_generation=slices, num_iterations=config.ppo_epochs,
        max_steps=config.steps * updates_per_step(config), learning_rate=config.lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=config.max_grad_norm, beta=config.beta,
        epsilon=config.clip_eps, temperature=config.temperature, top_p=1.0, top_k=0,
        max_completion_length=config.max_new_tokens, disable_dropout=True, seed=config.seed,
    )
    if config.estimator == "grpo":
        settings.update(loss_type="bnpo", scale_rewards="group" if config.group_std else "none",
                        use_bias_correction_kl=False, mask_truncated_completions=False)
    else:
        settings.update(normalize_advantages=False)
    return settings


def kit_reward(scorer, eos_token_id: int, no_eos_penalty: float | None):
    """A TRL reward function, f(prompts=, completions=, completion_ids=, **kw) -> list[float], scoring as the
    kit's PPOTrainer does: `scorer(prompts, completions)`, and no_eos_penalty instead of the score for a completion
    whose last token is not eos (TRL's completion_ids end at the first eos, or run to max_completion_length)."""

    def kit_reward_model(prompts, completions, completion_ids, **kwargs) -> list[float]:
        scores = [float(s) for s in scorer(list(prompts), list(completions))]
        if no_eos_penalty is None:
            return scores
        return [score if ids and ids[-1] == eos_token_id else float(no_eos_penalty)
                for score, ids in zip(scores, completion_ids)]

    return kit_reward_model




class StepClock(TrainerCallback):
    """A TRL trainer's progress bar over the kit's rollout steps, and its clock: `seconds`, the time of each
    optimiser update from its step's start to its end (its share of generation and scoring included, the data
    loader's setup and the logging between updates not), so sum(seconds) / steps is comparable with the kit's
    per-step "seconds"."""

    def __init__(self, config: PPOConfig):
        self.steps, self.per_step, self.name = config.steps, updates_per_step(config), config.estimator.upper()
        self.seconds: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=self.steps, desc=f"TRL {self.name}", leave=False)

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self.started)
        self.bar.update(state.global_step // self.per_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def make_trl_trainer(policy, tokenizer, prompts: list[str], reward_func, config: PPOConfig, output_dir):
    """TRL's GRPOTrainer or RLOOTrainer (by `config.estimator`), ready to `train()`: `policy` (loaded from a
    directory, which TRL reloads as the frozen reference) trained on `prompts` (plain text) against `reward_func`
    with `trl_settings(config)` and the kit's CPU-safe arguments (`training.trl_cpu_args`), every update logged
    (`trainer.state.log_history`), behind one quiet progress bar over rollout steps (its `StepClock`)."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer


    settings = trl_settings(config)
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if config.estimator == "grpo" else (RLOOConfig, RLOOTrainer)
    common = {k: settings.pop(k) for k in ("max_steps", "per_device_train_batch_size", "learning_rate", "seed")}
    schedule = {k: settings.pop(k) for k in ("lr_scheduler_type", "warmup_steps")}
    args = trl_cpu_args(config_cls, policy, output_dir, common["max_steps"], common["per_device_train_batch_size"],
                        common["learning_rate"], common["seed"], disable_tqdm=True, **settings)
    for key, value in schedule.items():          # trl_cpu_args sets the kit's cosine schedule; this one is constant
        setattr(args, key, value)
    args.logging_steps = 1
    with quiet_trl():
        trainer = trainer_cls(model=policy, reward_funcs=reward_func, args=args, processing_class=tokenizer,
                              train_dataset=Dataset.from_dict({"prompt": list(prompts)}))
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepClock(config))
    return trainer


def _config_for(ws, estimator: str, config: PPOConfig | None) -> PPOConfig:
    config = config or grpo_config(ws, estimator)
    if config.estimator != estimator:
        raise ValueError(f"config.estimator={config.estimator!r} but estimator={estimator!r}: pass one config per "
                         f"run, e.g. grpo.grpo_config(ws, {estimator!r}).")
    return config


@reusable
def trl_rl(ws, estimator: str = "grpo", config: PPOConfig | None = None, reward: str = "rm",
           samples_per_prompt: int = 4, output_dir=None) -> dict:
    """TRL's GRPOTrainer ("grpo") or RLOOTrainer ("rloo") from the workspace's SFT policy on the world's training
    prompts against `reward` ("rm": its reward model, "verifier": `world.verifier_reward`), with `config`'s settings
    (default `grpo.grpo_config(ws, estimator)`, mapped by `trl_settings`), measured as the kit measures its own
    (`grpo.heldout_measurement`). Returns a `grpo.kit_rl`-shaped row: trainer "TRL", `grpo.ROW_KEYS`, "samples";
    seconds_per_step from TRL's own update timing (`StepClock`), peak_memory_mib around loading the models,
    building the trainer and training. ValueError before anything is loaded for an unknown estimator or reward,
    or a config TRL cannot follow."""
    import trl.trainer.grpo_trainer  # noqa: F401  (imported before PeakMemory: TRL's import is not its memory)
    import trl.trainer.rloo_trainer  # noqa: F401

    from .reward import RewardScorer

    check_estimator(estimator)
    reward_fn = reward_function(reward)
    config = _config_for(ws, estimator, config)
    trl_settings(config)
    prompts = training_prompts(load_world(ws.require("world")))
    device = pick_device()
    with tempfile.TemporaryDirectory(prefix="trl-rl-") as scratch, PeakMemory(device) as peak:
        policy, tokenizer = load_causal_lm(ws.require("sft"), device=device)
        scorer = RewardScorer(ws.require("reward"), device=device)
        trainer = make_trl_trainer(policy, tokenizer, prompts,
                                   kit_reward(reward_fn or scorer, tokenizer.eos_token_id, config.no_eos_penalty),
                                   config, output_dir or scratch)
        with quiet_trl():
            trainer.train()
    if trainer.state.global_step != config.steps * updates_per_step(config):
        raise RuntimeError(f"TRL took {trainer.state.global_step} optimiser steps, expected "
                           f"{config.steps * updates_per_step(config)}: the settings mapping is wrong.")
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    ref_policy, _ = load_causal_lm(ws.require("sft"), device=device)
    measured = heldout_measurement(ws, trained, ref_policy, tokenizer, scorer, samples_per_prompt)
    clock = next(c for c in trainer.callback_handler.callbacks if isinstance(c, StepClock))
    return result_row(measured, config, "TRL", reward, sum(clock.seconds) / config.steps, peak)
