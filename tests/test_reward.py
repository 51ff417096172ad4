import json

import pytest
import torch

from rlhf_kit.collect import candidate_pairs
from rlhf_kit.preferences import PreferenceStore
from rlhf_kit.reward import (
    RewardConfig,
    RewardScorer,
    calibration,
    evaluate_pairs,
    init_reward_model,
    ood_probe,
    preference_rows,
    sequence_rewards,
    split_by_prompt,
    tokenize_texts,
    train_reward_model,
)


def test_candidate_pairs_cover_every_pair_once():
    pairs = candidate_pairs([{"prompt": "p", "responses": ["a", "b", "c", "a"]}], seed=0)
    assert len(pairs) == 3                                   # duplicates dropped: 3 distinct -> 3 pairs
    assert {frozenset((q["response_a"], q["response_b"])) for q in pairs} == {
        frozenset("ab"), frozenset("ac"), frozenset("bc")}
    assert len({q["pair_id"] for q in pairs}) == 3


def test_preferences_stage_labels_every_pair_durably(micro_rm_ws):
    ws = micro_rm_ws
    metrics = ws.metrics("preferences")
    decisions = PreferenceStore(ws.path("preferences") / "simulated.jsonl").load()
    assert len(decisions) == metrics["n_pairs"] > 0
    assert {d["choice"] for d in decisions} <= {"A", "B"}
    assert all(d["settings"]["temperature"] == ws.preset.pref_temperature for d in decisions)
    assert 0 <= metrics["annotator_gold_agreement"] <= 1


def test_reward_stage_metrics_and_artifacts(micro_rm_ws):
    metrics = micro_rm_ws.metrics("reward")
    for key in ("n_pairs", "heldout_accuracy", "gold_accuracy", "annotator_gold_agreement", "seconds"):
        assert key in metrics
    assert metrics["n_train_pairs"] + metrics["n_heldout_pairs"] == metrics["n_pairs"]
    path = micro_rm_ws.path("reward")
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"] and config["pad_token_id"] is not None


def test_sequence_rewards_match_transformers_pooling(micro_ws):
    """Reading the head at the last real token is what AutoModelForSequenceClassification itself returns."""
    model, tok = init_reward_model(micro_ws.path("sft"))
    batch = tokenize_texts(tok, ["a prompt ", "another, longer prompt "], ["x", "a longer response here"], 64)
    ours = sequence_rewards(model, batch["input_ids"], batch["attention_mask"])
    theirs = model(**batch).logits.squeeze(-1)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert (batch["input_ids"][0] == tok.pad_token_id).any()   # the check is meaningful: row 0 is padded


def test_training_on_a_learnable_signal_orders_pairs(micro_ws):
    """On a trivially learnable preference (chosen says 'great', rejected says 'awful'), accuracy rises."""
    genres = ["comedy", "horror", "drama", "western"]
    rows = [{"prompt": f"### Instruction:\nWrite a positive review of a {genres[i % 4]} about a dog.\n### Response:\n",
             "chosen": "great " * (1 + i % 3), "rejected": "awful " * (1 + i % 3)} for i in range(24)]
    # lr 3e-3 for 30 steps passed or failed with the head's random draw (it ended oscillating for seed 0, at 42%
    # held-out accuracy); 1e-3 for 40 steps orders every pair for head seeds 0, 1 and 2.
    model, tok = init_reward_model(micro_ws.path("sft"), seed=0)
    history = []
    train_reward_model(model, tok, rows, RewardConfig(steps=40, batch_size=8, lr=1e-3),
                       callback=lambda step, loss, accuracy: history.append(accuracy))
    assert evaluate_pairs(model, tok, rows, 64)["accuracy"] == 1.0
    assert history[-1] >= history[0]


def test_split_by_prompt_keeps_prompts_on_one_side():
    rows = [{"prompt": f"p{i % 10}", "chosen": "a", "rejected": "b"} for i in range(50)]
    train, held = split_by_prompt(rows, 0.2, seed=0)
    assert {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in held})
    assert len(train) + len(held) == 50 and len({r["prompt"] for r in held}) == 2


def test_calibration_bins_count_every_pair():
    bins = calibration(torch.linspace(-4, 4, 200), bins=8)
    assert sum(b["n"] for b in bins) == 200
    assert all(0 <= b["observed"] <= 1 for b in bins)


def test_scorer_normalises_and_probe_scores_every_kind(micro_rm_ws):
    scorer = RewardScorer(micro_rm_ws.path("reward"))
    prompt = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
    raw, normalised = scorer.raw([prompt], ["Fun."]), scorer([prompt], ["Fun."])
    assert torch.allclose(normalised, (raw - scorer.mean) / scorer.std)
    rows = ood_probe(scorer, [prompt])
    assert {r["kind"] for r in rows} == {"clean review", "looped word", "repeated sentence", "run-on", "cut off"}
    looped = next(r for r in rows if r["kind"] == "looped word")
    clean = next(r for r in rows if r["kind"] == "clean review")
    assert looped["gold"] < clean["gold"] - 2      # the gold scorer punishes the loop


def test_no_pairs_is_a_clear_error(micro_ws):
    model, tok = init_reward_model(micro_ws.path("sft"))
    with pytest.raises(ValueError, match="No preference pairs"):
        train_reward_model(model, tok, [], RewardConfig(steps=1))


def test_learner_labels_are_added_to_training_rows(micro_rm_ws, tmp_path):
    store = PreferenceStore(tmp_path / "you.jsonl")
    store.record("p1", "a prompt", "good", "bad", "A", annotator="you")
    store.record("p2", "a prompt", "meh", "fine", "tie", annotator="you")
    base = len(preference_rows(micro_rm_ws))
    rows = preference_rows(micro_rm_ws, [tmp_path / "you.jsonl"])
    assert len(rows) == base + 1 and rows[-1] == {"prompt": "a prompt", "chosen": "good", "rejected": "bad"}


def test_not_a_kit_reward_model_is_a_clear_error(micro_ws):
    with pytest.raises(ValueError, match="no normalisation.json"):
        RewardScorer(micro_ws.path("sft"))
