"""The trainers' configurations, one dataclass each, with one docstring-comment per field (as CleanRL's `Args`).

Defaults are the `lab` preset's values, so `SFTConfig()` and `SFTConfig.from_preset(get_preset("lab"))` are the
same run; every config checks its values when it is made and names the field and what it accepts. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REWARD_MAX_LEN = 128      # tokens of prompt + response the reward model reads, unless told otherwise


def check_config(config, whole_numbers=(), positive=()) -> None:
    """A ValueError naming the field and its accepted values when a config field is out of range: each of
    `whole_numbers` must be an int >= 1, each of `positive` a finite number > 0."""
    name = type(config).__name__
    for field in whole_numbers:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}.{field} must be a whole number >= 1; got {value!r}.")
    for field in (positive,) if isinstance(positive, str) else positive:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"{name}.{field} must be a finite number > 0; got {value!r}.")


# ----------------------------------------------------------------------------------------------------- SFT
def check_lora(config) -> None:
    """lora_rank a whole number >= 0 (0: every weight trains, no LoRA), lora_alpha None (2 x rank) or > 0."""
    name, rank, alpha = type(config).__name__, config.lora_rank, config.lora_alpha
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"{name}.lora_rank must be a whole number >= 0 (0: train every weight; 8 or 16 are usual "
                         f"LoRA ranks); got {rank!r}.")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or not 0 < alpha < math.inf):
        raise ValueError(f"{name}.lora_alpha must be None (2 x lora_rank) or a finite number > 0; got {alpha!r}.")


@dataclass
class SFTConfig:
    steps: int = 900            # optimizer steps (defaults: the `lab` preset's values)
    batch_size: int = 32        # demonstrations per step
    lr: float = 1e-3            # peak learning rate (linear warm-up, cosine decay)
    max_len: int = 128          # prompt+response is cut to this many tokens (and to the model's context)
    seed: int = 0               # data order and initialisation
    lora_rank: int = 0               # LoRA adapters of this rank on every attention and MLP layer; 0: all weights
    lora_alpha: float | None = None  # LoRA scale alpha / rank (None: alpha = 2 x rank)

    def __post_init__(self):
        check_config(self, ("steps", "batch_size", "max_len"), "lr")
        check_lora(self)

    @classmethod
    def from_preset(cls, preset, seed: int = 0, **overrides) -> "SFTConfig":
        values = dict(steps=preset.sft_steps, batch_size=preset.sft_batch_size, lr=preset.sft_lr,
                      max_len=preset.n_positions, seed=seed)
        return cls(**{**values, **overrides})


# -------------------------------------------------------------------------------------------- reward model
@dataclass
class RewardConfig:
    steps: int = 300            # optimizer steps (defaults: the `lab` preset's values)
    batch_size: int = 32        # preference pairs per step
    lr: float = 3e-4            # peak learning rate (warm-up, cosine decay)
    max_len: int = REWARD_MAX_LEN   # tokens per prompt+response
    heldout_fraction: float = 0.15   # share of prompts whose pairs are held out for evaluation
    seed: int = 0
    lora_rank: int = 0               # LoRA adapters of this rank on every attention and MLP layer; 0: all weights
    lora_alpha: float | None = None  # LoRA scale alpha / rank (None: alpha = 2 x rank)

    def __post_init__(self):
        check_config(self, ("steps", "batch_size", "max_len"), "lr")
        check_lora(self)
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"RewardConfig.heldout_fraction must be between 0 and 1 (e.g. 0.15); "
                             f"got {self.heldout_fraction}.")

    @classmethod
    def from_preset(cls, preset, seed: int = 0, **overrides) -> "RewardConfig":
        values = dict(steps=preset.rm_steps, batch_size=preset.rm_batch_size, lr=preset.rm_lr,
                      max_len=preset.n_positions, seed=seed)
        return cls(**{**values, **overrides})


# ----------------------------------------------------------------------------------------------------- PPO
ESTIMATORS = ("gae", "grpo", "rloo")   # PPOConfig.estimator: PPO's GAE with a value model, or a group baseline


@dataclass
class PPOConfig:
    steps: int = 40                  # PPO steps (one rollout + its updates each) that `train()` runs
    batch_size: int = 32             # responses per step, over all processes (prompts x group_size)
    minibatch_size: int = 16         # responses per gradient update, over all processes
    ppo_epochs: int = 2              # passes over each batch
    lr: float = 5e-5                 # AdamW learning rate of the policy and the value model (constant)
    beta: float = 0.05               # KL coefficient (the starting value when adaptive_kl); 0 turns the penalty off
    clip_eps: float = 0.2            # policy ratio clip: ratios outside 1 +- clip_eps earn nothing more
    vf_clip_eps: float = 0.2         # value clip, in normalised reward units
    vf_coef: float = 0.5             # weight of the value loss in the total loss
    gamma: float = 1.0               # discount per token
    lam: float = 0.95                # GAE lambda
    temperature: float = 1.0         # sampling temperature; log-probs are log_softmax(logits / temperature)
    max_new_tokens: int = 72         # response budget in tokens
    kl_estimator: str = "k1"         # per-token KL estimate: "k1" (logp - logp_ref) or "k3" (always >= 0)
    adaptive_kl: bool = False        # steer beta towards kl_target (Ziegler et al. 2019)
    kl_target: float = 6.0           # target KL per response, nats (adaptive_kl only)
    kl_horizon: int = 10000          # responses over which beta may change by about e (adaptive_kl only)
    whiten_advantages: bool = True   # normalise advantages to mean 0, std 1 over the batch's response tokens
    max_grad_norm: float = 1.0       # clip each model's gradient norm to this
    no_eos_penalty: float | None = -1.0  # score (normalised units) of a response with no eos; None: keep its score
    eval_temperature: float = 0.7    # sampling temperature of `evaluate()`; 0 is greedy
    seed: int = 0                    # prompt order, sampling and minibatch shuffling
    # --- critic-free RL (lab 07): the same trainer with another advantage estimator
    estimator: str = "gae"           # "gae": PPO, a value model and GAE; "grpo": reward minus its group's mean
    #                                  (over its std when group_std); "rloo": minus the mean of the group's others
    group_size: int = 1              # responses per prompt in a batch, laid out consecutively (grpo/rloo: >= 2)
    group_std: bool = True           # grpo: divide by the group's reward std (False: Dr. GRPO)
    kl_in: str | None = None         # where beta's KL goes: "reward" (-beta KL in the reward: PPO, RLOO) or
    #                                  "loss" (+beta x the k3 KL per token in the loss: GRPO); None: the estimator's
    lora_rank: int = 0               # LoRA adapters of this rank on every attention and MLP layer; 0: all weights
    lora_alpha: float | None = None  # LoRA scale alpha / rank (None: alpha = 2 x rank)

    def __post_init__(self):
        check_lora(self)
        if self.kl_in is None:
            self.kl_in = "loss" if self.estimator == "grpo" else "reward"

        def require(ok: bool, message: str):
            if not ok:
                raise ValueError(message)

        check_config(self, ("steps", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens"),
                     ("lr", "temperature", "vf_clip_eps", "kl_target", "kl_horizon", "max_grad_norm"))
        require(self.minibatch_size <= self.batch_size and self.batch_size % self.minibatch_size == 0,
                f"PPOConfig.minibatch_size={self.minibatch_size} must divide batch_size={self.batch_size}: "
                f"each step's prompts are split into equal minibatches (e.g. batch_size=16, minibatch_size=8).")
        require(0 <= self.beta < math.inf, f"PPOConfig.beta must be a finite number >= 0 (it weighs a KL "
                                           f"*penalty*; 0 turns it off); got {self.beta}.")
        require(0 < self.clip_eps < 1, f"PPOConfig.clip_eps must be between 0 and 1 (typically 0.1-0.3): at 1 or "
                                       f"more the ratio's lower bound 1 - clip_eps is <= 0; got {self.clip_eps}.")
        require(0 <= self.vf_coef < math.inf, f"PPOConfig.vf_coef must be a finite number >= 0; got {self.vf_coef}.")
        require(0 < self.gamma <= 1, f"PPOConfig.gamma must be in (0, 1]; got {self.gamma}.")
        require(0 <= self.lam <= 1, f"PPOConfig.lam must be in [0, 1]; got {self.lam}.")
        require(0 <= self.eval_temperature < math.inf, f"PPOConfig.eval_temperature must be a finite number >= 0 "
                                                       f"(0 is greedy); got {self.eval_temperature}.")
        require(self.kl_estimator in ("k1", "k3"), f"PPOConfig.kl_estimator must be 'k1' or 'k3'; "
                                                   f"got {self.kl_estimator!r}.")
        require(self.no_eos_penalty is None or math.isfinite(self.no_eos_penalty),
                f"PPOConfig.no_eos_penalty must be a finite number or None; got {self.no_eos_penalty}.")
        require(self.estimator in ESTIMATORS, f"PPOConfig.estimator must be one of {', '.join(ESTIMATORS)} "
                                              f"(gae: PPO with a value model); got {self.estimator!r}.")
        require(self.kl_in in ("reward", "loss"), f"PPOConfig.kl_in must be 'reward' or 'loss'; got {self.kl_in!r}.")
        require(not isinstance(self.group_size, bool) and isinstance(self.group_size, int) and self.group_size >= 1,
                f"PPOConfig.group_size must be a whole number >= 1; got {self.group_size!r}.")
        require(self.estimator == "gae" or self.group_size >= 2,
                f"PPOConfig.group_size={self.group_size} with estimator={self.estimator!r}: a group-relative "
                f"advantage compares each response with the other responses to its prompt, so it needs "
                f"group_size >= 2 (e.g. group_size=4).")
        require(self.batch_size % self.group_size == 0,
                f"PPOConfig.group_size={self.group_size} must divide batch_size={self.batch_size}: a batch holds "
                f"batch_size // group_size prompts, group_size responses each (e.g. batch_size=32, group_size=4).")

    @classmethod
    def from_preset(cls, preset, seed: int = 0, **overrides) -> "PPOConfig":
        """The preset's PPO sizes (its `ppo_*` fields, `max_new_tokens`, `eval_temperature`); keyword overrides
        replace single fields, e.g. `PPOConfig.from_preset(preset, beta=0.0)`."""
        values = dict(steps=preset.ppo_steps, batch_size=preset.ppo_batch_size,
                      minibatch_size=preset.ppo_minibatch_size, ppo_epochs=preset.ppo_epochs, lr=preset.ppo_lr,
                      beta=preset.ppo_beta, clip_eps=preset.ppo_clip_eps, max_new_tokens=preset.max_new_tokens,
                      eval_temperature=preset.eval_temperature, seed=seed)
        return cls(**{**values, **overrides})


# ----------------------------------------------------------------------------------------------------- DPO
DPO_LOSSES = ("sigmoid", "ipo")     # `losses.dpo_loss`, `losses.ipo_loss` (TRL's loss_type names)


@dataclass
class DPOConfig:
    beta: float = 0.1                # implicit-reward scale: r = beta * log(pi / pi_ref); larger keeps pi nearer pi_ref
    loss: str = "sigmoid"            # "sigmoid" (DPO, Rafailov et al. 2023) or "ipo" (Azar et al. 2023)
    epochs: int = 2                  # passes over the training pairs
    batch_size: int = 32             # preference pairs per step
    lr: float = 1e-4                 # peak learning rate (warm-up, cosine decay)
    max_len: int = 128               # prompt+response is cut to this many tokens (and to the model's context)
    max_new_tokens: int = 72         # response budget when evaluating
    eval_temperature: float = 0.7    # sampling temperature when evaluating; KL from the reference is measured there
    seed: int = 0                    # pair order
    lora_rank: int = 0               # LoRA adapters of this rank on every attention and MLP layer; 0: all weights
    lora_alpha: float | None = None  # LoRA scale alpha / rank (None: alpha = 2 x rank)

    def __post_init__(self):
        check_lora(self)
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0 < self.beta < math.inf:
            raise ValueError(f"DPOConfig.beta must be a finite number > 0; got {self.beta!r}. It scales log(pi / "
                             f"pi_ref) into the implicit reward: use e.g. beta=0.1 (0.05-0.5 is the usual range).")
        check_config(self, ("epochs", "batch_size", "max_len", "max_new_tokens"), ("lr", "eval_temperature"))
        if self.loss not in DPO_LOSSES:
            raise ValueError(f"DPOConfig.loss must be one of {', '.join(map(repr, DPO_LOSSES))}; got {self.loss!r}.")

    @classmethod
    def from_preset(cls, preset, seed: int = 0, **overrides) -> "DPOConfig":
        """The preset's DPO sizes (its `dpo_*` fields, `max_new_tokens`, `eval_temperature`); keyword overrides
        replace single fields, e.g. `DPOConfig.from_preset(preset, beta=0.5, loss="ipo")`."""
        values = dict(beta=preset.dpo_beta, epochs=preset.dpo_epochs, batch_size=preset.dpo_batch_size,
                      lr=preset.dpo_lr, max_len=preset.n_positions, max_new_tokens=preset.max_new_tokens,
                      eval_temperature=preset.eval_temperature, seed=seed)
        return cls(**{**values, **overrides})
