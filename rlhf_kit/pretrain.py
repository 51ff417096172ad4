"""Pretraining: next-token prediction on the toy corpus. `build` is the workspace stage `base`.

Read top to bottom: the corpus becomes one long stream of token ids (each document followed by eos); every step
takes `batch_size` random windows of `seq_len` tokens from it and minimises the language-model loss.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from .device import autocast, pick_device, seed_everything
from .models import count_parameters, tiny_gpt2, train_tokenizer
from .training import adamw, optimizer_step, tail_mean


def token_stream(tokenizer, texts: Iterable[str]) -> torch.Tensor:
    """All documents as one long 1-D tensor of token ids, each followed by eos."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def pretrain(model, tokenizer, texts: list[str], steps: int, batch_size: int, lr: float, seq_len: int,
             seed: int = 0, callback: Callable | None = None, device=None) -> dict:
    """Next-token prediction on random windows of the corpus. Calls `callback(step, loss=...)` every step.

    Returns {"final_loss": mean loss of the last 10% of steps, "tokens_seen": int}.
    """
    device = device or pick_device()
    seed_everything(seed)
    model.to(device).train()
    stream = token_stream(tokenizer, texts)
    if len(stream) <= seq_len + 1:
        raise ValueError(f"The corpus has only {len(stream)} tokens; need more than seq_len={seq_len}.")
    optimizer = adamw(model.parameters(), lr, weight_decay=0.01, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for step in tqdm(range(steps), desc="pretraining", leave=False):
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch_size,), generator=generator)
        batch = torch.stack([stream[s : s + seq_len] for s in starts.tolist()]).to(device)
        with autocast(device):
            loss = model(input_ids=batch, labels=batch).loss
        optimizer_step(model, optimizer, loss, step, steps, lr)
        losses.append(loss.item())
        if callback is not None:
            callback(step, loss=losses[-1])
    model.eval()
    return {"final_loss": tail_mean(losses), "tokens_seen": steps * batch_size * seq_len}


def build(ws, out_dir: Path, callback: Callable | None = None) -> dict:
    """Workspace stage `base`: train the tokenizer and pretrain the tiny GPT-2 on the toy corpus."""
    from .world import load_world

    preset = ws.preset
    world = load_world(ws.require("world"))
    tokenizer = train_tokenizer(world.corpus + [d["prompt"] + d["response"] for d in world.demos],
                                preset.vocab_size)
    seed_everything(ws.seed)
    model = tiny_gpt2(preset, tokenizer)
    started = time.perf_counter()
    metrics = pretrain(model, tokenizer, world.corpus, preset.pretrain_steps, preset.pretrain_batch_size,
                       preset.pretrain_lr, preset.n_positions, seed=ws.seed, callback=callback)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {**metrics, "parameters": count_parameters(model),
            "train_seconds": round(time.perf_counter() - started, 2)}
