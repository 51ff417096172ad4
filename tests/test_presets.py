import os
import re
import subprocess
import sys

import pytest

from rlhf_kit.presets import PRESETS, get_preset


def test_named_presets_and_sizes_grow():
    assert set(PRESETS) == {"micro", "ci", "lab", "gpu"}
    micro, ci, lab, gpu = (get_preset(n) for n in ("micro", "ci", "lab", "gpu"))
    assert micro.pretrain_steps < ci.pretrain_steps < lab.pretrain_steps < gpu.pretrain_steps
    assert micro.n_embd <= ci.n_embd <= lab.n_embd <= gpu.n_embd
    assert all(preset.name == name for name, preset in PRESETS.items())


def test_micro_is_ci_at_unit_test_sizes():
    """Only sizes differ: the learning rates, temperatures and PPO settings are ci's."""
    micro, ci = get_preset("micro"), get_preset("ci")
    same = {k for k, v in micro.as_dict().items() if v == getattr(ci, k)}
    assert {"pretrain_lr", "sft_lr", "rm_lr", "pref_temperature", "eval_temperature", "ppo_lr", "ppo_beta"} <= same
    assert (micro.n_layer, micro.n_embd, micro.sft_steps, micro.rm_steps) == (1, 32, 3, 3)


def test_environment_variable_and_default(monkeypatch):
    monkeypatch.delenv("RLHF_KIT_PRESET", raising=False)
    assert get_preset().name == "lab"
    monkeypatch.setenv("RLHF_KIT_PRESET", "ci")
    assert get_preset().name == "ci"
    assert get_preset("gpu").name == "gpu"  # an explicit argument wins


def test_unknown_preset_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="Unknown preset 'big'.*ci, lab, gpu"):
        get_preset("big")
    monkeypatch.setenv("RLHF_KIT_PRESET", "huge")
    with pytest.raises(ValueError, match=r"'huge' \(from \$RLHF_KIT_PRESET\)"):
        get_preset()


def test_overrides():
    assert get_preset("ci", sft_steps=3).sft_steps == 3
    assert get_preset("ci", sft_steps=3).name == "ci"


def test_a_preset_with_overrides_has_its_own_key():
    lab = get_preset("lab")
    assert lab.key == "lab" and lab.overrides() == {}
    assert get_preset("lab", sft_steps=lab.sft_steps).key == "lab"        # equal to the named preset: its key
    short = get_preset("lab", sft_steps=50)
    assert short.overrides() == {"sft_steps": 50}
    assert re.fullmatch(r"lab\+[0-9a-f]{6}", short.key)
    assert get_preset("lab", sft_steps=51).key != short.key != get_preset("ci", sft_steps=50).key
    assert get_preset("lab", sft_steps=50, rm_steps=7).key == get_preset("lab", rm_steps=7, sft_steps=50).key
    assert get_preset(short, rm_steps=7).overrides() == {"sft_steps": 50, "rm_steps": 7}


def test_the_key_is_the_same_in_every_process():
    """A hash of the overridden values, not Python's hash() (salted per process): the same overrides find the
    same workspace folder tomorrow."""
    assert get_preset("lab", sft_steps=50).key == "lab+d1a50c"
    code = "from rlhf_kit.presets import get_preset; print(get_preset('lab', sft_steps=50, rm_lr=1e-4).key)"
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in (1, 2)}
    assert keys == {get_preset("lab", sft_steps=50, rm_lr=1e-4).key}
