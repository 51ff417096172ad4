"""PPO for language models: the kit's own trainer (TRL 1.16 has no PPO trainer).

One step, read top to bottom in `PPOTrainer.step`, one method per phase:

1. `_rollout`: one sampled response per prompt (prompts left-padded, KV cache on), cut after its first eos;
2. `_score`: the reward model reads the decoded text. That is a *text bridge*: the reward model re-tokenises
   prompt + response with its own tokenizer, so its vocabulary need not match the policy's. A response that never
   ends (no eos within max_new_tokens) gets `no_eos_penalty` instead of its score. The gold reward of the same
   text is recorded, never optimised;
3. `_logprobs_and_values`: log-probs of the sampled tokens under the policy and under the frozen reference, by a
   forward pass at the sampling temperature (log_softmax(logits / T), never generate's scores), and values V_t;
4. `_advantages`: per-token rewards r_t = -beta * KL_t + [t = last] * score (`kl_penalized_rewards`, the score
   lands on the eos), advantages and returns by GAE (`gae`), advantages whitened over the whole batch;
5. `_update`: `ppo_epochs` passes over minibatches of  loss = ppo_policy_loss + vf_coef * value_loss, each
   model's gradient norm clipped to `max_grad_norm`.

The four functions of phases 4 and 5 are the trainer's `losses` (a `PPOLosses`): the reference ones of
`rlhf_kit.losses` by default, the learner's own in lab 04. The multi-process bookkeeping lives in `distributed.py`.

The old log-probs are computed on exactly the minibatches of the first epoch, so on the first minibatch of the
first epoch the probability ratio is exactly 1 (`stats["first_ratio_max_abs_dev"]` is 0.0): anything else means
the log-probs are computed inconsistently. Dropout is off in every model.

The value model (`value.py`) starts as the reward model (as in InstructGPT): its transformer body and its scalar
head, read at every position, with the reward normalisation folded into the head.

Built on `accelerate`: the same code runs on a CPU, a GPU, or several processes (`accelerate launch`, `torchrun`).
Each process takes its share of every batch's prompts; statistics, advantage whitening and the loss
normalisation are computed over the whole batch, and each prompt's sample is drawn from its own seeded random
stream, so one process and several give the same run up to floating-point rounding.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import losses
from .configs import PPOConfig
from .device import autocast, pick_device, seed_everything
from .distributed import Distributed
from .evaluate import score_samples, summarise
from .lora import AdapterOff, add_lora, merged_copy
from .models import check_tokenizer, disable_dropout, load_causal_lm
from .sampling import Rollout, generate, row_seeds, sample
from .training import adamw, run_steps, tail_mean
from .value import ValueModel
from .world import gold_reward, heldout_prompts, load_world, training_prompts

STAT_KEYS = ("step", "proxy", "gold", "kl", "kl_k1", "kl_k3", "beta", "entropy", "clip_fraction", "approx_kl",
             "policy_loss", "value_loss", "kl_loss", "explained_variance", "response_length", "eos_rate",
             "zero_std_groups", "first_ratio_max_abs_dev", "seconds", "samples")


class PPODiverged(RuntimeError):
    """A reward, loss or gradient was NaN or infinite; the trainer restored the last good policy and stopped."""


def adaptive_kl_update(beta: float, kl: float, target: float, n_steps: int, horizon: float) -> float:
    """One step of Ziegler et al. (2019)'s adaptive KL coefficient (`AdaptiveKLController.update` in
    lm-human-preferences and TRL's old PPO trainer): the new beta, a float.

        error = clip(kl / target - 1, -0.2, 0.2)
        beta  = beta * (1 + error * n_steps / horizon)

    kl: the batch's mean KL per response (nats); target: the KL budget (> 0, else ValueError); n_steps: the
    responses in the batch. Over budget beta grows, under it shrinks, by at most 20% x n_steps / horizon a step.
    """
    if not target > 0:
        raise ValueError(f"the KL target must be > 0 nats (the error divides by it); got {target}")
    error = min(max(kl / target - 1, -0.2), 0.2)
    return beta * (1 + error * n_steps / horizon)


class AdaptiveKLController:
    """Ziegler et al. (2019): steer beta so the KL per response stays near a target, by `adaptive_kl_update`
    after every batch (kl: its mean KL per response, n_steps: its number of responses)."""

    def __init__(self, beta: float, target: float, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        self.beta = adaptive_kl_update(self.beta, kl, self.target, n_steps, self.horizon)
        return self.beta


# ------------------------------------------------------------------------------------------- trainer
def make_accelerator():
    """An `accelerate.Accelerator` on the kit's device (CPU when pick_device() says so, e.g. RLHF_KIT_DEVICE=cpu)."""
    from accelerate import Accelerator

    return Accelerator(cpu=pick_device().type == "cpu")


LOSS_FUNCTIONS = ("kl_penalized_rewards", "gae", "ppo_policy_loss", "value_loss", "group_relative_advantages",
                  "rloo_advantages")


@dataclass
class PPOLosses:
    """The functions PPO, GRPO and RLOO are made of. The reference ones by default; labs 04 and 07 pass the
    learner's own, e.g. `PPOLosses(gae=my_gae, ppo_policy_loss=my_policy_loss)`, with the signatures of
    `rlhf_kit.losses`. Which ones a run calls depends on its estimator (GRPO calls no `gae` and no `value_loss`)."""
    kl_penalized_rewards: Callable = losses.kl_penalized_rewards
    gae: Callable = losses.gae
    ppo_policy_loss: Callable = losses.ppo_policy_loss
    value_loss: Callable = losses.value_loss
    group_relative_advantages: Callable = losses.group_relative_advantages
    rloo_advantages: Callable = losses.rloo_advantages

    def whose(self) -> dict[str, str]:
        """{function name: "the kit's" or "yours (<module>)"}: which code this trainer runs."""
        def who(fn) -> str:
            module = getattr(fn, "__module__", None)
            return "yours" if module in (None, "__main__") else f"yours ({module})"

        return {name: "the kit's" if getattr(self, name) is getattr(losses, name) else who(getattr(self, name))
                for name in LOSS_FUNCTIONS}


class PPOTrainer:
    """PPO on any Hugging Face causal LM, and with `config.estimator` "grpo" or "rloo" the critic-free GRPO and
    RLOO: the same rollout, scoring, log-probs, clipped update and bookkeeping, with each response's advantage
    taken from the other responses to its prompt (`config.group_size` of them, consecutive in the batch) instead of
    a value model, which they neither build nor train. `train()` runs steps, `step()` one; `history` holds every
    step's stats and `last_batch` the last batch per token (for colouring tokens by KL or advantage).

        trainer = PPOTrainer.from_workspace(ws, PPOConfig.from_preset(ws.preset, beta=0.05))
        trainer.train(callback=lambda step, **stats: print(step, stats["gold"], stats["kl"]))

    `reward_fn(prompts, responses) -> (n,)` scores text (e.g. `reward.RewardScorer`); `gold_fn(prompt, response)`
    is recorded only (None: skip). `value_model` (PPO only) defaults to `ValueModel.from_policy(policy)`,
    `ref_policy` to a frozen copy of the policy as it is now; `losses` to the reference functions of
    `rlhf_kit.losses`. With config.lora_rank > 0, LoRA adapters train on the policy and on the value model's body
    (its head in full), the reference is the policy with its adapters off (`lora.AdapterOff`: no second copy), and
    `save` writes the adapters merged into the weights.
    """

    def __init__(self, policy, tokenizer, prompts: list[str], reward_fn: Callable, config: PPOConfig,
                 value_model: ValueModel | None = None, ref_policy=None, gold_fn: Callable | None = gold_reward,
                 accelerator=None, losses: PPOLosses | None = None):
        if not prompts:
            raise ValueError("PPO got an empty list of prompts: pass the instructions to train on, e.g. "
                             "training_prompts(load_world(ws.require('world'))).")
        self.accelerator = accelerator or make_accelerator()
        self.dist = Distributed(self.accelerator)
        for name in ("batch_size", "minibatch_size"):
            if getattr(config, name) % self.dist.processes:
                raise ValueError(f"PPOConfig.{name}={getattr(config, name)} must be a multiple of the "
                                 f"{self.dist.processes} processes: each process takes an equal share of the prompts.")
        self.config, self.tokenizer, self.prompts = config, tokenizer, list(prompts)
        self.reward_fn, self.gold_fn, self.losses = reward_fn, gold_fn, losses or PPOLosses()
        seed_everything(config.seed)
        device = self.accelerator.device
        for model in (policy, ref_policy, value_model):
            if model is not None:
                disable_dropout(model)
        check_tokenizer(tokenizer, model=policy)
        if config.estimator == "gae":
            value_model = value_model or ValueModel.from_policy(policy)
        if config.lora_rank:
            # LoRA: adapters on the policy and the value model's body (its head trains in full); the reference is
            # the policy with its adapters off, so there is no second copy of the model in memory
            policy = add_lora(policy, config.lora_rank, config.lora_alpha)
            if value_model is not None:
                value_model.body = add_lora(value_model.body, config.lora_rank, config.lora_alpha, task_type=None)
        if config.lora_rank and ref_policy is None:
            self.ref_policy = AdapterOff(policy)
        else:
            self.ref_policy = (ref_policy or copy.deepcopy(policy)).to(device).eval().requires_grad_(False)
        trainable = [p for model in (policy, value_model) if model is not None
                     for p in model.parameters() if p.requires_grad]
        if config.estimator == "gae":
            self.policy, self.value_model, self.optimizer = self.accelerator.prepare(policy, value_model,
                                                                                     adamw(trainable, config.lr))
        else:                                     # GRPO, RLOO: no critic
            self.policy, self.optimizer = self.accelerator.prepare(policy, adamw(trainable, config.lr))
            self.value_model = None
        self.kl_controller = AdaptiveKLController(config.beta, config.kl_target, config.kl_horizon) \
            if config.adaptive_kl else None
        self.beta = config.beta
        self.step_count = 0
        self.history: list[dict] = []
        self.last_batch: list[dict] = []
        self.updates: list[dict] = []       # the last step's updates: {"update", "loss", "policy_loss", "grad_norm",
        #                                     "ratio_max_abs_dev", "advantage_abs_mean": the token mean of |A|}
        #                                     each (this process's minibatch share)
        self._prompt_rng, self._prompt_queue = random.Random(config.seed), []
        self._shuffle = torch.Generator().manual_seed(config.seed)
        self._good_state = self._snapshot()

    @classmethod
    def from_workspace(cls, ws, config: PPOConfig | None = None, reward_fn: Callable | None = None, **kwargs):
        """Policy and reference from the `sft` stage, reward and (PPO only) value model from the `reward` stage
        (built if missing), prompts from the world's demonstrations. kwargs go to the constructor (e.g. `losses=`)."""
        from .reward import RewardScorer

        config = config or PPOConfig.from_preset(ws.preset, ws.seed)
        accelerator = kwargs.pop("accelerator", None) or make_accelerator()
        if accelerator.is_main_process:
            ws.ensure("reward")
        accelerator.wait_for_everyone()
        policy, tokenizer = load_causal_lm(ws.require("sft"), device=accelerator.device)
        reward_fn = reward_fn or RewardScorer(ws.require("reward"), device=accelerator.device)
        value_model = ValueModel.from_reward_model(ws.require("reward"), tokenizer) \
            if config.estimator == "gae" else None
        prompts = training_prompts(load_world(ws.require("world")))
        return cls(policy, tokenizer, prompts, reward_fn, config, value_model=value_model,
                   accelerator=accelerator, **kwargs)

    @property
    def unwrapped_policy(self):
        return self.accelerator.unwrap_model(self.policy)

    # --------------------------------------------------------------------------------------------- step
    def step(self) -> dict:
        """One PPO step: rollout, score, log-probs and values, advantages, then ppo_epochs x minibatches of updates.

        Returns its stats, over the whole batch (all processes): proxy (mean reward-model score, normalised,
        before the no-eos penalty), gold (mean gold reward), kl (mean over responses of sum_t KL_t, nats, by the
        config's estimator), kl_k1 and kl_k3 (the same by each estimator: k1's can dip below 0, k3's never),
        beta (the one used), entropy (per response token, at the sampling temperature), policy_loss, value_loss,
        clip_fraction, approx_kl (means over updates), explained_variance (1 - Var(returns - V) / Var(returns)),
        response_length (tokens, eos included), eos_rate, first_ratio_max_abs_dev (max |ratio - 1| on the first
        minibatch: 0.0), seconds, and samples (a few {prompt, response, proxy, gold} rows).
        Raises PPODiverged, after restoring the last good weights, if a score, loss or gradient is not finite.
        """
        started = time.perf_counter()
        self.step_count += 1
        batch = self._rollout()
        scores, proxy, gold = self._score(batch)
        minibatches = self._minibatches(len(batch.prompts))
        old = self._logprobs_and_values(batch, minibatches[0])
        rewards_kl, advantages, returns = self._advantages(batch, scores, old)
        update = self._update(batch, minibatches, old, advantages, returns)
        return self._record(batch, proxy, gold, old, rewards_kl, advantages, returns, update, started)

    def _rollout(self) -> Rollout:
        """1. One sampled response per prompt of this process's share of the next batch, each from its own stream."""
        cfg = self.config
        prompts, first_row = self._next_prompts()
        seeds = row_seeds(cfg.seed, self.step_count, first_row, len(prompts))
        return sample(self.unwrapped_policy, self.tokenizer, prompts, seeds, cfg.temperature, cfg.max_new_tokens)

    def _score(self, batch: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """2. (scores PPO optimises, proxy, gold), each (b,): the reward model's score of the text, replaced by
        no_eos_penalty for a response that never ended; the gold reward is recorded only."""
        proxy = self._proxy(batch.prompts, batch.responses)
        every = self.accelerator.gather(proxy)
        if not torch.isfinite(every).all():
            self._diverged(f"the reward function returned {int((~torch.isfinite(every)).sum())} non-finite score(s) "
                           f"(NaN or inf) for {len(every)} responses. Check the reward function: it must return "
                           f"finite numbers.")
        penalty = self.config.no_eos_penalty
        scores = proxy if penalty is None else torch.where(batch.has_eos, proxy, torch.full_like(proxy, penalty))
        return scores, proxy, self._gold(batch.prompts, batch.responses)

    def _minibatches(self, n: int) -> list[list[torch.Tensor]]:
        """Row indices of each epoch's minibatches (this process's share of each), a fresh shuffle per epoch."""
        size = self.config.minibatch_size // self.dist.processes
        orders = [torch.randperm(n, generator=self._shuffle) for _ in range(self.config.ppo_epochs)]
        return [[order[i:i + size] for i in range(0, n, size)] for order in orders]

    @torch.no_grad()
    def _logprobs_and_values(self, batch: Rollout, minibatches) -> dict[str, torch.Tensor]:
        """3. Per response token, (b, R) each: the policy's log-probs (computed on exactly the first epoch's
        minibatches, so its first minibatch has ratio 1), the reference's, the value model's values, entropy."""
        cfg, device = self.config, self.accelerator.device
        old = {key: torch.zeros(batch.mask.shape, device=device) for key in ("logprobs", "ref_logprobs", "values",
                                                                            "entropy")}
        value_model = self.accelerator.unwrap_model(self.value_model) if self.value_model is not None else None
        with autocast(device):
            for idx in minibatches:
                rows, tokens = batch.rows(idx), batch.response_ids[idx]
                logits = response_logits(self.unwrapped_policy, rows, batch.prompt_len, cfg.temperature)
                old["logprobs"][idx] = token_logprobs(logits, tokens)
                old["entropy"][idx] = -(F.softmax(logits, -1) * F.log_softmax(logits, -1)).sum(-1)
                ref = response_logits(self.ref_policy, rows, batch.prompt_len, cfg.temperature)
                old["ref_logprobs"][idx] = token_logprobs(ref, tokens)
                if value_model is not None:
                    old["values"][idx] = value_model(**rows)[:, batch.prompt_len - 1:-1].float()
        return old

    def _advantages(self, batch: Rollout, scores, old) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """4. (kl per token, advantages, returns), each (b, R). With kl_in "reward", beta's KL is in the reward
        (with kl_in "loss" it is added to the loss in `_update` instead).
        PPO ("gae"): rewards = -beta * KL_t + score on the eos, then GAE; advantages whitened over the whole
        batch's response tokens. GRPO and RLOO: each response's reward, score - beta * sum_t KL_t, against the
        other responses to its prompt (`group_relative_advantages` or `rloo_advantages`, over the whole batch, all
        processes), the same advantage on each of its tokens; returns are zeros (there is no value model)."""
        cfg, fns = self.config, self.losses
        kl = losses.kl_estimate(old["logprobs"], old["ref_logprobs"], cfg.kl_estimator) * batch.mask
        beta = self.beta if cfg.kl_in == "reward" else 0.0
        if cfg.estimator == "gae":
            rewards = fns.kl_penalized_rewards(scores, old["logprobs"], old["ref_logprobs"], batch.mask, beta,
                                               cfg.kl_estimator)
            advantages, returns = fns.gae(rewards, old["values"], batch.mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                mean, var = self.dist.masked_moments(advantages, batch.mask)
                advantages = (advantages - mean) / (var.sqrt() + 1e-8) * batch.mask
            self._zero_std_groups = float("nan")
            return kl, advantages, returns
        every = self.accelerator.gather(scores - beta * kl.sum(1))
        if cfg.estimator == "grpo":
            per_response, _ = fns.group_relative_advantages(every, cfg.group_size, cfg.group_std)
        else:
            per_response = fns.rloo_advantages(every, cfg.group_size)
        # recorded from the reference's stats, whichever functions the run uses (a learner's may return none)
        self._zero_std_groups = losses.group_relative_advantages(every, cfg.group_size)[1]["zero_std_groups"].item()
        start, end = self.dist.shard(cfg.batch_size)
        advantages = per_response[start:end].to(kl.dtype).unsqueeze(1) * batch.mask
        return kl, advantages, torch.zeros_like(advantages)

    def _update(self, batch: Rollout, minibatches, old, advantages, returns) -> dict:
        """5. ppo_epochs passes over the minibatches of  loss = policy loss + vf_coef * value loss.
        Returns the losses' and stats' means over updates and first_ratio_max_abs_dev."""
        cfg, fns = self.config, self.losses
        self._train_mode(True)
        self.updates = []
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "kl_loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0}
        first_dev = None
        for idx in (idx for epoch in minibatches for idx in epoch):
            mask, rows = batch.mask[idx], batch.rows(idx)
            with autocast(self.accelerator.device):
                logits = response_logits(self.policy, rows, batch.prompt_len, cfg.temperature)
                values = self.value_model(**rows)[:, batch.prompt_len - 1:-1].float() \
                    if self.value_model is not None else None
            logprobs = token_logprobs(logits, batch.response_ids[idx])
            ratio_dev = (((logprobs.detach() - old["logprobs"][idx]).exp() - 1).abs() * mask).max()
            if first_dev is None:
                first_dev = self.dist.max(ratio_dev)
            pg_loss, pg_stats = fns.ppo_policy_loss(logprobs, old["logprobs"][idx], advantages[idx], mask,
                                                    cfg.clip_eps)
            loss = pg_loss
            if values is not None:
                v_loss = fns.value_loss(values, old["values"][idx], returns[idx], mask, cfg.vf_clip_eps)
                loss = loss + cfg.vf_coef * v_loss
                sums["value_loss"] += v_loss.item()
            if cfg.kl_in == "loss":      # GRPO: beta x the k3 estimate of KL(pi || pi_ref), a token mean
                kl_term = losses._masked_mean(losses.kl_estimate(logprobs, old["ref_logprobs"][idx], "k3"), mask)
                loss = loss + self.beta * kl_term
                sums["kl_loss"] += kl_term.item()
            grad_norm = self._backward_and_step(loss, mask)
            self.updates.append({"update": len(self.updates) + 1, "loss": loss.item(), "policy_loss": pg_loss.item(),
                                 "grad_norm": grad_norm, "ratio_max_abs_dev": ratio_dev.item(),
                                 "advantage_abs_mean": ((advantages[idx].abs() * mask).sum()
                                                        / mask.sum().clamp(min=1)).item()})
            for key, value in (("policy_loss", pg_loss), *pg_stats.items()):
                sums[key] += torch.as_tensor(value).item()
        self._train_mode(False)
        updates = cfg.ppo_epochs * len(minibatches[0])
        means = self.dist.sum(*(value / updates for value in sums.values())) / self.dist.processes
        return {**dict(zip(sums, means.tolist())), "first_ratio_max_abs_dev": first_dev}

    def _backward_and_step(self, loss: torch.Tensor, mask: torch.Tensor) -> float:
        """Backpropagate the whole minibatch's token mean, clip each model's gradient norm, step; PPODiverged on
        a non-finite loss or gradient. Returns the policy's gradient norm before clipping."""
        if self.dist.sum((~torch.isfinite(loss)).float())[0] > 0:
            self._diverged("the loss became NaN or infinite. Lower the learning rate (lr) or check the rewards' scale.")
        self.accelerator.backward(self.dist.token_weighted(loss, mask))
        norms = [self.accelerator.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
                 for model in self._trained().values()]
        if not all(torch.isfinite(torch.as_tensor(norm)) for norm in norms):
            self._diverged("a gradient became NaN or infinite. Lower the learning rate (lr).")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norms[0])

    def _record(self, batch, proxy, gold, old, kl, advantages, returns, update, started) -> dict:
        """The step's stats over the whole batch; steer beta (adaptive KL); keep this state as the last good one."""
        mask = batch.mask
        means = self.dist.row_means(proxy=proxy, gold=gold, kl=kl.sum(1), response_length=mask.sum(1),
                                    eos_rate=batch.has_eos,
                                    **{f"kl_{k}": losses.sequence_kl(old["logprobs"], old["ref_logprobs"], mask, k)
                                       for k in ("k1", "k3")})
        entropy, _ = self.dist.masked_moments(old["entropy"], mask)
        _, returns_var = self.dist.masked_moments(returns, mask)
        _, error_var = self.dist.masked_moments(returns - old["values"], mask)
        beta_used = self.beta
        if self.kl_controller is not None:
            self.beta = self.kl_controller.update(means["kl"], self.config.batch_size)
        self.last_batch = self._describe(batch, proxy, gold, kl, advantages)
        explained = (1 - error_var / returns_var.clamp(min=1e-12)).item() if self.value_model is not None \
            else float("nan")
        stats = {"step": self.step_count, **means, "beta": beta_used, "entropy": entropy.item(), **update,
                 "explained_variance": explained, "zero_std_groups": self._zero_std_groups,
                 "seconds": round(time.perf_counter() - started, 3),
                 "samples": [{k: row[k] for k in ("prompt", "response", "proxy", "gold")}
                             for row in self.last_batch[:4]]}
        self.history.append(stats)
        self._good_state = self._snapshot()
        return stats

    def _describe(self, batch: Rollout, proxy, gold, kl, advantages) -> list[dict]:
        """This process's rows of the batch, per token: for tables and token colouring."""
        rows = []
        for i in range(len(batch.prompts)):
            length = int(batch.mask[i].sum())
            ids = batch.response_ids[i, :length].tolist()
            rows.append({"prompt": batch.prompts[i], "response": batch.responses[i], "proxy": proxy[i].item(),
                         "gold": gold[i].item(), "tokens": [self.tokenizer.decode([t]) for t in ids],
                         "kl": kl[i, :length].tolist(), "advantages": advantages[i, :length].tolist()})
        return rows

    # ------------------------------------------------------------------------------------------ helpers
    def _next_prompts(self) -> tuple[list[str], int]:
        """This process's share of the next batch: batch_size // group_size prompts (a seeded shuffle, cycled),
        each group_size times in a row, and its first row."""
        n, group = self.config.batch_size // self.config.group_size, self.config.group_size
        while len(self._prompt_queue) < n:
            more = list(self.prompts)
            self._prompt_rng.shuffle(more)
            self._prompt_queue += more
        batch = [prompt for prompt in self._prompt_queue[:n] for _ in range(group)]
        self._prompt_queue = self._prompt_queue[n:]
        start, end = self.dist.shard(len(batch))
        return batch[start:end], start

    def _proxy(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        scores = torch.as_tensor(self.reward_fn(prompts, responses), dtype=torch.float32)
        if scores.shape != (len(prompts),):
            raise ValueError(f"reward_fn must return one score per response, shape ({len(prompts)},); "
                             f"got shape {tuple(scores.shape)}.")
        return scores.to(self.accelerator.device)

    def _gold(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        values = [self.gold_fn(p, r) if self.gold_fn else float("nan") for p, r in zip(prompts, responses)]
        return torch.tensor(values, dtype=torch.float32, device=self.accelerator.device)

    def _trained(self) -> dict:
        """{"policy": the policy, "value": the value model (PPO only)}: the models the optimiser updates."""
        return {"policy": self.policy, **({"value": self.value_model} if self.value_model is not None else {})}

    def _train_mode(self, on: bool) -> None:
        for model in self._trained().values():
            model.train(on)

    def _snapshot(self) -> dict:
        """The trained models' weights, copied to the CPU: the last good state."""
        return {name: {k: v.detach().to("cpu", copy=True) for k, v in
                       self.accelerator.unwrap_model(model).state_dict().items()}
                for name, model in self._trained().items()}

    def _diverged(self, reason: str) -> None:
        """Restore the last good weights and raise PPODiverged saying why."""
        self.optimizer.zero_grad(set_to_none=True)
        for name, model in self._trained().items():
            self.accelerator.unwrap_model(model).load_state_dict(self._good_state[name])
        self._train_mode(False)
        raise PPODiverged(f"PPO stopped at step {self.step_count}: {reason} The policy and value model were "
                          f"restored to their state after step {self.step_count - 1}, the last good one.")

    # ------------------------------------------------------------------------------------ train, evaluate
    def train(self, steps: int | None = None, callback: Callable | None = None,
              should_stop: Callable | None = None) -> list[dict]:
        """Run `steps` PPO steps (default config.steps), calling `callback(step, **stats)` after each (the kit's
        trainer contract: a `LiveCurve` plugs in directly); stop early when `should_stop()` returns True (checked
        before each step). Returns the stats of the steps run."""
        steps = self.config.steps if steps is None else steps
        return run_steps(self.step, steps, callback, should_stop, desc="PPO",
                         progress=self.accelerator.is_main_process)

    @torch.no_grad()
    def evaluate(self, prompts: list[str], temperature: float | None = None, seed: int | None = None,
                 policy=None) -> dict:
        """`evaluate.score_policy` of the policy as it is now, with the trainer's reward model, over all processes:
        one sample per prompt at `temperature` (default config.eval_temperature; 0 is greedy), from the same random
        streams as `sampling.generate` with the same seed, so every before/after differs only by the policy.
        `policy`: another model to measure the same way (the reference gives the figures from before training).

        Returns {"proxy", "gold", "format_rate", "samples": [{"prompt", "response", "proxy", "gold", "format_ok"}]}.
        """
        from accelerate.utils import gather_object

        if not prompts:
            raise ValueError("evaluate() got an empty list of prompts.")
        temperature = self.config.eval_temperature if temperature is None else temperature
        seed = self.config.seed if seed is None else seed
        start, end = self.dist.shard(len(prompts))
        local = list(prompts[start:end])
        rows = []
        if local:
            responses = generate(self.unwrapped_policy if policy is None else policy, self.tokenizer, local,
                                 self.config.max_new_tokens, temperature, seed=seed, first_row=start)
            rows = score_samples(local, responses, lambda p, r: self._proxy(p, r).tolist(), self.gold_fn)
        return summarise(gather_object(rows))

    def save(self, directory) -> Path:
        """The policy and tokenizer (`save_pretrained`), and ppo.json: the config, the final beta and the history."""
        directory = Path(directory)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            merged_copy(self.unwrapped_policy).save_pretrained(directory)     # LoRA: the adapters merged in
            self.tokenizer.save_pretrained(directory)
            history = [{k: v for k, v in stats.items() if k != "samples"} for stats in self.history]
            (directory / "ppo.json").write_text(json.dumps({"config": asdict(self.config), "beta": self.beta,
                                                            "losses": self.losses.whose(), "history": history},
                                                           indent=1) + "\n")
        self.accelerator.wait_for_everyone()
        return directory

    def close(self) -> None:
        """End a multi-process run cleanly: wait for every process, then shut the process group down. Call it
        once, last, in a script started by `accelerate launch` or `torchrun`: a process that exits with the group
        still up can abort at exit ("terminate called without an active exception"). A no-op in one process."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def response_logits(model, batch: dict, prompt_len: int, temperature: float) -> torch.Tensor:
    """logits / T at the positions that predict the response tokens: (batch, R, vocab), float32."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False).logits
    return logits[:, prompt_len - 1:-1].float() / temperature


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] for each position: (batch, R)."""
    return F.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def rollout_kl(policy, ref_policy, rollout: Rollout, temperature: float) -> torch.Tensor:
    """The KL of each sampled response from the reference, in nats: `losses.sequence_kl` (k1, summed over its
    tokens, eos included) of the two models' log-probabilities at `temperature`: (batch,). Averaged over responses
    that `policy` sampled at that temperature, it estimates KL(pi || pi_ref) per response; one response's value
    can be negative, the true KL cannot. Lab 05's sweep and the DPO stage measure every policy with it."""
    if not temperature > 0:
        raise ValueError(f"rollout_kl needs a sampling temperature > 0 (greedy decoding has no distribution to "
                         f"compare); got {temperature}.")
    rows, tokens = rollout.rows(slice(None)), rollout.response_ids
    with autocast(next(policy.parameters()).device):
        logprobs = token_logprobs(response_logits(policy, rows, rollout.prompt_len, temperature), tokens)
        ref_logprobs = token_logprobs(response_logits(ref_policy, rows, rollout.prompt_len, temperature), tokens)
    return losses.sequence_kl(logprobs, ref_logprobs, rollout.mask)


# ------------------------------------------------------------------------------------------- the run
def run_ppo(ws, config: PPOConfig | None = None, save_dir=None, callback: Callable | None = None,
            losses: PPOLosses | None = None, reward_fn: Callable | None = None) -> dict:
    """PPO from the workspace's SFT policy against its reward model, measured before and after on the world's
    held-out prompts (eval temperature, same seed). What `rlhf-kit ppo --json` prints and the `ppo` stage records."""
    started = time.perf_counter()
    trainer = PPOTrainer.from_workspace(ws, config, reward_fn=reward_fn, losses=losses)
    heldout = heldout_prompts(load_world(ws.require("world")))
    before = trainer.evaluate(heldout)
    trainer.train(callback=callback)
    after = trainer.evaluate(heldout)
    if save_dir is not None:
        trainer.save(save_dir)
    trainer.close()
    return run_metrics(trainer, before, after, time.perf_counter() - started)


def run_metrics(trainer: PPOTrainer, before: dict, after: dict, seconds: float) -> dict:
    """`run_ppo`'s metrics of a finished run: its settings, the held-out figures before and after, the KL of the
    last training steps, whose losses it ran, its time."""
    config, history = trainer.config, trainer.history
    return {
        "beta": config.beta, "clip_eps": config.clip_eps, "lr": config.lr, "steps": len(history),
        "gold_before": round(before["gold"], 4), "gold_after": round(after["gold"], 4),
        "proxy_before": round(before["proxy"], 4), "proxy_after": round(after["proxy"], 4),
        "format_rate_before": round(before["format_rate"], 4), "format_rate_after": round(after["format_rate"], 4),
        "kl": round(tail_mean([s["kl"] for s in history]), 4),
        "final_beta": round(trainer.beta, 6), "losses": trainer.losses.whose(),
        "estimator": config.estimator, "group_size": config.group_size, "kl_in": config.kl_in,
        "train_seconds": round(sum(s["seconds"] for s in history), 2),
        "seconds": round(seconds, 2),
    }


def stage_of_run(ws, config: PPOConfig, reward: str = "rm") -> str | None:
    """The workspace stage a run with these settings is (what `ws.build(stage)` would train), or None: "ppo"
    (the preset's PPO), "hacked" (lab 05's beta = 0 push), "grpo" (the preset's GRPO), against the reward model
    (`reward` "rm"); "grpo-ai" (the preset's GRPO) against the AI-label reward model ("ai-reward")."""
    from .grpo import grpo_config
    from .hacking import hacked_config

    candidates = {"rm": {"ppo": PPOConfig.from_preset(ws.preset, ws.seed), "grpo": grpo_config(ws, "grpo"),
                         "hacked": hacked_config(ws)},
                  "ai-reward": {"grpo-ai": grpo_config(ws, "grpo")}}.get(reward, {})
    return next((stage for stage, settings in candidates.items() if settings == config), None)


def record_run(ws, trainer: PPOTrainer, by: str, reward: str = "rm", started: float | None = None) -> str | None:
    """Record a finished run as the workspace stage it equals (`stage_of_run`), if that stage is wanted
    (`ws.wants`: not built yet, or built with other preset values): its model and the metrics its builder would
    have written, measured the same way (the held-out prompts, one sample each, before (the reference, which is
    the policy before training) and after). So lab 08 ranks the policies labs 05-07 trained instead of training
    them again. Returns the stage recorded, or None."""
    losses = trainer.losses
    yours = any(who != "the kit's" for who in losses.whose().values())
    stage = stage_of_run(ws, trainer.config, reward)
    if stage is None or not ws.wants(stage) or trainer.config.lora_rank:
        return None
    heldout = heldout_prompts(load_world(ws.require("world")))
    before = trainer.evaluate(heldout, policy=trainer.ref_policy)
    after = trainer.evaluate(heldout)
    extra = {"grpo": {"reward": "rm"}, "grpo-ai": {"reward": "ai-reward"}}.get(stage, {})
    seconds = time.perf_counter() - started if started is not None else sum(s["seconds"] for s in trainer.history)

    def write(out_dir: Path) -> dict:
        trainer.save(out_dir)
        return {**run_metrics(trainer, before, after, seconds), **extra, "config": asdict(trainer.config)}

    ws.record(stage, write, by, **({"losses": losses} if yours else {}))
    return stage


def build(ws, out_dir: Path, callback: Callable | None = None, losses: PPOLosses | None = None, **overrides) -> dict:
    """Workspace stage `ppo`: `run_ppo` with the preset's PPO settings (keyword overrides replace PPOConfig
    fields), the policy saved to the stage directory, so later labs load "the PPO policy" like any artefact."""
    config = PPOConfig.from_preset(ws.preset, ws.seed, **overrides)
    return {**run_ppo(ws, config, save_dir=out_dir, callback=callback, losses=losses), "config": asdict(config)}
