import math

import pytest
import torch

from rlhf_kit.configs import PPOConfig, RewardConfig, SFTConfig
from rlhf_kit.presets import get_preset
from rlhf_kit.training import batches, cosine_lr, right_pad


def test_config_defaults_are_the_lab_presets_values():
    """`SFTConfig()` and `SFTConfig.from_preset(lab)` are the same run (the review found 300 vs 900 SFT steps)."""
    lab = get_preset("lab")
    for config in (SFTConfig, RewardConfig, PPOConfig):
        assert config() == config.from_preset(lab), config.__name__


@pytest.mark.parametrize("config, bad, message", [
    (SFTConfig, dict(steps=0), r"SFTConfig.steps must be a whole number >= 1; got 0"),
    (SFTConfig, dict(batch_size=2.5), r"SFTConfig.batch_size must be a whole number >= 1"),
    (SFTConfig, dict(lr=float("inf")), r"SFTConfig.lr must be a finite number > 0; got inf"),
    (SFTConfig, dict(lr=-1e-3), r"SFTConfig.lr must be a finite number > 0"),
    (RewardConfig, dict(steps=True), r"RewardConfig.steps must be a whole number >= 1"),
    (RewardConfig, dict(lr=0.0), r"RewardConfig.lr must be a finite number > 0"),
    (RewardConfig, dict(heldout_fraction=1.0), r"heldout_fraction must be between 0 and 1"),
    (PPOConfig, dict(max_new_tokens=0), r"PPOConfig.max_new_tokens must be a whole number >= 1"),
])
def test_every_config_names_a_bad_value(config, bad, message):
    with pytest.raises(ValueError, match=message):
        config(**bad)


def test_batches_walk_seeded_epochs():
    drawn = list(batches(5, 2, steps=5, seed=0))
    assert len(drawn) == 5 and all(len(b) == 2 for b in drawn)
    flat = [i for b in drawn for i in b]
    assert sorted(flat[:5]) == list(range(5))                    # the first epoch covers every item once
    assert drawn == list(batches(5, 2, steps=5, seed=0)) != list(batches(5, 2, steps=5, seed=1))
    assert [len(b) for b in batches(1, 3, steps=2, seed=0)] == [3, 3]      # an epoch shorter than a batch
    with pytest.raises(ValueError, match="at least one item"):
        next(batches(0, 2, steps=1, seed=0))


def test_right_pad_pads_ids_and_masks():
    ids, attention, response = right_pad([[5, 6, 7], [8]], 0, [[0, 1, 1], [1]])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert response.tolist() == [[0, 1, 1], [1, 0, 0]]
    assert ids.dtype == torch.long


def test_cosine_schedule_warms_up_then_decays_to_a_tenth():
    assert cosine_lr(0, 100, 1.0, warmup=5) == pytest.approx(0.2)
    assert cosine_lr(4, 100, 1.0, warmup=5) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 1.0, warmup=5) == pytest.approx(0.1)
    assert all(not math.isnan(cosine_lr(s, 10, 1e-3, 1)) for s in range(12))


def test_lab_01s_trl_run_takes_the_kits_settings_and_fewer_steps_only_in_ci():
    from rlhf_kit.sft import trl_sft_config

    for name in ("micro", "lab", "gpu"):
        preset = get_preset(name)
        assert trl_sft_config(preset, 3) == SFTConfig.from_preset(preset, 3)
    ci = get_preset("ci")
    assert trl_sft_config(ci, 3) == SFTConfig.from_preset(ci, 3, steps=750) and 750 < ci.sft_steps
