"""Lab 01: the supervised fine-tuning loss (`sft_loss`), its test vectors and mistake catalogue."""

from __future__ import annotations

import torch

from .. import losses
from .checking import Case, Exercise, Mistake


def _sft_case(batch, seq_len, vocab, prompt_lens, response_lens, seed) -> Case:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq_len, vocab, generator=g) * 2.0
    input_ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
    mask = torch.zeros(batch, seq_len, dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        mask[row, p : p + r] = 1
        input_ids[row, p + r:] = vocab - 1          # padding
    return Case({"logits": logits, "input_ids": input_ids, "response_mask": mask},
                f"batch={batch}, prompt lengths {prompt_lens}, response lengths {response_lens}")


def _sft_token_nll(logits, input_ids):
    logprobs = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return -logprobs


_SFT_MISTAKES = [
    Mistake(
        "Did you shift? The logits at position t-1 predict token t: compare logits[:, :-1] with "
        "input_ids[:, 1:] (and use response_mask[:, 1:]).",
        lambda logits, input_ids, response_mask: (
            -(torch.log_softmax(logits.float(), -1).gather(-1, input_ids[..., None]).squeeze(-1)
              * response_mask).sum() / response_mask.sum()),
    ),
    Mistake(
        "The loss includes prompt and padding tokens: multiply the token losses by the response mask, so only "
        "the response (and its eos) is learned.",
        lambda logits, input_ids, response_mask: _sft_token_nll(logits, input_ids).mean(),
    ),
    Mistake(
        "The mask is not shifted with the targets: the targets are input_ids[:, 1:], so the mask that says which "
        "targets are response tokens is response_mask[:, 1:], not response_mask[:, :-1].",
        lambda logits, input_ids, response_mask: (
            (_sft_token_nll(logits, input_ids) * response_mask[:, :-1]).sum() / response_mask[:, :-1].sum()),
    ),
    Mistake(
        "You summed the masked token losses: divide by the number of response tokens (mask.sum()) to get the mean.",
        lambda logits, input_ids, response_mask: (_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum(),
    ),
    Mistake(
        "You divided by every position instead of by the number of response tokens: use mask.sum() as the "
        "denominator, not mask.numel().",
        lambda logits, input_ids, response_mask: (
            (_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum() / response_mask[:, 1:].numel()),
    ),
    Mistake(
        "You averaged within each sequence and then over the batch. This lab's convention is one mean over all "
        "response tokens in the batch: (nll * mask).sum() / mask.sum().",
        lambda logits, input_ids, response_mask: (
            ((_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum(1)
             / response_mask[:, 1:].sum(1)).mean()),
    ),
    Mistake(
        "Wrong sign: the loss is the negative log-likelihood. Minimising +log p would push the right tokens down.",
        lambda logits, input_ids, response_mask: -losses.sft_loss(logits, input_ids, response_mask),
    ),
]


SFT_LOSS = Exercise(
    reference=losses.sft_loss,
    cases=[
        _sft_case(3, 9, 11, prompt_lens=[2, 4, 3], response_lens=[5, 2, 6], seed=0),
        _sft_case(2, 6, 7, prompt_lens=[1, 3], response_lens=[5, 3], seed=1),
        _sft_case(4, 12, 13, prompt_lens=[5, 2, 7, 3], response_lens=[4, 9, 1, 6], seed=2),
    ],
    mistakes=_SFT_MISTAKES,
    scalar=True,
)
