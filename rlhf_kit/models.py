"""Model construction and loading: the tokenizer, the tiny GPT-2, and any local Hugging Face causal LM.

Everything is an ordinary Hugging Face object: `save_pretrained` writes it, `AutoTokenizer` /
`AutoModelForCausalLM.from_pretrained(path)` reads it back. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from .device import pick_device
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
