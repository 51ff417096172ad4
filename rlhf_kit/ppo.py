"""PPO for language models: the kit's own trainer (TRL 1.16 has no PPO trainer).

One step, read top to bottom in `PPOTrainer.step`:

1. rollout: one sampled response per prompt (prompts left-padded, KV cache on), cut after its first eos;
2. score: the reward model reads the decoded text. That is a *text bridge*: the reward model re-tokenises
   prompt + response with its own tokenizer, so its vocabulary need not match the policy's. A response that never
   ends (no eos within max_new_tokens) gets `no_eos_penalty` instead of its score. The gold reward of the same
   text is recorded, never optimised;
3. log-probs of the sampled tokens under the policy and under the frozen reference, by a forward pass at the
   sampling temperature (log_softmax(logits / T), never generate's scores), and values V_t from the value model;
4. per-token rewards r_t = -beta * KL_t + [t = last] * score (`losses.kl_penalized_rewards`, the score lands on
   the eos), advantages and returns by GAE (`losses.gae`), advantages whitened over the whole batch;
5. `ppo_epochs` passes over minibatches of  loss = ppo_policy_loss + vf_coef * value_loss  (`losses`), each
   model's gradient norm clipped to `max_grad_norm`.

The old log-probs are computed on exactly the minibatches of the first epoch, so on the first minibatch of the
first epoch the probability ratio is exactly 1 (`stats["first_ratio_max_abs_dev"]` is 0.0): anything else means
the log-probs are computed inconsistently. Dropout is off in every model.

The value model starts as the reward model (as in InstructGPT): its transformer body and its scalar head, read
at every position, with the reward normalisation folded into the head, so at the start V at the eos is the
normalised score. It reads the *policy's* tokens, so it needs the policy's vocabulary (checked).

Built on `accelerate`: the same code runs on a CPU, a GPU, or several processes (`accelerate launch`, `torchrun`).
Each process takes its share of every batch's prompts; statistics, advantage whitening and the loss
normalisation are computed over the whole batch, and each prompt's sample is drawn from its own seeded random
stream, so one process and several give the same run up to floating-point rounding.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from .device import autocast, pick_device, seed_everything
from .losses import gae, kl_penalized_rewards, ppo_policy_loss, value_loss
from .models import check_tokenizer, disable_dropout, load_causal_lm, tail_mean
from .world import follows_format, gold_reward, load_world

STAT_KEYS = ("step", "score", "gold", "kl", "beta", "entropy", "clip_fraction", "approx_kl", "policy_loss",
             "value_loss", "explained_variance", "response_length", "eos_rate", "first_ratio_max_abs_dev",
             "seconds", "samples")


class PPODiverged(RuntimeError):
    """A reward, loss or gradient was NaN or infinite; the trainer restored the last good policy and stopped."""


# ------------------------------------------------------------------------------------------------ config
@dataclass
class PPOConfig:
    steps: int = 100                 # PPO steps (one rollout + its updates each) that `train()` runs
    batch_size: int = 16             # prompts per step, over all processes
    minibatch_size: int = 8          # prompts per gradient update, over all processes
    ppo_epochs: int = 4              # passes over each batch
    lr: float = 1e-4                 # AdamW learning rate of the policy and the value model (constant)
    beta: float = 0.05               # KL coefficient (the starting value when adaptive_kl); 0 turns the penalty off
    clip_eps: float = 0.2            # policy ratio clip: ratios outside 1 +- clip_eps earn nothing more
    vf_clip_eps: float = 0.2         # value clip, in normalised reward units
    vf_coef: float = 0.5             # weight of the value loss in the total loss
    gamma: float = 1.0               # discount per token
    lam: float = 0.95                # GAE lambda
    temperature: float = 1.0         # sampling temperature; log-probs are log_softmax(logits / temperature)
    max_new_tokens: int = 64         # response budget in tokens
    kl_estimator: str = "k1"         # per-token KL estimate: "k1" (logp - logp_ref) or "k3" (always >= 0)
    adaptive_kl: bool = False        # steer beta towards kl_target (Ziegler et al. 2019)
    kl_target: float = 6.0           # target KL per response, nats (adaptive_kl only)
    kl_horizon: int = 10000          # responses over which beta may change by about e (adaptive_kl only)
    whiten_advantages: bool = True   # normalise advantages to mean 0, std 1 over the batch's response tokens
    max_grad_norm: float = 1.0       # clip each model's gradient norm to this
    no_eos_penalty: float | None = -1.0  # score (normalised units) of a response with no eos; None: keep its score
    eval_temperature: float = 0.7    # sampling temperature of `evaluate()`; 0 is greedy
    seed: int = 0                    # prompt order, sampling and minibatch shuffling

    def __post_init__(self):
        def require(ok: bool, message: str):
            if not ok:
                raise ValueError(message)

        for name in ("steps", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, f"PPOConfig.{name} must be a whole number >= 1; got "
                                                           f"{value!r}.")
        require(self.minibatch_size <= self.batch_size and self.batch_size % self.minibatch_size == 0,
                f"PPOConfig.minibatch_size={self.minibatch_size} must divide batch_size={self.batch_size}: "
                f"each step's prompts are split into equal minibatches (e.g. batch_size=16, minibatch_size=8).")
        require(self.lr > 0, f"PPOConfig.lr must be > 0; got {self.lr}.")
        require(self.beta >= 0, f"PPOConfig.beta must be >= 0 (it weighs a KL *penalty*; 0 turns it off); "
                                f"got {self.beta}.")
        require(self.clip_eps > 0, f"PPOConfig.clip_eps must be > 0 (typically 0.1-0.3); got {self.clip_eps}.")
        require(self.vf_clip_eps > 0, f"PPOConfig.vf_clip_eps must be > 0 (typically 0.2); got {self.vf_clip_eps}.")
        require(self.vf_coef >= 0, f"PPOConfig.vf_coef must be >= 0; got {self.vf_coef}.")
        require(0 < self.gamma <= 1, f"PPOConfig.gamma must be in (0, 1]; got {self.gamma}.")
        require(0 <= self.lam <= 1, f"PPOConfig.lam must be in [0, 1]; got {self.lam}.")
        require(self.temperature > 0, f"PPOConfig.temperature must be > 0 (log-probs divide the logits by it); "
                                      f"got {self.temperature}.")
        require(self.eval_temperature >= 0, f"PPOConfig.eval_temperature must be >= 0 (0 is greedy); "
                                            f"got {self.eval_temperature}.")
        require(self.kl_estimator in ("k1", "k3"), f"PPOConfig.kl_estimator must be 'k1' or 'k3'; "
                                                   f"got {self.kl_estimator!r}.")
        require(self.kl_target > 0 and self.kl_horizon > 0,
                f"PPOConfig.kl_target and kl_horizon must be > 0; got {self.kl_target}, {self.kl_horizon}.")
        require(self.max_grad_norm > 0, f"PPOConfig.max_grad_norm must be > 0; got {self.max_grad_norm}.")
        require(self.no_eos_penalty is None or math.isfinite(self.no_eos_penalty),
                f"PPOConfig.no_eos_penalty must be a finite number or None; got {self.no_eos_penalty}.")

    @classmethod
    def from_preset(cls, preset, seed: int = 0, **overrides) -> "PPOConfig":
        """The preset's PPO sizes (its `ppo_*` fields, `max_new_tokens`, `eval_temperature`); keyword overrides
        replace single fields, e.g. `PPOConfig.from_preset(preset, beta=0.0)`."""
        values = dict(steps=preset.ppo_steps, batch_size=preset.ppo_batch_size,
                      minibatch_size=preset.ppo_minibatch_size, ppo_epochs=preset.ppo_epochs, lr=preset.ppo_lr,
                      beta=preset.ppo_beta, clip_eps=preset.ppo_clip_eps, max_new_tokens=preset.max_new_tokens,
                      eval_temperature=preset.eval_temperature, seed=seed)
        return cls(**{**values, **overrides})


class AdaptiveKLController:
    """Ziegler et al. (2019): steer beta so the KL per response stays near a target.

        e    = clip((kl - target) / target, -0.2, 0.2)
        beta = beta * (1 + e * n_steps / horizon)

    where kl is the batch's mean KL per response (nats) and n_steps the number of responses in the batch.
    """

    def __init__(self, beta: float, target: float, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        error = min(max((kl - self.target) / self.target, -0.2), 0.2)
        self.beta *= 1 + error * n_steps / self.horizon
        return self.beta


# ----------------------------------------------------------------------------------------- value model
class ValueModel(torch.nn.Module):
    """A transformer body and a scalar head read at every position: values (batch, seq_len)."""

    def __init__(self, body: torch.nn.Module, head: torch.nn.Linear):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).last_hidden_state
        return self.head(hidden).squeeze(-1)

    @classmethod
    def from_reward_model(cls, path, policy_tokenizer) -> "ValueModel":
        """The reward model's body and head, with its normalisation folded in:
        V(h) = (w . h - mean) / std, so that V at the eos starts as the normalised reward."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tokenizer.get_vocab() != policy_tokenizer.get_vocab():
            raise ValueError(
                f"The value model is initialised from the reward model at {path}, and it reads the policy's "
                f"tokens, but their vocabularies differ ({len(tokenizer)} vs {len(policy_tokenizer)} tokens). "
                f"Pass value_model=ValueModel.from_policy(policy) instead (the reward itself still works: it "
                f"reads text)."
            )
        reward_model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
        disable_dropout(reward_model)
        norm_file = path / "normalisation.json"
        norm = json.loads(norm_file.read_text()) if norm_file.is_file() else {"mean": 0.0, "std": 1.0}
        score = reward_model.score
        head = torch.nn.Linear(score.in_features, 1)
        with torch.no_grad():
            head.weight.copy_(score.weight / norm["std"])
            bias = score.bias if score.bias is not None else torch.zeros(1)
            head.bias.copy_((bias - norm["mean"]) / norm["std"])
        return cls(reward_model.base_model, head)

    @classmethod
    def from_policy(cls, policy) -> "ValueModel":
        """A copy of the policy's body with a zero head (V = 0 at the start): for reward functions that are not
        a reward model."""
        head = torch.nn.Linear(policy.config.hidden_size, 1)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        return cls(copy.deepcopy(policy.base_model), head)


# ------------------------------------------------------------------------------------------- sampling
class _SeededSampler(LogitsProcessor):
    """Sampling by the Gumbel-max trick with one random stream per prompt:

        token = argmax(logits / T + g),   g = -log(-log(u)),  u ~ Uniform(0, 1) per vocabulary entry

    draws from softmax(logits / T). Row i's u comes from a generator seeded with seeds[i], so a prompt's sample
    does not depend on which other prompts share its batch or process. Used with greedy `generate`.
    """

    def __init__(self, seeds: list[int], temperature: float, device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))
        return scores / self.temperature + gumbel


def row_seeds(seed: int, step: int, first_row: int, n: int) -> list[int]:
    """One seed per prompt, from (seed, step, global row index): the same on any number of processes."""
    return [hash((seed, step, first_row + i)) & 0x7FFF_FFFF_FFFF_FFFF for i in range(n)]


def response_mask(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, has_eos): mask (batch, R) is 1 up to and including the first eos (everywhere if none)."""
    is_eos = response_ids == eos_id
    eos_before = is_eos.long().cumsum(1) - is_eos.long()       # eos tokens strictly before t
    return (eos_before == 0).long(), is_eos.any(1)


def response_logits(model, batch: dict, prompt_len: int, temperature: float) -> torch.Tensor:
    """logits / T at the positions that predict the response tokens: (batch, R, vocab), float32."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False).logits
    return logits[:, prompt_len - 1:-1].float() / temperature


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] for each position: (batch, R)."""
    return F.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@dataclass
class Rollout:
    """One local batch: prompt (left-padded) + response tokens, and what was measured on them."""
    prompts: list[str]
    responses: list[str]                 # decoded, cut before the first eos
    input_ids: torch.Tensor              # (b, P + R)
    attention_mask: torch.Tensor         # (b, P + R): prompt padding and everything after the first eos are 0
    position_ids: torch.Tensor           # (b, P + R)
    prompt_len: int                      # P
    mask: torch.Tensor                   # (b, R) response mask
    has_eos: torch.Tensor                # (b,)
    extra: dict = field(default_factory=dict)

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len:]

    def rows(self, idx) -> dict:
        return {"input_ids": self.input_ids[idx], "attention_mask": self.attention_mask[idx],
                "position_ids": self.position_ids[idx]}


def make_accelerator():
    """An `accelerate.Accelerator` on the kit's device (CPU when pick_device() says so, e.g. RLHF_KIT_DEVICE=cpu)."""
    from accelerate import Accelerator

    return Accelerator(cpu=pick_device().type == "cpu")


def training_prompts(world) -> list[str]:
    """The distinct instruction prompts of the demonstrations (the held-out prompts are kept for evaluation)."""
    return list(dict.fromkeys(d["prompt"] for d in world.demos))


# --------------------------------------------------------------------------------------------- trainer
class PPOTrainer:
    """PPO on any Hugging Face causal LM. `train()` runs steps, `step()` one; `history` holds every step's stats
    and `last_batch` the last batch per token (for colouring tokens by KL or advantage).

        trainer = PPOTrainer.from_workspace(ws, PPOConfig.from_preset(ws.preset, beta=0.05))
        trainer.train(callback=lambda stats: print(stats["gold"], stats["kl"]))

    `reward_fn(prompts, responses) -> (n,)` scores text (e.g. `reward.RewardScorer`); `gold_fn(prompt, response)`
    is recorded only (None: skip). `value_model` defaults to `ValueModel.from_policy(policy)`, `ref_policy` to a
    frozen copy of the policy as it is now.
    """

    def __init__(self, policy, tokenizer, prompts: list[str], reward_fn: Callable, config: PPOConfig,
                 value_model: ValueModel | None = None, ref_policy=None, gold_fn: Callable | None = gold_reward,
                 accelerator=None):
        if not prompts:
            raise ValueError("PPO got an empty list of prompts: pass the instructions to train on, e.g. "
                             "training_prompts(load_world(ws.require('world'))).")
        check_tokenizer(tokenizer)
        self.accelerator = accelerator or make_accelerator()
        processes = self.accelerator.num_processes
        for name in ("batch_size", "minibatch_size"):
            if getattr(config, name) % processes:
                raise ValueError(f"PPOConfig.{name}={getattr(config, name)} must be a multiple of the {processes} "
                                 f"processes: each process takes an equal share of the prompts.")
        self.config, self.tokenizer, self.prompts = config, tokenizer, list(prompts)
        self.reward_fn, self.gold_fn = reward_fn, gold_fn
        seed_everything(config.seed)
        device = self.accelerator.device
        for model in (policy, ref_policy, value_model):
            if model is not None:
                disable_dropout(model)
        self.ref_policy = (ref_policy or copy.deepcopy(policy)).to(device).eval().requires_grad_(False)
        value_model = value_model or ValueModel.from_policy(policy)
        optimizer = torch.optim.AdamW([*policy.parameters(), *value_model.parameters()], lr=config.lr,
                                      weight_decay=0.0)
        self.policy, self.value_model, self.optimizer = self.accelerator.prepare(policy, value_model, optimizer)
        self.kl_controller = AdaptiveKLController(config.beta, config.kl_target, config.kl_horizon) \
            if config.adaptive_kl else None
        self.beta = config.beta
        self.step_count = 0
        self.history: list[dict] = []
        self.last_batch: list[dict] = []
        self._prompt_rng, self._prompt_queue = random.Random(config.seed), []
        self._shuffle = torch.Generator().manual_seed(config.seed)
        self._good_state = self._snapshot()

    @classmethod
    def from_workspace(cls, ws, config: PPOConfig | None = None, reward_fn: Callable | None = None, **kwargs):
        """Policy and reference from the `sft` stage, reward and value model from the `reward` stage (built if
        missing), prompts from the world's demonstrations."""
        from .reward import RewardScorer

        config = config or PPOConfig.from_preset(ws.preset, ws.seed)
        accelerator = kwargs.pop("accelerator", None) or make_accelerator()
        if accelerator.is_main_process:
            ws.ensure("reward")
        accelerator.wait_for_everyone()
        policy, tokenizer = load_causal_lm(ws.require("sft"), device=accelerator.device)
        reward_fn = reward_fn or RewardScorer(ws.require("reward"), device=accelerator.device)
        value_model = ValueModel.from_reward_model(ws.require("reward"), tokenizer)
        prompts = training_prompts(load_world(ws.require("world")))
        return cls(policy, tokenizer, prompts, reward_fn, config, value_model=value_model,
                   accelerator=accelerator, **kwargs)

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def unwrapped_policy(self):
        return self.accelerator.unwrap_model(self.policy)

    def _shard(self, n: int) -> tuple[int, int]:
        """[start, end) of this process's contiguous share of n rows."""
        acc = self.accelerator
        per, extra = divmod(n, acc.num_processes)
        start = acc.process_index * per + min(acc.process_index, extra)
        return start, start + per + (acc.process_index < extra)

    def _next_prompts(self) -> tuple[list[str], int]:
        """This process's share of the next batch_size prompts (a seeded shuffle, cycled), and its first row."""
        while len(self._prompt_queue) < self.config.batch_size:
            more = list(self.prompts)
            self._prompt_rng.shuffle(more)
            self._prompt_queue += more
        batch = self._prompt_queue[: self.config.batch_size]
        self._prompt_queue = self._prompt_queue[self.config.batch_size:]
        start, end = self._shard(len(batch))
        return batch[start:end], start

    def _sum(self, *values) -> torch.Tensor:
        """Element-wise sums over all processes of scalar tensors or floats: a 1-D tensor."""
        local = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.accelerator.device).reshape(())
                             for v in values])
        return self.accelerator.reduce(local, "sum")

    def _masked_moments(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of x over the response tokens of the whole batch (all processes)."""
        m = mask.to(x.dtype)
        total, total_sq, count = self._sum((x * m).sum(), (x * x * m).sum(), m.sum())
        mean = total / count
        return mean, (total_sq / count - mean * mean).clamp(min=0)

    def _snapshot(self) -> dict:
        """The policy's and value model's weights, copied to the CPU: the last good state."""
        return {name: {k: v.detach().to("cpu", copy=True) for k, v in
                       self.accelerator.unwrap_model(model).state_dict().items()}
                for name, model in (("policy", self.policy), ("value", self.value_model))}

    def _diverged(self, reason: str) -> None:
        """Restore the last good weights and raise PPODiverged saying why."""
        self.optimizer.zero_grad(set_to_none=True)
        for name, model in (("policy", self.policy), ("value", self.value_model)):
            self.accelerator.unwrap_model(model).load_state_dict(self._good_state[name])
        self.policy.eval()
        self.value_model.eval()
        raise PPODiverged(f"PPO stopped at step {self.step_count}: {reason} The policy and value model were "
                          f"restored to their state after step {self.step_count - 1}, the last good one.")

    @torch.no_grad()
    def _sample(self, prompts: list[str], seeds: list[int], temperature: float) -> Rollout:
        """One response per prompt (greedy when temperature == 0), with the masks the losses need."""
        tok, device = self.tokenizer, self.accelerator.device
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
        processors = LogitsProcessorList([_SeededSampler(seeds, temperature, device)] if temperature > 0 else [])
        with autocast(device):
            out = self.unwrapped_policy.generate(
                **enc, max_new_tokens=self.config.max_new_tokens, do_sample=False, logits_processor=processors,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        prompt_len = enc["input_ids"].shape[1]
        mask, has_eos = response_mask(out[:, prompt_len:], tok.eos_token_id)
        attention_mask = torch.cat([enc["attention_mask"], mask], dim=1)
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        n_text = mask.sum(1) - has_eos.long()                                  # response tokens before the eos
        responses = [tok.decode(ids[:n], skip_special_tokens=True)
                     for ids, n in zip(out[:, prompt_len:].tolist(), n_text.tolist())]
        return Rollout(prompts, responses, out, attention_mask, position_ids, prompt_len, mask, has_eos)

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        scores = torch.as_tensor(self.reward_fn(prompts, responses), dtype=torch.float32)
        if scores.shape != (len(prompts),):
            raise ValueError(f"reward_fn must return one score per response, shape ({len(prompts)},); "
                             f"got shape {tuple(scores.shape)}.")
        return scores.to(self.accelerator.device)

    def _gold(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        values = [self.gold_fn(p, r) if self.gold_fn else float("nan") for p, r in zip(prompts, responses)]
        return torch.tensor(values, dtype=torch.float32, device=self.accelerator.device)

    # --------------------------------------------------------------------------------------------- step
    def step(self) -> dict:
        """One PPO step: rollout, score, advantages, then ppo_epochs x minibatches of updates.

        Returns its stats, over the whole batch (all processes): score (mean reward-model score, normalised,
        before the no-eos penalty), gold (mean gold reward), kl (mean over responses of sum_t KL_t, nats), beta
        (the one used), entropy (per response token, at the sampling temperature), policy_loss, value_loss,
        clip_fraction, approx_kl (means over updates), explained_variance (1 - Var(returns - V) / Var(returns)),
        response_length (tokens, eos included), eos_rate, first_ratio_max_abs_dev (max |ratio - 1| on the first
        minibatch: 0.0), seconds, and samples (a few {prompt, response, score, gold} rows).
        Raises PPODiverged, after restoring the last good weights, if a score, loss or gradient is not finite.
        """
        cfg, acc = self.config, self.accelerator
        started = time.perf_counter()
        self.step_count += 1
        prompts, first_row = self._next_prompts()
        self.policy.eval()
        batch = self._sample(prompts, row_seeds(cfg.seed, self.step_count, first_row, len(prompts)),
                             cfg.temperature)
        n, mask = len(prompts), batch.mask
        rm_scores = self._score(prompts, batch.responses)
        gold = self._gold(prompts, batch.responses)
        all_scores = acc.gather(rm_scores)
        if not torch.isfinite(all_scores).all():
            bad = int((~torch.isfinite(all_scores)).sum())
            self._diverged(f"the reward function returned {bad} non-finite score(s) (NaN or inf) for "
                           f"{len(all_scores)} responses. Check the reward function: it must return finite numbers.")
        scores = rm_scores if cfg.no_eos_penalty is None else \
            torch.where(batch.has_eos, rm_scores, torch.full_like(rm_scores, cfg.no_eos_penalty))

        # Old log-probs on exactly the first epoch's minibatches, so its first minibatch has ratio == 1.
        local_mb = cfg.minibatch_size // acc.num_processes
        orders = [torch.randperm(n, generator=self._shuffle) for _ in range(cfg.ppo_epochs)]
        chunks = [[order[i:i + local_mb] for i in range(0, n, local_mb)] for order in orders]
        R = mask.shape[1]
        old_logprobs, ref_logprobs, old_values, entropy = (torch.zeros(n, R, device=acc.device) for _ in range(4))
        with torch.no_grad(), autocast(acc.device):
            for idx in chunks[0]:
                logits = response_logits(self.unwrapped_policy, batch.rows(idx), batch.prompt_len, cfg.temperature)
                old_logprobs[idx] = token_logprobs(logits, batch.response_ids[idx])
                entropy[idx] = -(F.softmax(logits, -1) * F.log_softmax(logits, -1)).sum(-1)
                ref = response_logits(self.ref_policy, batch.rows(idx), batch.prompt_len, cfg.temperature)
                ref_logprobs[idx] = token_logprobs(ref, batch.response_ids[idx])
                values = acc.unwrap_model(self.value_model)(**batch.rows(idx))
                old_values[idx] = values[:, batch.prompt_len - 1:-1].float()

        # KL_t per token (kl_penalized_rewards with score 0 and beta 1 is -KL_t), rewards, GAE.
        kl_tokens = -kl_penalized_rewards(torch.zeros_like(scores), old_logprobs, ref_logprobs, mask, 1.0,
                                          cfg.kl_estimator)
        rewards = kl_penalized_rewards(scores, old_logprobs, ref_logprobs, mask, self.beta, cfg.kl_estimator)
        advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            mean, var = self._masked_moments(advantages, mask)
            advantages = (advantages - mean) / (var.sqrt() + 1e-8) * mask

        # PPO updates.
        self.policy.train()
        self.value_model.train()
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0}
        first_dev = None
        for epoch_chunks in chunks:
            for idx in epoch_chunks:
                m = mask[idx]
                with autocast(acc.device):
                    logits = response_logits(self.policy, batch.rows(idx), batch.prompt_len, cfg.temperature)
                    values = self.value_model(**batch.rows(idx))[:, batch.prompt_len - 1:-1].float()
                logprobs = token_logprobs(logits, batch.response_ids[idx])
                if first_dev is None:
                    deviation = ((logprobs.detach() - old_logprobs[idx]).exp() - 1).abs() * m
                    first_dev = acc.gather(deviation.max().reshape(1)).max().item()
                pg_loss, pg_stats = ppo_policy_loss(logprobs, old_logprobs[idx], advantages[idx], m, cfg.clip_eps)
                v_loss = value_loss(values, old_values[idx], returns[idx], m, cfg.vf_clip_eps)
                loss = pg_loss + cfg.vf_coef * v_loss
                tokens, non_finite = self._sum(m.sum(), (~torch.isfinite(loss)).float())
                if non_finite > 0:
                    self._diverged("the loss became NaN or infinite. Lower the learning rate (lr) or check the "
                                   "rewards' scale.")
                # The losses are means over this process's tokens; rescaling by local/global token counts makes
                # the average over processes (which DDP takes) the mean over the whole minibatch's tokens.
                acc.backward(loss * m.sum() * acc.num_processes / tokens)
                norms = [acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                         for model in (self.policy, self.value_model)]
                if not all(torch.isfinite(torch.as_tensor(norm)) for norm in norms):
                    self._diverged("a gradient became NaN or infinite. Lower the learning rate (lr).")
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                for key, value in (("policy_loss", pg_loss), ("value_loss", v_loss), *pg_stats.items()):
                    sums[key] += value.item()
        self.policy.eval()
        self.value_model.eval()
        updates = cfg.ppo_epochs * len(chunks[0])
        losses = self._sum(*(value / updates for value in sums.values())) / acc.num_processes

        # Statistics over the whole batch.
        per_row = acc.gather(torch.stack([rm_scores, gold, kl_tokens.sum(1), mask.sum(1).float(),
                                          batch.has_eos.float()], dim=1)).mean(0).tolist()
        entropy_mean, _ = self._masked_moments(entropy, mask)
        _, returns_var = self._masked_moments(returns, mask)
        _, error_var = self._masked_moments(returns - old_values, mask)
        beta_used = self.beta
        if self.kl_controller is not None:
            self.beta = self.kl_controller.update(per_row[2], cfg.batch_size)
        self.last_batch = self._describe(batch, rm_scores, gold, kl_tokens, advantages)
        stats = {
            "step": self.step_count, "score": per_row[0], "gold": per_row[1], "kl": per_row[2], "beta": beta_used,
            "entropy": entropy_mean.item(), **dict(zip(sums, losses.tolist())),
            "explained_variance": (1 - error_var / returns_var.clamp(min=1e-12)).item(),
            "response_length": per_row[3], "eos_rate": per_row[4], "first_ratio_max_abs_dev": first_dev,
            "seconds": round(time.perf_counter() - started, 3),
            "samples": [{k: row[k] for k in ("prompt", "response", "score", "gold")} for row in self.last_batch[:4]],
        }
        self.history.append(stats)
        self._good_state = self._snapshot()
        return stats

    def _describe(self, batch: Rollout, scores, gold, kl_tokens, advantages) -> list[dict]:
        """This process's rows of the batch, per token: for tables and token colouring."""
        rows = []
        for i in range(len(batch.prompts)):
            length = int(batch.mask[i].sum())
            ids = batch.response_ids[i, :length].tolist()
            rows.append({"prompt": batch.prompts[i], "response": batch.responses[i], "score": scores[i].item(),
                         "gold": gold[i].item(), "tokens": [self.tokenizer.decode([t]) for t in ids],
                         "kl": kl_tokens[i, :length].tolist(), "advantages": advantages[i, :length].tolist()})
        return rows

    def train(self, steps: int | None = None, callback: Callable | None = None,
              should_stop: Callable | None = None) -> list[dict]:
        """Run `steps` PPO steps (default config.steps), calling `callback(stats)` after each; stop early when
        `should_stop()` returns True (checked before each step). Returns the stats of the steps run."""
        steps = self.config.steps if steps is None else steps
        done = []
        for _ in tqdm(range(steps), desc="PPO", leave=False, disable=not self.accelerator.is_main_process):
            if should_stop is not None and should_stop():
                break
            done.append(self.step())
            if callback is not None:
                callback(done[-1])
        return done

    # --------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, prompts: list[str], temperature: float | None = None, seed: int | None = None) -> dict:
        """Mean proxy (reward-model) score, gold reward and format rate of one sample per prompt, at
        `temperature` (default config.eval_temperature; 0 is greedy). The same seed gives the same random
        streams, so before/after comparisons differ only by the policy.

        Returns {"score", "gold", "format_rate", "samples": [{"prompt", "response", "score", "gold"}]}.
        """
        from accelerate.utils import gather_object

        if not prompts:
            raise ValueError("evaluate() got an empty list of prompts.")
        temperature = self.config.eval_temperature if temperature is None else temperature
        seed = self.config.seed if seed is None else seed
        start, end = self._shard(len(prompts))
        local = list(prompts[start:end])
        rows = []
        if local:
            batch = self._sample(local, row_seeds(seed, -1, start, len(local)), temperature)
            scores = self._score(local, batch.responses).tolist()
            gold = self._gold(local, batch.responses).tolist()
            rows = [{"prompt": p, "response": r, "score": s, "gold": g}
                    for p, r, s, g in zip(local, batch.responses, scores, gold)]
        rows = gather_object(rows)
        return {"score": sum(r["score"] for r in rows) / len(rows), "gold": sum(r["gold"] for r in rows) / len(rows),
                "format_rate": sum(follows_format(r["response"]) for r in rows) / len(rows), "samples": rows}

    def save(self, directory) -> Path:
        """The policy and tokenizer (`save_pretrained`), and ppo.json: the config, the final beta and the history."""
        directory = Path(directory)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            self.unwrapped_policy.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
            history = [{k: v for k, v in stats.items() if k != "samples"} for stats in self.history]
            (directory / "ppo.json").write_text(json.dumps({"config": asdict(self.config), "beta": self.beta,
                                                            "history": history}, indent=1) + "\n")
        self.accelerator.wait_for_everyone()
        return directory

    def close(self) -> None:
        """End a multi-process run cleanly: wait for every process, then shut the process group down. Call it
        once, last, in a script started by `accelerate launch` or `torchrun`: a process that exits with the group
        still up can abort at exit ("terminate called without an active exception"). A no-op in one process."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


# ------------------------------------------------------------------------------------------- the run
def run_ppo(ws, config: PPOConfig | None = None, save_dir=None, callback: Callable | None = None) -> dict:
    """PPO from the workspace's SFT policy against its reward model, measured before and after on the world's
    held-out prompts (eval temperature, same seed). What `rlhf-kit ppo --json` prints."""
    started = time.perf_counter()
    trainer = PPOTrainer.from_workspace(ws, config)
    config = trainer.config
    heldout = [row["prompt"] for row in load_world(ws.require("world")).heldout]
    before = trainer.evaluate(heldout)
    history = trainer.train(callback=callback)
    after = trainer.evaluate(heldout)
    if save_dir is not None:
        trainer.save(save_dir)
    trainer.close()
    return {
        "beta": config.beta, "clip_eps": config.clip_eps, "lr": config.lr, "steps": len(history),
        "gold_reward_before": round(before["gold"], 4), "gold_reward_after": round(after["gold"], 4),
        "proxy_reward_before": round(before["score"], 4), "proxy_reward_after": round(after["score"], 4),
        "format_rate_before": round(before["format_rate"], 4), "format_rate_after": round(after["format_rate"], 4),
        "kl": round(tail_mean([s["kl"] for s in history]), 4),
        "final_beta": round(trainer.beta, 6),
        "train_seconds": round(sum(s["seconds"] for s in history), 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
