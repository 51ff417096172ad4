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
