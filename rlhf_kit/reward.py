"""Preferences in, reward model out.

Two workspace stages live here:

- `preferences`: sample K responses per prompt from the SFT policy, compare every pair of them, and let the
  simulated annotator label them into a durable `PreferenceStore` (the widget in lab 02 does the same with you).
- `reward`: a standard `AutoModelForSequenceClassification` with one output, initialised from the SFT model,
  trained with the Bradley-Terry loss on `prompt`/`chosen`/`rejected` rows; its score is read at the last real
  token (the eos after the response). Rewards are then normalised to mean 0, std 1 on SFT samples.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .device import autocast, pick_device, seed_everything
from .losses import bradley_terry_loss, rewards_at_last_token
from .models import check_tokenizer, disable_dropout, generate, load_causal_lm, optimizer_step, tail_mean
from .world import SimulatedAnnotator, calibrate_temperature, gold_reward, load_world

SIMULATED = "simulated"


# ------------------------------------------------------------------------------------------ candidates
def sample_candidates(model, tokenizer, prompts: list[str], k: int, max_new_tokens: int, temperature: float,
                      seed: int = 0) -> list[dict]:
    """K sampled responses per prompt: [{"prompt", "responses": [k strings]}]."""
    flat = generate(model, tokenizer, [p for p in prompts for _ in range(k)], max_new_tokens=max_new_tokens,
                    temperature=temperature, seed=seed, batch_size=64)
    return [{"prompt": p, "responses": flat[i * k:(i + 1) * k]} for i, p in enumerate(prompts)]


def candidate_pairs(candidates: list[dict], seed: int = 0) -> list[dict]:
    """Every pair of distinct responses to the same prompt, in a random A/B order:
    [{"pair_id", "prompt", "response_a", "response_b"}]."""
    from .preferences import pair_id

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
    """`n` distinct instruction prompts from the demonstrations' attribute combinations (never the held-out ones)."""
    prompts = list(dict.fromkeys(d["prompt"] for d in world.demos))
    random.Random(seed).shuffle(prompts)
    while len(prompts) < n:            # small worlds: reuse prompts; their samples still differ
        prompts += prompts[: n - len(prompts)]
    return prompts[:n]


def build_preferences(ws, out_dir: Path, n_pairs: int | None = None) -> dict:
    """Workspace stage `preferences`: candidate pairs from the SFT policy, labelled by the simulated annotator.

    The annotator's temperature is calibrated on these very pairs so that it agrees with the gold ordering about
    73% of the time (InstructGPT's inter-labeller agreement). Writes `pairs.jsonl` (unlabelled, what the widget
    shows) and `simulated.jsonl` (a PreferenceStore). `n_pairs` overrides the preset's number of pairs.
    """
    from .preferences import PreferenceStore

    p = ws.preset
    world = load_world(ws.require("world"))
    model, tokenizer = load_causal_lm(ws.require("sft"))
    settings = {"model": "sft", "k": p.pref_k, "temperature": p.pref_temperature,
                "max_new_tokens": p.max_new_tokens}
    pairs_per_prompt = p.pref_k * (p.pref_k - 1) // 2
    n_prompts = p.n_pref_prompts if n_pairs is None else -(-n_pairs // pairs_per_prompt)
    candidates = sample_candidates(model, tokenizer, preference_prompts(world, n_prompts, ws.seed),
                                   p.pref_k, p.max_new_tokens, p.pref_temperature, seed=ws.seed)
    pairs = candidate_pairs(candidates, seed=ws.seed)
    # Identical samples give no pair: when a number of pairs was asked for, sample more prompts until it is met.
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
    pairs = pairs[:n_pairs]
    with open(out_dir / "pairs.jsonl", "w") as f:
        for pair in pairs:
            f.write(json.dumps({**pair, "settings": settings}) + "\n")
    diffs = [gold_reward(q["prompt"], q["response_a"]) - gold_reward(q["prompt"], q["response_b"]) for q in pairs]
    annotator = SimulatedAnnotator(temperature=calibrate_temperature(diffs, 0.73), seed=ws.seed)
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


# ------------------------------------------------------------------------------------------- the model
def tokenize_texts(tokenizer, prompts: list[str], responses: list[str], max_len: int) -> dict[str, torch.Tensor]:
    """prompt + response + eos for each row, right-padded: the reward is read at that final eos."""
    rows = []
    for prompt, response in zip(prompts, responses):
        ids = tokenizer(prompt + response)["input_ids"][: max_len - 1] + [tokenizer.eos_token_id]
        rows.append(ids)
    longest = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), longest), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def sequence_rewards(model, input_ids, attention_mask, pick_fn: Callable = rewards_at_last_token) -> torch.Tensor:
    """Per-token scores from the classification head, then `pick_fn(values, attention_mask)` -> (batch,)."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    values = model.score(hidden).squeeze(-1).float()               # (batch, seq_len)
    return pick_fn(values, attention_mask)


def init_reward_model(sft_dir, device=None, seed: int = 0):
    """(model, tokenizer): a one-output sequence classifier on top of the SFT model's weights, dropout off.

    The new head's initial weights are drawn after seeding with `seed`: unseeded, they would come from whatever
    state the global random generator is in, which differs from one process (one notebook kernel) to the next."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(sft_dir, local_files_only=True)
    check_tokenizer(tokenizer, where=str(sft_dir))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()        # the new head is meant to be freshly initialised: no "MISSING" report
    seed_everything(seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id      # needed to find the last real token
    disable_dropout(model)
    return model.to(device or pick_device()), tokenizer


@dataclass
class RewardConfig:
    steps: int = 400            # optimizer steps
    batch_size: int = 32        # preference pairs per step
    lr: float = 5e-4            # peak learning rate (warm-up, cosine decay)
    max_len: int = 128          # tokens per prompt+response
    heldout_fraction: float = 0.15   # share of prompts whose pairs are held out for evaluation
    seed: int = 0

    @classmethod
    def from_preset(cls, preset, seed: int = 0) -> "RewardConfig":
        return cls(steps=preset.rm_steps, batch_size=preset.rm_batch_size, lr=preset.rm_lr,
                   max_len=preset.n_positions, seed=seed)


def split_by_prompt(rows: list[dict], heldout_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, heldout): whole prompts go to one side, so held-out pairs come from prompts never trained on."""
    prompts = sorted({r["prompt"] for r in rows})
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: max(1, round(len(prompts) * heldout_fraction))])
    return [r for r in rows if r["prompt"] not in held], [r for r in rows if r["prompt"] in held]


def _pair_batch(tokenizer, rows, max_len, device):
    texts = tokenize_texts(tokenizer, [r["prompt"] for r in rows] * 2,
                           [r["chosen"] for r in rows] + [r["rejected"] for r in rows], max_len)
    return {k: v.to(device) for k, v in texts.items()}


def train_reward_model(model, tokenizer, rows: list[dict], config: RewardConfig,
                       loss_fn: Callable = bradley_terry_loss, pick_fn: Callable = rewards_at_last_token,
                       callback: Callable | None = None) -> dict:
    """Minimise `loss_fn(r_chosen, r_rejected)` over `prompt`/`chosen`/`rejected` rows.

    Calls `callback(step, loss=..., accuracy=...)` (accuracy: share of the batch with r_chosen > r_rejected).
    """
    if not rows:
        raise ValueError("No preference pairs to train on: label some pairs (lab 02) or run `rlhf-kit collect`.")
    device = next(model.parameters()).device
    seed_everything(config.seed)
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    model.train()
    order: list[int] = []
    history = []
    for step in tqdm(range(config.steps), desc="reward model", leave=False):
        if len(order) < config.batch_size:
            more = list(range(len(rows)))
            rng.shuffle(more)
            order += more
        batch_rows = [rows[i] for i in order[: config.batch_size]]
        order = order[config.batch_size:]
        batch = _pair_batch(tokenizer, batch_rows, config.max_len, device)
        with autocast(device):
            rewards = sequence_rewards(model, batch["input_ids"], batch["attention_mask"], pick_fn)
        n = len(batch_rows)
        loss = loss_fn(rewards[:n], rewards[n:])
        optimizer_step(model, optimizer, loss, step, config.steps, config.lr)
        accuracy = (rewards[:n] > rewards[n:]).float().mean().item()
        history.append((loss.item(), accuracy))
        if callback is not None:
            callback(step, loss=history[-1][0], accuracy=accuracy)
    model.eval()
    return {"final_loss": tail_mean([h[0] for h in history]),
            "final_train_accuracy": tail_mean([h[1] for h in history])}


@torch.no_grad()
def score_texts(model, tokenizer, prompts: list[str], responses: list[str], max_len: int = 128,
                batch_size: int = 64, pick_fn: Callable = rewards_at_last_token) -> torch.Tensor:
    """Raw reward-model scores, (n,), on the CPU."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        batch = tokenize_texts(tokenizer, prompts[i:i + batch_size], responses[i:i + batch_size], max_len)
        with autocast(device):
            out.append(sequence_rewards(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                        pick_fn).float().cpu())
    return torch.cat(out)


def evaluate_pairs(model, tokenizer, rows: list[dict], max_len: int = 128) -> dict:
    """Accuracy of the reward model on preference rows, against the labels and against the gold ordering.

    Returns {"accuracy": share with r_chosen > r_rejected (agreement with the annotator's labels),
             "gold_accuracy": share ordered like the gold reward (pairs with a gold difference only),
             "annotator_gold_agreement": how often the labels themselves follow the gold ordering: the ceiling,
             "margins": r_chosen - r_rejected (tensor), "gold_diffs": gold(chosen) - gold(rejected) (list)}.
    """
    r_chosen = score_texts(model, tokenizer, [r["prompt"] for r in rows], [r["chosen"] for r in rows], max_len)
    r_rejected = score_texts(model, tokenizer, [r["prompt"] for r in rows], [r["rejected"] for r in rows], max_len)
    margins = r_chosen - r_rejected
    gold_diffs = [gold_reward(r["prompt"], r["chosen"]) - gold_reward(r["prompt"], r["rejected"]) for r in rows]
    decided = [(m.item(), g) for m, g in zip(margins, gold_diffs) if g != 0]
    return {
        "accuracy": (margins > 0).float().mean().item(),
        "gold_accuracy": sum((m > 0) == (g > 0) for m, g in decided) / max(1, len(decided)),
        "annotator_gold_agreement": sum(g > 0 for _, g in decided) / max(1, len(decided)),
        "margins": margins,
        "gold_diffs": gold_diffs,
    }


def calibration(margins: torch.Tensor, bins: int = 8, seed: int = 0) -> list[dict]:
    """Predicted vs observed preference: each held-out pair is shown in a random A/B order; the model predicts
    P(A preferred) = sigmoid(r_A - r_B); bins of that prediction are compared with how often A was the chosen one.
    Returns [{"predicted", "observed", "n"}] for non-empty bins."""
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(margins), generator=g) < 0.5
    p_a = torch.sigmoid(torch.where(flip, -margins, margins))
    a_chosen = (~flip).float()
    edges = torch.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (p_a >= lo) & ((p_a < hi) if hi < 1 else (p_a <= hi))
        if inside.any():
            out.append({"predicted": p_a[inside].mean().item(), "observed": a_chosen[inside].mean().item(),
                        "n": int(inside.sum())})
    return out


# ------------------------------------------------------------------------------------------- the stage
def preference_rows(ws, extra_stores=()) -> list[dict]:
    """`prompt`/`chosen`/`rejected` rows: the simulated annotator's labels plus any learner stores given."""
    from .preferences import PreferenceStore

    rows = []
    for store in [PreferenceStore(ws.require("preferences") / "simulated.jsonl"), *extra_stores]:
        if not isinstance(store, PreferenceStore):
            store = PreferenceStore(store)
        dataset, _ = store.export()
        rows += [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in dataset]
    return rows


def build_reward(ws, out_dir: Path, callback: Callable | None = None, loss_fn: Callable = bradley_terry_loss,
                 pick_fn: Callable = rewards_at_last_token, extra_stores=()) -> dict:
    """Workspace stage `reward`: train the reward model, evaluate it on held-out prompts, normalise it."""
    config = RewardConfig.from_preset(ws.preset, ws.seed)
    train_rows, heldout_rows = split_by_prompt(preference_rows(ws, extra_stores), config.heldout_fraction, ws.seed)
    model, tokenizer = init_reward_model(ws.require("sft"), seed=config.seed)
    started = time.perf_counter()
    metrics = train_reward_model(model, tokenizer, train_rows, config, loss_fn, pick_fn, callback)
    train_seconds = time.perf_counter() - started
    heldout = evaluate_pairs(model, tokenizer, heldout_rows, config.max_len)
    mean, std = normalisation(model, tokenizer, ws)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "normalisation.json").write_text(json.dumps({"mean": mean, "std": std}) + "\n")
    with open(out_dir / "heldout.jsonl", "w") as f:
        for row in heldout_rows:
            f.write(json.dumps(row) + "\n")
    return {**metrics, "n_pairs": len(train_rows) + len(heldout_rows), "n_train_pairs": len(train_rows),
            "n_heldout_pairs": len(heldout_rows), "heldout_accuracy": round(heldout["accuracy"], 4),
            "gold_accuracy": round(heldout["gold_accuracy"], 4),
            "annotator_gold_agreement": round(heldout["annotator_gold_agreement"], 4),
            "reward_mean": mean, "reward_std": std, "train_seconds": round(train_seconds, 2)}


def normalisation(model, tokenizer, ws) -> tuple[float, float]:
    """Mean and std of the raw reward on SFT samples for the held-out instructions (what PPO will start from)."""
    world = load_world(ws.require("world"))
    policy, policy_tokenizer = load_causal_lm(ws.require("sft"))
    prompts = [row["prompt"] for row in world.heldout]
    responses = generate(policy, policy_tokenizer, prompts, ws.preset.max_new_tokens, ws.preset.eval_temperature,
                         seed=ws.seed)
    raw = score_texts(model, tokenizer, prompts, responses, ws.preset.n_positions)
    return round(raw.mean().item(), 6), round(max(raw.std().item(), 1e-6), 6)


class RewardScorer:
    """The trained reward model as a function: `scorer(prompts, responses) -> normalised rewards (n,)`."""

    def __init__(self, path, device=None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not (path / "normalisation.json").is_file():
            raise ValueError(f"{path} is not a reward model written by the kit (no normalisation.json). "
                             f"Run `rlhf-kit reward` or ensure('reward').")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
        disable_dropout(self.model)
        self.model.to(device or pick_device()).eval()
        stats = json.loads((path / "normalisation.json").read_text())
        self.mean, self.std = stats["mean"], stats["std"]
        self.max_len = getattr(self.model.config, "max_position_embeddings", 128)

    def raw(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return score_texts(self.model, self.tokenizer, prompts, responses, self.max_len)

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return (self.raw(prompts, responses) - self.mean) / self.std


def ood_probe(scorer: RewardScorer, prompts: list[str], seed: int = 0) -> list[dict]:
    """Responses unlike anything the annotator compared, scored by the reward model and by the gold reward.

    Kinds: a clean on-request review; the requested sentiment word looped; the review with its last sentence
    repeated three times; a run-on of three reviews; the review cut off mid-sentence. A reward model that ranks a
    kind high while the gold reward ranks it low has a blind spot that PPO can find.
    """
    from .world import make_review, parse_prompt

    rng = random.Random(seed)
    rows = []
    for prompt in prompts:
        attrs = parse_prompt(prompt)
        clean = make_review(rng, attrs)
        word = "wonderful" if attrs.sentiment == "positive" else "awful"
        sentences = [s for s in clean.replace("!", ".").split(".") if s.strip()]
        kinds = {
            "clean review": clean,
            "looped word": " ".join([word] * 24) + ".",
            "repeated sentence": clean + (" " + sentences[-1].strip() + ".") * 3,
            "run-on": " ".join(make_review(rng, attrs) for _ in range(3)),
            "cut off": " ".join(clean.split()[: max(3, len(clean.split()) * 2 // 3)]),
        }
        for kind, response in kinds.items():
            rows.append({"kind": kind, "prompt": prompt, "response": response})
    rewards = scorer([r["prompt"] for r in rows], [r["response"] for r in rows])
    for row, reward in zip(rows, rewards.tolist()):
        row["reward"] = reward
        row["gold"] = gold_reward(row["prompt"], row["response"])
    return rows


def train_reward_with_trl(sft_dir, rows: list[dict], config: RewardConfig, output_dir=None):
    """The same training with TRL's RewardTrainer (CPU-safe settings): returns (model, tokenizer, train_loss)."""
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    model, tokenizer = init_reward_model(sft_dir, seed=config.seed)
    use_cpu = next(model.parameters()).device.type == "cpu"
    args = TRLRewardConfig(
        output_dir=str(output_dir or tempfile.mkdtemp(prefix="trl-reward-")),
        max_steps=config.steps, per_device_train_batch_size=config.batch_size, learning_rate=config.lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, config.steps // 20), max_length=config.max_len,
        seed=config.seed, use_cpu=use_cpu, bf16=not use_cpu, activation_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=max(1, config.steps // 10), dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                                 for r in rows])
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    return trainer.model.eval(), tokenizer, float(result.training_loss)
