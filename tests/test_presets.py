import pytest

from rlhf_kit.presets import PRESETS, get_preset


def test_named_presets_and_sizes_grow():
    assert set(PRESETS) == {"ci", "lab", "gpu"}
    ci, lab, gpu = (get_preset(n) for n in ("ci", "lab", "gpu"))
    assert ci.pretrain_steps < lab.pretrain_steps < gpu.pretrain_steps
    assert ci.n_embd <= lab.n_embd <= gpu.n_embd


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
