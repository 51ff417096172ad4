"""Run sizes: `micro` (the kit's own unit tests: seconds, learns nothing), `ci` (seconds per stage, for the
notebook tests), `lab` (minutes on a laptop CPU), `gpu` (larger).

Pick one by argument or with the environment variable RLHF_KIT_PRESET; the default is `lab`.
Every stage reads its sizes from the preset, so the same notebook runs in CI, on a laptop and on a GPU.
A preset with overrides (`get_preset("lab", sft_steps=50)`) is keyed apart from the named one (`Preset.key`), so
its workspace never touches the named preset's artefacts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace

ENV_VAR = "RLHF_KIT_PRESET"
DEFAULT = "lab"


@dataclass(frozen=True)
class Preset:
    name: str
    # --- the toy world ---
    n_corpus_docs: int          # plain pretraining documents ("review pages")
    n_demos: int                # SFT demonstrations
    n_heldout: int              # held-out instruction prompts used for evaluation
    # --- the tiny GPT-2 ---
    vocab_size: int             # byte-level BPE vocabulary size
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int            # context length in tokens
    # --- pretraining ---
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_lr: float
    # --- supervised fine-tuning ---
    sft_steps: int
    sft_batch_size: int
    sft_lr: float
    # --- preferences and the reward model ---
    n_pref_prompts: int         # prompts whose SFT samples are compared
    pref_k: int                 # responses sampled per prompt; every pair of them is compared
    pref_temperature: float     # sampling temperature for the candidates
    rm_steps: int
    rm_batch_size: int          # preference pairs per step
    rm_lr: float
    # --- evaluation ---
    max_new_tokens: int         # generation budget for a response
    eval_temperature: float     # sampling temperature when evaluating a policy
    # --- PPO (rlhf_kit.ppo.PPOConfig.from_preset) ---
    ppo_steps: int              # PPO steps (rollout + updates each)
    ppo_batch_size: int         # prompts per step
    ppo_minibatch_size: int     # prompts per gradient update
    ppo_epochs: int             # passes over each batch
    ppo_lr: float
    ppo_beta: float             # KL coefficient
    ppo_clip_eps: float         # policy ratio clip
    # --- DPO (rlhf_kit.configs.DPOConfig.from_preset) ---
    dpo_beta: float             # implicit-reward scale
    dpo_epochs: int             # passes over the training pairs
    dpo_batch_size: int         # preference pairs per step
    dpo_lr: float
    # --- GRPO and RLOO (rlhf_kit.grpo.grpo_config): PPO's steps, batch, epochs, lr, beta and clip ---
    grpo_group_size: int = 4    # responses per prompt; a batch of ppo_batch_size responses holds
    #                             ppo_batch_size // grpo_group_size prompts
    # --- the TRL comparisons ---
    trl_sft_steps: int | None = None   # lab 01's SFTTrainer run (`sft.trl_sft_config`); None: sft_steps, the same
    #                                    as the kit's. ci runs half of them: the test suite's slowest cell

    def as_dict(self) -> dict:
        return asdict(self)

    def overrides(self) -> dict:
        """{field: value} where this preset differs from the named preset it was made from: {} for a named preset
        itself, every field but the name for a preset whose name is not in PRESETS."""
        mine = self.as_dict()
        named = PRESETS.get(self.name)
        if named is None:
            return {k: v for k, v in mine.items() if k != "name"}
        return {k: v for k, v in mine.items() if v != getattr(named, k)}

    @property
    def key(self) -> str:
        """The name, and for a preset with overrides `<name>+<6 hex digits>` (e.g. `lab+3f2a9c`): a hash of the
        overridden fields that is the same in every process, so the same overrides always name the same folder."""
        overrides = self.overrides()
        if not overrides:
            return self.name
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.name}+{digest[:6]}"


# Why SFT runs 900 steps and PPO's learning rates: the dated measurements in the README's seed-table and PPO sections.
PRESETS: dict[str, Preset] = {
    # for the kit's own unit tests: every stage in seconds, and it learns nothing (the rest as `ci`)
    "micro": Preset(
        name="micro",
        n_corpus_docs=120, n_demos=60, n_heldout=6,
        vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=128,
        pretrain_steps=4, pretrain_batch_size=4, pretrain_lr=3e-3,
        sft_steps=3, sft_batch_size=4, sft_lr=2e-3,
        n_pref_prompts=6, pref_k=3, pref_temperature=1.0, rm_steps=3, rm_batch_size=4, rm_lr=5e-4,
        max_new_tokens=16, eval_temperature=0.7,
        ppo_steps=20, ppo_batch_size=16, ppo_minibatch_size=8, ppo_epochs=2,
        ppo_lr=1e-4, ppo_beta=0.05, ppo_clip_eps=0.2,
        dpo_beta=0.1, dpo_epochs=1, dpo_batch_size=4, dpo_lr=1e-4,
    ),
    "ci": Preset(
        name="ci",
        n_corpus_docs=600, n_demos=400, n_heldout=32,
        vocab_size=512, n_layer=2, n_head=2, n_embd=64, n_positions=128,
        pretrain_steps=300, pretrain_batch_size=16, pretrain_lr=3e-3,
        sft_steps=1500, sft_batch_size=16, sft_lr=2e-3,
        n_pref_prompts=250, pref_k=4, pref_temperature=1.0, rm_steps=150, rm_batch_size=16, rm_lr=5e-4,
        max_new_tokens=64, eval_temperature=0.7,
        ppo_steps=20, ppo_batch_size=16, ppo_minibatch_size=8, ppo_epochs=2,
        ppo_lr=1e-4, ppo_beta=0.05, ppo_clip_eps=0.2,
        dpo_beta=0.1, dpo_epochs=1, dpo_batch_size=16, dpo_lr=1e-4,     # gold peaked within 1 epoch (README)
        trl_sft_steps=750,
    ),
    "lab": Preset(
        name="lab",
        n_corpus_docs=3000, n_demos=2000, n_heldout=64,
        vocab_size=1024, n_layer=4, n_head=4, n_embd=128, n_positions=128,
        pretrain_steps=450, pretrain_batch_size=32, pretrain_lr=2e-3,
        sft_steps=900, sft_batch_size=32, sft_lr=1e-3,
        n_pref_prompts=1000, pref_k=4, pref_temperature=1.0, rm_steps=300, rm_batch_size=32, rm_lr=3e-4,
        max_new_tokens=72, eval_temperature=0.7,
        ppo_steps=40, ppo_batch_size=32, ppo_minibatch_size=16, ppo_epochs=2,
        ppo_lr=5e-5, ppo_beta=0.05, ppo_clip_eps=0.2,
        dpo_beta=0.1, dpo_epochs=1, dpo_batch_size=32, dpo_lr=1e-4,     # a 2nd epoch added KL, not gold (README)
    ),
    "gpu": Preset(
        name="gpu",
        n_corpus_docs=20000, n_demos=8000, n_heldout=256,
        vocab_size=2048, n_layer=6, n_head=8, n_embd=256, n_positions=256,
        pretrain_steps=3000, pretrain_batch_size=64, pretrain_lr=1e-3,
        sft_steps=1000, sft_batch_size=64, sft_lr=5e-4,
        n_pref_prompts=1500, pref_k=4, pref_temperature=1.0, rm_steps=1500, rm_batch_size=64, rm_lr=3e-4,
        max_new_tokens=72, eval_temperature=0.7,
        ppo_steps=100, ppo_batch_size=64, ppo_minibatch_size=32, ppo_epochs=2,
        ppo_lr=1e-4, ppo_beta=0.05, ppo_clip_eps=0.2,
        dpo_beta=0.1, dpo_epochs=2, dpo_batch_size=64, dpo_lr=1e-4,
    ),
}


def get_preset(name: str | Preset | None = None, **overrides) -> Preset:
    """The preset called `name`, else the one named by $RLHF_KIT_PRESET, else `lab`.

    Keyword overrides replace single fields, e.g. `get_preset("lab", sft_steps=50)`; such a preset keeps its name
    but gets its own `key` (`lab+<hash>`), and so its own workspace folder.
    """
    if isinstance(name, Preset):
        preset = name
    else:
        chosen = name or os.environ.get(ENV_VAR) or DEFAULT
        if chosen not in PRESETS:
            source = "" if name else f" (from ${ENV_VAR})"
            raise ValueError(
                f"Unknown preset {chosen!r}{source}. Choose one of: {', '.join(PRESETS)} "
                f"(e.g. --preset ci, or export {ENV_VAR}=lab)."
            )
        preset = PRESETS[chosen]
    return replace(preset, **overrides) if overrides else preset
