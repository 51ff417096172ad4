"""Lab 09's recipe on the packaged SmolLM2-135M-Instruct: the kit's trainers, unchanged, with LoRA; the sizes per
preset; LoRA's parameter count against peft's; LoRA against full fine-tuning. Slow: it loads a 135M-parameter model
(converted once from its GGUF file into the workspace home)."""

import copy
import math

import pytest
import torch

from rlhf_kit import real
from rlhf_kit.lora import AdapterOff, add_lora, trainable_parameters


def test_every_preset_has_lab_09_sizes():
    assert real.real_settings("lab").name == "real" and real.real_settings("ci").sft_steps <= 2
    assert real.real_settings("gpu").dtype == "bfloat16"
    with pytest.raises(ValueError, match="lab 09 has no sizes for preset 'huge'"):
        real.real_settings("huge")


@pytest.fixture(scope="module")
def loaded(micro_ws):
    settings = real.real_settings(micro_ws.preset)
    return micro_ws, settings, *real.load_real(micro_ws, settings)


@pytest.mark.slow
def test_lora_parameter_count_is_what_peft_trains(loaded):
    ws, settings, model, _ = loaded
    predicted = real.lora_parameter_count(model, 8)
    assert predicted == trainable_parameters(add_lora(copy.deepcopy(model), 8))[0]
    assert predicted < 0.05 * real.count_parameters(model)


@pytest.mark.slow
def test_the_recipe_runs_unchanged_on_smollm2(loaded):
    ws, settings, model, tokenizer = loaded
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.pad_token_id != tokenizer.eos_token_id
    before = real.measure(ws, model, tokenizer, settings)
    assert set(before) >= {"gold", "format_rate", "sentiment_accuracy", "kl", "samples"}
    assert len(before["samples"]) == settings.n_eval and before["kl"] == 0
    sft = real.lora_sft(ws, model, tokenizer, settings)
    ids = tokenizer(["### Instruction:\nWrite a positive review.\n### Response:\n"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, sft["original"](input_ids=ids).logits, atol=1e-5)
    after = real.measure(ws, model, tokenizer, settings, ref=sft["original"])
    assert math.isfinite(after["kl"]) and math.isfinite(after["gold"])
    pairs = real.self_labelled_pairs(ws, model, tokenizer, settings)
    assert pairs["pairs"] and all(p["chosen"] != p["rejected"] for p in pairs["pairs"])
    trainer = real.lora_dpo(ws, model, tokenizer, pairs["pairs"], settings)
    assert isinstance(trainer.ref_policy, AdapterOff) and len(trainer.history) >= 1
    tuned = real.measure(ws, trainer.policy, tokenizer, settings, ref=trainer.ref_policy)
    assert math.isfinite(tuned["kl"])


@pytest.mark.slow
def test_lora_trains_fewer_numbers_in_less_memory_than_full_fine_tuning(loaded):
    ws, settings, _, _ = loaded
    lora, full = real.lora_vs_full(ws, settings)
    assert (lora["lora_rank"], full["lora_rank"]) == (settings.lora_rank, 0)
    assert lora["trainable_parameters"] < 0.05 * full["trainable_parameters"]
    if lora["peak_memory_mib"] is not None:
        assert lora["peak_memory_mib"] < full["peak_memory_mib"]           # no gradients or Adam state for 135M
