"""What every trainer in the kit shares: the optimiser step and its schedule, the epoch order, right padding,
the final-value summary, and TRL's CPU-safe settings.

The contract, for pretraining, SFT, the reward model, PPO and the trainers to come:

- a trainer takes the learner's loss functions as arguments (the reference ones from `rlhf_kit.losses` by
  default), so a lab can train on the learner's own code and say so;
- it calls `callback(step, **metrics)` after every step, with metrics named in one vocabulary: `loss`,
  `accuracy`, `proxy` (the reward model's score, normalised), `gold` (the true reward), `kl` (nats per response);
- it returns a dict of final values (`final_loss`, ...), each the mean of the last 10% of steps.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to 10% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def adamw(parameters, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """The optimiser of every trainer: AdamW (`optimizer_step` sets its learning rate at each step)."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=betas)


def optimizer_step(model, optimizer, loss, step: int, total_steps: int, peak_lr: float) -> None:
    """One update: set this step's learning rate (5% warm-up, then cosine), backpropagate, clip the gradient
    norm to 1, step."""
    for group in optimizer.param_groups:
        group["lr"] = cosine_lr(step, total_steps, peak_lr, warmup=max(1, total_steps // 20))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def batches(n: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """`steps` batches of `batch_size` indices into n items: epoch after epoch of a seeded shuffle, a batch
    never crossing from one shuffle into the next unless an epoch is shorter than a batch."""
    if n < 1:
        raise ValueError("batches() needs at least one item to draw from.")
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(n, generator=generator).tolist()
        batch, order = order[:batch_size], order[batch_size:]
        yield batch


def right_pad(rows: list[list[int]], pad_id: int, *masks: list[list[int]]) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask, *masks), each (batch, longest): `rows` right-padded with `pad_id`, the
    attention mask 1 on real tokens, and each extra per-token mask padded with 0."""
    longest = max(len(ids) for ids in rows)
    out = [torch.full((len(rows), longest), pad_id, dtype=torch.long)]
    out += [torch.zeros((len(rows), longest), dtype=torch.long) for _ in range(1 + len(masks))]
    for i, ids in enumerate(rows):
        out[0][i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        out[1][i, : len(ids)] = 1
        for tensor, mask in zip(out[2:], masks):
            tensor[i, : len(ids)] = torch.tensor(mask[i], dtype=torch.long)
    return tuple(out)


def tail_mean(values: list[float], fraction: float = 0.1) -> float:
    """Mean of the last `fraction` of a training curve: a less noisy 'final' value than the last step."""
    tail = values[-max(1, int(len(values) * fraction)):]
    return sum(tail) / len(tail)


def trl_cpu_args(config_cls, model, output_dir, steps: int, batch_size: int, lr: float, seed: int, **specific):
    """A TRL `*Config` with the kit's settings: cosine schedule with 5% warm-up, as `optimizer_step`; on a CPU
    `use_cpu` and bf16 off (TRL defaults to bf16); no gradient checkpointing, no reports, no checkpoints.
    `specific` adds the trainer's own fields (e.g. `completion_only_loss=True` for SFT)."""
    use_cpu = next(model.parameters()).device.type == "cpu"
    return config_cls(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20), seed=seed,
        use_cpu=use_cpu, bf16=not use_cpu, activation_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=max(1, steps // 10), dataloader_num_workers=0,
        **specific,
    )


def run_steps(step: Callable[[], dict], steps: int, callback: Callable | None = None,
              should_stop: Callable[[], bool] | None = None, desc: str = "", progress: bool = True) -> list[dict]:
    """The trainers' `train` loop (the trainer contract): call `step()` up to `steps` times, each returning its
    stats with a "step" key; after each, `callback(step, **the other stats)` (a `LiveCurve` plugs in directly);
    stop early when `should_stop()` returns True, checked before each step. Returns the stats of the steps run."""
    done = []
    for _ in tqdm(range(steps), desc=desc, leave=False, disable=not progress):
        if should_stop is not None and should_stop():
            break
        done.append(step())
        if callback is not None:
            callback(done[-1]["step"], **{k: v for k, v in done[-1].items() if k != "step"})
    return done


@contextmanager
def quiet_trl():
    """Silence what TRL's trainers print that says nothing to a learner: datasets' map progress bars ("Adding EOS
    to train dataset", "Tokenizing train dataset", ...) and the FutureWarning transformers raises on TRL's every
    loss ("`is_gradient_checkpointing` is deprecated ..."). Used around building and training TRL's DPO, GRPO and
    RLOO trainers."""
    from datasets.utils import logging as datasets_logging

    bars = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        if bars:
            datasets_logging.enable_progress_bar()
