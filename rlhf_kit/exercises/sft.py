"""Lab 01: the response mask (`build_response_mask`) and the supervised fine-tuning loss (`sft_loss`), with their
test vectors and mistake catalogues."""

from __future__ import annotations

import torch

from .. import losses
from .checking import Case, Exercise, Mistake, right_mask


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


# ------------------------------------------------------------------------------------------------ build_response_mask
def _mask_case(prompt_lens, lengths, seq_len, what="", expected=None) -> Case:
    return Case({"prompt_lengths": torch.tensor(prompt_lens), "attention_mask": right_mask(lengths, seq_len)},
                what or f"prompt lengths {prompt_lens}, row lengths {lengths} (prompt + response + eos) of {seq_len}",
                expected=expected)


def _mask_model(*, start_shift=0, eos=True, padding=False, prompt=False, shift=False):
    """build_response_mask with one ingredient changed, for the mistake catalogue."""
    def impl(prompt_lengths, attention_mask):
        positions = torch.arange(attention_mask.shape[1])[None, :]
        keep = (positions >= prompt_lengths[:, None] + start_shift) | prompt
        if not padding:
            keep = keep & attention_mask.bool()
        if not eos:
            keep = keep & (positions < attention_mask.sum(1, keepdim=True) - 1)
        mask = keep.long()
        return mask[:, 1:] if shift else mask
    return impl


_MASK_MISTAKES = [
    Mistake("The eos is left out: the last real token of each row (the end-of-text) belongs to the response, and "
            "it must be learned, or the model never learns to stop.", _mask_model(eos=False)),
    Mistake("The prompt is included: the mask must be 0 on the first prompt_lengths[b] tokens of row b, so that "
            "the loss never trains the model to write instructions.", _mask_model(prompt=True)),
    Mistake("The padding is included: positions where attention_mask is 0 come after the eos and are not text; "
            "multiply by (or AND with) the attention mask.", _mask_model(padding=True)),
    Mistake("Off by one at the start: the first response token of row b sits at position prompt_lengths[b] "
            "(positions count from 0), so the mask starts there: positions >= prompt_lengths[b], not >.",
            _mask_model(start_shift=1)),
    Mistake("Off by one at the start: the last prompt token (position prompt_lengths[b] - 1) is in your mask. "
            "The response starts at position prompt_lengths[b].", _mask_model(start_shift=-1)),
    Mistake("The mask is shifted: return it aligned with input_ids, shape (batch, seq_len). sft_loss shifts it "
            "itself (response_mask[:, 1:]) when it pairs it with the targets.", _mask_model(shift=True)),
]

BUILD_RESPONSE_MASK = Exercise(
    reference=losses.build_response_mask,
    cases=[
        _mask_case([3], [6], 8, "worked example: a prompt of 3 tokens, then 2 response tokens and the eos, then "
                   "2 pads -> [0, 0, 0, 1, 1, 1, 0, 0]", expected=torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0]])),
        _mask_case([2, 4, 1], [7, 5, 9], 9),
        _mask_case([5, 3, 6, 2], [6, 10, 8, 4], 10, "prompt lengths [5, 3, 6, 2], row lengths [6, 10, 8, 4] of 10 "
                   "(the first row's response is the eos alone)"),
    ],
    mistakes=_MASK_MISTAKES,
)
