"""The pure math of RLHF. Every function takes and returns torch tensors and opens with its formula and shapes.

These are the reference implementations the lab exercises are checked against (see `rlhf_kit.exercises`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Response-only (prompt-masked) next-token cross-entropy, averaged over response tokens.

        loss = - sum_{b, t>=1} m[b,t] * log p(x[b,t] | x[b,<t]) / sum_{b, t>=1} m[b,t]

    where p(. | x[b,<t]) = softmax(logits[b, t-1]): the logits at position t-1 predict token t.

    Shapes:
        logits:        (batch, seq_len, vocab)   the model's output for input_ids
        input_ids:     (batch, seq_len)          prompt tokens, then response tokens (ending with eos), then padding
        response_mask: (batch, seq_len)          1 on response tokens (including the final eos), 0 on prompt and pad
    Returns a scalar: the mean negative log-likelihood per response token, in nats.
    """
    shift_logits = logits[:, :-1, :]          # position t-1 predicts token t
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(shift_logits.dtype)
    logprobs = F.log_softmax(shift_logits.float(), dim=-1)
    token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)   # (batch, seq_len - 1)
    return -(token_logprobs * mask).sum() / mask.sum().clamp(min=1)
