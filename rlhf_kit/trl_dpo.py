"""TRL's `DPOTrainer` beside the kit's own, on the same preference pairs, measured the same way (lab 06).

`trl_dpo(ws, loss_type)` trains TRL 1.16's DPOTrainer from the workspace's `sft` policy on `dpo.workspace_pairs`'
training rows with the preset's DPO settings; `kit_row(ws, loss)` does the same with `dpo.DPOTrainer`. Both then
measure their trained policy with the kit's `DPOTrainer.evaluate` (held-out prompts, same sampling seeds: gold,
proxy, KL from the SFT reference, format rate, response length) and `DPOTrainer.evaluate_pairs` (the implicit
reward model beta * log(pi / pi_ref) on the reward model's held-out pairs), so one table compares them
(`loss_type_table`). TRL runs on the CPU with `training.trl_cpu_args` (no bf16, no checkpointing, no reports, no
checkpoints saved) and its frozen reference is a second copy of the SFT policy, loaded from disk.

How TRL reads a plain-text prompt/chosen/rejected row, against the kit's `sft.tokenize_demo` (prompt and response
tokenized apart and joined, then eos; mask 1 on the response and eos):

- eos: TRL appends the eos token *as text* (`chosen + tokenizer.eos_token`, unless it already ends with it) and
  tokenizes that string; the kit appends the eos id. Our tokenizer parses "<|endoftext|>" as the special token, so
  both end in the same eos id, and both score it (it is part of the response mask).
- BOS: neither adds one (our GPT-2-style tokenizer adds no special tokens; TRL just calls `tokenizer(text)`).
- Prompt/response boundary: TRL tokenizes `prompt` and `prompt + chosen` (and `prompt + rejected`) as whole strings
  and starts the response where the two token lists first differ (`common_prefix_length`); a token merged across
  the boundary would count as response, and the prompt's end would be cut (TRL warns once: "The tokenized prompt is
  not a prefix of the tokenized prompt+completion ..."). The kit never merges across the boundary. Our prompts end in
  a newline, which byte-level BPE keeps as its own token, so the ids and masks are the same on the course's pairs
  (tests/test_trl_dpo.py checks it on the workspace's pairs).
- Length: TRL cuts each prompt+response to `max_length` from the start (set here to the kit's `max_len`, the model's
  context) and silently *drops* pairs whose prompt alone fills it; the kit refuses such a pair with an error.
  `trl_dpo` raises before training if TRL dropped any.
- Log-probabilities: both sum log pi over the response tokens (eos included). TRL computes them with a fused,
  chunked LM head that never builds the full logits (`add_fused_lm_head`, which patches the policy's `forward`;
  without `fused_lm_head=True` it is the model's own forward, so sampling and the kit's measurement are unchanged).
- The reference: TRL runs it on every batch; the kit computes each response's reference log-prob once and caches it.
- IPO: TRL divides each log-ratio by the response's token count before the square (so the target 1 / (2 beta) is
  per token); the kit's `losses.ipo_loss` uses sums, as the course derives it. Same beta, different strength.
- Schedule and order: the same peak lr, warm-up steps and step count, but HF's cosine falls to 0 and its warm-up
  starts at lr 0 (TRL's first step does not move the policy); the kit's falls to 10% and its first step uses
  peak / warm-up. HF shuffles with its own sampler, so the pairs come in a different order.

Rows (`trl_dpo`, `kit_row`): {"trainer": "TRL" or "kit", "loss_type", "beta", "epochs", "steps", "gold", "proxy",
"kl", "format_rate", "implicit_accuracy", "implicit_gold_accuracy", "implicit_margin", "response_length",
"first_loss", "final_loss" (mean of the last 10% of steps), "seconds" (building the trainer and training; loading
the models and measuring not counted)}.
"""

from __future__ import annotations

import tempfile
import time
from typing import Callable

from .configs import DPOConfig
from .dpo import PAIR_COLUMNS, DPOTrainer, check_pairs, total_steps, workspace_pairs
from .models import load_causal_lm
from .reuse import reusable
from .sft import _context_limit
from .training import quiet_trl, tail_mean, trl_cpu_args
from .world import heldout_prompts, load_world

# TRL 1.16's DPOConfig.loss_type values, each run one step on the CPU with the micro GPT-2 (tests/test_trl_dpo.py).
# None needs another model or data set; two need a label_smoothing (LOSS_SETTINGS). Per pair, h = the log-ratio
# margin (log pi/pi_ref of chosen minus of rejected), c and r = the chosen's and rejected's log-ratios:
CPU_LOSS_TYPES = (
    "sigmoid",       # DPO (Rafailov et al. 2023): -log sigmoid(beta h); log 2 at the start
    "hinge",         # SLiC (Zhao et al. 2023): max(0, 1 - beta h)
    "ipo",           # IPO (Azar et al. 2023), per-token averaged log-ratios: (h_avg - 1/(2 beta))^2
    "exo_pair",      # EXO (Ji et al. 2024): reverse KL to the labels smoothed by label_smoothing (1e-3)
    "nca_pair",      # NCA (Chen et al. 2024): absolute rewards, -log sigmoid(beta c) - 0.5 log sigmoid(-beta c) ...
    "robust",        # robust DPO (Chowdhury et al. 2024): DPO unbiased for labels flipped with prob. 0.1
    "bco_pair",      # BCO (Jung et al. 2024), paired: -log sigmoid(beta c) - log sigmoid(-beta r), each side alone
    "sppo_hard",     # SPPO, hard labels (Wu et al. 2024): (c - 1/(2 beta))^2 + (r + 1/(2 beta))^2
    "aot",           # AOT (Melnyk et al. 2024): DPO on the batch's sorted log-ratio gaps (needs batch > 1)
    "aot_unpaired",  # AOT unpaired: sorted chosen against sorted rejected log-ratios (needs batch > 1)
    "apo_zero",      # APO-zero (D'Oosterlinck et al. 2024): raise the chosen, lower the rejected
    "apo_down",      # APO-down: lower both, the rejected more (for chosen worse than the model's own)
    "discopop",      # DiscoPOP (Lu et al. 2024): a discovered blend of logistic and exponential losses
    "sft",           # no preference at all: cross-entropy on the chosen responses only (a baseline)
    "sigmoid_norm",  # DPO on per-token averaged log-ratios (length-normalised)
)
# exo_pair refuses label_smoothing 0 (the EXO paper's 1e-3); robust at 0 is exactly sigmoid (its paper's 0.1).
LOSS_SETTINGS = {"exo_pair": {"label_smoothing": 1e-3}, "robust": {"label_smoothing": 0.1}}
KIT_LOSSES = ("sigmoid", "ipo")
ROW_KEYS = ("trainer", "loss_type", "beta", "epochs", "steps", "gold", "proxy", "kl", "format_rate",
            "implicit_accuracy", "implicit_gold_accuracy", "implicit_margin", "response_length", "first_loss",
            "final_loss", "seconds")


def check_loss_type(loss_type) -> None:
    """A ValueError naming the accepted values when `loss_type` is not one of CPU_LOSS_TYPES."""
    if loss_type not in CPU_LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not one of TRL's DPO losses that run here: "
                         f"{', '.join(map(repr, CPU_LOSS_TYPES))}. (One name per run; the kit's own trainer takes "
                         f"{' or '.join(map(repr, KIT_LOSSES))}, see kit_row.)")


def _config(ws, beta=None, epochs=None, lr=None, seed=None, **fields) -> DPOConfig:
    """The preset's DPOConfig with the overrides that are not None (seed: the workspace's by default)."""
    overrides = {k: v for k, v in dict(beta=beta, epochs=epochs, lr=lr).items() if v is not None}
    return DPOConfig.from_preset(ws.preset, ws.seed if seed is None else seed, **overrides, **fields)




def make_trl_trainer(policy, ref_policy, tokenizer, rows: list[dict], config: DPOConfig, loss_type: str = "sigmoid",
                     output_dir=None, callback: Callable | None = None):
    """TRL's DPOTrainer, ready to `train()`: `policy` trained in place against the frozen `ref_policy` on `rows`
    (prompt/chosen/rejected) with `config`'s beta, lr, batch size and max_len, for the kit's number of steps
    (ceil(epochs * pairs / batch_size)); CPU-safe settings (`training.trl_cpu_args`), every step logged
    (`trainer.state.log_history`), LOSS_SETTINGS for the loss types that need them.

    The Trainer's own progress bar, which prints every log dict, is replaced by a quiet one; `callback(step,
    loss=, accuracy=, margin=, chosen_reward=, rejected_reward=)` is called after each step with TRL's logged
    values (the kit's trainer contract, so a `LiveCurve` plugs in). Raises ValueError before training for an
    unknown loss_type, bad rows, or pairs TRL would drop because their prompt fills max_len."""
    from datasets import Dataset
    from tqdm.auto import tqdm
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer as TRLDPOTrainer

    check_loss_type(loss_type)
    check_pairs(rows)
    steps = total_steps(config, len(rows))
    args = trl_cpu_args(TRLDPOConfig, policy, output_dir or tempfile.mkdtemp(prefix="trl-dpo-"), steps,
                        config.batch_size, config.lr, config.seed, beta=config.beta, loss_type=[loss_type],
                        max_length=_context_limit(policy, config.max_len), disable_tqdm=True,
                        **LOSS_SETTINGS.get(loss_type, {}))
    args.logging_steps = 1          # every step's loss in log_history: first_loss is step 1's, not a window mean

    class KitCallback(TrainerCallback):
        """TRL's logs to the kit's callback contract, behind a tqdm.auto bar."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=f"TRL DPO ({loss_type})", leave=False)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.bar.update(state.global_step - self.bar.n)
                if callback is not None:
                    callback(state.global_step, loss=logs["loss"], accuracy=logs["rewards/accuracies"],
                             margin=logs["rewards/margins"], chosen_reward=logs["rewards/chosen"],
                             rejected_reward=logs["rewards/rejected"])

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    dataset = Dataset.from_list([{k: row[k] for k in PAIR_COLUMNS} for row in rows])
    with quiet_trl():
        trainer = TRLDPOTrainer(model=policy, ref_model=ref_policy, args=args, train_dataset=dataset,
                                processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)       # with disable_tqdm, the Trainer's printer of every log dict
    trainer.add_callback(KitCallback())
    if len(trainer.train_dataset) != len(rows):
        raise ValueError(f"{len(rows) - len(trainer.train_dataset)} of the {len(rows)} pairs have a prompt that fills "
                         f"the {args.max_length}-token context, so TRL would drop them silently (the kit's trainer "
                         f"refuses them). Shorten those prompts or raise max_len.")
    return trainer


def _measure(trainer: DPOTrainer, ws, heldout_rows: list[dict]) -> dict:
    """The kit's measures of a trained policy (`trainer.policy` against `trainer.ref_policy`): held-out prompts
    sampled and scored as every stage scores them, and the implicit reward model on the held-out pairs."""
    after = trainer.evaluate(heldout_prompts(load_world(ws.require("world"))), seed=ws.seed)
    pairs = trainer.evaluate_pairs(heldout_rows)
    return {"gold": after["gold"], "proxy": after["proxy"], "kl": after["kl"], "format_rate": after["format_rate"],
            "implicit_accuracy": pairs["accuracy"], "implicit_gold_accuracy": pairs["gold_accuracy"],
            "implicit_margin": pairs["margin"], "response_length": after["response_length"]}


def _row(trainer_name, loss_type, config, steps, losses, seconds, measured) -> dict:
    row = {"trainer": trainer_name, "loss_type": loss_type, "beta": config.beta, "epochs": config.epochs,
           "steps": steps, **measured, "first_loss": losses[0], "final_loss": tail_mean(losses), "seconds": seconds}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in ((k, row[k]) for k in ROW_KEYS)}


def trl_dpo(ws, loss_type: str = "sigmoid", beta: float | None = None, epochs: int | None = None,
            lr: float | None = None, seed: int | None = None, output_dir=None, pairs=None,
            callback: Callable | None = None) -> dict:
    """TRL's DPOTrainer with `loss_type` from the workspace's `sft` policy on `dpo.workspace_pairs(ws)`'s training
    rows (or `pairs`, a (train_rows, heldout_rows) tuple), with the preset's DPO settings unless beta, epochs, lr or
    seed are given; measured like the kit's trainer (`_measure`). Returns a row (ROW_KEYS; see the module
    docstring), its first_loss and final_loss from TRL's own log. `output_dir`: where TRL may write (a temporary
    directory by default; nothing is saved). ValueError before any training for an unknown loss_type."""
    from .reward import RewardScorer

    check_loss_type(loss_type)
    config = _config(ws, beta, epochs, lr, seed)
    train_rows, heldout_rows = pairs if pairs is not None else workspace_pairs(ws)
    check_pairs(heldout_rows)
    policy, tokenizer = load_causal_lm(ws.require("sft"))
    ref_policy, _ = load_causal_lm(ws.require("sft"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trl-dpo-") as scratch:
        trainer = make_trl_trainer(policy, ref_policy, tokenizer, train_rows, config, loss_type,
                                   output_dir=output_dir or scratch, callback=callback)
        with quiet_trl():
            trainer.train()
    seconds = time.perf_counter() - started
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    trained = trainer.accelerator.unwrap_model(trainer.model)
    fresh_sft, measure_tokenizer = load_causal_lm(ws.require("sft"))
    meter = DPOTrainer(trained, measure_tokenizer, heldout_rows, config, ref_policy=fresh_sft,
                       reward_fn=RewardScorer(ws.require("reward"), device=next(trained.parameters()).device))
    return _row("TRL", loss_type, config, trainer.state.global_step, losses, seconds,
                _measure(meter, ws, heldout_rows))


def kit_row(ws, loss: str = "sigmoid", beta: float | None = None, epochs: int | None = None, lr: float | None = None,
            seed: int | None = None, pairs=None, callback: Callable | None = None) -> dict:
    """The same row as `trl_dpo` for the kit's own `dpo.DPOTrainer` ("sigmoid" or "ipo"), on the same pairs with
    the same settings, measured the same way; trainer "kit". ValueError before any training for another loss."""
    from .reward import RewardScorer

    config = _config(ws, beta, epochs, lr, seed, loss=loss)
    train_rows, heldout_rows = pairs if pairs is not None else workspace_pairs(ws)
    check_pairs(heldout_rows)
    policy, tokenizer = load_causal_lm(ws.require("sft"))
    reward_fn = RewardScorer(ws.require("reward"), device=next(policy.parameters()).device)
    started = time.perf_counter()
    trainer = DPOTrainer(policy, tokenizer, train_rows, config, reward_fn=reward_fn)
    history = trainer.train(callback=callback)
    seconds = time.perf_counter() - started
    return _row("kit", loss, config, len(history), [s["loss"] for s in history], seconds,
                _measure(trainer, ws, heldout_rows))


@reusable
def loss_type_table(ws, loss_types=("sigmoid", "ipo", "hinge"), include_kit: bool = True, **overrides) -> list[dict]:
    """One row per run (`trl_dpo`'s keys): the kit's sigmoid and ipo first when include_kit, then TRL with each of
    `loss_types`, all on the same pairs with the same settings (`overrides`: beta, epochs, lr, seed, pairs). Every
    loss_type is checked before anything is trained."""
    for loss_type in loss_types:
        check_loss_type(loss_type)
    rows = [kit_row(ws, loss, **overrides) for loss in (KIT_LOSSES if include_kit else ())]
    return rows + [trl_dpo(ws, loss_type, **overrides) for loss_type in loss_types]
