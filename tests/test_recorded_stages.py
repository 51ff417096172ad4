"""A lab's run made with a stage's own settings is recorded as that stage (`Workspace.record`, `ppo.record_run`,
`dpo.record_run`), so lab 08 ranks what labs 05-07 trained instead of training it again. Recorded must mean
identical: the same DONE.json, timings aside, and the same weights as `ws.build(stage)` in another workspace."""

import shutil

import pytest
import torch

from rlhf_kit.course import TIMING_KEYS
from rlhf_kit.models import load_causal_lm
from rlhf_kit.workspace import Workspace


def _copy(ws, tmp_path, name) -> Workspace:
    home = tmp_path / name
    shutil.copytree(ws.root, home / ws.root.name)
    return Workspace(ws.preset, home=home, seed=ws.seed)


def _same_stage(recorded: Workspace, built: Workspace, stage: str, by: str) -> None:
    mine, theirs = recorded.metrics(stage), built.metrics(stage)
    assert mine.pop("recorded_by") == by and "recorded_by" not in theirs
    strip = lambda record: {k: v for k, v in record.items() if k not in TIMING_KEYS}  # noqa: E731
    assert strip(mine) == strip(theirs)
    a, _ = load_causal_lm(recorded.path(stage))
    b, _ = load_causal_lm(built.path(stage))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.slow
@pytest.mark.parametrize("stage, beta, lr_factor", [("ppo", None, 1), ("hacked", 0.0, 4)])
def test_a_beta_sweep_run_with_a_stages_settings_is_that_stage(micro_rm_ws, tmp_path, stage, beta, lr_factor):
    from rlhf_kit.hacking import beta_sweep

    recorded, built = _copy(micro_rm_ws, tmp_path, "recorded"), _copy(micro_rm_ws, tmp_path, "built")
    preset = micro_rm_ws.preset
    beta = preset.ppo_beta if beta is None else beta
    beta_sweep(recorded, [beta, 0.5], steps=None, lr=lr_factor * preset.ppo_lr)     # 0.5: no stage's settings
    assert recorded.is_done(stage) and not any(recorded.is_done(s) for s in {"ppo", "hacked"} - {stage})
    built.build(stage)
    _same_stage(recorded, built, stage, "hacking.beta_sweep")


@pytest.mark.slow
def test_a_dpo_sweep_run_at_the_presets_beta_is_the_dpo_stage(micro_rm_ws, tmp_path):
    from rlhf_kit import losses
    from rlhf_kit.dpo import dpo_sweep

    recorded, built = _copy(micro_rm_ws, tmp_path, "recorded"), _copy(micro_rm_ws, tmp_path, "built")
    mine = lambda *args, **kwargs: losses.dpo_loss(*args, **kwargs)  # noqa: E731   a learner's function
    dpo_sweep(recorded, [micro_rm_ws.preset.dpo_beta * 3], loss_fn=mine)
    assert not recorded.is_done("dpo")                                   # another beta: not the stage
    dpo_sweep(recorded, [micro_rm_ws.preset.dpo_beta], loss_fn=mine)
    assert recorded.metrics("dpo")["inputs"]["loss_fn"].endswith("<lambda>")    # whose code trained it
    built.build("dpo", loss_fn=mine)
    _same_stage(recorded, built, "dpo", "dpo.dpo_sweep")


@pytest.mark.slow
def test_kit_rl_records_grpo_and_leaves_a_built_stage_alone(micro_rm_ws, tmp_path):
    from rlhf_kit.grpo import kit_rl

    recorded, built = _copy(micro_rm_ws, tmp_path, "recorded"), _copy(micro_rm_ws, tmp_path, "built")
    kit_rl(recorded, "grpo", reward="verifier")                          # another reward: not the stage
    assert not recorded.is_done("grpo")
    kit_rl(recorded, "grpo")
    built.build("grpo")
    _same_stage(recorded, built, "grpo", "grpo.kit_rl")
    before = recorded.path("grpo").joinpath("DONE.json").read_text()
    kit_rl(recorded, "grpo")                                             # built already: left as it is
    assert recorded.path("grpo").joinpath("DONE.json").read_text() == before


def test_stage_of_run_names_only_a_stages_exact_settings(micro_rm_ws):
    from rlhf_kit.configs import PPOConfig
    from rlhf_kit.grpo import grpo_config
    from rlhf_kit.hacking import hacked_config
    from rlhf_kit.ppo import stage_of_run

    ws = micro_rm_ws
    assert stage_of_run(ws, PPOConfig.from_preset(ws.preset, ws.seed)) == "ppo"
    assert stage_of_run(ws, hacked_config(ws)) == "hacked"
    assert stage_of_run(ws, grpo_config(ws, "grpo")) == "grpo"
    assert stage_of_run(ws, grpo_config(ws, "grpo"), reward="ai-reward") == "grpo-ai"
    assert stage_of_run(ws, grpo_config(ws, "grpo"), reward="verifier") is None
    assert stage_of_run(ws, PPOConfig.from_preset(ws.preset, ws.seed, steps=3)) is None
    assert stage_of_run(ws, PPOConfig.from_preset(ws.preset, ws.seed + 1)) is None
    assert stage_of_run(ws, grpo_config(ws, "rloo")) is None


@pytest.mark.slow
def test_kit_rl_on_the_ai_label_reward_model_is_the_grpo_ai_stage(micro_rm_ws, tmp_path):
    from rlhf_kit.grpo import kit_rl
    from rlhf_kit.reward import RewardScorer

    recorded, built = _copy(micro_rm_ws, tmp_path, "recorded"), _copy(micro_rm_ws, tmp_path, "built")
    for ws in (recorded, built):       # a stand-in for lab 07's AI-label reward model: lab 03's, copied
        shutil.copytree(ws.path("reward"), ws.path("ai-reward"))
    kit_rl(recorded, "grpo", reward_fn=RewardScorer(recorded.path("reward")))      # lab 03's: not grpo-ai
    assert not recorded.is_done("grpo-ai")
    kit_rl(recorded, "grpo", reward_fn=RewardScorer(recorded.path("ai-reward")))
    built.build("grpo-ai")
    _same_stage(recorded, built, "grpo-ai", "grpo.kit_rl")
