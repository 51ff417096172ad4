"""Scoring a policy on held-out instructions with the gold reward."""

from __future__ import annotations

from .models import generate
from .world import follows_format, gold_reward


def score_policy(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 0.7,
                 seed: int = 0) -> dict:
    """Generate one response per prompt and score it.

    Returns {"gold_reward": mean gold reward, "format_rate": share that follows the format,
             "samples": [{"prompt", "response", "gold", "format_ok"}, ...]}.
    """
    responses = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                         seed=seed)
    samples = [
        {"prompt": p, "response": r, "gold": gold_reward(p, r), "format_ok": follows_format(r)}
        for p, r in zip(prompts, responses)
    ]
    n = len(samples)
    return {
        "gold_reward": sum(s["gold"] for s in samples) / n,
        "format_rate": sum(s["format_ok"] for s in samples) / n,
        "samples": samples,
    }


def compare(models: dict, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 0.7,
            seed: int = 0) -> dict[str, dict]:
    """`score_policy` for each named model on the same prompts and sampling seed: {name: result}."""
    return {name: score_policy(model, tokenizer, prompts, max_new_tokens, temperature, seed)
            for name, model in models.items()}
