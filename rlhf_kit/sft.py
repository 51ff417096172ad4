"""Supervised fine-tuning on instruction demonstrations, with the loss on response tokens only.

Read top to bottom: tokenize (prompt + response + eos, with a mask over the response), batch with right
padding, minimise `losses.sft_loss` with AdamW. `build_sft` is the workspace stage: it fine-tunes the base
model and measures gold reward and format rate before and after on held-out instructions.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .device import autocast, seed_everything
from .evaluate import score_policy
from .losses import sft_loss
from .models import load_causal_lm, optimizer_step, tail_mean


@dataclass
class SFTConfig:
    steps: int = 300            # optimizer steps
    batch_size: int = 32        # demonstrations per step
    lr: float = 1e-3            # peak learning rate (linear warm-up, cosine decay)
    max_len: int = 256          # prompt+response is cut to this many tokens (and to the model's context)
    seed: int = 0               # data order and initialisation

    @classmethod
    def from_preset(cls, preset, seed: int = 0) -> "SFTConfig":
        return cls(steps=preset.sft_steps, batch_size=preset.sft_batch_size, lr=preset.sft_lr,
                   max_len=preset.n_positions, seed=seed)


def tokenize_demo(tokenizer, prompt: str, response: str, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, response_mask) for prompt + response + eos; the mask is 1 on response tokens and eos."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(response)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_len]
    mask = ([0] * len(prompt_ids) + [1] * len(response_ids))[:max_len]
    return ids, mask


def _context_limit(model, max_len: int) -> int:
    """`max_len`, cut down to the model's context length (position embeddings) when that is shorter."""
    return min(max_len, getattr(model.config, "max_position_embeddings", None) or max_len)


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of (input_ids, response_mask) into tensors of shape (batch, longest)."""
    longest = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    response_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        response_mask[row, : len(ids)] = torch.tensor(mask)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def train_sft(model, tokenizer, demos: list[dict], config: SFTConfig, loss_fn: Callable = sft_loss,
              callback: Callable | None = None) -> dict:
    """Fine-tune `model` in place on demos ({"prompt", "response"} dicts) by minimising `loss_fn`.

    `loss_fn(logits, input_ids, response_mask)` defaults to the reference `losses.sft_loss`; lab 01 passes the
    learner's own. Calls `callback(step, loss=...)` every step. Returns {"final_loss": ...}.
    """
    if not demos:
        raise ValueError("train_sft() got no demonstrations.")
    device = next(model.parameters()).device
    seed_everything(config.seed)
    max_len = _context_limit(model, config.max_len)
    examples = [tokenize_demo(tokenizer, d["prompt"], d["response"], max_len) for d in demos]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    losses = []
    model.train()
    for step in tqdm(range(config.steps), desc="SFT", leave=False):
        if len(order) < config.batch_size:
            order += torch.randperm(len(examples), generator=generator).tolist()
        batch_idx, order = order[: config.batch_size], order[config.batch_size:]
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in batch_idx],
                                                     tokenizer.pad_token_id).items()}
        with autocast(device):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = loss_fn(logits.float(), batch["input_ids"], batch["response_mask"])
        optimizer_step(model, optimizer, loss, step, config.steps, config.lr)
        losses.append(loss.item())
        if callback is not None:
            callback(step, loss=losses[-1])
    model.eval()
    return {"final_loss": tail_mean(losses)}


def evaluate_on_heldout(model, tokenizer, ws, seed: int | None = None) -> dict:
    """Gold reward and format rate of `model` on the workspace's held-out instructions."""
    from .world import load_world

    world = load_world(ws.require("world"))
    prompts = [row["prompt"] for row in world.heldout]
    return score_policy(model, tokenizer, prompts, ws.preset.max_new_tokens, ws.preset.eval_temperature,
                        seed=ws.seed if seed is None else seed)


def build_sft(ws, out_dir: Path, callback: Callable | None = None, loss_fn: Callable = sft_loss) -> dict:
    """Workspace stage `sft`: fine-tune the base model on the demos; measure base and SFT on held-out prompts."""
    from .world import load_world

    world = load_world(ws.require("world"))
    model, tokenizer = load_causal_lm(ws.require("base"))
    before = evaluate_on_heldout(model, tokenizer, ws)
    started = time.perf_counter()
    metrics = train_sft(model, tokenizer, world.demos, SFTConfig.from_preset(ws.preset, ws.seed),
                        loss_fn=loss_fn, callback=callback)
    train_seconds = time.perf_counter() - started
    after = evaluate_on_heldout(model, tokenizer, ws)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        **metrics,
        "gold_reward_before": round(before["gold_reward"], 4),
        "gold_reward_after": round(after["gold_reward"], 4),
        "format_rate_before": round(before["format_rate"], 4),
        "format_rate_after": round(after["format_rate"], 4),
        "train_seconds": round(train_seconds, 2),
    }


def train_sft_with_trl(base_dir, demos: list[dict], config: SFTConfig, output_dir=None):
    """The same fine-tune with TRL's SFTTrainer, CPU-safe: returns (model, tokenizer, train_loss).

    TRL reads prompt/completion rows, appends eos to the completion and masks the prompt out of the loss, so
    this matches `train_sft` up to batching and learning-rate schedule details.
    """
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    model, tokenizer = load_causal_lm(base_dir)
    use_cpu = next(model.parameters()).device.type == "cpu"
    dataset = Dataset.from_list([{"prompt": d["prompt"], "completion": d["response"]} for d in demos])
    args = TRLSFTConfig(
        output_dir=str(output_dir or tempfile.mkdtemp(prefix="trl-sft-")),
        max_steps=config.steps, per_device_train_batch_size=config.batch_size, learning_rate=config.lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, config.steps // 20), max_length=_context_limit(model, config.max_len),
        completion_only_loss=True, seed=config.seed, shuffle_dataset=True,
        use_cpu=use_cpu, bf16=not use_cpu, activation_checkpointing=False,  # TRL defaults: bf16 + checkpointing
        report_to="none", save_strategy="no", logging_steps=max(1, config.steps // 10),
        disable_tqdm=False, dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    trained = trainer.model.eval()
    return trained, tokenizer, float(result.training_loss)
