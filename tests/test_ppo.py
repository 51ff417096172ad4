import json
import math
import os
import subprocess
import sys

import pytest
import torch

from rlhf_kit.cli import main
from rlhf_kit.models import load_causal_lm
from rlhf_kit.ppo import STAT_KEYS, AdaptiveKLController, PPOConfig, PPODiverged, PPOLosses, PPOTrainer, ValueModel
from rlhf_kit.reward import RewardScorer
from rlhf_kit.sampling import first_eos_mask, row_seeds, sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
TINY = dict(batch_size=4, minibatch_size=2, ppo_epochs=2, lr=1e-3, max_new_tokens=8)


@pytest.mark.parametrize("bad, message", [
    (dict(beta=-0.1), r"beta must be a finite number >= 0.*got -0.1"),
    (dict(beta=float("inf")), r"beta must be a finite number >= 0.*got inf"),
    (dict(clip_eps=0.0), r"clip_eps must be between 0 and 1.*got 0.0"),
    (dict(clip_eps=1.0), r"clip_eps must be between 0 and 1.*got 1.0"),
    (dict(lr=float("inf")), r"lr must be a finite number > 0"),
    (dict(vf_clip_eps=-1.0), r"vf_clip_eps must be a finite number > 0"),
    (dict(batch_size=6, minibatch_size=4), r"minibatch_size=4 must divide batch_size=6"),
    (dict(steps=0), r"steps must be a whole number >= 1"),
    (dict(temperature=0.0), r"temperature must be a finite number > 0"),
    (dict(kl_estimator="k2"), r"'k1' or 'k3'.*'k2'"),
    (dict(lam=1.5), r"lam must be in \[0, 1\]"),
    (dict(no_eos_penalty=float("nan")), r"no_eos_penalty must be a finite number"),
])
def test_config_rejects_bad_values_naming_them(bad, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**bad)


def test_config_from_preset_takes_overrides(micro_preset):
    config = PPOConfig.from_preset(micro_preset, seed=3, beta=0.0, clip_eps=0.1)
    assert (config.beta, config.clip_eps, config.seed) == (0.0, 0.1, 3)
    assert config.steps == micro_preset.ppo_steps and config.max_new_tokens == micro_preset.max_new_tokens
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        PPOConfig.from_preset(micro_preset, beta=-1.0)


def test_empty_prompt_set_is_a_clear_error():
    with pytest.raises(ValueError, match="empty list of prompts"):
        PPOTrainer(None, None, [], lambda p, r: torch.zeros(len(p)), PPOConfig())


def test_adaptive_kl_controller_follows_ziegler():
    controller = AdaptiveKLController(beta=0.1, target=6.0, horizon=100)
    assert controller.update(kl=6.0, n_steps=10) == pytest.approx(0.1)             # on target: unchanged
    assert controller.update(kl=60.0, n_steps=10) == pytest.approx(0.1 * 1.02)     # error clipped to +0.2
    assert controller.update(kl=4.5, n_steps=10) == pytest.approx(0.1 * 1.02 * 0.98)      # clipped to -0.2
    assert controller.update(kl=6.6, n_steps=10) == pytest.approx(0.1 * 1.02 * 0.98 * 1.01)  # +0.1 * 10/100


def test_first_eos_mask_stops_after_the_first_eos():
    eos = 0
    ids = torch.tensor([[5, 6, 0, 7, 0], [5, 6, 7, 8, 9], [0, 1, 1, 1, 1]])
    mask, has_eos = first_eos_mask(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_value_model_starts_as_the_normalised_reward(micro_rm_ws):
    _, tokenizer = load_causal_lm(micro_rm_ws.path("sft"), device="cpu")
    value = ValueModel.from_reward_model(micro_rm_ws.path("reward"), tokenizer)
    scorer = RewardScorer(micro_rm_ws.path("reward"), device="cpu")
    ids = torch.tensor([tokenizer(PROMPT + " A fun film.")["input_ids"] + [tokenizer.eos_token_id]])
    ones = torch.ones_like(ids)
    at_eos = value(ids, ones, ones.cumsum(1) - 1)[0, -1]
    assert at_eos.item() == pytest.approx(scorer([PROMPT], [" A fun film."]).item(), abs=1e-4)


def _trainer(ws, reward_fn=None, **overrides) -> PPOTrainer:
    return PPOTrainer.from_workspace(ws, PPOConfig(**{**TINY, **overrides}), reward_fn=reward_fn)


def test_steps_record_every_stat_and_the_first_ratio_is_exactly_one(micro_rm_ws, tmp_path):
    trainer = _trainer(micro_rm_ws, adaptive_kl=True, kl_target=1.0, kl_horizon=100)
    seen = []
    history = trainer.train(steps=3, callback=lambda step, **stats: seen.append((step, stats)),
                            should_stop=lambda: len(seen) == 2)
    assert len(history) == len(seen) == 2 == len(trainer.history)                # should_stop ended it
    assert [step for step, _ in seen] == [1, 2] and seen[0][1]["kl"] == history[0]["kl"]    # callback(step, **stats)
    for stats in history:
        assert set(stats) == set(STAT_KEYS)
        assert stats["first_ratio_max_abs_dev"] == 0.0     # old log-probs recomputed exactly like the new ones
        for key in STAT_KEYS[:-1]:
            assert math.isfinite(stats[key]) or key == "zero_std_groups", (key, stats[key])   # no groups in PPO
        assert 1 <= stats["response_length"] <= TINY["max_new_tokens"]
        assert {"prompt", "response", "proxy", "gold"} <= set(stats["samples"][0])
    assert history[1]["beta"] != history[0]["beta"]                              # the controller moved beta
    row = trainer.last_batch[0]
    assert len(row["tokens"]) == len(row["kl"]) == len(row["advantages"]) >= 1
    result = trainer.evaluate([PROMPT] * 3)
    assert len(result["samples"]) == 3 and math.isfinite(result["gold"]) and math.isfinite(result["proxy"])
    trainer.save(tmp_path / "policy")
    reloaded, _ = load_causal_lm(tmp_path / "policy", device="cpu")
    assert len(json.loads((tmp_path / "policy" / "ppo.json").read_text())["history"]) == 2
    first = next(trainer.unwrapped_policy.parameters())
    assert torch.equal(next(reloaded.parameters()), first.detach().cpu())


def counted_losses() -> tuple[PPOLosses, list[str]]:
    """Every one of the trainer's functions, the reference's, wrapped to append its name to `calls` when called."""
    from rlhf_kit import losses
    from rlhf_kit.ppo import LOSS_FUNCTIONS

    calls = []

    def counted(fn):
        def wrapper(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)
        return wrapper

    return PPOLosses(**{name: counted(getattr(losses, name)) for name in LOSS_FUNCTIONS}), calls


def test_ppo_runs_the_losses_it_is_given(micro_rm_ws):
    """Lab 04 trains on the learner's own functions: every one passed in is called, and the trainer says whose."""
    mine, calls = counted_losses()
    trainer = PPOTrainer.from_workspace(micro_rm_ws, PPOConfig(**TINY), losses=mine)
    trainer.step()
    assert set(calls) == {"kl_penalized_rewards", "gae", "ppo_policy_loss", "value_loss"}
    assert calls.count("ppo_policy_loss") == TINY["ppo_epochs"] * TINY["batch_size"] // TINY["minibatch_size"]
    assert all(mine.whose()[name].startswith("yours") for name in set(calls))
    assert set(PPOLosses().whose().values()) == {"the kit's"}


@pytest.mark.parametrize("estimator, called", [("grpo", {"group_relative_advantages", "ppo_policy_loss"}),
                                               ("rloo", {"rloo_advantages", "ppo_policy_loss"})])
def test_grpo_and_rloo_run_the_same_update_with_group_advantages_and_no_critic(micro_rm_ws, estimator, called):
    """Lab 07: GRPO and RLOO are PPO's trainer with another advantage estimator: no value model is built or
    trained, each batch holds batch_size // group_size prompts group_size times in a row, each response's tokens
    share one advantage, and each prompt's advantages sum to zero."""
    mine, calls = counted_losses()
    config = PPOConfig(**{**TINY, "batch_size": 8, "minibatch_size": 4}, estimator=estimator, group_size=4)
    trainer = PPOTrainer.from_workspace(micro_rm_ws, config, losses=mine)
    assert trainer.value_model is None
    assert len(trainer.optimizer.param_groups[0]["params"]) == len(list(trainer.policy.parameters()))
    stats = trainer.step()
    assert set(calls) == called
    rows = trainer.last_batch
    prompts = [row["prompt"] for row in rows]
    assert prompts[:4] == [prompts[0]] * 4 and prompts[4:] == [prompts[4]] * 4 and prompts[0] != prompts[4]
    advantages = [row["advantages"] for row in rows]
    assert all(len(set(a)) == 1 for a in advantages)             # one advantage per response, on every token
    firsts = torch.tensor([a[0] for a in advantages])
    assert torch.allclose(firsts.reshape(2, 4).sum(1), torch.zeros(2), atol=1e-4)
    assert stats["value_loss"] == 0.0 and math.isnan(stats["explained_variance"])
    assert stats["first_ratio_max_abs_dev"] == 0.0 and 0.0 <= stats["zero_std_groups"] <= 1.0
    assert (stats["kl_loss"] != 0.0) == (estimator == "grpo") or stats["kl"] == 0.0     # GRPO's KL is in the loss
    assert trainer.config.kl_in == ("loss" if estimator == "grpo" else "reward")


def test_evaluate_samples_what_generate_samples(micro_rm_ws):
    """One sampler: the trainer's evaluation of the SFT policy is `models.generate` with the same seed, so the
    sft stage's "after" and PPO's "before" are the same measurement."""
    from rlhf_kit.sampling import generate

    trainer = _trainer(micro_rm_ws)
    prompts = [PROMPT, PROMPT.replace("dog", "robot"), PROMPT]
    result = trainer.evaluate(prompts, temperature=0.7, seed=5)
    expected = generate(trainer.unwrapped_policy, trainer.tokenizer, prompts, TINY["max_new_tokens"], 0.7, seed=5,
                        batch_size=2)
    assert [row["response"] for row in result["samples"]] == expected


def test_one_sft_number_the_sft_stage_and_ppo_before_agree(micro_rm_ws):
    """The sft stage's "after" and PPO's "before" on the held-out prompts are one measurement of one policy."""
    from rlhf_kit.world import heldout_prompts, load_world

    trainer = PPOTrainer.from_workspace(micro_rm_ws)
    before = trainer.evaluate(heldout_prompts(load_world(micro_rm_ws.path("world"))))
    assert round(before["gold"], 4) == micro_rm_ws.metrics("sft")["gold_after"]
    assert round(before["format_rate"], 4) == micro_rm_ws.metrics("sft")["format_rate_after"]


def test_a_prompts_sample_does_not_depend_on_its_batch(micro_rm_ws):
    """Each prompt has its own random stream: alone or beside another prompt, it gets the same response."""
    trainer = _trainer(micro_rm_ws)
    other = PROMPT.replace("positive", "negative").replace("dog", "robot")
    seed_a, seed_b = row_seeds(0, 1, 0, 2)
    policy, tokenizer = trainer.unwrapped_policy, trainer.tokenizer
    alone = sample(policy, tokenizer, [PROMPT], [seed_a], temperature=1.0, max_new_tokens=8)
    paired = sample(policy, tokenizer, [PROMPT, other], [seed_a, seed_b], temperature=1.0, max_new_tokens=8)
    assert alone.responses[0] == paired.responses[0]


def test_nan_reward_stops_and_restores_the_last_good_policy(micro_rm_ws):
    scorer = RewardScorer(micro_rm_ws.path("reward"), device="cpu")
    calls = []

    def nan_at_step_two(prompts, responses):
        calls.append(1)
        scores = scorer(prompts, responses)
        return scores * float("nan") if len(calls) == 2 else scores

    trainer = _trainer(micro_rm_ws, reward_fn=nan_at_step_two)
    trainer.step()
    after_step_one = {k: v.clone() for k, v in trainer.unwrapped_policy.state_dict().items()}
    with pytest.raises(PPODiverged, match=r"step 2: the reward function returned 4 non-finite.*after step 1"):
        trainer.step()
    now = trainer.unwrapped_policy.state_dict()
    assert all(torch.equal(now[k], v) for k, v in after_step_one.items())
    assert len(trainer.history) == 1


def test_nan_loss_mid_update_restores_the_policy(micro_rm_ws):
    """A NaN that appears after some minibatches already updated the weights: those updates are undone."""
    trainer = _trainer(micro_rm_ws)
    before = {k: v.clone() for k, v in trainer.unwrapped_policy.state_dict().items()}
    original = trainer.optimizer.step
    steps = []

    def poison_after_first_update(*args, **kwargs):
        original(*args, **kwargs)
        steps.append(1)
        with torch.no_grad():
            trainer.unwrapped_policy.get_output_embeddings().weight[0, 0] = float("nan")

    trainer.optimizer.step = poison_after_first_update
    with pytest.raises(PPODiverged, match="loss became NaN.*Lower the learning rate"):
        trainer.step()
    assert len(steps) == 1
    now = trainer.unwrapped_policy.state_dict()
    assert all(torch.equal(now[k], v) for k, v in before.items())


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["gae", "grpo", "rloo"])
def test_one_and_two_processes_give_the_same_run(micro_rm_ws, tmp_path, estimator):
    """Two CPU processes (torch.distributed, gloo) split each batch; the run matches the one-process run. For GRPO
    and RLOO the two processes split each group, so its advantages must come from the whole batch."""
    script = os.path.join(REPO, "tests", "ppo_two_process.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    home = str(micro_rm_ws.home)
    commands = {1: [sys.executable, script, home, str(tmp_path / "1.json"), estimator],
                2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script,
                    home, str(tmp_path / "2.json"), estimator]}
    results = {}
    for n, command in commands.items():
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[n] = json.loads((tmp_path / f"{n}.json").read_text())
    one, two = results[1], results[2]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert len(one["history"]) == len(two["history"]) == 2
    for a, b in zip(one["history"], two["history"]):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4, nan_ok=True), key
    weights_one, weights_two = torch.tensor(one["weights"]), torch.tensor(two["weights"])
    assert (weights_one - weights_two).abs().max() < 1e-4


def test_cli_ppo_json_reports_before_and_after(micro_rm_ws, capsys, tmp_path):
    """`rlhf-kit ppo --json` on a copy of the tests' micro workspace (it builds the `ppo` stage, which the shared
    workspace must not gain), and the stage it leaves behind."""
    import shutil

    shutil.copytree(micro_rm_ws.root, tmp_path / micro_rm_ws.root.name)
    code = main(["ppo", "--preset", "micro", "--workspace", str(tmp_path), "--beta", "0.05", "--clip-eps",
                 "0.2", "--steps", "2", "--json", "--save", str(tmp_path / "saved")])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(out.strip().splitlines()[-1])
    for key in ("gold_before", "gold_after", "proxy_before", "proxy_after", "kl", "seconds"):
        assert math.isfinite(metrics[key]), key
    stage = tmp_path / micro_rm_ws.root.name / "ppo"
    assert metrics["config"]["beta"] == 0.05 and json.loads((stage / "DONE.json").read_text())["steps"] == 2
    policy, _ = load_causal_lm(tmp_path / "saved")                # --save copied the stage: a loadable policy
    assert (tmp_path / "saved" / "ppo.json").is_file() and policy is not None
    assert metrics["steps"] == 2 and metrics["beta"] == 0.05


def test_cli_ppo_bad_flag_is_one_clear_error(tmp_path, capsys):
    code = main(["ppo", "--preset", "ci", "--workspace", str(tmp_path), "--beta", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and "beta must be a finite number >= 0" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())                       # it failed before building anything
