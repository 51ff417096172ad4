"""Supervised fine-tuning on instruction demonstrations, with the loss on response tokens only.

Read top to bottom: tokenize (prompt + response + eos, with a mask over the response), batch with right
padding, minimise `losses.sft_loss` with AdamW. `build` is the workspace stage `sft`: it fine-tunes the base
model and measures gold reward and format rate before and after on held-out instructions.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .configs import SFTConfig
from .device import autocast, seed_everything
from .evaluate import on_heldout
from .lora import add_lora, merge_in_place
from .losses import sft_loss
from .models import load_causal_lm
from .reuse import load_trained_lm, reusable, save_trained
from .training import adamw, batches, optimizer_step, right_pad, tail_mean, trl_cpu_args
from .world import load_world


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
    input_ids, attention_mask, response_mask = right_pad([ids for ids, _ in examples], pad_id,
                                                         [mask for _, mask in examples])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def train_sft(model, tokenizer, demos: list[dict], config: SFTConfig, loss_fn: Callable = sft_loss,
              callback: Callable | None = None) -> dict:
    """Fine-tune `model` in place on demos ({"prompt", "response"} dicts) by minimising `loss_fn`; with
    config.lora_rank > 0, LoRA adapters learn instead of the weights and are merged into them at the end.

    `loss_fn(logits, input_ids, response_mask)` defaults to the reference `losses.sft_loss`; lab 01 passes the
    learner's own. Calls `callback(step, loss=...)` every step. Returns {"final_loss": ...}.
    """
    if not demos:
        raise ValueError("train_sft() got no demonstrations.")
    device = next(model.parameters()).device
    seed_everything(config.seed)
    max_len = _context_limit(model, config.max_len)
    examples = [tokenize_demo(tokenizer, d["prompt"], d["response"], max_len) for d in demos]
    trained = add_lora(model, config.lora_rank, config.lora_alpha)       # `model` itself when lora_rank is 0
    optimizer = adamw([p for p in trained.parameters() if p.requires_grad], config.lr)
    losses = []
    trained.train()
    order = batches(len(examples), config.batch_size, config.steps, config.seed)
    for step, batch_idx in enumerate(tqdm(order, total=config.steps, desc="SFT", leave=False)):
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in batch_idx],
                                                     tokenizer.pad_token_id).items()}
        with autocast(device):
            logits = trained(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = loss_fn(logits.float(), batch["input_ids"], batch["response_mask"])
        optimizer_step(trained, optimizer, loss, step, config.steps, config.lr)
        losses.append(loss.item())
        if callback is not None:
            callback(step, loss=losses[-1])
    merge_in_place(trained).eval()          # LoRA: the adapters merged into `model`'s own weights
    return {"final_loss": tail_mean(losses)}


def build(ws, out_dir: Path, callback: Callable | None = None, loss_fn: Callable = sft_loss, lora_rank: int = 0,
          lora_alpha: float | None = None) -> dict:
    """Workspace stage `sft`: fine-tune the base model on the demos; measure base and SFT on held-out prompts.
    lora_rank > 0 (`rlhf-kit sft --lora-rank 8`): LoRA adapters, merged into the saved weights."""
    world = load_world(ws.require("world"))
    model, tokenizer = load_causal_lm(ws.require("base"))
    before = on_heldout(ws, {"base": model}, tokenizer)["base"]
    started = time.perf_counter()
    config = SFTConfig.from_preset(ws.preset, ws.seed, lora_rank=lora_rank, lora_alpha=lora_alpha)
    metrics = train_sft(model, tokenizer, world.demos, config,
                        loss_fn=loss_fn, callback=callback)
    train_seconds = time.perf_counter() - started
    after = on_heldout(ws, {"sft": model}, tokenizer)["sft"]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        **metrics,
        "gold_before": round(before["gold"], 4),
        "gold_after": round(after["gold"], 4),
        "format_rate_before": round(before["format_rate"], 4),
        "format_rate_after": round(after["format_rate"], 4),
        "train_seconds": round(train_seconds, 2),
    }


def trl_sft_config(preset, seed: int = 0) -> SFTConfig:
    """The SFT settings of lab 01's TRL comparison: the kit's (`SFTConfig.from_preset`), for the preset's
    `trl_sft_steps` steps when it sets them (`ci`, so that the test suite's slowest cell takes half the
    time; TRL's SFT still beats the base model there), else for the same number of steps as the kit."""
    return SFTConfig.from_preset(preset, seed, **({"steps": preset.trl_sft_steps} if preset.trl_sft_steps else {}))


@reusable(save=save_trained, load=load_trained_lm, needs=("world", "base"))
def train_sft_with_trl(base_dir, demos: list[dict], config: SFTConfig, output_dir=None):
    """The same fine-tune with TRL's SFTTrainer, CPU-safe: returns (model, tokenizer, train_loss).

    TRL reads prompt/completion rows, appends eos to the completion and masks the prompt out of the loss, so
    this matches `train_sft` up to batching and learning-rate schedule details.
    """
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    model, tokenizer = load_causal_lm(base_dir)
    dataset = Dataset.from_list([{"prompt": d["prompt"], "completion": d["response"]} for d in demos])
    args = trl_cpu_args(TRLSFTConfig, model, output_dir or tempfile.mkdtemp(prefix="trl-sft-"), config.steps,
                        config.batch_size, config.lr, config.seed, max_length=_context_limit(model, config.max_len),
                        completion_only_loss=True, shuffle_dataset=True, disable_tqdm=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    trained = trainer.model.eval()
    return trained, tokenizer, float(result.training_loss)
