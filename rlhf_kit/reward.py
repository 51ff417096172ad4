"""Preferences in, reward model out: the workspace stage `reward`.

A standard `AutoModelForSequenceClassification` with one output, initialised from the SFT model, trained with the
Bradley-Terry loss on `prompt`/`chosen`/`rejected` rows; its score is read at the last real token (the eos after
the response). Rewards are then normalised to mean 0, std 1 on SFT samples of the held-out prompts. (The pairs
come from the `preferences` stage, `collect.py`.)

Lab 03's probes and small runs live here too: `ood_probe` (responses unlike the labelled ones),
`sentiment_swap_probe` (the same response under the request and under its opposite, `swap_sentiment`), and
`train_small_reward_model` on a learner's own handful of labels (`own_label_rows`).
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .configs import REWARD_MAX_LEN, RewardConfig
from .device import autocast, pick_device, seed_everything
from .evaluate import score_samples
from .lora import add_lora, merge_in_place
from .losses import bradley_terry_loss, rewards_at_last_token
from .models import check_tokenizer, disable_dropout, load_causal_lm
from .reuse import load_trained_reward_model, reusable, save_trained
from .sampling import generate
from .training import adamw, batches, optimizer_step, right_pad, tail_mean, trl_cpu_args
from .world import Attributes, gold_reward, heldout_prompts, instruction_for, load_world, parse_prompt


# ------------------------------------------------------------------------------------------- the model
def tokenize_texts(tokenizer, prompts: list[str], responses: list[str], max_len: int) -> dict[str, torch.Tensor]:
    """prompt + response + eos for each row, right-padded: the reward is read at that final eos."""
    rows = [tokenizer(prompt + response)["input_ids"][: max_len - 1] + [tokenizer.eos_token_id]
            for prompt, response in zip(prompts, responses)]
    input_ids, attention_mask = right_pad(rows, tokenizer.pad_token_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def sequence_rewards(model, input_ids, attention_mask, pick_fn: Callable = rewards_at_last_token) -> torch.Tensor:
    """Per-token scores from the classification head, then `pick_fn(values, attention_mask)` -> (batch,)."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model     # a LoRA model's own
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
    """Minimise `loss_fn(r_chosen, r_rejected)` over `prompt`/`chosen`/`rejected` rows, training `model` in place
    (with config.lora_rank > 0: LoRA adapters and the score head, merged into `model` at the end).

    Calls `callback(step, loss=..., accuracy=...)` (accuracy: share of the batch with r_chosen > r_rejected).
    """
    if not rows:
        raise ValueError("No preference pairs to train on: label some pairs (lab 02) or run `rlhf-kit collect`.")
    device = next(model.parameters()).device
    seed_everything(config.seed)
    # LoRA (config.lora_rank > 0): adapters on the body, the new score head trained in full, merged at the end
    trained = add_lora(model, config.lora_rank, config.lora_alpha, trainable=["score"], task_type="SEQ_CLS")
    optimizer = adamw([p for p in trained.parameters() if p.requires_grad], config.lr)
    trained.train()
    history = []
    order = batches(len(rows), config.batch_size, config.steps, config.seed)
    for step, batch_idx in enumerate(tqdm(order, total=config.steps, desc="reward model", leave=False)):
        batch_rows = [rows[i] for i in batch_idx]
        batch = _pair_batch(tokenizer, batch_rows, config.max_len, device)
        with autocast(device):
            rewards = sequence_rewards(trained, batch["input_ids"], batch["attention_mask"], pick_fn)
        n = len(batch_rows)
        loss = loss_fn(rewards[:n], rewards[n:])
        optimizer_step(trained, optimizer, loss, step, config.steps, config.lr)
        accuracy = (rewards[:n] > rewards[n:]).float().mean().item()
        history.append((loss.item(), accuracy))
        if callback is not None:
            callback(step, loss=history[-1][0], accuracy=accuracy)
    merge_in_place(trained).eval()
    return {"final_loss": tail_mean([h[0] for h in history]),
            "final_train_accuracy": tail_mean([h[1] for h in history])}


@torch.no_grad()
def score_texts(model, tokenizer, prompts: list[str], responses: list[str], max_len: int = REWARD_MAX_LEN,
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


def evaluate_pairs(model, tokenizer, rows: list[dict], max_len: int = REWARD_MAX_LEN) -> dict:
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


def build(ws, out_dir: Path, callback: Callable | None = None, loss_fn: Callable = bradley_terry_loss,
                 pick_fn: Callable = rewards_at_last_token, extra_stores=(), lora_rank: int = 0,
                 lora_alpha: float | None = None) -> dict:
    """Workspace stage `reward`: train the reward model, evaluate it on held-out prompts, normalise it. lora_rank > 0
    (`rlhf-kit reward --lora-rank 8`): LoRA adapters on the body, merged into the saved weights."""
    lora = {"lora_rank": lora_rank, "lora_alpha": lora_alpha}
    config = RewardConfig.from_preset(ws.preset, ws.seed, **lora)
    train_rows, heldout_rows = split_by_prompt(preference_rows(ws, extra_stores), config.heldout_fraction, ws.seed)
    return train_and_save(ws, train_rows, heldout_rows, out_dir, callback, loss_fn, pick_fn, **lora)


def train_and_save(ws, train_rows: list[dict], heldout_rows: list[dict], out_dir, callback: Callable | None = None,
                   loss_fn: Callable = bradley_terry_loss, pick_fn: Callable = rewards_at_last_token,
                   **overrides) -> dict:
    """Train a reward model from the `sft` stage on `train_rows` with the preset's settings, evaluate it on
    `heldout_rows`, normalise it on SFT samples and save it to `out_dir` (a directory `RewardScorer` loads). The
    `reward` stage's builder; lab 07 trains one on AI labels with it. Keyword overrides replace RewardConfig fields.
    Returns the `reward` stage's metrics."""
    out_dir = Path(out_dir)
    config = RewardConfig.from_preset(ws.preset, ws.seed, **overrides)
    model, tokenizer = init_reward_model(ws.require("sft"), seed=config.seed)
    started = time.perf_counter()
    metrics = train_reward_model(model, tokenizer, train_rows, config, loss_fn, pick_fn, callback)
    train_seconds = time.perf_counter() - started
    heldout = evaluate_pairs(model, tokenizer, heldout_rows, config.max_len)
    mean, std = normalisation(model, tokenizer, ws)
    out_dir.mkdir(parents=True, exist_ok=True)
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


def heldout_rows(ws) -> list[dict]:
    """The `reward` stage's held-out pairs ({"prompt", "chosen", "rejected"}, its heldout.jsonl): whole instructions
    no reward model trained on. DPO (lab 06) and the AI-label reward model and judges (lab 07) hold out the same."""
    path = ws.require("reward") / "heldout.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def normalisation(model, tokenizer, ws) -> tuple[float, float]:
    """Mean and std of the raw reward on SFT samples for the held-out instructions (what PPO will start from)."""
    policy, policy_tokenizer = load_causal_lm(ws.require("sft"))
    prompts = heldout_prompts(load_world(ws.require("world")))
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
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
        disable_dropout(self.model)
        self.model.to(device or pick_device()).eval()
        stats = json.loads((path / "normalisation.json").read_text())
        self.mean, self.std = stats["mean"], stats["std"]
        self.max_len = getattr(self.model.config, "max_position_embeddings", REWARD_MAX_LEN)

    def raw(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return score_texts(self.model, self.tokenizer, prompts, responses, self.max_len)

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return (self.raw(prompts, responses) - self.mean) / self.std


def ood_probe(scorer: RewardScorer, prompts: list[str], seed: int = 0) -> list[dict]:
    """Responses unlike anything the annotator compared, scored by the reward model and by the gold reward.

    Kinds: a clean on-request review; the requested sentiment word looped; the review with its last sentence
    repeated three times; a run-on of three reviews; the review cut off mid-sentence. A reward model that ranks a
    kind high while the gold reward ranks it low has a blind spot that PPO can find.

    Returns [{"kind", "prompt", "response", "proxy", "gold", "format_ok"}] (`evaluate.score_samples`'s rows).
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
    scored = score_samples([r["prompt"] for r in rows], [r["response"] for r in rows], scorer)
    return [{"kind": row["kind"], **score} for row, score in zip(rows, scored)]


# ------------------------------------------------------------------------------------------- probes and small runs
def swap_sentiment(prompt: str) -> str:
    """The same prompt asking for the opposite sentiment: "... a positive review of ..." <-> "... a negative
    review of ...", everything around the instruction (the "### Instruction:" template) kept as it is."""
    attrs = parse_prompt(prompt)
    other = Attributes("negative" if attrs.sentiment == "positive" else "positive", attrs.genre, attrs.subject)
    return prompt.replace(instruction_for(attrs), instruction_for(other), 1)


def sentiment_swap_probe(score_fn: Callable, prompts: list[str], responses: list[str],
                         gold_fn: Callable = gold_reward, swap_fn: Callable = swap_sentiment) -> dict:
    """Does the reward model check the requested sentiment? Each response is scored under its own prompt and
    under `swap_fn(prompt)` (the opposite sentiment asked for), by `score_fn(prompts, responses) -> (n,)` (e.g. a
    `RewardScorer`) and by `gold_fn(prompt, response)`.

    Returns, for "proxy" (the reward model) and "gold" each:
        <who>_diff     mean of score(request, response) - score(swapped request, response)
        <who>_correct  share of responses scored strictly higher under their own request
        <who>_std      standard deviation of the scores under the own request: divide _diff by it to compare
                       the two scorers, whose units differ
    and "n" and "rows": [{"prompt", "swapped", "response", "proxy", "proxy_swapped", "gold", "gold_swapped"}].
    """
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"sentiment_swap_probe needs one response per prompt and at least one; got "
                         f"{len(prompts)} prompts and {len(responses)} responses")
    swapped = [swap_fn(p) for p in prompts]
    scores = {"proxy": [float(x) for x in score_fn(list(prompts), list(responses))],
              "proxy_swapped": [float(x) for x in score_fn(swapped, list(responses))],
              "gold": [gold_fn(p, r) for p, r in zip(prompts, responses)],
              "gold_swapped": [gold_fn(p, r) for p, r in zip(swapped, responses)]}
    n = len(prompts)
    result = {"n": n}
    for who in ("proxy", "gold"):
        own, other = scores[who], scores[f"{who}_swapped"]
        mean = sum(own) / n
        result[f"{who}_diff"] = sum(x - y for x, y in zip(own, other)) / n
        result[f"{who}_correct"] = sum(x > y for x, y in zip(own, other)) / n
        result[f"{who}_std"] = (sum((x - mean) ** 2 for x in own) / max(1, n - 1)) ** 0.5
    result["rows"] = [{"prompt": p, "swapped": q, "response": r, **{k: v[i] for k, v in scores.items()}}
                      for i, (p, q, r) in enumerate(zip(prompts, swapped, responses))]
    return result


def own_label_rows(ws, store_path, heldout_rows: list[dict], n_fallback: int = 20, seed: int = 0
                   ) -> tuple[list[dict], str]:
    """(rows, source): the A/B labels in the store at `store_path` as prompt/chosen/rejected rows, leaving out
    pairs whose prompt is among `heldout_rows`' (so that an evaluation on them stays held out). When there are
    none (no file, or nothing but ties and skips), `n_fallback` rows of the simulated labeller's on other prompts,
    drawn with `seed`. `source` says which: "your labels" or "the simulated labeller's labels"."""
    from .preferences import PreferenceStore

    held = {r["prompt"] for r in heldout_rows}
    rows = []
    if store_path is not None and Path(store_path).is_file():
        dataset, _ = PreferenceStore(store_path).export()
        rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in dataset
                if r["prompt"] not in held]
    if rows:
        return rows, "your labels"
    simulated = [r for r in preference_rows(ws) if r["prompt"] not in held]
    return random.Random(seed).sample(simulated, min(n_fallback, len(simulated))), "the simulated labeller's labels"


def train_small_reward_model(sft_dir, rows: list[dict], heldout_rows: list[dict], config: RewardConfig,
                             steps: int = 40, batch_size: int = 8, loss_fn: Callable = bradley_terry_loss,
                             pick_fn: Callable = rewards_at_last_token) -> dict:
    """A fresh reward model trained on `rows` alone (`steps` steps of `batch_size` pairs, else `config`'s
    settings), evaluated on `heldout_rows`: {"n_pairs", "accuracy" (against their labels), "gold_accuracy"}."""
    from dataclasses import replace

    small = replace(config, steps=steps, batch_size=min(batch_size, len(rows)))
    model, tokenizer = init_reward_model(sft_dir, seed=config.seed)
    train_reward_model(model, tokenizer, rows, small, loss_fn, pick_fn)
    held = evaluate_pairs(model, tokenizer, heldout_rows, config.max_len)
    return {"n_pairs": len(rows), "accuracy": held["accuracy"], "gold_accuracy": held["gold_accuracy"]}


@reusable(save=save_trained, load=load_trained_reward_model, needs=("world", "base", "sft"))
def train_reward_with_trl(sft_dir, rows: list[dict], config: RewardConfig, output_dir=None):
    """The same training with TRL's RewardTrainer (CPU-safe settings): returns (model, tokenizer, train_loss)."""
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    model, tokenizer = init_reward_model(sft_dir, seed=config.seed)
    args = trl_cpu_args(TRLRewardConfig, model, output_dir or tempfile.mkdtemp(prefix="trl-reward-"), config.steps,
                        config.batch_size, config.lr, config.seed, max_length=config.max_len)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                                 for r in rows])
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    return trainer.model.eval(), tokenizer, float(result.training_loss)
