"""The kit's one sampler: every response a policy writes in the course (SFT evaluation, preference candidates,
PPO rollouts and evaluations, best-of-n) is drawn here.

Each prompt's response comes from its own seeded random stream (`row_seeds`), so it does not depend on which other
prompts share its batch or its process: the same policy, prompts and seed give the same responses everywhere.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from .device import autocast


class _RowStreams:
    """Gumbel-max sampling with one random stream per prompt:

        token = argmax(logits / T + g),   g = -log(-log(u)),  u ~ Uniform(0, 1) per vocabulary entry

    draws from softmax(logits / T). Row i's u comes from a generator seeded with seeds[i], so a prompt's sample
    does not depend on which other prompts share its batch or process. A row's uniforms for the next `block`
    tokens are drawn in one call (not one call per token), and only for the rows still writing; a CPU generator's
    stream is sequential, so these are the numbers that one draw per token would give.
    """

    def __init__(self, seeds: list[int], vocab: int, device, block: int):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.vocab, self.device, self.block = vocab, device, block
        self.u, self.t = None, block       # u: (rows, block, vocab) uniforms; t: the next token's index in it

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the streams of batch rows `index` (the others have ended)."""
        self.generators = [self.generators[i] for i in index.tolist()]
        if self.u is not None:
            self.u = self.u[index]

    def gumbel(self) -> torch.Tensor:
        """(rows, vocab) Gumbel noise for every row's next token; every stream advances by one token."""
        if self.t == self.block:
            self.u = torch.stack([torch.rand(self.block * self.vocab, generator=g, device=self.device)
                                  for g in self.generators]).view(len(self.generators), self.block, self.vocab)
            self.t = 0
        u = self.u[:, self.t]
        self.t += 1
        return -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))


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


RANDOM_BLOCK_TOKENS = 16           # uniforms drawn ahead per row, in tokens (at most 16 MB of float32 per call)
RANDOM_BLOCK_NUMBERS = 1 << 22


def _next_token(logits: torch.Tensor, temperature: float, top_k: int | None,
                streams: _RowStreams | None) -> torch.Tensor:
    """argmax(logits / T + Gumbel noise) over the top_k largest logits (plain argmax when temperature is 0)."""
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None and top_k < logits.shape[-1]:             # only the k largest logits can win
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return (logits / temperature + streams.gumbel()).argmax(-1)


class _HFDecoder:
    """One decoding step through the model's own forward and its KV cache object: works for any causal LM."""

    def __init__(self, model, past, attention_mask: torch.Tensor, keep_last: bool):
        self.model, self.past, self.attention_mask, self.keep_last = model, past, attention_mask, keep_last
        # a cache that cannot drop batch rows keeps every row to the end (ended rows are padded all the same)
        self.can_keep = hasattr(past, "batch_select_indices")

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the batch rows `index` (the others have ended)."""
        self.past.batch_select_indices(index)
        self.attention_mask = self.attention_mask[index]

    def __call__(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """The next token's logits (n, vocab), float32, after `token` (n,) at `position` (n,)."""
        mask = self.attention_mask
        self.attention_mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        logits, self.past = _forward(self.model, token[:, None], self.attention_mask, position[:, None], self.past,
                                     self.keep_last)
        return logits


class _GPT2Decoder:
    """The same step for a plain GPT-2 (the course's toy models), written out: at the toy sizes a step costs what
    its Python does, and transformers' forward (hooks, mask building, a cache that grows by concatenation) was
    two thirds of it. Keys and values go into buffers allocated once for the whole response. The arithmetic is
    the forward's, layer by layer, with GPT-2's tanh-approximated GELU in torch's fused kernel (tests/
    test_sampling.py checks the logits against the model's forward and the tokens against `generate`'s)."""

    def __init__(self, model, past, max_new_tokens: int, attention_mask: torch.Tensor):
        t = model.transformer
        self.t, self.lm_head = t, model.lm_head.weight
        # GPT-2's "gelu_new" is the tanh approximation of GELU, which torch computes in one fused kernel
        self.act = (partial(F.gelu, approximate="tanh") if model.config.activation_function == "gelu_new"
                    else t.h[0].mlp.act)
        b, p = attention_mask.shape
        self.keys, self.values = [], []
        for layer in past.layers:
            shape = (*layer.keys.shape[:2], p + max_new_tokens, layer.keys.shape[-1])
            keys, values = layer.keys.new_empty(shape), layer.values.new_empty(shape)
            keys[:, :, :p], values[:, :, :p] = layer.keys, layer.values
            self.keys.append(keys)
            self.values.append(values)
        # added to the attention scores: -inf on the prompts' left padding, 0 on every other key
        self.bias = torch.zeros(b, 1, 1, p + max_new_tokens, device=attention_mask.device)
        self.bias[:, 0, 0, :p].masked_fill_(attention_mask == 0, float("-inf"))
        self.length = p                                          # filled key columns
        self.can_keep = True

    @staticmethod
    def fits(model) -> bool:
        """A plain GPT-2: no adapters (peft wraps the model or its layers) and no cross-attention."""
        if type(model).__name__ != "GPT2LMHeadModel" or model.config.add_cross_attention:
            return False
        layers = [m for block in model.transformer.h for m in (block.attn.c_attn, block.attn.c_proj,
                                                                block.mlp.c_fc, block.mlp.c_proj)]
        return all(type(m).__name__ == "Conv1D" for m in layers)

    def keep(self, index: torch.Tensor) -> None:
        self.keys = [k[index] for k in self.keys]
        self.values = [v[index] for v in self.values]
        self.bias = self.bias[index]

    def __call__(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        t, n, s = self.t, len(token), self.length
        x = t.wte.weight[token] + t.wpe.weight[position]                     # (n, E)
        bias = self.bias[..., : s + 1]
        for block, keys, values in zip(t.h, self.keys, self.values):
            attn, mlp = block.attn, block.mlp
            h = F.layer_norm(x, block.ln_1.normalized_shape, block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
            q, k, v = torch.addmm(attn.c_attn.bias, h, attn.c_attn.weight).view(n, 3, attn.num_heads, 1,
                                                                                 attn.head_dim).unbind(1)
            keys[:, :, s], values[:, :, s] = k[:, :, 0], v[:, :, 0]
            weights = torch.softmax((q @ keys[:, :, : s + 1].transpose(-1, -2)) * attn.scaling + bias, dim=-1)
            a = (weights @ values[:, :, : s + 1]).view(n, -1)                 # (n, E)
            x = x + torch.addmm(attn.c_proj.bias, a, attn.c_proj.weight)
            h = F.layer_norm(x, block.ln_2.normalized_shape, block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
            h = self.act(torch.addmm(mlp.c_fc.bias, h, mlp.c_fc.weight))
            x = x + torch.addmm(mlp.c_proj.bias, h, mlp.c_proj.weight)
        self.length = s + 1
        x = F.layer_norm(x, t.ln_f.normalized_shape, t.ln_f.weight, t.ln_f.bias, t.ln_f.eps)
        return (x @ self.lm_head.T).float()


def _forward(model, input_ids, attention_mask, position_ids, past, keep_last: bool):
    kwargs = {"logits_to_keep": 1} if keep_last else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                past_key_values=past, use_cache=True, **kwargs)
    return out.logits[:, -1, :].float(), out.past_key_values


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str], seeds: list[int], temperature: float,
           max_new_tokens: int, top_k: int | None = None) -> Rollout:
    """One response per prompt, row i drawn from its own random stream `seeds[i]` (greedy when temperature is
    0; from the `top_k` most likely tokens only when top_k is given): prompts left-padded, each response cut after
    its first eos. The only sampler of the kit.

    A KV-cached decoding loop: the prompts run once through the model's forward, then one token per step for every
    row; whenever a quarter of the rows in the batch have written their eos, those rows leave it (their cache rows
    are dropped), so late steps cost what the unfinished rows cost. After its eos a row is padded with the pad
    token, as transformers' `generate` pads it. For a plain GPT-2 the step is `_GPT2Decoder`, otherwise the model's
    own forward. bench/sampler.py times it against the `generate`-based sampler it replaced."""
    if not prompts:
        raise ValueError("sample() got an empty list of prompts.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
    b, prompt_len = enc["input_ids"].shape
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    response = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    rows = torch.arange(b, device=device)                        # the rows in the batch, as indices into prompts
    attention_mask = enc["attention_mask"]
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    try:
        with autocast(device):
            keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
            logits, past = _forward(model, enc["input_ids"], attention_mask, position_ids, None, keep_last)
            step = (_GPT2Decoder(model, past, max_new_tokens, attention_mask) if _GPT2Decoder.fits(model)
                    else _HFDecoder(model, past, attention_mask, keep_last))
            vocab = logits.shape[-1]
            block = max(1, min(RANDOM_BLOCK_TOKENS, max_new_tokens, RANDOM_BLOCK_NUMBERS // (b * vocab)))
            streams = _RowStreams(seeds, vocab, device, block) if temperature > 0 else None
            position = position_ids[:, -1]
            done = torch.zeros(b, dtype=torch.bool, device=device)     # rows in the batch that have ended
            n_written = 0
            for t in range(max_new_tokens):
                token = _next_token(logits, temperature, top_k, streams)
                response[rows[~done], t] = token[~done]
                n_written = t + 1
                done |= token == eos_id
                n_done = int(done.sum())
                if n_done == len(rows) or t + 1 == max_new_tokens:
                    break
                if 4 * n_done >= len(rows) and step.can_keep:     # a quarter of the batch has ended: drop them
                    keep = (~done).nonzero().squeeze(1)
                    rows, token, position, done = rows[keep], token[keep], position[keep], done[keep]
                    step.keep(keep)
                    if streams is not None:
                        streams.keep(keep)
                position = position + 1
                logits = step(token, position)
    finally:
        model.train(was_training)
    out = torch.cat([enc["input_ids"], response[:, :n_written]], dim=1)
    mask, has_eos = first_eos_mask(out[:, prompt_len:], eos_id)
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
