"""The kit's one sampler: every response a policy writes in the course (SFT evaluation, preference candidates,
PPO rollouts and evaluations, best-of-n) is drawn here.

Each prompt's response comes from its own seeded random stream (`row_seeds`), so it does not depend on which other
prompts share its batch or its process: the same policy, prompts and seed give the same responses everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .device import autocast


class _SeededSampler(LogitsProcessor):
    """Sampling by the Gumbel-max trick with one random stream per prompt:

        token = argmax(logits / T + g),   g = -log(-log(u)),  u ~ Uniform(0, 1) per vocabulary entry

    draws from softmax(logits / T). Row i's u comes from a generator seeded with seeds[i], so a prompt's sample
    does not depend on which other prompts share its batch or process. Used with greedy `generate`.
    """

    def __init__(self, seeds: list[int], temperature: float, device, top_k: int | None = None):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_k = top_k

    def __call__(self, input_ids, scores):
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))
        if self.top_k is not None and self.top_k < scores.shape[-1]:     # only the k largest logits can win
            kth = scores.topk(self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
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


class _FalsePaddingAlarm(logging.Filter):
    """Drops transformers' "We strongly recommend passing in an `attention_mask`" during `sample`'s generate.

    From the second decoding step on, transformers calls the model with only the new token column and keeps the
    attention mask to itself; GPT-2 then sees a pad id (a row that has finished and now emits pad) with no mask
    in hand and warns. The mask is applied all the same: a left-padded batch gives the logits of each prompt run
    alone (tests/test_models.py checks it), so in the kit the warning is a false alarm and would only alarm a
    learner (it printed in red in labs 00, 01, 03 and 05)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "strongly recommend passing in an `attention_mask`" not in record.getMessage()


_MODELING_LOG = logging.getLogger("transformers.modeling_utils")


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str], seeds: list[int], temperature: float,
           max_new_tokens: int, top_k: int | None = None) -> Rollout:
    """One response per prompt, row i drawn from its own random stream `seeds[i]` (greedy when temperature is
    0; from the `top_k` most likely tokens only when top_k is given): prompts left-padded, KV cache on, each
    response cut after its first eos. The only sampler of the kit."""
    if not prompts:
        raise ValueError("sample() got an empty list of prompts.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
    processors = LogitsProcessorList([_SeededSampler(seeds, temperature, device, top_k)] if temperature > 0 else [])
    alarm = _FalsePaddingAlarm()
    _MODELING_LOG.addFilter(alarm)
    try:
        with autocast(device):
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=processors,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    finally:
        _MODELING_LOG.removeFilter(alarm)
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
             seed: int = 0, batch_size: int = 64, first_row: int = 0, top_k: int | None = None) -> list[str]:
    """One sampled response per prompt (greedy when temperature == 0; top_k as in `sample`), cut before its first
    eos: `sample` in batches, prompt i from stream row_seeds(seed, -1, first_row + i), so the result does not
    depend on batch_size and equals what `PPOTrainer.evaluate` samples for the same prompts and seed."""
    if not prompts:
        raise ValueError("generate() got an empty list of prompts.")
    responses: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seeds = row_seeds(seed, -1, first_row + start, len(chunk))
        responses += sample(model, tokenizer, chunk, seeds, temperature, max_new_tokens, top_k).responses
    return responses


# ------------------------------------------------------------------------------ one step by hand (lab 00's exercises)
def next_token_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """The distribution a sampler draws the next token from: softmax of logits / T over the k largest logits.

        p_i = exp(z_i / T) / sum_{j in K} exp(z_j / T)   for i in K (the top_k largest logits), else 0

    Shapes: logits (batch, vocab) -> probs (batch, vocab), each row summing to 1.
    temperature must be > 0: T < 1 sharpens the distribution towards the most likely token (greedy decoding is the
    limit T -> 0, which is an argmax, not a distribution), T = 1 is the model's own, T > 1 flattens it.
    top_k None keeps every token; a top_k at or above the vocabulary size keeps every token too (as transformers'
    TopKLogitsWarper does); logits tied with the k-th largest are kept.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}: dividing by it must keep the order of the "
                         f"logits. For greedy decoding take logits.argmax(-1) instead of sampling.")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1, or None to keep every token; got {top_k}.")
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]                 # the k-th largest logit of each row
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))         # exp(-inf) = 0: out of the draw
    return torch.softmax(scaled, dim=-1)


def sample_next_token(logits: torch.Tensor, temperature: float, top_k: int | None,
                      generator: torch.Generator | None) -> torch.Tensor:
    """One next token per row: the argmax when temperature == 0 (greedy), else one draw from
    `next_token_distribution(logits, temperature, top_k)` with torch.multinomial and `generator`, so that a seeded
    generator gives the same tokens every time.

    Shapes: logits (batch, vocab) -> token ids (batch,), int64.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_distribution(logits, temperature, top_k)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
