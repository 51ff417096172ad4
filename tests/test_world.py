import itertools
import math
import random
import statistics

import pytest

from rlhf_kit import grammar
from rlhf_kit import world as W
from rlhf_kit.world import (
    GENRES,
    SENTIMENTS,
    SUBJECTS,
    Attributes,
    SimulatedAnnotator,
    annotator_prob_a,
    build_world,
    calibrate_temperature,
    follows_format,
    format_prompt,
    gold_breakdown,
    gold_reward,
    load_world,
    make_review,
    parse_prompt,
    reference_pairs,
    save_world,
)

ALL_COMBOS = [Attributes(*c) for c in itertools.product(SENTIMENTS, GENRES, SUBJECTS)]
DOG = Attributes("positive", "comedy", "a dog")
CLEAN = "This comedy about a dog is wonderful. The acting is brilliant and the music is lovely. Truly delightful!"


@pytest.fixture(scope="module")
def small_world():
    return build_world(seed=0, n_corpus_docs=200, n_demos=300, n_heldout=32)


def combo(row):
    return (row["sentiment"], row["genre"], row["subject"])


# ----------------------------------------------------------------------------------------------- the world
def test_same_seed_same_world_and_different_seed_different(small_world):
    assert build_world(seed=0, n_corpus_docs=200, n_demos=300, n_heldout=32) == small_world
    other = build_world(seed=1, n_corpus_docs=200, n_demos=300, n_heldout=32)
    assert other.corpus != small_world.corpus
    assert other.demos != small_world.demos
    assert {combo(h) for h in other.heldout} != {combo(h) for h in small_world.heldout}


def test_sizes(small_world):
    assert len(small_world.corpus) == 200 and len(small_world.demos) == 300 and len(small_world.heldout) == 32
    assert len({h["prompt"] for h in small_world.heldout}) == 32      # all distinct while combos last


def test_corpus_is_plain_review_pages(small_world):
    for doc in small_world.corpus:
        assert "###" not in doc and "Instruction" not in doc and "Response" not in doc
    # pages hold several reviews, so they are longer than one review may be
    assert statistics.mean(len(W.words(d)) for d in small_world.corpus) > 60
    assert len(set(small_world.corpus)) == len(small_world.corpus)


def test_corpus_has_some_low_quality_reviews():
    rng = random.Random(0)
    reviews = [W._corpus_review(rng) for _ in range(1000)]
    bad = sum(not follows_format(r) for r in reviews) / len(reviews)
    assert 0.02 < bad < 0.15


def test_demos_match_their_attributes(small_world):
    for d in small_world.demos:
        assert parse_prompt(d["prompt"]) == Attributes(d["sentiment"], d["genre"], d["subject"])
        assert "###" not in d["response"]
        assert set(d["flaws"]) <= set(W.DEMO_FLAWS)
    assert len({d["response"] for d in small_world.demos}) > 0.95 * len(small_world.demos)


def test_demos_are_uneven_at_the_stated_rates():
    """Each flaw occurs at its DEMO_FLAWS rate, and the average lands well below the gold maximum of 2.5, with the
    clean demonstrations near it: the room that comparisons can take a policy into."""
    demos = build_world(seed=0, n_corpus_docs=1, n_demos=3000, n_heldout=1).demos
    for flaw, rate in W.DEMO_FLAWS.items():
        assert abs(statistics.mean(flaw in d["flaws"] for d in demos) - rate) < 0.03, flaw
    assert not any({"lukewarm", "mixed"} <= set(d["flaws"]) for d in demos)
    total = statistics.mean(gold_reward(d["prompt"], d["response"]) for d in demos)
    clean = statistics.mean(gold_reward(d["prompt"], d["response"]) for d in demos if not d["flaws"])
    assert 1.4 <= total <= 1.8 and clean > 2.2


@pytest.mark.parametrize("flaw, term, clean_value, flawed_below", [
    ("lukewarm", "sentiment", 0.6, 0.3), ("mixed", "sentiment", 0.75, 0.65), ("missed_topic", "topic", 1.0, 0.51),
    ("rambling", "length", 0.0, -0.4), ("unfinished", "ending", 0.5, -0.5 + 1e-9)])
def test_each_flaw_costs_its_gold_term(flaw, term, clean_value, flawed_below):
    """The demonstrations with exactly one flaw lose that flaw's term of the gold reward, and only that one."""
    demos = build_world(seed=1, n_corpus_docs=1, n_demos=3000, n_heldout=1).demos
    parts = lambda rows: [gold_breakdown(d["prompt"], d["response"]) for d in rows]  # noqa: E731
    clean = parts([d for d in demos if not d["flaws"]])
    flawed = parts([d for d in demos if d["flaws"] == [flaw]])
    assert len(flawed) > 50
    assert statistics.mean(p[term] for p in clean) >= clean_value
    assert statistics.mean(p[term] for p in flawed) <= flawed_below
    assert all(follows_format(d["response"]) for d in demos if not d["flaws"])


def test_heldout_combos_are_disjoint_from_demo_combos(small_world):
    held = {combo(h) for h in small_world.heldout}
    assert held and held.isdisjoint({combo(d) for d in small_world.demos})
    train, held_all = W.split_combinations(0)
    assert len(held_all) == round(0.2 * len(ALL_COMBOS)) and len(train) + len(held_all) == len(ALL_COMBOS)
    assert {(a.sentiment, a.genre, a.subject) for a in held_all} == held


def test_make_review_shape():
    rng = random.Random(0)
    for _ in range(300):
        attrs = W.random_attributes(rng)
        text = make_review(rng, attrs)
        assert text.endswith((".", "!")) and 2 <= sum(text.count(c) for c in ".!") <= 5
        assert 6 <= len(W.words(text)) <= 45
        assert attrs.genre in text and W.subject_noun(attrs.subject) in text
        assert W.repetition_rate(text) == 0
    assert len(W.words(make_review(rng, DOG, n_sentences=4))) > len(W.words(make_review(rng, DOG, n_sentences=2)))


def test_repetition_and_fluency_knobs_degrade_text():
    rng = random.Random(0)
    rep = statistics.mean(W.repetition_rate(make_review(rng, DOG, repetition=1.0)) for _ in range(100))
    assert rep > 0.2
    disfluent = [make_review(rng, DOG, fluency=0.2) for _ in range(100)]
    clean = [make_review(rng, DOG) for _ in range(100)]
    assert statistics.mean(follows_format(t) for t in disfluent) < 0.7
    assert statistics.mean(gold_reward(format_prompt(DOG), t) for t in disfluent) < \
        statistics.mean(gold_reward(format_prompt(DOG), t) for t in clean)


def test_vader_scores_the_sentiment_words():
    assert all(W.vader_compound(w) > 0 for w in W.POSITIVE_WORDS), \
        [w for w in W.POSITIVE_WORDS if W.vader_compound(w) <= 0]
    assert all(W.vader_compound(w) < 0 for w in W.NEGATIVE_WORDS), \
        [w for w in W.NEGATIVE_WORDS if W.vader_compound(w) >= 0]
    for sentiment, sign in (("positive", 1), ("negative", -1)):
        assert all(sign * W.vader_compound(p) > 0 for p in grammar._PHRASES[sentiment])
    # the plot and aspect fillers are neutral
    assert [x for x in W.ACTIONS + W.ASPECTS + W.INTENSIFIERS if W.vader_compound(x) != 0] == []


# ---------------------------------------------------------------------------------------------- the prompt
def test_parse_prompt_inverts_format_prompt():
    for attrs in ALL_COMBOS:
        assert parse_prompt(format_prompt(attrs)) == attrs
        assert parse_prompt(W.instruction_for(attrs)) == attrs
    assert W.instruction_for(DOG) == "Write a positive review of a comedy about a dog."
    assert format_prompt(DOG) == "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
    assert parse_prompt(format_prompt(Attributes("negative", "western", "an astronaut"))).subject == "an astronaut"


@pytest.mark.parametrize("bad", ["Tell me a joke.", "Write a neutral review of a comedy about a dog.", ""])
def test_parse_prompt_rejects_other_text(bad):
    with pytest.raises(ValueError, match="expected 'Write a <positive|negative> review") as err:
        parse_prompt(bad)
    assert repr(bad) in str(err.value)


# ---------------------------------------------------------------------------------------------- gold reward
def test_gold_rewards_the_asked_sentiment_topic_and_form():
    prompt = format_prompt(DOG)
    clean = gold_breakdown(prompt, CLEAN)
    assert clean["topic"] == 1.0 and clean["ending"] == 0.5 and clean["repetition"] == 0
    assert 2.0 <= clean["total"] <= 2.5 and follows_format(CLEAN)
    assert gold_reward(prompt, CLEAN) > gold_reward(format_prompt(Attributes("negative", "comedy", "a dog")), CLEAN)
    assert gold_reward(prompt, CLEAN) - 0.9 > gold_reward(
        prompt, "This western about a pirate is wonderful. The acting is brilliant and the music is lovely.")
    assert gold_reward(prompt, CLEAN) > gold_reward(prompt, CLEAN.rstrip("!")) + 0.9
    assert not follows_format(CLEAN.rstrip("!"))
    leaked = CLEAN + " ### Instruction: Write"
    assert gold_reward(prompt, CLEAN) > gold_reward(prompt, leaked) + 1.0 and not follows_format(leaked)


def test_gold_penalises_loops_and_bad_length():
    prompt = format_prompt(DOG)
    loop = "great " * 30
    parts = gold_breakdown(prompt, loop)
    assert parts["repetition"] < -1.8 and not follows_format(loop)
    assert gold_reward(prompt, loop) < 0
    assert W.repetition_rate(loop) == pytest.approx(27 / 28)
    assert gold_breakdown(prompt, "Great comedy!")["length"] == -0.5 and not follows_format("Great comedy!")
    two_reviews = "This comedy about a dog is great. Truly lovely!\nI hated this horror. What a waste of time."
    assert not follows_format(two_reviews) and follows_format(two_reviews.split("\n")[0])
    assert follows_format(CLEAN + "\n")                                  # a trailing newline is not a second review
    long = " ".join(make_review(random.Random(i), DOG, n_sentences=4) for i in range(4))
    assert len(W.words(long)) > 50 and gold_breakdown(prompt, long)["length"] == -0.5
    assert gold_breakdown(prompt, "")["total"] == -1.0


def test_gold_breakdown_components_sum_to_total():
    rng = random.Random(0)
    for prompt, a, b in reference_pairs(seed=3, n=30):
        for response in (a, b, make_review(rng, DOG, repetition=0.5, fluency=0.5)):
            parts = gold_breakdown(prompt, response)
            total = parts.pop("total")
            assert set(parts) == {"sentiment", "topic", "ending", "length", "repetition", "new_block"}
            assert math.isclose(sum(parts.values()), total) and total == gold_reward(prompt, response)


def test_topic_matches_whole_words_case_insensitively():
    prompt = format_prompt(Attributes("positive", "drama", "a dog"))
    assert gold_breakdown(prompt, "DRAMA with a Dog, lovely.")["topic"] == 1.0
    assert gold_breakdown(prompt, "A melodramatic dogma, lovely.")["topic"] == 0.0


def test_base_model_like_rambles_score_lower_than_demos(small_world):
    rng = random.Random(0)
    prompts = [format_prompt(W.random_attributes(rng)) for _ in small_world.corpus]
    ramble = statistics.mean(gold_reward(p, doc) for p, doc in zip(prompts, small_world.corpus))
    demo = statistics.mean(gold_reward(d["prompt"], d["response"]) for d in small_world.demos)
    assert ramble < demo - 1.0
    assert statistics.mean(follows_format(doc) for doc in small_world.corpus) < 0.2


# ------------------------------------------------------------------------------------------------ annotator
def test_annotator_prob_a():
    assert annotator_prob_a(1.0, 1.0, 0.5) == 0.5
    assert annotator_prob_a(2.0, 1.0, 1.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert annotator_prob_a(-1000.0, 1000.0, 0.1) == pytest.approx(0.0)   # no overflow
    assert annotator_prob_a(2.0, 1.0, 0.1) > annotator_prob_a(2.0, 1.0, 10.0)


def test_calibrate_temperature_hits_the_target():
    diffs = [0.1, -0.5, 1.0, 2.0, -3.0, 0.0, 0.25]
    for target in (0.6, 0.73, 0.9):
        t = calibrate_temperature(diffs, target)
        agreement = statistics.mean(1 / (1 + math.exp(-abs(d) / t)) for d in diffs if d != 0)
        assert abs(agreement - target) < 1e-3
    # one difference: closed form T = d / logit(target)
    assert calibrate_temperature([1.5], 0.73) == pytest.approx(1.5 / math.log(0.73 / 0.27), rel=1e-6)


@pytest.mark.parametrize("target", [0.5, 1.0, 0.3, 1.2])
def test_calibrate_temperature_rejects_impossible_targets(target):
    with pytest.raises(ValueError, match=r"\(0.5, 1\)"):
        calibrate_temperature([1.0, 2.0], target)
    with pytest.raises(ValueError):
        calibrate_temperature([0.0, 0.0])


def test_reference_pairs_are_seeded_and_mixed():
    pairs = reference_pairs(seed=0, n=200)
    assert pairs == reference_pairs(seed=0, n=200) and pairs != reference_pairs(seed=1, n=200)
    responses = [r for _, a, b in pairs for r in (a, b)]
    assert 0.2 < statistics.mean(not follows_format(r) for r in responses) < 0.6
    assert all(parse_prompt(p) for p, _, _ in pairs)


def test_simulated_annotator_agrees_73_percent():
    annotator = SimulatedAnnotator()
    assert 0.05 < annotator.temperature < 5
    pairs = reference_pairs(seed=0)
    agree, n = 0, 0
    for i in range(2000):
        prompt, a, b = pairs[i % len(pairs)]
        ga, gb = gold_reward(prompt, a), gold_reward(prompt, b)
        if ga == gb:
            continue
        agree += (annotator.prefer(prompt, a, b) == "A") == (ga > gb)
        n += 1
    assert n > 1500 and abs(agree / n - 0.73) < 0.04


def test_simulated_annotator_temperature_and_seed():
    prompt = format_prompt(DOG)
    worse = "This western about a pirate is boring"
    cold, hot = SimulatedAnnotator(temperature=0.01), SimulatedAnnotator(temperature=100.0)
    assert cold.temperature == 0.01 and hot.temperature == 100.0
    assert cold.prob_a(prompt, CLEAN, worse) > 0.999 and abs(hot.prob_a(prompt, CLEAN, worse) - 0.5) < 0.02
    assert all(cold.prefer(prompt, CLEAN, worse) == "A" for _ in range(20))
    assert all(cold.prefer(prompt, worse, CLEAN) == "B" for _ in range(20))
    a1, a2 = SimulatedAnnotator(temperature=2.0, seed=7), SimulatedAnnotator(temperature=2.0, seed=7)
    seq = [a1.prefer(prompt, CLEAN, worse) for _ in range(50)]
    assert seq == [a2.prefer(prompt, CLEAN, worse) for _ in range(50)] and len(set(seq)) == 2
    assert SimulatedAnnotator(target_agreement=0.9).temperature < SimulatedAnnotator().temperature


# ------------------------------------------------------------------------------------------------ save/load
def test_save_load_round_trip(tmp_path, small_world):
    save_world(small_world, tmp_path / "world")
    assert load_world(tmp_path / "world") == small_world


def test_load_world_missing_files_say_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"corpus\.jsonl.*rlhf-kit pretrain.*ensure\('world'\)"):
        load_world(tmp_path)


def test_files_load_with_datasets(tmp_path, small_world):
    datasets = pytest.importorskip("datasets")
    save_world(small_world, tmp_path)
    cache = str(tmp_path / "hf-cache")
    demos = datasets.load_dataset("json", data_files=str(tmp_path / "demos.jsonl"), split="train", cache_dir=cache)
    assert {"prompt", "response"} <= set(demos.column_names) and len(demos) == len(small_world.demos)
    assert demos[0]["response"] == small_world.demos[0]["response"]
    corpus = datasets.load_dataset("json", data_files=str(tmp_path / "corpus.jsonl"), split="train", cache_dir=cache)
    assert corpus["text"] == small_world.corpus
    heldout = datasets.load_dataset("json", data_files=str(tmp_path / "heldout.jsonl"), split="train",
                                    cache_dir=cache)
    assert heldout["prompt"] == [h["prompt"] for h in small_world.heldout]


def test_demo_flaw_rates_counts_each_flaw_and_the_flawless(small_world):
    rates = W.demo_flaw_rates(small_world)
    assert set(rates) == {*W.DEMO_FLAWS, "none"}
    n = len(small_world.demos)
    assert rates["none"] == sum(not d["flaws"] for d in small_world.demos) / n
    assert rates["lukewarm"] == sum("lukewarm" in d["flaws"] for d in small_world.demos) / n
