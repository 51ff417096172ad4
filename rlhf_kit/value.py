"""PPO's value model (the critic): a transformer body and a scalar head read at every position.

It starts as the reward model, as in InstructGPT: its body and its head, with the reward normalisation folded into
the head, so at the start V at the eos is the normalised score. It reads the *policy's* tokens, so it needs the
policy's vocabulary (checked); `from_policy` is the alternative for reward functions that are not a reward model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from .models import disable_dropout


class ValueModel(torch.nn.Module):
    """A transformer body and a scalar head read at every position: values (batch, seq_len)."""

    def __init__(self, body: torch.nn.Module, head: torch.nn.Linear):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).last_hidden_state
        return self.head(hidden).squeeze(-1)

    @classmethod
    def from_reward_model(cls, path, policy_tokenizer) -> "ValueModel":
        """The reward model's body and head, with its normalisation folded in:
        V(h) = (w . h - mean) / std, so that V at the eos starts as the normalised reward."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tokenizer.get_vocab() != policy_tokenizer.get_vocab():
            raise ValueError(
                f"The value model is initialised from the reward model at {path}, and it reads the policy's "
                f"tokens, but their vocabularies differ ({len(tokenizer)} vs {len(policy_tokenizer)} tokens). "
                f"Pass value_model=ValueModel.from_policy(policy) instead (the reward itself still works: it "
                f"reads text)."
            )
        reward_model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
        disable_dropout(reward_model)
        norm_file = path / "normalisation.json"
        norm = json.loads(norm_file.read_text()) if norm_file.is_file() else {"mean": 0.0, "std": 1.0}
        score = reward_model.score
        head = torch.nn.Linear(score.in_features, 1)
        with torch.no_grad():
            head.weight.copy_(score.weight / norm["std"])
            bias = score.bias if score.bias is not None else torch.zeros(1)
            head.bias.copy_((bias - norm["mean"]) / norm["std"])
        return cls(reward_model.base_model, head)

    @classmethod
    def from_policy(cls, policy) -> "ValueModel":
        """A copy of the policy's body with a zero head (V = 0 at the start): for reward functions that are not
        a reward model."""
        head = torch.nn.Linear(policy.config.hidden_size, 1)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        return cls(copy.deepcopy(policy.base_model), head)
