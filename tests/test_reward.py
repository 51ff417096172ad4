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
    own_label_rows,
    preference_rows,
    sentiment_swap_probe,
    sequence_rewards,
    split_by_prompt,
    swap_sentiment,
    tokenize_texts,
    train_reward_model,
    train_small_reward_model,
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


# ------------------------------------------------------------------------------ lab 03's swap probe and small run
POSITIVE = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
NEGATIVE = "### Instruction:\nWrite a negative review of a comedy about a dog.\n### Response:\n"


def test_swap_sentiment_flips_the_request_and_keeps_the_rest():
    assert swap_sentiment(POSITIVE) == NEGATIVE and swap_sentiment(NEGATIVE) == POSITIVE
    bare = "Write a negative review of a musical about an astronaut."
    assert swap_sentiment(bare) == "Write a positive review of a musical about an astronaut."
    with pytest.raises(ValueError, match="Cannot parse"):
        swap_sentiment("Write a lukewarm review of a comedy about a dog.")


def _clean_reviews(n=24):
    import random

    from rlhf_kit.world import format_prompt, make_review, random_attributes

    rng = random.Random(5)
    prompts, responses = [], []
    for _ in range(n):
        attrs = random_attributes(rng)
        prompts.append(format_prompt(attrs))
        responses.append(make_review(rng, attrs))
    return prompts, responses


def test_sentiment_swap_probe_tells_a_sign_checking_scorer_from_a_blind_one():
    from rlhf_kit.world import gold_reward, vader_compound

    prompts, responses = _clean_reviews()

    def checks_the_sign(ps, rs):              # the gold reward itself, as a scorer
        return torch.tensor([gold_reward(p, r) for p, r in zip(ps, rs)])

    def blind(ps, rs):                        # scores the response's sentiment, whatever was asked
        return torch.tensor([vader_compound(r) for r in rs])

    good = sentiment_swap_probe(checks_the_sign, prompts, responses)
    assert good["n"] == len(prompts) and good["gold_correct"] == 1.0 and good["gold_diff"] > 1
    assert good["proxy_correct"] == good["gold_correct"] and good["proxy_diff"] == pytest.approx(good["gold_diff"])
    bad = sentiment_swap_probe(blind, prompts, responses)
    assert bad["proxy_diff"] == 0 and bad["proxy_correct"] == 0.0       # ties are not "correct"
    assert bad["proxy_std"] > 0 and bad["gold_diff"] == pytest.approx(good["gold_diff"])
    row = bad["rows"][0]
    assert row["swapped"] == swap_sentiment(row["prompt"]) and row["gold"] - row["gold_swapped"] == pytest.approx(
        2 * (1 if "positive" in row["prompt"] else -1) * vader_compound(row["response"]))
    with pytest.raises(ValueError, match="one response per prompt"):
        sentiment_swap_probe(blind, prompts, responses[:-1])


def test_own_label_rows_keep_held_out_prompts_out_and_fall_back_to_simulated_labels(micro_rm_ws, tmp_path):
    store = PreferenceStore(tmp_path / "you.jsonl")
    store.record("p1", "held-out prompt", "good", "bad", "A", annotator="you")
    store.record("p2", "train prompt", "meh", "fine", "B", annotator="you")
    store.record("p3", "train prompt", "x", "y", "tie", annotator="you")
    heldout = [{"prompt": "held-out prompt", "chosen": "a", "rejected": "b"}]
    rows, source = own_label_rows(micro_rm_ws, tmp_path / "you.jsonl", heldout)
    assert rows == [{"prompt": "train prompt", "chosen": "fine", "rejected": "meh"}] and source == "your labels"
    simulated = preference_rows(micro_rm_ws)
    held = [simulated[0]]
    rows, source = own_label_rows(micro_rm_ws, tmp_path / "nobody.jsonl", held, n_fallback=5)
    assert source == "the simulated labeller's labels" and len(rows) == min(5, len(simulated) - 1)
    assert all(r in simulated and r["prompt"] != held[0]["prompt"] for r in rows)
    assert own_label_rows(micro_rm_ws, None, held, n_fallback=5) == (rows, source)   # seeded: the same draw


def test_train_small_reward_model_learns_from_its_rows_alone(micro_ws):
    """A fresh model on a few learnable pairs orders them, and only them: the result is measured, not copied."""
    genres = ["comedy", "horror", "drama", "western"]
    rows = [{"prompt": f"### Instruction:\nWrite a positive review of a {genres[i % 4]} about a dog.\n### Response:\n",
             "chosen": "great " * (1 + i % 3), "rejected": "awful " * (1 + i % 3)} for i in range(24)]
    config = RewardConfig(steps=1, batch_size=8, lr=1e-3, max_len=64)
    result = train_small_reward_model(micro_ws.path("sft"), rows, rows, config, steps=40, batch_size=8)
    assert result["n_pairs"] == 24 and result["accuracy"] == 1.0 and result["gold_accuracy"] == 1.0
    flipped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    result = train_small_reward_model(micro_ws.path("sft"), flipped, rows, config, steps=40, batch_size=8)
    assert result["accuracy"] == 0.0 and result["gold_accuracy"] == 0.0   # trained on reversed labels
