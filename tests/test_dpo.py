import json
import math
import shutil

import pytest

from rlhf_kit.cli import main
from rlhf_kit.configs import DPOConfig
from rlhf_kit.dpo import STAT_KEYS, DPOTrainer, check_pairs, dpo_sweep, workspace_pairs
from rlhf_kit.evaluate import score_policy
from rlhf_kit.models import load_causal_lm
from rlhf_kit.preferences import PreferenceStore
from rlhf_kit.workspace import DONE_FILE, Workspace

GENRES = ["comedy", "horror", "drama", "western"]
JSON_KEYS = ("gold_reward_before", "gold_reward_after", "proxy_reward_before", "proxy_reward_after", "kl",
             "implicit_reward_accuracy", "implicit_gold_accuracy", "response_length_before", "response_length_after",
             "seconds")


def learnable_pairs(n=12):
    """A trivially learnable preference: chosen says 'great', rejected says 'awful'."""
    return [{"prompt": f"### Instruction:\nWrite a positive review of a {GENRES[i % 4]} about a dog.\n### Response:\n",
             "chosen": "great " * (1 + i % 3), "rejected": "awful " * (1 + i % 3)} for i in range(n)]


@pytest.mark.parametrize("bad, message", [
    (dict(beta=0.0), r"DPOConfig.beta must be a finite number > 0; got 0.0.*use e.g. beta=0.1"),
    (dict(beta=-0.1), r"DPOConfig.beta must be a finite number > 0; got -0.1"),
    (dict(beta=float("nan")), r"DPOConfig.beta must be a finite number > 0; got nan"),
    (dict(loss="hinge"), r"DPOConfig.loss must be one of 'sigmoid', 'ipo'; got 'hinge'"),
    (dict(epochs=0), r"DPOConfig.epochs must be a whole number >= 1"),
    (dict(lr=0.0), r"DPOConfig.lr must be a finite number > 0"),
])
def test_config_rejects_bad_values_naming_them(bad, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig(**bad)


def test_config_from_preset_takes_overrides(micro_preset):
    config = DPOConfig.from_preset(micro_preset, seed=2, beta=0.5, loss="ipo")
    assert (config.beta, config.loss, config.seed) == (0.5, "ipo", 2)
    assert config.batch_size == micro_preset.dpo_batch_size and config.max_new_tokens == micro_preset.max_new_tokens


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "chosen": "a"}, r"pair 2 has no 'rejected' column \(it has 'prompt', 'chosen'\)"),
    ({"prompt": "  ", "chosen": "a", "rejected": "b"}, r"pair 2: 'prompt' is '  ', an empty prompt"),
    ({"prompt": "p", "chosen": "", "rejected": "b"}, r"pair 2: 'chosen' is '', an empty chosen.*Remove the row"),
    ({"prompt": "p", "chosen": "a", "rejected": None}, r"pair 2: 'rejected' is None"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, r"pair 2: 'chosen' and 'rejected' are the same text"),
    ({"prompt": "p", "chosen": "a", "rejected": "a", "source": "you.jsonl, pair 7"},
     r"you.jsonl, pair 7: 'chosen' and 'rejected' are the same"),
    ("not a row", r"pair 2 is a str"),
])
def test_bad_pairs_are_named_with_the_fix(row, message):
    with pytest.raises(ValueError, match=message):
        check_pairs([{"prompt": "p", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(ValueError, match="no preference pairs"):
        check_pairs([])


def test_pad_equal_to_eos_is_refused_before_training(micro_ws):
    policy, tokenizer = load_causal_lm(micro_ws.path("sft"))
    tokenizer.pad_token = tokenizer.eos_token
    with pytest.raises(ValueError, match="pad token equals the eos token"):
        DPOTrainer(policy, tokenizer, learnable_pairs(), DPOConfig())


def test_reference_logps_are_computed_once_and_the_loss_falls(micro_ws):
    policy, tokenizer = load_causal_lm(micro_ws.path("sft"))
    pairs = learnable_pairs()
    calls = []
    ref = load_causal_lm(micro_ws.path("sft"))[0]
    ref.register_forward_hook(lambda module, args, output: calls.append(1))
    trainer = DPOTrainer(policy, tokenizer, pairs, DPOConfig(epochs=8, batch_size=4, lr=3e-3), ref_policy=ref)
    distinct = len({(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")})
    assert trainer.ref_sequences == distinct and len(calls) == 1          # one batch of every distinct response
    seen = []
    history = trainer.train(callback=lambda step, **stats: seen.append((step, stats)))
    assert len(history) == trainer.total_steps == 24 and [s for s, _ in seen] == list(range(1, 25))
    assert set(history[0]) == set(STAT_KEYS)
    assert trainer.ref_sequences == distinct and len(calls) == 1          # training never ran the reference
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)     # policy == reference at step 1
    first, last = history[0]["loss"], sum(s["loss"] for s in history[-4:]) / 4
    assert last < first - 0.1, (first, last)
    result = trainer.evaluate_pairs(pairs)
    assert result["accuracy"] == 1.0 and len(calls) == 1                  # evaluation hits the cache too
    with pytest.raises(RuntimeError, match="has run all its 24 steps"):
        trainer.step()


def test_ipo_trains_and_the_trainer_runs_the_functions_it_is_given(micro_ws):
    from rlhf_kit import losses

    policy, tokenizer = load_causal_lm(micro_ws.path("sft"))
    used = []

    def my_ipo(*args, **kwargs):
        used.append(1)
        return losses.ipo_loss(*args, **kwargs)

    trainer = DPOTrainer(policy, tokenizer, learnable_pairs(8), DPOConfig(loss="ipo", epochs=1, batch_size=4),
                         loss_fn=my_ipo)
    history = trainer.train()
    assert len(used) == len(history) == 2
    assert history[0]["loss"] == pytest.approx((0 - 1 / (2 * 0.1)) ** 2, rel=1e-4)      # margin 0, target 5
    assert trainer.whose()["loss_fn"].startswith("yours") and trainer.whose()["logprobs_fn"] == "the kit's"


def test_evaluate_samples_what_score_policy_samples(micro_ws):
    """Before training, the trainer's evaluation is `evaluate.score_policy` on the same prompts and seed, and its
    KL from the reference is exactly 0."""
    policy, tokenizer = load_causal_lm(micro_ws.path("sft"))
    trainer = DPOTrainer(policy, tokenizer, learnable_pairs(4), DPOConfig(max_new_tokens=12))
    prompts = [p["prompt"] for p in learnable_pairs(4)]
    ours = trainer.evaluate(prompts, seed=3)
    theirs = score_policy(policy, tokenizer, prompts, 12, 0.7, seed=3)
    assert [s["response"] for s in ours["samples"]] == [s["response"] for s in theirs["samples"]]
    assert ours["gold"] == theirs["gold"] and ours["kl"] == 0.0 and ours["response_length"] > 0


def _snapshot(root):
    """Every file under the workspace root and its bytes: what "nothing already built is touched" compares."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_dpo_builds_the_stage_and_bad_input_touches_nothing(micro_rm_ws, tmp_path, capsys):
    """`rlhf-kit dpo --json` on a copy of the tests' micro workspace (the shared one must not gain a `dpo` stage);
    then bad settings and bad label rows fail with a clear error before any training, and leave every built
    stage, the dpo one included, exactly as it was."""
    shutil.copytree(micro_rm_ws.root, tmp_path / micro_rm_ws.root.name)
    code = main(["dpo", "--beta", "0.1", "--epochs", "1", "--preset", "micro", "--workspace", str(tmp_path),
                 "--seed", "0", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(out.strip().splitlines()[-1])
    for key in JSON_KEYS:
        assert math.isfinite(metrics[key]), key
    assert metrics["beta"] == 0.1 and metrics["loss"] == "sigmoid" and metrics["steps"] >= 1
    assert 0 <= metrics["implicit_reward_accuracy"] <= 1 and metrics["n_heldout_pairs"] > 0
    assert metrics["ref_sequences"] <= 2 * (metrics["n_train_pairs"] + metrics["n_heldout_pairs"])
    ws = Workspace("micro", home=tmp_path, seed=0)
    stage = ws.require("dpo")
    policy, _ = load_causal_lm(stage)                                  # an ordinary save_pretrained policy
    assert policy is not None and json.loads((stage / "dpo.json").read_text())["config"]["beta"] == 0.1

    before = _snapshot(ws.root)
    code = main(["dpo", "--beta", "0", "--preset", "micro", "--workspace", str(tmp_path), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--beta 0.0: DPOConfig.beta must be a finite number > 0" in err
    with pytest.raises(ValueError, match="loss must be one of"):
        ws.build("dpo", loss="hinge")
    labels = ws.root / "labels" / "you.jsonl"
    prompt = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
    PreferenceStore(labels).record("p1", prompt, "A fine film.", "", "A", annotator="you")
    before_labels = _snapshot(ws.root)
    capsys.readouterr()
    train, heldout = workspace_pairs(ws, [labels])         # a sampled answer that was empty: left out, and said
    assert "A fine film." not in {r["chosen"] for r in train + heldout}
    said = capsys.readouterr().out
    assert "DPO leaves out 1 of" in said and "one of their two answers is empty" in said
    PreferenceStore(labels).record("p1", prompt, "A fine film.", "A fine film.", "A", annotator="you")
    with pytest.raises(ValueError, match=r"you.jsonl, pair 1: 'chosen' and 'rejected' are the same text"):
        ws.build("dpo", extra_stores=[labels])
    after = _snapshot(ws.root)
    assert {k: v for k, v in after.items() if not k.startswith("labels")} == before
    assert set(before_labels) == set(after)                           # no leftover temporary stage folder
    assert json.loads((stage / DONE_FILE).read_text())["beta"] == 0.1


def test_cli_dpo_bad_beta_builds_nothing(tmp_path, capsys):
    code = main(["dpo", "--preset", "ci", "--workspace", str(tmp_path), "--beta", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and "DPOConfig.beta must be a finite number > 0" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_dpo_sweep_measures_on_the_same_samples_as_ppo_s_sweep(micro_rm_ws):
    """Step 0 of every DPO run is the SFT policy measured exactly as `hacking.beta_sweep` measures it (same prompts,
    same random streams), so DPO's and PPO's points share lab 05's axes; each run ends at its last step."""
    from rlhf_kit.hacking import beta_sweep, heldout_prompts
    from rlhf_kit.ui.plots import overoptimisation_plot

    prompts = heldout_prompts(micro_rm_ws)[:2]
    dpo = dpo_sweep(micro_rm_ws, [0.1, 0.5], n_checkpoints=1, samples_per_prompt=2, prompts=prompts,
                    max_new_tokens=8)
    ppo = beta_sweep(micro_rm_ws, [0.05], steps=1, n_checkpoints=1, prompts=prompts, samples_per_prompt=2,
                     batch_size=4, minibatch_size=2, ppo_epochs=1, max_new_tokens=8)
    total = DPOTrainer.from_workspace(micro_rm_ws, DPOConfig.from_preset(micro_rm_ws.preset, 0)).total_steps
    train, heldout = workspace_pairs(micro_rm_ws)
    few = dpo_sweep(micro_rm_ws, [0.1], n_checkpoints=1, samples_per_prompt=1, prompts=prompts, max_new_tokens=8,
                    pairs=(train[:4], heldout[:2]), epochs=2)
    assert [row["step"] for row in few] == [0, 2] and few[-1]["epoch"] == 2.0    # 4 pairs, 2 epochs, batch 4
    assert [(row["beta"], row["step"]) for row in dpo] == [(0.1, 0), (0.1, total), (0.5, 0), (0.5, total)]
    start = dpo[0]
    assert start["kl"] == 0.0 and start["loss"] is None
    assert start["implicit_accuracy"] == start["implicit_gold_accuracy"] == 0.5          # every margin a tie
    assert [s["response"] for s in start["samples"]] == [s["response"] for s in ppo[0]["samples"]]
    assert start["gold"] == pytest.approx(ppo[0]["gold"]) and len(start["samples"]) == 4
    assert dpo[1]["epoch"] == pytest.approx(total * micro_rm_ws.preset.dpo_batch_size / len(
        DPOTrainer.from_workspace(micro_rm_ws).pairs))
    assert dpo[1]["kl"] > 0 and dpo[1]["loss"] is not None and 0 <= dpo[1]["train_accuracy"] <= 1
    alone = dpo_sweep(micro_rm_ws, [0.5], n_checkpoints=1, samples_per_prompt=2, prompts=prompts, max_new_tokens=8)
    assert {k: v for k, v in alone[0].items() if k != "samples"} == {k: v for k, v in dpo[2].items() if k != "samples"}
    assert alone[0]["samples"] == dpo[2]["samples"]          # step 0 measured once is step 0 measured again

    plot = overoptimisation_plot(ppo, None, dpo=dpo)
    proxy_ax, _ = plot.figure.axes
    assert [line.get_label() for line in proxy_ax.lines] == ["PPO beta = 0.05", "DPO beta = 0.1", "DPO beta = 0.5"]
