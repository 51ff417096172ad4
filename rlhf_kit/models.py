"""Tokenizer and tiny GPT-2; loading any local Hugging Face causal LM; the kit's one sampler.

Everything is an ordinary Hugging Face object: `save_pretrained` writes it, `AutoTokenizer` /
`AutoModelForCausalLM.from_pretrained(path)` reads it back. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerFast,
)

from .device import autocast, pick_device
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


# ----------------------------------------------------------------------------------------------- sampling
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
    """One seed per prompt, from (seed, step, global row index): the same in any batch and on any number of
    processes. `generate` and every evaluation use step -1; PPO's rollouts use their step number."""
    return [hash((seed, step, first_row + i)) & 0x7FFF_FFFF_FFFF_FFFF for i in range(n)]


def first_eos_mask(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, has_eos): mask (batch, R) is 1 up to and including the first eos (everywhere if none)."""
    is_eos = response_ids == eos_id
    eos_before = is_eos.long().cumsum(1) - is_eos.long()       # eos tokens strictly before t
    return (eos_before == 0).long(), is_eos.any(1)


@dataclass
class Rollout:
    """Sampled responses: prompt (left-padded) + response tokens, with the masks the losses need."""
    prompts: list[str]
    responses: list[str]                 # decoded, cut before the first eos
    input_ids: torch.Tensor              # (b, P + R)
    attention_mask: torch.Tensor         # (b, P + R): prompt padding and everything after the first eos are 0
    position_ids: torch.Tensor           # (b, P + R)
    prompt_len: int                      # P
    mask: torch.Tensor                   # (b, R) response mask: 1 up to and including the first eos
    has_eos: torch.Tensor                # (b,)

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len:]

    def rows(self, idx) -> dict:
        return {"input_ids": self.input_ids[idx], "attention_mask": self.attention_mask[idx],
                "position_ids": self.position_ids[idx]}


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str], seeds: list[int], temperature: float,
           max_new_tokens: int) -> Rollout:
    """One response per prompt, row i drawn from its own random stream `seeds[i]` (greedy when temperature is
    0): prompts left-padded, KV cache on, each response cut after its first eos. The only sampler of the kit."""
    if not prompts:
        raise ValueError("sample() got an empty list of prompts.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
    processors = LogitsProcessorList([_SeededSampler(seeds, temperature, device)] if temperature > 0 else [])
    try:
        with autocast(device):
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=processors,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    finally:
        model.train(was_training)
    prompt_len = enc["input_ids"].shape[1]
    mask, has_eos = first_eos_mask(out[:, prompt_len:], tokenizer.eos_token_id)
    attention_mask = torch.cat([enc["attention_mask"], mask], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    n_text = mask.sum(1) - has_eos.long()                                  # response tokens before the eos
    responses = [tokenizer.decode(ids[:n], skip_special_tokens=True)
                 for ids, n in zip(out[:, prompt_len:].tolist(), n_text.tolist())]
    return Rollout(list(prompts), responses, out, attention_mask, position_ids, prompt_len, mask, has_eos)


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
             seed: int = 0, batch_size: int = 64, first_row: int = 0) -> list[str]:
    """One sampled response per prompt (greedy when temperature == 0), cut before its first eos: `sample` in
    batches, prompt i from stream row_seeds(seed, -1, first_row + i), so the result does not depend on batch_size
    and equals what `PPOTrainer.evaluate` samples for the same prompts and seed."""
    if not prompts:
        raise ValueError("generate() got an empty list of prompts.")
    responses: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seeds = row_seeds(seed, -1, first_row + start, len(chunk))
        responses += sample(model, tokenizer, chunk, seeds, temperature, max_new_tokens).responses
    return responses
