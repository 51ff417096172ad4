import math
import tempfile
from dataclasses import replace

import pytest
import torch

from rlhf_kit import losses
from rlhf_kit import trl_grpo as module
from rlhf_kit.configs import PPOConfig
from rlhf_kit.grpo import ROW_KEYS, grpo_config, kit_rl, rl_table, sft_row
from rlhf_kit.models import load_causal_lm
from rlhf_kit.ppo import response_logits, token_logprobs
from rlhf_kit.sampling import row_seeds, sample
from rlhf_kit.training import quiet_trl
from rlhf_kit.trl_grpo import kit_reward, make_trl_trainer, trl_rl, trl_settings, updates_per_step
from rlhf_kit.world import load_world, training_prompts


def micro_config(micro_preset, estimator="grpo", **overrides):
    return PPOConfig.from_preset(micro_preset, estimator=estimator, group_size=1 if estimator == "gae" else 4,
                                 **overrides)


# ------------------------------------------------------------------------------------ the settings mapping (fast)
@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
@pytest.mark.parametrize("batch, minibatch, epochs, group", [(16, 8, 2, 4), (32, 16, 2, 4), (24, 4, 3, 6),
                                                             (8, 8, 1, 2)])
def test_trl_settings_sample_and_update_as_the_kit(estimator, batch, minibatch, epochs, group):
    """TRL generates generation_batch_size = per_device_train_batch_size x steps_per_generation completions (one
    process) every steps_per_generation x num_iterations updates: the kit's batch_size responses per step and
    ppo_epochs x batch_size / minibatch_size updates, each on minibatch_size responses."""
    config = PPOConfig(steps=5, batch_size=batch, minibatch_size=minibatch, ppo_epochs=epochs, estimator=estimator,
                       group_size=group, lr=3e-5, beta=0.07, clip_eps=0.15, temperature=0.8, max_new_tokens=40,
                       max_grad_norm=0.5, seed=3)
    s = trl_settings(config)
    generation_batch = s["per_device_train_batch_size"] * s["steps_per_generation"]
    updates_per_generation = s["steps_per_generation"] * s["num_iterations"] // s["gradient_accumulation_steps"]
    assert generation_batch == batch and s["num_generations"] == group and generation_batch % group == 0
    assert s["per_device_train_batch_size"] * s["gradient_accumulation_steps"] == minibatch
    assert updates_per_generation == epochs * batch // minibatch == updates_per_step(config)
    assert s["max_steps"] == 5 * updates_per_generation
    assert (s["learning_rate"], s["lr_scheduler_type"], s["warmup_steps"]) == (3e-5, "constant", 0)
    assert (s["beta"], s["epsilon"], s["temperature"], s["max_completion_length"], s["max_grad_norm"], s["seed"]) \
        == (0.07, 0.15, 0.8, 40, 0.5, 3)
    assert s["disable_dropout"] and s["top_p"] == 1.0 and s["top_k"] == 0
    if estimator == "grpo":
        assert (s["loss_type"], s["scale_rewards"], s["use_bias_correction_kl"]) == ("bnpo", "group", False)
        assert trl_settings(replace(config, group_std=False))["scale_rewards"] == "none"
    else:
        assert s["normalize_advantages"] is False and "loss_type" not in s


def test_trl_settings_build_trls_own_configs():
    """The mapped fields are real GRPOConfig / RLOOConfig fields, and TRL derives the same generation batch."""
    from trl import GRPOConfig, RLOOConfig

    for estimator, cls in (("grpo", GRPOConfig), ("rloo", RLOOConfig)):
        config = PPOConfig(batch_size=32, minibatch_size=8, ppo_epochs=2, estimator=estimator, group_size=4)
        args = cls(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, report_to="none",
                   activation_checkpointing=False, **trl_settings(config))
        assert (args.generation_batch_size, args.steps_per_generation, args.num_iterations) == (32, 4, 2)


def test_configs_trl_cannot_follow_are_refused():
    with pytest.raises(ValueError, match=r"estimator='gae' is not one TRL's trainers run here: 'grpo', 'rloo' "
                                         r"\(PPO, 'gae', is the kit's own"):
        trl_settings(PPOConfig(estimator="gae"))
    with pytest.raises(ValueError, match=r"TRL's GRPO puts beta's KL in the loss; got kl_in='reward'"):
        trl_settings(PPOConfig(estimator="grpo", group_size=4, kl_in="reward"))
    with pytest.raises(ValueError, match=r"TRL's RLOO puts beta's KL in the reward; got kl_in='loss'"):
        trl_settings(PPOConfig(estimator="rloo", group_size=4, kl_in="loss"))
    with pytest.raises(ValueError, match=r"TRL's RLOO subtracts beta x the k1 KL.*kl_estimator='k3'"):
        trl_settings(PPOConfig(estimator="rloo", group_size=4, kl_estimator="k3"))
    with pytest.raises(ValueError, match="no adaptive KL"):
        trl_settings(PPOConfig(estimator="grpo", group_size=4, adaptive_kl=True))


def test_bad_estimator_or_reward_is_refused_before_anything_is_loaded(micro_rm_ws, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded: the arguments were checked too late")

    monkeypatch.setattr(module, "load_causal_lm", no_loading)
    with pytest.raises(ValueError, match=r"estimator='ppo' is not one TRL's trainers run here: 'grpo', 'rloo'"):
        trl_rl(micro_rm_ws, "ppo")
    with pytest.raises(ValueError, match=r"estimator='gae' is not one TRL's trainers run here"):
        trl_rl(micro_rm_ws, "gae")
    with pytest.raises(ValueError, match=r"PPOConfig.estimator must be one of gae, grpo, rloo"):
        kit_rl(micro_rm_ws, "dpo")
    with pytest.raises(ValueError, match=r"reward must be one of rm, verifier"):
        trl_rl(micro_rm_ws, "grpo", reward="gold")
    with pytest.raises(ValueError, match=r"config.estimator='rloo' but estimator='grpo'"):
        trl_rl(micro_rm_ws, "grpo", config=grpo_config(micro_rm_ws, "rloo"))


def test_kit_reward_gives_the_no_eos_penalty_as_the_kit_does():
    scorer = lambda prompts, responses: torch.tensor([len(r) / 10 for r in responses])     # noqa: E731
    eos = 7
    ids = [[3, 4, eos], [3, 4, 5], [eos], []]
    prompts, completions = ["p"] * 4, ["ab", "abcd", "", ""]
    assert kit_reward(scorer, eos, -1.0)(prompts=prompts, completions=completions, completion_ids=ids,
                                         trainer_state=None) == pytest.approx([0.2, -1.0, 0.0, -1.0])
    assert kit_reward(scorer, eos, None)(prompts=prompts, completions=completions,
                                         completion_ids=ids) == pytest.approx([0.2, 0.4, 0.0, 0.0])


# --------------------------------------------------------------------- TRL's losses against the kit's (one batch)
def _batch(micro_rm_ws, temperature, rows=6):
    """A sampled batch of `rows` responses to prompts of one token length (no left padding), with the SFT policy."""
    policy, tokenizer = load_causal_lm(micro_rm_ws.require("sft"))
    prompts = training_prompts(load_world(micro_rm_ws.require("world")))
    length = len(tokenizer(prompts[0])["input_ids"])
    same = [p for p in prompts if len(tokenizer(p)["input_ids"]) == length][:rows]
    rollout = sample(policy, tokenizer, same, row_seeds(0, 1, 0, len(same)), temperature, 12)
    return policy, tokenizer, rollout


def _trl_loss(policy, tokenizer, rollout, config, mask, advantages, **logps) -> torch.Tensor:
    """TRL's loss (`_compute_loss`, no gradient) on the rollout's tokens with `mask`, `advantages` and the old and
    reference log-probabilities `logps` under TRL's names for them, by the trainer `make_trl_trainer` builds."""
    trainer = make_trl_trainer(policy, tokenizer, rollout.prompts, kit_reward(lambda p, r: torch.zeros(len(p)),
                               tokenizer.eos_token_id, None), config, tempfile.mkdtemp())
    trainer.model.eval()
    inputs = {"prompt_ids": rollout.input_ids[:, :rollout.prompt_len],
              "prompt_mask": rollout.attention_mask[:, :rollout.prompt_len],
              "completion_ids": rollout.response_ids, "completion_mask": mask, "advantages": advantages, **logps}
    with torch.no_grad():
        return trainer._compute_loss(trainer.model, inputs)


def test_trl_grpo_loss_is_the_kits_on_the_same_batch(micro_rm_ws, micro_preset):
    """With trl_settings (bnpo, no KL bias correction, epsilon = clip_eps, the temperature in the log-probs),
    TRL's GRPO loss on one minibatch equals the kit's: ppo_policy_loss + beta x the token mean of k3, with ratios
    both inside and outside the clip range and responses of different lengths."""
    config = micro_config(micro_preset, "grpo", temperature=0.7, beta=0.3, clip_eps=0.2)
    policy, tokenizer, rollout = _batch(micro_rm_ws, config.temperature)
    ends = torch.arange(12, 12 - len(rollout.prompts), -1)[:, None]      # as if the responses ended at 12, 11, ...
    mask = rollout.mask * (torch.arange(12)[None, :] < ends)              # tokens: the normalisation matters
    with torch.no_grad():
        logprobs = token_logprobs(response_logits(policy, rollout.rows(slice(None)), rollout.prompt_len,
                                                  config.temperature), rollout.response_ids)
    g = torch.Generator().manual_seed(0)
    old = logprobs + 0.4 * torch.randn(logprobs.shape, generator=g)        # ratios from ~0.3 to ~3: some clipped
    ref = logprobs + 0.3 * torch.randn(logprobs.shape, generator=g)
    advantages = torch.randn(len(rollout.prompts), generator=g)
    kit = losses.ppo_policy_loss(logprobs, old, advantages[:, None] * mask, mask, config.clip_eps)[0] \
        + config.beta * losses._masked_mean(losses.kl_estimate(logprobs, ref, "k3"), mask)

    theirs = _trl_loss(policy, tokenizer, rollout, config, mask, advantages, old_per_token_logps=old,
                       ref_per_token_logps=ref)
    assert theirs.item() == pytest.approx(kit.item(), rel=1e-5, abs=1e-6)


def test_trl_rloo_clips_one_ratio_per_response(micro_rm_ws, micro_preset):
    """The documented difference: TRL 1.16's RLOO loss is the clipped objective of each response's whole-sequence
    ratio exp(sum_t log pi - sum_t log pi_old), averaged over responses (the kit clips per token)."""
    config = micro_config(micro_preset, "rloo", temperature=0.7, clip_eps=0.2)
    policy, tokenizer, rollout = _batch(micro_rm_ws, config.temperature)
    mask = rollout.mask
    with torch.no_grad():
        logprobs = token_logprobs(response_logits(policy, rollout.rows(slice(None)), rollout.prompt_len,
                                                  config.temperature), rollout.response_ids)
    g = torch.Generator().manual_seed(1)
    old_sums = (logprobs * mask).sum(1) + 0.3 * torch.randn(len(mask), generator=g)
    advantages = torch.randn(len(mask), generator=g)
    ratio = torch.exp((logprobs * mask).sum(1) - old_sums)
    expected = -torch.min(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages).mean()

    theirs = _trl_loss(policy, tokenizer, rollout, config, mask, advantages, old_logps=old_sums)
    assert theirs.item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------ runs at micro size (a second or two each)
@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_trl_samples_groups_and_steps_as_the_kit(micro_rm_ws, micro_preset, estimator):
    """Counted in a real TRL run: every generation is batch_size completions in groups of group_size copies of one
    prompt, there is one generation per kit step, and updates_per_step optimiser updates per generation."""
    config = micro_config(micro_preset, estimator, steps=2, no_eos_penalty=None)
    calls = []

    def recording(prompts, completions, completion_ids, **kwargs):
        calls.append(list(prompts))
        return [float(len(c)) for c in completions]

    policy, tokenizer = load_causal_lm(micro_rm_ws.require("sft"))
    prompts = training_prompts(load_world(micro_rm_ws.require("world")))
    trainer = make_trl_trainer(policy, tokenizer, prompts, recording, config, tempfile.mkdtemp())
    with quiet_trl():
        trainer.train()
    assert len(calls) == config.steps
    for batch in calls:
        assert len(batch) == config.batch_size
        groups = [batch[i:i + config.group_size] for i in range(0, len(batch), config.group_size)]
        assert all(len(set(group)) == 1 for group in groups) and len({g[0] for g in groups}) == len(groups)
    assert trainer.state.global_step == config.steps * updates_per_step(config) == config.steps * 4
    clock = next(c for c in trainer.callback_handler.callbacks if isinstance(c, module.StepClock))
    assert len(clock.seconds) == trainer.state.global_step and all(s > 0 for s in clock.seconds)


def test_trl_and_kit_rows_measure_the_same_keys_and_trained_policies(micro_rm_ws, micro_preset):
    """TRL GRPO and RLOO and the kit's PPO and RLOO, one step each at micro size: finite numbers under the same
    keys, equal samples and updates per step, and each row measures its trained policy (KL from SFT is not 0;
    no_eos_penalty off and a larger lr, because at micro size every response runs out of tokens, so with the
    penalty every group's rewards tie and nothing is learned)."""
    sft = sft_row(micro_rm_ws)
    assert sft["kl"] == 0 and sft["trainer"] == "SFT"
    rows = []
    runs = (("TRL", "grpo", "rm"), ("TRL", "rloo", "verifier"), ("kit", "gae", "rm"), ("kit", "rloo", "rm"))
    for trainer, estimator, reward in runs:
        config = micro_config(micro_preset, estimator, steps=1, lr=1e-3, no_eos_penalty=None)
        run = trl_rl if trainer == "TRL" else kit_rl
        rows.append(run(micro_rm_ws, estimator, config, reward=reward))
    for row, (trainer, estimator, reward) in zip(rows, runs):
        assert set(ROW_KEYS) <= set(row) and (row["trainer"], row["estimator"], row["reward"]) == (trainer, estimator,
                                                                                                 reward)
        assert (row["steps"], row["samples_per_step"], row["updates_per_step"]) == (1, 16, 4)
        for key in ("gold", "proxy", "kl", "format_rate", "response_length", "seconds_per_step"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (row, key)
        assert row["kl"] != 0, row
        assert row["seconds_per_step"] > 0 and len(row["samples"]) == len(sft["samples"])
        assert row["memory_method"] == "unavailable" or row["peak_memory_mib"] > 0
    table = rl_table([sft, *rows])
    assert list(table.index) == ["SFT", "TRL grpo", "TRL rloo", "kit gae", "kit rloo"]


def test_trl_rloo_first_update_is_the_kits_times_the_mean_length(micro_rm_ws, micro_preset):
    """The documented consequence: at ratio 1, TRL's RLOO gradient (a mean over responses of each response's
    summed token gradients) is the kit's per-token RLOO gradient (a mean over tokens) times tokens / responses."""
    config = micro_config(micro_preset, "rloo", temperature=0.7)
    policy, tokenizer, rollout = _batch(micro_rm_ws, config.temperature)
    ends = torch.arange(12, 12 - len(rollout.prompts), -1)[:, None]
    mask = rollout.mask * (torch.arange(12)[None, :] < ends)
    advantages = torch.randn(len(mask), generator=torch.Generator().manual_seed(2))
    trainer = make_trl_trainer(policy, tokenizer, rollout.prompts, kit_reward(lambda p, r: torch.zeros(len(p)),
                               tokenizer.eos_token_id, None), config, tempfile.mkdtemp())
    trainer.model.eval()

    def gradient(loss_fn) -> torch.Tensor:
        policy.zero_grad()
        loss_fn().backward()
        return torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])

    def kit_loss():
        logprobs = token_logprobs(response_logits(policy, rollout.rows(slice(None)), rollout.prompt_len,
                                                  config.temperature), rollout.response_ids)
        return losses.ppo_policy_loss(logprobs, logprobs.detach(), advantages[:, None] * mask, mask, 0.2)[0]

    with torch.no_grad():
        old = token_logprobs(response_logits(policy, rollout.rows(slice(None)), rollout.prompt_len,
                                             config.temperature), rollout.response_ids)
    inputs = {"prompt_ids": rollout.input_ids[:, :rollout.prompt_len],
              "prompt_mask": rollout.attention_mask[:, :rollout.prompt_len], "completion_ids": rollout.response_ids,
              "completion_mask": mask, "advantages": advantages, "old_logps": (old * mask).sum(1)}
    theirs = gradient(lambda: trainer._compute_loss(trainer.model, inputs))
    kit = gradient(kit_loss)
    scale = mask.sum().item() / len(mask)
    assert torch.allclose(theirs, kit * scale, rtol=1e-3, atol=1e-6)
    assert not torch.allclose(theirs, kit, rtol=1e-2)
