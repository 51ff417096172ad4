"""Tokenizer, tiny GPT-2 and pretraining; loading any local Hugging Face causal LM; batched generation.

Everything is an ordinary Hugging Face object: `save_pretrained` writes it, `AutoTokenizer` /
`AutoModelForCausalLM.from_pretrained(path)` reads it back. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from .device import autocast, pick_device, seed_everything
from .presets import Preset

EOS = "<|endoftext|>"
PAD = "<|pad|>"


# ----------------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with distinct eos (`<|endoftext|>`) and pad (`<|pad|>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, unk_token=None,
        padding_side="right", model_max_length=1_000_000,
    )


# ---------------------------------------------------------------------------------------------------- model
def tiny_gpt2(preset: Preset, tokenizer) -> GPT2LMHeadModel:
    """A GPT-2 of the preset's size, with dropout off (RLHF needs deterministic log-probs)."""
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=preset.n_positions, n_embd=preset.n_embd,
        n_layer=preset.n_layer, n_head=preset.n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def load_causal_lm(path: str | os.PathLike, device: torch.device | None = None):
    """(model, tokenizer) from a local Hugging Face causal-LM directory, in eval mode with dropout off.

    Raises a ValueError that names the problem and the fix for a directory that is missing, is not a causal LM,
    or whose tokenizer has no pad token (or uses eos as pad), or a pad or eos id outside the model's embedding
    matrix (a token added to the tokenizer without resizing the model).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{path} is not a Hugging Face model directory (no config.json). Pass a directory written by "
            f"`save_pretrained`, or build the course's models with `rlhf-kit pretrain`."
        )
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(
            f"{path} holds a {config.model_type!r} model ({', '.join(config.architectures or [])}), which is not "
            f"a causal language model. Point at a directory saved from an AutoModelForCausalLM (e.g. GPT-2, Llama)."
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    check_tokenizer(tokenizer, where=str(path))
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    check_tokenizer(tokenizer, where=str(path), model=model)
    model.config.pad_token_id = tokenizer.pad_token_id
    disable_dropout(model)
    model.eval()
    return model.to(device or pick_device()), tokenizer


def check_tokenizer(tokenizer, where: str = "the tokenizer", model=None) -> None:
    """Pad and eos must exist and differ: the reward model and the loss masks tell padding from a real end.

    With `model`, both must also be rows of its input embedding matrix: a pad token added to the tokenizer
    without resizing the model would fail the first padded batch with an IndexError deep inside the model.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"{where}: the tokenizer has no pad token. Add one that differs from eos, e.g. "
            f"`tokenizer.add_special_tokens({{'pad_token': '<|pad|>'}})` then "
            f"`model.resize_token_embeddings(len(tokenizer))`, and save both again."
        )
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(
            f"{where}: the pad token equals the eos token ({tokenizer.eos_token!r}), so padding cannot be told "
            f"from the end of a response. Add a distinct pad token (see above) and save again."
        )
    if model is None:
        return
    rows = model.get_input_embeddings().weight.shape[0]
    for role, token, token_id in (("pad", tokenizer.pad_token, tokenizer.pad_token_id),
                                  ("eos", tokenizer.eos_token, tokenizer.eos_token_id)):
        if token_id >= rows:
            raise ValueError(
                f"{where}: the {role} token {token!r} has id {token_id}, but the model's embedding matrix has only "
                f"{rows} rows (ids 0 to {rows - 1}), so the first batch containing it would fail with an "
                f"IndexError. The token was added to the tokenizer without resizing the model: run "
                f"`model.resize_token_embeddings(len(tokenizer))` and save both again."
            )


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


# -------------------------------------------------------------------------------------------- pretraining
def token_stream(tokenizer, texts: Iterable[str]) -> torch.Tensor:
    """All documents as one long 1-D tensor of token ids, each followed by eos."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to 10% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_step(model, optimizer, loss, step: int, total_steps: int, peak_lr: float) -> None:
    """One update: set this step's learning rate (5% warm-up, then cosine), backpropagate, clip the gradient
    norm to 1, step. Shared by every trainer in the kit."""
    for group in optimizer.param_groups:
        group["lr"] = cosine_lr(step, total_steps, peak_lr, warmup=max(1, total_steps // 20))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def tail_mean(values: list[float], fraction: float = 0.1) -> float:
    """Mean of the last `fraction` of a training curve: a less noisy 'final' value than the last step."""
    tail = values[-max(1, int(len(values) * fraction)):]
    return sum(tail) / len(tail)


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
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
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


def build_base(ws, out_dir: Path, callback: Callable | None = None) -> dict:
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


# --------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
             seed: int = 0, batch_size: int = 32) -> list[str]:
    """Sample one response per prompt (greedy when temperature == 0), prompts left-padded, KV cache on.

    Returns the decoded responses without the prompt, cut at eos (which is not included).
    """
    if not prompts:
        raise ValueError("generate() got an empty list of prompts.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    responses: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} \
                if temperature > 0 else {"do_sample": False}
            with autocast(device):
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, **sampling,
                )
            new_tokens = out[:, enc["input_ids"].shape[1]:]
            responses.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return responses
