import math

import pytest

from rlhf_kit import trl_dpo as module
from rlhf_kit.configs import DPOConfig
from rlhf_kit.dpo import workspace_pairs
from rlhf_kit.models import load_causal_lm
from rlhf_kit.sft import tokenize_demo
from rlhf_kit.trl_dpo import CPU_LOSS_TYPES, ROW_KEYS, kit_row, loss_type_table, make_trl_trainer, trl_dpo
from rlhf_kit.world import load_world

GENRES = ["comedy", "horror", "drama", "western", "romance", "thriller"]


def learnable_pairs(genres):
    """A preference both trainers can learn in a few steps: chosen says 'great', rejected says 'awful'."""
    return [{"prompt": f"### Instruction:\nWrite a positive review of a {genre} about a dog.\n### Response:\n",
             "chosen": "great " * (1 + i % 3), "rejected": "awful " * (1 + i % 3)} for i, genre in enumerate(genres)]


def test_unknown_loss_type_is_refused_before_anything_is_trained(micro_rm_ws, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a model was loaded: the loss_type was checked too late")

    monkeypatch.setattr(module, "load_causal_lm", no_training)
    for call in (lambda: trl_dpo(micro_rm_ws, "dpo"),
                 lambda: loss_type_table(micro_rm_ws, loss_types=("sigmoid", "kto"))):
        with pytest.raises(ValueError, match=r"loss_type='(dpo|kto)' is not one of TRL's DPO losses that run here: "
                                             r"'sigmoid', 'hinge', 'ipo'.*'sigmoid_norm'"):
            call()
    with pytest.raises(ValueError, match="DPOConfig.loss must be one of 'sigmoid', 'ipo'; got 'hinge'"):
        kit_row(micro_rm_ws, "hinge")


def test_trl_reads_our_pairs_as_the_kit_tokenizes_them(micro_rm_ws):
    """The module docstring's claim: on the course's text TRL's ids and response masks are `tokenize_demo`'s (eos
    appended as text parses to the eos id; the prompt's final newline never merges into the response)."""
    world = load_world(micro_rm_ws.require("world"))
    demos = world.demos[:20]
    rows = [{"prompt": d["prompt"], "chosen": d["response"], "rejected": demos[i - 1]["response"]}
            for i, d in enumerate(demos) if d["response"] != demos[i - 1]["response"]]
    rows += workspace_pairs(micro_rm_ws)[0]
    policy, tokenizer = load_causal_lm(micro_rm_ws.require("sft"))
    ref, _ = load_causal_lm(micro_rm_ws.require("sft"))
    config = DPOConfig.from_preset(micro_rm_ws.preset)
    trainer = make_trl_trainer(policy, ref, tokenizer, rows, config)
    assert len(trainer.train_dataset) == len(rows)
    for row, example in zip(rows, trainer.train_dataset):
        for side in ("chosen", "rejected"):
            ids, mask = tokenize_demo(tokenizer, row["prompt"], row[side], 10**6)     # TRL cuts in its collator
            theirs = example["prompt_ids"] + example[f"{side}_ids"]
            assert theirs == ids and [0] * len(example["prompt_ids"]) + [1] * len(example[f"{side}_ids"]) == mask
            assert theirs[-1] == tokenizer.eos_token_id and theirs[0] != tokenizer.bos_token_id      # eos, no BOS


def test_trl_sigmoid_row_starts_at_log2_from_trls_own_log(micro_rm_ws):
    logged = []
    row = trl_dpo(micro_rm_ws, "sigmoid", callback=lambda step, **stats: logged.append((step, stats)))
    assert list(row) == list(ROW_KEYS) and row["trainer"] == "TRL" and row["loss_type"] == "sigmoid"
    for key in ROW_KEYS[2:]:
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), key
    train_rows = workspace_pairs(micro_rm_ws)[0]
    preset = micro_rm_ws.preset
    assert row["steps"] == math.ceil(preset.dpo_epochs * len(train_rows) / preset.dpo_batch_size) == len(logged)
    assert [step for step, _ in logged] == list(range(1, row["steps"] + 1))
    first = logged[0][1]                                        # what TRL logged for step 1, through the callback
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)            # policy == reference at step 1
    assert first["margin"] == 0 and first["accuracy"] == 0
    assert row["first_loss"] == round(first["loss"], 4) and row["beta"] == preset.dpo_beta
    assert 0 <= row["implicit_accuracy"] <= 1 and 0 <= row["format_rate"] <= 1 and row["response_length"] > 0


def test_kit_and_trl_move_the_implicit_reward_the_same_way(micro_rm_ws):
    """Both trainers on the same learnable pairs, measured on held-out prompts: the policy's implicit reward must
    rank 'great' over 'awful' for both (it is 0 before training; a swapped column, a TRL run that trained nothing,
    or measuring the reference instead of the trained policy would fail), and both losses fall."""
    pairs = (learnable_pairs(GENRES[:4] * 3), learnable_pairs(GENRES[4:]))
    overrides = dict(epochs=4, lr=3e-3, pairs=pairs)
    rows = [kit_row(micro_rm_ws, "sigmoid", **overrides), trl_dpo(micro_rm_ws, "sigmoid", **overrides)]
    assert [r["trainer"] for r in rows] == ["kit", "TRL"] and rows[0]["steps"] == rows[1]["steps"] == 12
    for row in rows:
        assert row["implicit_accuracy"] == 1.0 and row["implicit_margin"] > 0.1, row
        assert row["final_loss"] < row["first_loss"] - 0.1 and row["kl"] > 0, row


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", CPU_LOSS_TYPES)
def test_every_cpu_loss_type_runs_a_step(micro_rm_ws, loss_type):
    train_rows, heldout_rows = workspace_pairs(micro_rm_ws)
    batch = micro_rm_ws.preset.dpo_batch_size
    row = trl_dpo(micro_rm_ws, loss_type, epochs=1, pairs=(train_rows[:batch], heldout_rows))
    assert row["steps"] == 1 and row["loss_type"] == loss_type
    assert all(math.isfinite(row[key]) for key in ROW_KEYS[2:])


def test_loss_type_table_puts_the_kit_first(micro_rm_ws):
    train_rows, heldout_rows = workspace_pairs(micro_rm_ws)
    table = loss_type_table(micro_rm_ws, loss_types=("sigmoid", "hinge"), epochs=1,
                            pairs=(train_rows[:8], heldout_rows))
    assert [(r["trainer"], r["loss_type"]) for r in table] == [("kit", "sigmoid"), ("kit", "ipo"), ("TRL", "sigmoid"),
                                                              ("TRL", "hinge")]
    assert {r["steps"] for r in table} == {2}
    assert table[1]["first_loss"] == pytest.approx(25.0, rel=1e-3)        # the kit's IPO: (0 - 1/(2 beta))^2
