"""Lab 07's GRPO and RLOO stage, command line, verifier reward and the "why is my GRPO loss zero" measurement.
(The trainer's group advantages, critic-free update and two-process run are tested in test_ppo.py.)"""

import json
import math
import shutil

import pytest
import torch

from rlhf_kit import losses
from rlhf_kit.cli import main
from rlhf_kit.grpo import first_step_updates, grpo_config, reward_function, verifier_scores
from rlhf_kit.models import load_causal_lm
from rlhf_kit.world import gold_breakdown, verifier_reward

PROMPT = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
NEGATIVE = PROMPT.replace("positive", "negative")


def test_the_verifier_checks_format_and_topic_but_cannot_see_sentiment():
    loved, hated = "A fun comedy about a dog. I loved it.", "A dull comedy about a dog. I hated it."
    assert verifier_reward(PROMPT, loved) == verifier_reward(PROMPT, hated) == 1.5       # blind to sentiment
    assert gold_breakdown(PROMPT, loved)["total"] > gold_breakdown(PROMPT, hated)["total"]   # gold is not
    assert verifier_reward(PROMPT, "A fun film about a cat. I loved it.") == 0.5          # topic missed
    assert verifier_reward(PROMPT, "A fun comedy about a dog") == 1.0 - 0.5             # no ending
    assert verifier_reward(PROMPT, "comedy dog") == 1.0 - 0.5 - 0.5                     # too short, unfinished
    scores = verifier_scores([PROMPT, NEGATIVE], [loved, hated])
    assert scores.shape == (2,) and scores.tolist() == [1.5, 1.5]


def test_grpo_config_is_ppos_settings_with_a_group(micro_rm_ws):
    preset = micro_rm_ws.preset
    config = grpo_config(micro_rm_ws, "rloo")
    assert (config.estimator, config.group_size, config.kl_in) == ("rloo", preset.grpo_group_size, "reward")
    assert (config.batch_size, config.steps, config.lr, config.beta) == (preset.ppo_batch_size, preset.ppo_steps,
                                                                         preset.ppo_lr, preset.ppo_beta)
    assert grpo_config(micro_rm_ws).kl_in == "loss"
    with pytest.raises(ValueError, match="group_size=3 must divide batch_size"):
        grpo_config(micro_rm_ws, group_size=3)
    with pytest.raises(ValueError, match="reward must be one of rm, verifier"):
        reward_function("gold")


def test_first_step_the_loss_is_near_zero_while_the_gradient_is_not(micro_rm_ws):
    """On the first minibatch the ratio is exactly 1, so the loss is -(token mean of A): each group's advantages
    sum to zero, so it is small (not exactly 0: the token mean weighs each response by its length, and a minibatch
    holds parts of groups); the gradient norm is not small."""
    rows = first_step_updates(micro_rm_ws, steps=1, batch_size=8, minibatch_size=8, ppo_epochs=2, beta=0.0,
                              lr=1e-3, max_new_tokens=8, no_eos_penalty=None)   # 8 tokens: no eos yet
    assert [row["epoch"] for row in rows] == [1, 2]
    first = rows[0]
    assert first["ratio_max_abs_dev"] == 0.0 and first["update"] == 1
    assert abs(first["loss"]) < 0.5 * first["grad_norm"], first
    assert first["grad_norm"] > 0.05


def test_cli_grpo_json_reports_ppos_keys_and_the_group_size(micro_rm_ws, capsys, tmp_path):
    shutil.copytree(micro_rm_ws.root, tmp_path / micro_rm_ws.root.name)
    code = main(["grpo", "--preset", "micro", "--workspace", str(tmp_path), "--group-size", "2", "--estimator",
                 "rloo", "--reward", "verifier", "--steps", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(out.strip().splitlines()[-1])
    for key in ("gold_before", "gold_after", "proxy_before", "proxy_after", "kl", "seconds", "train_seconds"):
        assert math.isfinite(metrics[key]), key
    assert (metrics["group_size"], metrics["estimator"], metrics["reward"], metrics["steps"]) == (2, "rloo",
                                                                                                 "verifier", 2)
    stage = tmp_path / micro_rm_ws.root.name / "grpo"
    policy, _ = load_causal_lm(stage)
    assert policy is not None and json.loads((stage / "ppo.json").read_text())["config"]["estimator"] == "rloo"


@pytest.mark.parametrize("argv, message", [
    (["--group-size", "1"], "--group-size 1: PPOConfig.group_size=1 with estimator='grpo'"),
    (["--group-size", "3"], "group_size=3 must divide batch_size"),
    (["--beta", "-1"], "--beta -1.0: PPOConfig.beta must be a finite number >= 0"),
])
def test_cli_grpo_bad_input_is_one_clear_error_before_any_work(tmp_path, capsys, argv, message):
    code = main(["grpo", "--preset", "micro", "--workspace", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())


def test_group_advantages_worked_examples():
    rewards = torch.tensor([1.0, 2, 3, 6, 0, 0])
    advantages, stats = losses.group_relative_advantages(rewards, 3)
    assert torch.allclose(advantages, torch.tensor([-1.0, 0, 1, 1.1547, -0.5774, -0.5774]), atol=1e-4)
    assert torch.allclose(stats["group_std"], torch.tensor([1.0, 3.4641]), atol=1e-4)
    assert torch.equal(losses.group_relative_advantages(rewards, 3, normalize_std=False)[0],
                       torch.tensor([-1.0, 0, 1, 4, -2, -2]))
    assert torch.equal(losses.rloo_advantages(rewards, 3), torch.tensor([-1.5, 0, 1.5, 6, -3, -3]))
    constant, stats = losses.group_relative_advantages(torch.tensor([2.0, 2.0, 1.0, 3.0]), 2)
    assert torch.equal(constant[:2], torch.zeros(2)) and stats["zero_std_groups"].item() == 0.5
    with pytest.raises(ValueError, match="group_size must be a whole number >= 2"):
        losses.rloo_advantages(rewards, 1)
    with pytest.raises(ValueError, match="multiple of group_size 4"):
        losses.group_relative_advantages(rewards, 4)


def test_baseline_noise_group_baselines_cut_the_noise_and_leave_one_out_removes_the_shrink():
    from rlhf_kit.grpo import baseline_noise

    noise = baseline_noise({"none": None, "batch": "batch",
                            "group": lambda r, g: r - losses.group_relative_advantages(r, g, False)[0],
                            "rloo": lambda r, g: r - losses.rloo_advantages(r, g)}, trials=300)
    assert noise.loc["group", "gradient noise"] < 0.5 * noise.loc["batch", "gradient noise"]
    assert noise.loc["rloo", "gradient noise"] < 0.5 * noise.loc["none", "gradient noise"]
    assert noise.loc["rloo", "bias"] < noise.loc["group", "bias"]        # the group mean shrinks by (G - 1) / G


def test_kit_rl_rows_measure_each_run_the_same_way(micro_rm_ws):
    """PPO and GRPO at equal samples and steps, then the SFT row: the same keys, finite figures, KL 0 for SFT,
    and the run's own samples kept for the term breakdown."""
    from rlhf_kit.grpo import ROW_KEYS, kit_rl, rl_table, sft_row

    tiny = dict(steps=2, batch_size=8, minibatch_size=4, max_new_tokens=8)
    rows = [sft_row(micro_rm_ws, samples_per_prompt=1),
            kit_rl(micro_rm_ws, "gae", grpo_config(micro_rm_ws, "gae", **tiny), samples_per_prompt=1),
            kit_rl(micro_rm_ws, "grpo", grpo_config(micro_rm_ws, "grpo", group_size=4, **tiny), reward="verifier",
                   samples_per_prompt=1)]
    assert all(set(ROW_KEYS) <= set(row) for row in rows)
    assert rows[0]["kl"] == 0.0 and rows[0]["trainer"] == "SFT"
    for row in rows[1:]:
        assert row["steps"] == 2 and row["samples_per_step"] == 8 and row["updates_per_step"] == 4
        assert math.isfinite(row["gold"]) and math.isfinite(row["kl"]) and row["seconds_per_step"] > 0
        assert len(row["samples"]) == len(rows[0]["samples"]) and len(row["history"]) == 2
    assert (rows[1]["estimator"], rows[2]["estimator"], rows[2]["reward"]) == ("gae", "grpo", "verifier")
    table = rl_table(rows)
    assert list(table.index) == ["SFT", "kit gae", "kit grpo"] and "gold" in table.columns
