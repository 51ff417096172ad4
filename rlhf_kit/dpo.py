"""DPO: the policy learns from preference pairs directly, with no reward model and no sampling while it trains.

Rafailov et al. (2023) solve the KL-regularised objective of lab 04, max E[r] - beta KL(pi || pi_ref), in closed
form: pi*(y|x) = pi_ref(y|x) exp(r(x,y) / beta) / Z(x), so r = beta log(pi / pi_ref) + beta log Z(x). Inside the
Bradley-Terry likelihood of lab 03 the log Z terms cancel, which leaves a loss on the policy's own log-probabilities
(`losses.dpo_loss`; `losses.ipo_loss` is Azar et al.'s squared variant).

Read top to bottom:

1. `check_pairs`: every row has a non-empty prompt, chosen and rejected, and chosen != rejected, checked before
   anything is trained; the tokenizer's pad differs from its eos (or padding could not be told from a response's
   end in the masks);
2. `DPOTrainer.__init__`: each pair tokenized as prompt + response + eos with a mask over the response (`sft`'s
   tokenization), and the frozen reference's log-probabilities of every response computed ONCE and cached
   (`reference_logps`): the reference never changes, so recomputing them each epoch would only cost time;
3. `DPOTrainer.step`: one forward pass of the policy over a batch's chosen and rejected sequences,
   `sequence_logprobs`, the loss against the cached reference values, one AdamW step (`training.optimizer_step`);
4. `DPOTrainer.evaluate`: held-out prompts sampled as every stage samples them (`sampling`, same seeds as
   `evaluate.score_policy`), scored by the gold reward and the reward model, and the KL from the reference
   measured on those samples; `DPOTrainer.evaluate_pairs`: the implicit reward model beta log(pi / pi_ref) on
   held-out pairs, against the labels and against the gold ordering.

`build` is the workspace stage `dpo`: from the `sft` policy, on the `preferences` stage's pairs plus the
learner's label files (as the `reward` stage gathers them); the pairs of the reward model's held-out prompts are
held out here too, so both are measured on the same pairs.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from . import losses
from .configs import DPOConfig
from .device import autocast, seed_everything
from .evaluate import score_with_kl
from .lora import AdapterOff, add_lora, merged_copy
from .models import check_tokenizer, disable_dropout, load_causal_lm
from .reuse import reusable
from .reward import heldout_rows
from .sft import _context_limit, collate, tokenize_demo
from .training import adamw, batches, optimizer_step, run_steps, tail_mean
from .world import gold_reward, heldout_prompts, load_world

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
TIE_NATS = 1e-3        # |log-ratio margin| below this is float noise, not a preference (evaluate_pairs)
LOSSES = {"sigmoid": losses.dpo_loss, "ipo": losses.ipo_loss}
STAT_KEYS = ("step", "epoch", "loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "chosen_logps",
             "rejected_logps", "lr", "seconds")


# ------------------------------------------------------------------------------------------- the pairs
def check_pairs(rows: list[dict]) -> None:
    """A ValueError naming the first bad row and what to do: a row that is not a dict, lacks a prompt, chosen or
    rejected column, has one empty (or not text), or has chosen == rejected. A row's "source" (e.g.
    "labels/you.jsonl, pair 3") names it; otherwise its position, "pair 3"."""
    if not rows:
        raise ValueError("DPO got no preference pairs: label some in lab 02 or run `rlhf-kit collect --simulated`.")
    for number, row in enumerate(rows, start=1):
        label = (row.get("source") if isinstance(row, dict) else None) or f"pair {number}"
        if not isinstance(row, dict):
            raise ValueError(f"{label} is a {type(row).__name__}, not a row with prompt/chosen/rejected columns.")
        missing = [column for column in PAIR_COLUMNS if column not in row]
        if missing:
            raise ValueError(f"{label} has no {missing[0]!r} column (it has {', '.join(map(repr, row)) or 'none'}); "
                             f"DPO reads prompt/chosen/rejected rows, TRL's preference format.")
        for column in PAIR_COLUMNS:
            if not isinstance(row[column], str) or not row[column].strip():
                raise ValueError(f"{label}: {column!r} is {row[column]!r}, an empty {column}: DPO needs text on both "
                                 f"sides of a pair. Remove the row or label the pair again.")
        if row["chosen"] == row["rejected"]:
            raise ValueError(f"{label}: 'chosen' and 'rejected' are the same text, so the pair prefers nothing (its "
                             f"margin is 0 whatever the policy does). Remove the row.")


def gather_pairs(ws, extra_stores=()) -> list[dict]:
    """The simulated annotator's pairs (the `preferences` stage) and the learner's label files, as the `reward`
    stage gathers them: `prompt`/`chosen`/`rejected` rows, each with its "source" for error messages."""
    from .preferences import PreferenceStore

    rows = []
    for store in [PreferenceStore(ws.require("preferences") / "simulated.jsonl"), *extra_stores]:
        if not isinstance(store, PreferenceStore):
            store = PreferenceStore(store)
        dataset, _ = store.export()
        rows += [{**{k: r[k] for k in PAIR_COLUMNS}, "source": f"{store.path.name}, pair {i}"}
                 for i, r in enumerate(dataset, start=1)]
    return rows


def workspace_pairs(ws, extra_stores=()) -> tuple[list[dict], list[dict]]:
    """(train, heldout), every row checked (`check_pairs`) before anything is trained: `gather_pairs`, with the
    pairs whose prompt the reward model held out (its `heldout.jsonl`) held out here too, so DPO's implicit reward
    model and lab 03's explicit one are measured on the same pairs and trained on none of them."""
    rows, heldout = _with_text(gather_pairs(ws, extra_stores)), _with_text(heldout_rows(ws))
    check_pairs(rows)
    check_pairs(heldout)
    held_prompts = {row["prompt"] for row in heldout}
    return [r for r in rows if r["prompt"] not in held_prompts], heldout


def _with_text(rows: list[dict]) -> list[dict]:
    """The sampled pairs without those where one answer is empty (the SFT model wrote its end token at once: a
    fair preference for the reward model, which scores the prompt alone, but DPO's log-ratio needs response
    tokens on both sides), saying how many were left out."""
    kept = [r for r in rows if not isinstance(r, dict) or all(
        not isinstance(r.get(c), str) or r[c].strip() for c in ("chosen", "rejected"))]
    if len(kept) < len(rows):
        print(f"DPO leaves out {len(rows) - len(kept)} of {len(rows)} pairs: one of their two answers is empty "
              f"(the SFT model ended at once), and DPO needs text on both sides.", flush=True)
    return kept


# ------------------------------------------------------------------------------------------- trainer
def total_steps(config: DPOConfig, n_pairs: int) -> int:
    """The steps `config.epochs` passes over n_pairs pairs take, config.batch_size pairs a step (at least 1)."""
    return max(1, math.ceil(config.epochs * n_pairs / config.batch_size))


class DPOTrainer:
    """DPO (or IPO) on any Hugging Face causal LM, on the kit's trainer contract: `train()` runs the steps,
    `step()` one, calling `callback(step, **stats)`; `history` holds every step's stats.

        trainer = DPOTrainer(policy, tokenizer, pairs, DPOConfig(beta=0.1))
        trainer.train(callback=lambda step, **stats: print(step, stats["loss"], stats["accuracy"]))

    `pairs` are prompt/chosen/rejected dicts; `ref_policy` defaults to a frozen copy of the policy as it is now,
    or with config.lora_rank > 0 (LoRA adapters on the policy) to the policy with its adapters off.
    `loss_fn(pc, pr, rc, rr, beta) -> (loss, stats)` defaults to the config's loss (`losses.dpo_loss` or
    `losses.ipo_loss`) and `logprobs_fn(logits, input_ids, response_mask) -> (batch,)` to
    `losses.sequence_logprobs`: lab 06 passes the learner's own.

    The reference's log-probabilities are computed once per distinct (prompt, response) and cached in
    `ref_cache`; `ref_sequences` counts the sequences the reference has read (each at most once).
    """

    def __init__(self, policy, tokenizer, pairs: list[dict], config: DPOConfig, ref_policy=None,
                 loss_fn: Callable | None = None, logprobs_fn: Callable = losses.sequence_logprobs,
                 reward_fn: Callable | None = None, gold_fn: Callable | None = gold_reward):
        if not isinstance(config, DPOConfig):
            raise TypeError(f"config must be a DPOConfig, got {type(config).__name__}.")
        check_pairs(pairs)
        check_tokenizer(tokenizer, model=policy)
        self.config, self.tokenizer, self.pairs = config, tokenizer, list(pairs)
        self.loss_fn, self.logprobs_fn = loss_fn or LOSSES[config.loss], logprobs_fn
        self.reward_fn, self.gold_fn = reward_fn, gold_fn
        self.device = next(policy.parameters()).device
        self.max_len = _context_limit(policy, config.max_len)
        self.examples = [(self._tokenize(row, "chosen", n), self._tokenize(row, "rejected", n))
                         for n, row in enumerate(self.pairs, start=1)]
        seed_everything(config.seed)
        disable_dropout(policy)
        if config.lora_rank and ref_policy is None:
            # LoRA: the adapters learn; the reference is the same weights with the adapters off (no second copy)
            policy = add_lora(policy, config.lora_rank, config.lora_alpha)
            self.ref_policy = AdapterOff(policy)
        else:
            self.ref_policy = (ref_policy or copy.deepcopy(policy)).to(self.device).eval().requires_grad_(False)
            disable_dropout(self.ref_policy)
        self.policy = policy.eval()
        self.ref_cache: dict[tuple[str, str], float] = {}
        self.ref_sequences = 0
        ref = self.reference_logps(self.pairs)
        self.ref_chosen, self.ref_rejected = ref["chosen"], ref["rejected"]
        self.optimizer = adamw([p for p in self.policy.parameters() if p.requires_grad], config.lr)
        self.total_steps = total_steps(config, len(self.pairs))
        self._order = iter(batches(len(self.pairs), config.batch_size, self.total_steps, config.seed))
        self.step_count = 0
        self.history: list[dict] = []
        self.heldout_pairs: list[dict] = []      # from_workspace: the reward model's held-out pairs
        self.custom_pairs = True                 # from_workspace: False when trained on workspace_pairs

    @classmethod
    def from_workspace(cls, ws, config: DPOConfig | None = None, extra_stores=(), pairs: tuple | None = None,
                       **kwargs):
        """Policy and reference from the `sft` stage, training pairs from `workspace_pairs` (its held-out pairs
        kept as `trainer.heldout_pairs`) or `pairs`, a (train_rows, heldout_rows) tuple (e.g. a subset of them),
        the `reward` stage's model as `reward_fn` (stages built if missing). kwargs go to the constructor (e.g.
        `loss_fn=`)."""
        from .reward import RewardScorer

        config = config or DPOConfig.from_preset(ws.preset, ws.seed)
        ws.ensure("reward")
        train_rows, heldout_rows = pairs if pairs is not None else workspace_pairs(ws, extra_stores)
        policy, tokenizer = load_causal_lm(ws.require("sft"))
        kwargs.setdefault("reward_fn", RewardScorer(ws.require("reward"), device=next(policy.parameters()).device))
        trainer = cls(policy, tokenizer, train_rows, config, **kwargs)
        trainer.heldout_pairs = heldout_rows
        trainer.custom_pairs = pairs is not None
        return trainer

    # ------------------------------------------------------------------------------------------ tokens
    def _tokenize(self, row: dict, side: str, number: int) -> tuple[list[int], list[int]]:
        ids, mask = tokenize_demo(self.tokenizer, row["prompt"], row[side], self.max_len)
        if sum(mask[1:]) == 0:
            label = row.get("source") or f"pair {number}"
            raise ValueError(f"{label}: the prompt fills the model's {self.max_len}-token context, so no token of "
                             f"the {side} response is left to score. Shorten the prompt or raise max_len.")
        return ids, mask

    def _logps(self, model, examples: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        """`logprobs_fn` of each (input_ids, response_mask) example under `model`, one forward pass: (n,)."""
        batch = {k: v.to(self.device) for k, v in collate(examples, self.tokenizer.pad_token_id).items()}
        with autocast(self.device):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return self.logprobs_fn(logits.float(), batch["input_ids"], batch["response_mask"])

    @torch.no_grad()
    def reference_logps(self, rows: list[dict], batch_size: int = 64) -> dict[str, torch.Tensor]:
        """{"chosen", "rejected"}: the frozen reference's log pi_ref of each row's responses, (n,) each, on the
        CPU. Each distinct (prompt, response) is read by the reference once, then served from `ref_cache`."""
        texts = [(row["prompt"], row[side]) for row in rows for side in ("chosen", "rejected")]
        todo = list(dict.fromkeys(t for t in texts if t not in self.ref_cache))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            examples = [tokenize_demo(self.tokenizer, prompt, response, self.max_len) for prompt, response in chunk]
            values = self._logps(self.ref_policy, examples).float().cpu().tolist()
            self.ref_cache.update(zip(chunk, values))
            self.ref_sequences += len(chunk)
        values = torch.tensor([self.ref_cache[t] for t in texts])
        return {"chosen": values[0::2], "rejected": values[1::2]}

    # --------------------------------------------------------------------------------------------- step
    def step(self) -> dict:
        """One update on the next batch of pairs. Returns its stats: loss; accuracy, margin, chosen_reward,
        rejected_reward (the loss's stats, batch means; rewards are beta * log(pi / pi_ref)); chosen_logps and
        rejected_logps (the policy's mean summed log-probabilities, before the update: both usually fall, the
        rejected faster); epoch (pairs seen / pairs), lr, seconds."""
        started = time.perf_counter()
        try:
            idx = next(self._order)
        except StopIteration:
            raise RuntimeError(f"DPO has run all its {self.total_steps} steps ({self.config.epochs} epochs); make "
                               f"a new trainer (or a DPOConfig with more epochs) to train further.") from None
        examples = [ex for i in idx for ex in self.examples[i]]          # chosen, rejected, chosen, rejected, ...
        self.policy.train()
        logps = self._logps(self.policy, examples)
        chosen, rejected = logps[0::2], logps[1::2]
        loss, stats = self.loss_fn(chosen, rejected, self.ref_chosen[idx].to(self.device),
                                   self.ref_rejected[idx].to(self.device), beta=self.config.beta)
        if not torch.isfinite(loss):
            self.policy.eval()
            raise ValueError(f"DPO's loss became {loss.item()} at step {self.step_count + 1}: lower the learning "
                             f"rate (lr={self.config.lr}) or check the loss function.")
        optimizer_step(self.policy, self.optimizer, loss, self.step_count, self.total_steps, self.config.lr)
        lr = self.optimizer.param_groups[0]["lr"]
        self.policy.eval()
        self.step_count += 1

        def mean(x):
            return torch.as_tensor(x, dtype=torch.float32).mean().item()

        record = {"step": self.step_count, "epoch": self.step_count * self.config.batch_size / len(self.pairs),
                  "loss": loss.item(), **{k: mean(stats[k]) for k in ("accuracy", "margin", "chosen_reward",
                                                                      "rejected_reward")},
                  "chosen_logps": mean(chosen.detach()), "rejected_logps": mean(rejected.detach()), "lr": lr,
                  "seconds": round(time.perf_counter() - started, 4)}
        self.history.append(record)
        return record

    def train(self, steps: int | None = None, callback: Callable | None = None,
              should_stop: Callable | None = None) -> list[dict]:
        """Run `steps` steps (default: all that remain of config.epochs), calling `callback(step, **stats)` after
        each; stop early when `should_stop()` returns True (checked before each step). Returns their stats."""
        remaining = self.total_steps - self.step_count
        steps = remaining if steps is None else min(steps, remaining)
        return run_steps(self.step, steps, callback, should_stop, desc="DPO")

    # ----------------------------------------------------------------------------------------- evaluate
    @torch.no_grad()
    def evaluate_pairs(self, rows: list[dict], batch_size: int = 32) -> dict:
        """The implicit reward model r = beta * log(pi / pi_ref) on preference rows:

            {"accuracy": share with r(chosen) > r(rejected), agreement with the labels,
             "gold_accuracy": share ordered like the gold reward (pairs with a gold difference only),
             "margin": mean r(chosen) - r(rejected), "chosen_logps", "rejected_logps": mean policy log-probs,
             "n": pairs}

        (The same measures as `reward.evaluate_pairs` for lab 03's explicit reward model.) A log-ratio margin
        within TIE_NATS of 0 is a tie and counts as half right: before any training every margin is 0 and both
        accuracies are 0.5, chance."""
        check_pairs(rows)
        ref = self.reference_logps(rows)
        chosen, rejected = [], []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            examples = [tokenize_demo(self.tokenizer, r["prompt"], r[side], self.max_len)
                        for r in chunk for side in ("chosen", "rejected")]
            logps = self._logps(self.policy, examples).float().cpu()
            chosen.append(logps[0::2])
            rejected.append(logps[1::2])
        chosen, rejected = torch.cat(chosen), torch.cat(rejected)
        log_ratio_margins = (chosen - ref["chosen"]) - (rejected - ref["rejected"])
        # A margin within float noise of 0 is a tie, scored as a coin flip: the policy and the reference read the
        # same text in differently padded batches, so an untrained policy's margins are about 1e-5, not exactly 0.
        verdicts = torch.where(log_ratio_margins.abs() < TIE_NATS, 0.5, (log_ratio_margins > 0).float()).tolist()
        gold_diffs = [gold_reward(r["prompt"], r["chosen"]) - gold_reward(r["prompt"], r["rejected"]) for r in rows]
        decided = [(v, g) for v, g in zip(verdicts, gold_diffs) if g != 0]
        margins = self.config.beta * log_ratio_margins
        return {"accuracy": sum(verdicts) / len(verdicts),
                "gold_accuracy": sum(v if g > 0 else 1 - v for v, g in decided) / max(1, len(decided)),
                "margin": margins.mean().item(), "chosen_logps": chosen.mean().item(),
                "rejected_logps": rejected.mean().item(), "n": len(rows)}

    @torch.no_grad()
    def evaluate(self, prompts: list[str], seed: int | None = None, batch_size: int = 64, policy=None) -> dict:
        """One sample per prompt at config.eval_temperature, from the same random streams as `evaluate.score_policy`
        (so the same samples), scored like it: {"gold", "format_rate", "proxy" (with a reward_fn), "samples"},
        plus "kl": KL(pi || pi_ref) per response in nats, the mean over the samples of sum_t log pi(y_t) -
        log pi_ref(y_t), both at the evaluation temperature (0 while pi = pi_ref), and "response_length": the
        mean number of response tokens, eos included. `policy`: another model to measure the same way (the
        reference gives the figures from before training)."""
        cfg = self.config
        return score_with_kl(self.policy if policy is None else policy, self.ref_policy, self.tokenizer, prompts,
                             self.reward_fn,
                             cfg.max_new_tokens, cfg.eval_temperature, cfg.seed if seed is None else seed,
                             self.gold_fn, batch_size)

    def save(self, directory) -> Path:
        """The policy and tokenizer (`save_pretrained`; with LoRA, the adapters merged into a copy of the weights),
        and dpo.json: the config and the history."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        merged_copy(self.policy).save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / "dpo.json").write_text(json.dumps({"config": asdict(self.config), "losses": self.whose(),
                                                        "history": self.history}, indent=1) + "\n")
        return directory

    def whose(self) -> dict[str, str]:
        """{"loss_fn", "logprobs_fn"}: "the kit's" or "yours (<module>)", which code this trainer runs."""
        def who(fn, kit) -> str:
            if fn is kit:
                return "the kit's"
            module = getattr(fn, "__module__", None)
            return "yours" if module in (None, "__main__") else f"yours ({module})"

        return {"loss_fn": who(self.loss_fn, LOSSES[self.config.loss]),
                "logprobs_fn": who(self.logprobs_fn, losses.sequence_logprobs)}


# ------------------------------------------------------------------------------------------- the stage
def run_dpo(ws, config: DPOConfig, save_dir=None, callback: Callable | None = None, extra_stores=(),
            loss_fn: Callable | None = None, logprobs_fn: Callable = losses.sequence_logprobs) -> dict:
    """DPO from the workspace's SFT policy, measured before and after on the world's held-out prompts and on the
    reward model's held-out pairs. What `rlhf-kit dpo --json` prints and the `dpo` stage records."""
    started = time.perf_counter()
    trainer = DPOTrainer.from_workspace(ws, config, extra_stores=extra_stores, loss_fn=loss_fn,
                                        logprobs_fn=logprobs_fn)
    prompts = heldout_prompts(load_world(ws.require("world")))
    before = trainer.evaluate(prompts, seed=ws.seed)
    train_started = time.perf_counter()
    trainer.train(callback=callback)
    train_seconds = time.perf_counter() - train_started
    after = trainer.evaluate(prompts, seed=ws.seed)
    if save_dir is not None:
        trainer.save(save_dir)
    return run_metrics(trainer, before, after, train_seconds, time.perf_counter() - started)


def run_metrics(trainer: "DPOTrainer", before: dict, after: dict, train_seconds: float, seconds: float) -> dict:
    """`run_dpo`'s metrics of a finished run: its settings, the held-out figures before and after, the implicit
    reward model on the held-out pairs, the log-probabilities' first and last values, whose code it ran."""
    config, history = trainer.config, trainer.history
    pairs = trainer.evaluate_pairs(trainer.heldout_pairs)
    first, last = history[0], history[-1]
    return {
        "beta": config.beta, "loss": config.loss, "epochs": config.epochs, "lr": config.lr, "steps": len(history),
        "n_train_pairs": len(trainer.pairs), "n_heldout_pairs": pairs["n"],
        "gold_reward_before": round(before["gold"], 4), "gold_reward_after": round(after["gold"], 4),
        "proxy_reward_before": round(before["proxy"], 4), "proxy_reward_after": round(after["proxy"], 4),
        "format_rate_before": round(before["format_rate"], 4), "format_rate_after": round(after["format_rate"], 4),
        "kl": round(after["kl"], 4),
        "implicit_reward_accuracy": round(pairs["accuracy"], 4),
        "implicit_gold_accuracy": round(pairs["gold_accuracy"], 4),
        "response_length_before": round(before["response_length"], 2),
        "response_length_after": round(after["response_length"], 2),
        "final_loss": round(tail_mean([s["loss"] for s in history]), 4),
        "final_train_accuracy": round(tail_mean([s["accuracy"] for s in history]), 4),
        "chosen_logps_first": round(first["chosen_logps"], 3), "chosen_logps_last": round(last["chosen_logps"], 3),
        "rejected_logps_first": round(first["rejected_logps"], 3),
        "rejected_logps_last": round(last["rejected_logps"], 3),
        "ref_sequences": trainer.ref_sequences, "losses": trainer.whose(),
        "train_seconds": round(train_seconds, 2), "seconds": round(seconds, 2),
    }


def record_run(ws, trainer: "DPOTrainer", extra_stores, by: str, started: float) -> bool:
    """Record a finished run as the workspace's `dpo` stage when it is what `ws.build("dpo", extra_stores=...,
    loss_fn=..., logprobs_fn=...)` trains (the preset's DPOConfig, the workspace's own pairs, no LoRA) and the
    stage is wanted (`ws.wants`): its model and `run_dpo`'s metrics, measured the same way (before: the
    reference, which is the policy before training). Lab 08 then ranks lab 06's DPO instead of training it again.
    Returns whether it recorded."""
    if trainer.custom_pairs or trainer.config != DPOConfig.from_preset(ws.preset, ws.seed) \
            or not ws.wants("dpo"):
        return False
    prompts = heldout_prompts(load_world(ws.require("world")))
    before = trainer.evaluate(prompts, seed=ws.seed, policy=trainer.ref_policy)
    after = trainer.evaluate(prompts, seed=ws.seed)
    train_seconds = sum(s.get("seconds", 0.0) for s in trainer.history)

    def write(out_dir: Path) -> dict:
        trainer.save(out_dir)
        return {**run_metrics(trainer, before, after, train_seconds, time.perf_counter() - started),
                "config": asdict(trainer.config)}

    loss_fn = None if trainer.loss_fn is LOSSES[trainer.config.loss] else trainer.loss_fn     # build's default
    ws.record("dpo", write, by, extra_stores=extra_stores, loss_fn=loss_fn, logprobs_fn=trainer.logprobs_fn)
    return True


def build(ws, out_dir: Path, callback: Callable | None = None, extra_stores=(), loss_fn: Callable | None = None,
          logprobs_fn: Callable = losses.sequence_logprobs, **overrides) -> dict:
    """Workspace stage `dpo`: `run_dpo` with the preset's DPO settings (keyword overrides replace DPOConfig
    fields, e.g. beta=0.5, loss="ipo"), the policy saved to the stage directory like any artefact."""
    config = DPOConfig.from_preset(ws.preset, ws.seed, **overrides)
    return {**run_dpo(ws, config, save_dir=out_dir, callback=callback, extra_stores=extra_stores, loss_fn=loss_fn,
                      logprobs_fn=logprobs_fn), "config": asdict(config)}


# ------------------------------------------------------------------------------------------- the sweep
def _recent_mean(values: list[float], k: int) -> float | None:
    return sum(values[-k:]) / len(values[-k:]) if values else None


@reusable
def dpo_sweep(ws, betas, n_checkpoints: int = 4, samples_per_prompt: int = 4, prompts: list[str] | None = None,
              extra_stores=(), pairs: tuple | None = None, loss_fn: Callable | None = None,
              logprobs_fn: Callable = losses.sequence_logprobs, **overrides) -> list[dict]:
    """One DPO run per beta, each from the SFT policy with the same seed and the same pairs, measured at step 0 and
    at `n_checkpoints` evenly spaced steps (the last one is the end of the run), on lab 05's axes: the same
    held-out prompts, `samples_per_prompt` samples of each, at the evaluation temperature, from the same random
    streams as `hacking.beta_sweep` and `hacking.best_of_n`, so PPO's, best-of-n's and DPO's points are one
    measurement. Step 0, the SFT policy whatever beta, is measured once. `pairs`: (train_rows, heldout_rows) to
    train and measure on instead of `workspace_pairs(ws, extra_stores)`. Keyword overrides replace DPOConfig fields
    (e.g. epochs=4, lr=2e-4). Returns one row per (beta, checkpoint):

        {"beta", "step", "epoch": passes over the pairs so far, "kl": KL from the SFT policy in nats per response,
         "proxy", "gold", "format_rate", "response_length", "implicit_accuracy", "implicit_gold_accuracy": the
         implicit reward model on the held-out pairs (against the labels, against the gold ordering; 0.5 at step 0,
         where every margin is a tie), "loss", "train_accuracy": the mean loss and batch accuracy of the (up to)
         10 training steps before the checkpoint (None at step 0),
         "chosen_logps", "rejected_logps": the policy's mean on the held-out pairs, "samples"}
    """
    prompts = prompts or heldout_prompts(load_world(ws.require("world")))
    prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    seed = overrides.pop("seed", ws.seed)
    rows = []
    for beta in betas:
        config = DPOConfig.from_preset(ws.preset, seed, beta=beta, **overrides)
        started = time.perf_counter()
        trainer = DPOTrainer.from_workspace(ws, config, extra_stores=extra_stores, pairs=pairs, loss_fn=loss_fn,
                                            logprobs_fn=logprobs_fn)
        total = trainer.total_steps
        checkpoints = sorted({0, *(round(total * k / n_checkpoints) for k in range(1, n_checkpoints + 1))})
        for start, stop in zip([0, *checkpoints], checkpoints):
            if stop == 0 and rows:          # step 0 is the SFT policy, whatever beta: measured once, for the first
                rows.append({**rows[0], "beta": beta})
                continue
            if stop > start:
                trainer.train(stop - start)
            result = trainer.evaluate(prompts, seed=seed)
            implicit = trainer.evaluate_pairs(trainer.heldout_pairs)
            rows.append({"beta": beta, "step": stop, "epoch": stop * config.batch_size / len(trainer.pairs),
                         "kl": result["kl"], "proxy": result["proxy"], "gold": result["gold"],
                         "format_rate": result["format_rate"], "response_length": result["response_length"],
                         "implicit_accuracy": implicit["accuracy"],
                         "implicit_gold_accuracy": implicit["gold_accuracy"],
                         "loss": _recent_mean([s["loss"] for s in trainer.history], 10),
                         "train_accuracy": _recent_mean([s["accuracy"] for s in trainer.history], 10),
                         "chosen_logps": implicit["chosen_logps"], "rejected_logps": implicit["rejected_logps"],
                         "samples": result["samples"]})
        record_run(ws, trainer, extra_stores, "dpo.dpo_sweep", started)     # lab 06's DPO at the preset's beta
    return rows
