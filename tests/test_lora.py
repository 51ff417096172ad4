"""LoRA in every trainer (`rlhf_kit.lora`): only the adapters learn, the reference is the policy with its adapters
off (no second copy), merged weights are saved as plain Hugging Face models, and bad targets name the layers."""

import copy

import pytest
import torch

from rlhf_kit.configs import DPOConfig, PPOConfig, RewardConfig, SFTConfig
from rlhf_kit.lora import AdapterOff, add_lora, is_lora, linear_names, lora_targets, merged_copy, trainable_parameters
from rlhf_kit.models import load_causal_lm

PROMPT = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"


def _ids(tokenizer):
    return tokenizer([PROMPT + "A fine film about a dog."], return_tensors="pt")["input_ids"]


def test_add_lora_trains_adapters_only_and_the_reference_is_the_old_model(micro_ws):
    model, tokenizer = load_causal_lm(micro_ws.path("sft"))
    original = copy.deepcopy(model)
    assert add_lora(model, 0) is model                                 # rank 0: full fine-tuning, unchanged
    lora = add_lora(model, 4)
    trained, total = trainable_parameters(lora)
    assert is_lora(lora) and 0 < trained < 0.2 * total
    assert all("lora_" in name for name, p in lora.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)                                           # what training would do
    ids = _ids(tokenizer)
    with torch.no_grad():
        before, after = original(input_ids=ids).logits, lora(input_ids=ids).logits
        reference = AdapterOff(lora)(input_ids=ids).logits
    assert not torch.allclose(after, before, atol=1e-4)
    assert torch.allclose(reference, before, atol=1e-5)                # adapters off: the model it started from
    merged = merged_copy(lora)
    assert not is_lora(merged) and torch.allclose(merged(input_ids=ids).logits, after, atol=1e-4)
    assert is_lora(lora)                                               # the copy was merged, not the policy


def test_bad_targets_and_ranks_name_the_fix(micro_ws):
    model, _ = load_causal_lm(micro_ws.path("sft"))
    assert linear_names(model) == ["c_attn", "c_fc", "c_proj", "lm_head"]
    assert lora_targets(model) == ["c_attn", "c_proj", "c_fc"]
    with pytest.raises(ValueError, match=r"'q_proj' are not in this gpt2 model; its linear layers are: c_attn, "
                                         r"c_fc, c_proj, lm_head"):
        add_lora(model, 4, targets=["q_proj", "c_attn"])
    with pytest.raises(ValueError, match="lora_rank must be a whole number >= 0"):
        add_lora(model, -1)
    for config in (SFTConfig, RewardConfig, DPOConfig, PPOConfig):
        with pytest.raises(ValueError, match=f"{config.__name__}.lora_rank must be a whole number >= 0"):
            config(lora_rank=1.5)
        with pytest.raises(ValueError, match=f"{config.__name__}.lora_alpha must be None"):
            config(lora_rank=4, lora_alpha=0)
    with pytest.raises(ValueError, match="AdapterOff needs a model with LoRA adapters"):
        AdapterOff(model)


def test_sft_with_lora_changes_only_the_adapted_layers(micro_ws):
    from rlhf_kit.sft import train_sft
    from rlhf_kit.world import load_world

    model, tokenizer = load_causal_lm(micro_ws.path("base"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = SFTConfig.from_preset(micro_ws.preset, lora_rank=4, steps=3, lr=1e-2)
    train_sft(model, tokenizer, load_world(micro_ws.path("world")).demos[:16], config)
    assert not is_lora(model) and set(model.state_dict()) == set(before)       # merged back into the same model
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith("weight") and any(t in k for t in ("c_attn", "c_proj", "c_fc"))
                           for k in changed), changed
    assert "transformer.wte.weight" not in changed


def test_reward_model_with_lora_trains_its_head_in_full(micro_rm_ws, tmp_path):
    from rlhf_kit.reward import RewardScorer, init_reward_model, preference_rows, score_texts, train_reward_model

    model, tokenizer = init_reward_model(micro_rm_ws.path("sft"), seed=0)
    head = model.score.weight.detach().clone()
    body = model.transformer.wte.weight.detach().clone()
    config = RewardConfig.from_preset(micro_rm_ws.preset, lora_rank=4, steps=3, lr=1e-2)
    train_reward_model(model, tokenizer, preference_rows(micro_rm_ws)[:16], config)
    assert not is_lora(model)
    assert not torch.equal(model.score.weight, head) and torch.equal(model.transformer.wte.weight, body)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "normalisation.json").write_text('{"mean": 0.0, "std": 1.0}')
    scores = RewardScorer(tmp_path)([PROMPT], ["A fine film about a dog."])
    assert torch.allclose(scores, score_texts(model, tokenizer, [PROMPT], ["A fine film about a dog."]), atol=1e-5)


def _reference_stays_and_merged_weights_load(trainer, policy, sft_dir, tmp_path):
    """After training: the reference (adapters off) still computes the SFT model, the policy does not, and what
    `trainer.save` writes loads as a plain model computing what the policy computes."""
    sft, tokenizer = load_causal_lm(sft_dir)
    ids = _ids(tokenizer)
    with torch.no_grad():
        assert torch.allclose(trainer.ref_policy(input_ids=ids).logits, sft(input_ids=ids).logits, atol=1e-5)
        trained = policy(input_ids=ids).logits
        assert not torch.allclose(trained, sft(input_ids=ids).logits, atol=1e-4)
    trainer.save(tmp_path)
    saved, _ = load_causal_lm(tmp_path)
    assert not is_lora(saved)
    with torch.no_grad():
        assert torch.allclose(saved(input_ids=ids).logits, trained, atol=1e-4)


def test_dpo_with_lora_keeps_one_copy_and_saves_merged_weights(micro_rm_ws, tmp_path):
    from rlhf_kit.dpo import DPOTrainer

    config = DPOConfig.from_preset(micro_rm_ws.preset, lora_rank=4, lr=1e-2)
    trainer = DPOTrainer.from_workspace(micro_rm_ws, config)
    assert isinstance(trainer.ref_policy, AdapterOff) and trainer.ref_policy.model is trainer.policy
    trainer.train()
    _reference_stays_and_merged_weights_load(trainer, trainer.policy, micro_rm_ws.path("sft"), tmp_path)


@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_ppo_with_lora_reference_is_the_sft_model(micro_rm_ws, tmp_path, estimator):
    from rlhf_kit.ppo import PPOTrainer

    group = {"group_size": 2} if estimator == "grpo" else {}
    config = PPOConfig.from_preset(micro_rm_ws.preset, steps=2, lora_rank=4, lr=1e-2, estimator=estimator, **group)
    trainer = PPOTrainer.from_workspace(micro_rm_ws, config)
    assert isinstance(trainer.ref_policy, AdapterOff)
    if estimator == "gae":
        assert is_lora(trainer.value_model.body)
        assert trainer.value_model.head.weight.requires_grad                   # the head trains in full
    history = trainer.train()
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(s["kl"])) for s in history)
    _reference_stays_and_merged_weights_load(trainer, trainer.unwrapped_policy, micro_rm_ws.path("sft"), tmp_path)


def test_the_trl_comparison_refuses_lora():
    from rlhf_kit.trl_grpo import trl_settings

    with pytest.raises(ValueError, match="the comparison with TRL trains every weight; got lora_rank=4"):
        trl_settings(PPOConfig(estimator="grpo", group_size=4, lora_rank=4))


@pytest.mark.slow
def test_the_command_line_trains_with_lora(micro_rm_ws, tmp_path, capsys):
    import json
    import shutil

    from rlhf_kit.cli import main

    shutil.copytree(micro_rm_ws.root, tmp_path / micro_rm_ws.root.name)
    home = ["--preset", "micro", "--workspace", str(tmp_path)]
    assert main(["dpo", *home, "--lora-rank", "-1"]) == 2
    assert "--lora-rank -1: DPOConfig.lora_rank must be a whole number >= 0" in capsys.readouterr().err
    assert main(["dpo", *home, "--lora-rank", "4", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["config"]["lora_rank"] == 4 and metrics["inputs"]["lora_rank"] == 4
    model, _ = load_causal_lm(tmp_path / micro_rm_ws.root.name / "dpo")          # merged: a plain model
    assert not is_lora(model)


@pytest.mark.slow
@pytest.mark.parametrize("command, stage, config", [("sft", "sft", "SFTConfig"), ("reward", "reward", "RewardConfig")])
def test_sft_and_reward_take_a_lora_rank_on_the_command_line(micro_rm_ws, tmp_path, capsys, command, stage, config):
    import json
    import shutil

    from rlhf_kit.cli import main

    root = tmp_path / micro_rm_ws.root.name
    shutil.copytree(micro_rm_ws.root, root)
    home = ["--preset", "micro", "--workspace", str(tmp_path)]
    before = (root / stage / "DONE.json").read_text()
    assert main([command, *home, "--lora-rank", "-1"]) == 2
    assert f"--lora-rank -1: {config}.lora_rank must be a whole number >= 0" in capsys.readouterr().err
    assert (root / stage / "DONE.json").read_text() == before                  # the bad flag built nothing
    assert main([command, *home, "--lora-rank", "4", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["inputs"]["lora_rank"] == 4
    if command == "sft":
        model, _ = load_causal_lm(root / "sft")                                  # merged: a plain model
        assert not is_lora(model)
    else:
        from rlhf_kit.reward import RewardScorer

        scorer = RewardScorer(root / "reward")
        assert not is_lora(scorer.model)
