"""Collecting preferences: the workspace stage `preferences`, named after `rlhf-kit collect`.

Sample K responses per prompt from the SFT policy, pair every two of them, and let the simulated annotator label
the pairs into a durable `PreferenceStore` (the widget in lab 02 does the same with you). `preferences.py` is the
label store itself; this module only fills it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .models import load_causal_lm
from .preferences import INSTRUCTGPT_AGREEMENT, PreferenceStore, pair_id
from .sampling import generate
from .world import SimulatedAnnotator, calibrate_temperature, gold_reward, load_world, training_prompts

SIMULATED = "simulated"


def sample_candidates(model, tokenizer, prompts: list[str], k: int, max_new_tokens: int, temperature: float,
                      seed: int = 0) -> list[dict]:
    """K sampled responses per prompt: [{"prompt", "responses": [k strings]}]."""
    flat = generate(model, tokenizer, [p for p in prompts for _ in range(k)], max_new_tokens=max_new_tokens,
                    temperature=temperature, seed=seed)
    return [{"prompt": p, "responses": flat[i * k:(i + 1) * k]} for i, p in enumerate(prompts)]


def candidate_pairs(candidates: list[dict], seed: int = 0) -> list[dict]:
    """Every pair of distinct responses to the same prompt, in a random A/B order:
    [{"pair_id", "prompt", "response_a", "response_b"}]."""
    rng = random.Random(seed)
    pairs = []
    for row in candidates:
        responses = list(dict.fromkeys(r for r in row["responses"]))       # drop exact duplicates
        for i in range(len(responses)):
            for j in range(i + 1, len(responses)):
                a, b = (responses[i], responses[j]) if rng.random() < 0.5 else (responses[j], responses[i])
                pairs.append({"pair_id": pair_id(row["prompt"], a, b), "prompt": row["prompt"],
                              "response_a": a, "response_b": b})
    return pairs


def preference_prompts(world, n: int, seed: int) -> list[str]:
    """`n` instruction prompts from the demonstrations' attribute combinations (never the held-out ones), in a
    seeded order; distinct as long as the world has that many."""
    prompts = training_prompts(world)
    random.Random(seed).shuffle(prompts)
    while len(prompts) < n:            # small worlds: reuse prompts; their samples still differ
        prompts += prompts[: n - len(prompts)]
    return prompts[:n]


def _candidates_and_pairs(ws, model, tokenizer, n_pairs: int | None) -> tuple[list[dict], list[dict]]:
    """The preset's prompts' candidates and their pairs; with `n_pairs`, enough prompts for that many pairs
    (identical samples give no pair: sample more prompts, in up to 4 extra rounds, until it is met)."""
    p, world = ws.preset, load_world(ws.require("world"))
    pairs_per_prompt = p.pref_k * (p.pref_k - 1) // 2
    n_prompts = p.n_pref_prompts if n_pairs is None else -(-n_pairs // pairs_per_prompt)
    candidates = sample_candidates(model, tokenizer, preference_prompts(world, n_prompts, ws.seed),
                                   p.pref_k, p.max_new_tokens, p.pref_temperature, seed=ws.seed)
    pairs = candidate_pairs(candidates, seed=ws.seed)
    for extra_round in range(1, 5):
        if n_pairs is None or len(pairs) >= n_pairs:
            break
        pairs_per_prompt_so_far = max(1, len(pairs) // max(1, len(candidates)))
        more = -(-(n_pairs - len(pairs)) // pairs_per_prompt_so_far) + 1      # ceil, and one spare
        prompts = preference_prompts(world, len(candidates) + more, ws.seed)[len(candidates):]
        new = sample_candidates(model, tokenizer, prompts, p.pref_k, p.max_new_tokens, p.pref_temperature,
                                seed=ws.seed + extra_round)
        candidates += new
        pairs += candidate_pairs(new, seed=ws.seed + extra_round)
    return candidates, pairs[:n_pairs]


def build(ws, out_dir: Path, n_pairs: int | None = None) -> dict:
    """Workspace stage `preferences`: candidate pairs from the SFT policy, labelled by the simulated annotator.

    The annotator's temperature is calibrated on these very pairs so that it agrees with the gold ordering about
    73% of the time (InstructGPT's inter-labeller agreement). Writes `pairs.jsonl` (unlabelled, what the widget
    shows) and `simulated.jsonl` (a PreferenceStore). `n_pairs` overrides the preset's number of pairs.
    """
    p = ws.preset
    model, tokenizer = load_causal_lm(ws.require("sft"))
    candidates, pairs = _candidates_and_pairs(ws, model, tokenizer, n_pairs)
    settings = {"model": "sft", "k": p.pref_k, "temperature": p.pref_temperature, "max_new_tokens": p.max_new_tokens}
    with open(out_dir / "pairs.jsonl", "w") as f:
        for pair in pairs:
            f.write(json.dumps({**pair, "settings": settings}) + "\n")
    diffs = [gold_reward(q["prompt"], q["response_a"]) - gold_reward(q["prompt"], q["response_b"]) for q in pairs]
    annotator = SimulatedAnnotator(temperature=calibrate_temperature(diffs, INSTRUCTGPT_AGREEMENT), seed=ws.seed)
    store = PreferenceStore(out_dir / "simulated.jsonl")
    agree = decided = 0
    for pair, diff in zip(pairs, diffs):
        choice = annotator.prefer(pair["prompt"], pair["response_a"], pair["response_b"])
        store.record(pair["pair_id"], pair["prompt"], pair["response_a"], pair["response_b"], choice,
                     annotator=SIMULATED, settings=settings)
        if diff != 0:
            decided += 1
            agree += (choice == "A") == (diff > 0)
    return {"n_pairs": len(pairs), "n_prompts": len(candidates), "annotator_temperature": annotator.temperature,
            "annotator_gold_agreement": round(agree / max(1, decided), 4)}


def load_pairs(ws) -> list[dict]:
    """The unlabelled candidate pairs of the `preferences` stage."""
    path = ws.require("preferences") / "pairs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
