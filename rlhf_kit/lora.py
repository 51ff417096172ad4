"""LoRA for every trainer (`peft`): a few low-rank matrices trained beside frozen weights, instead of all weights.

    model = add_lora(model, rank=8)                  # a peft model; only the adapters (and `trainable`) learn
    reference = AdapterOff(model)                    # the same weights with the adapters off: the frozen reference
    plain = merged_copy(model)                       # a plain transformers model with the adapters merged in

`rank=0` means no LoRA: `add_lora` returns the model unchanged (full fine-tuning). For PPO and DPO the reference is
the policy itself with its adapters switched off, so there is no second copy of the model in memory. Every stage
saves merged weights, so later stages and labs load them as ordinary Hugging Face directories.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch

# The layers LoRA adapts by default, per model type: every attention and MLP projection.
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
INSTALL = "pip install -c constraints.txt peft"


def linear_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (torch Linear or GPT-2's Conv1D): what `targets` may
    name."""
    from transformers.pytorch_utils import Conv1D

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, (torch.nn.Linear, Conv1D)) and name})


def lora_targets(model: torch.nn.Module, targets: Iterable[str] | None = None) -> list[str]:
    """`targets` (default: DEFAULT_TARGETS of the model's type), checked against the model's linear layers; a
    ValueError listing the names it has when one is missing or the type has no default."""
    available = linear_names(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if targets is None:
        if model_type not in DEFAULT_TARGETS:
            raise ValueError(f"LoRA has no default target layers for model type {model_type!r}; pass targets=[...] "
                             f"from its linear layers: {', '.join(available)}.")
        targets = DEFAULT_TARGETS[model_type]
    targets = list(targets)
    missing = [t for t in targets if t not in available]
    if missing or not targets:
        raise ValueError(f"LoRA target layers {', '.join(map(repr, missing)) or '(none given)'} are not in this "
                         f"{model_type or type(model).__name__} model; its linear layers are: "
                         f"{', '.join(available)}.")
    return targets


def _peft():
    try:
        import peft
    except ImportError as error:
        raise ImportError(f"LoRA needs the peft package, which is not installed: {INSTALL}") from error
    return peft


def check_rank(rank) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"lora_rank must be a whole number >= 0 (0: train every weight); got {rank!r}.")
    return rank


def add_lora(model: torch.nn.Module, rank: int, alpha: float | None = None, targets: Iterable[str] | None = None,
             trainable: Iterable[str] = (), task_type: str | None = "CAUSAL_LM"):
    """`model` with LoRA adapters of `rank` on `targets` (see `lora_targets`), scaled by alpha / rank (default
    alpha = 2 * rank), everything else frozen but the modules named in `trainable` (e.g. ["score"], a reward
    model's new head, trained in full). rank 0: `model` itself, unchanged. task_type: peft's ("CAUSAL_LM",
    "SEQ_CLS") or None for a bare transformer body. Returns a peft model, which runs like the model."""
    if check_rank(rank) == 0:
        return model
    peft = _peft()
    from transformers.pytorch_utils import Conv1D

    names = lora_targets(model, targets)
    conv1d = any(isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in names for n, m in model.named_modules())
    config = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=0.0,
                             target_modules=names, fan_in_fan_out=conv1d, modules_to_save=list(trainable) or None,
                             task_type=task_type)
    import warnings

    with warnings.catch_warnings():     # peft asks transformers a question that transformers 5 calls deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, config)


def is_lora(model) -> bool:
    """True for a model `add_lora` wrapped (a peft model)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters that receive gradients, all parameters)."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))


class AdapterOff:
    """The reference model of a LoRA policy: calls the policy with its adapters switched off, so it computes what
    the policy computed before training, from the same weights (no second copy in memory). Not a torch module on
    purpose: freezing or moving it must not touch the policy it reads."""

    def __init__(self, model):
        if not is_lora(model):
            raise ValueError("AdapterOff needs a model with LoRA adapters (add_lora); for a plain model, use a "
                             "frozen copy as the reference.")
        self.model = model

    def __call__(self, *args, **kwargs):
        with torch.no_grad(), self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def parameters(self):
        return self.model.parameters()

    def to(self, *args, **kwargs) -> "AdapterOff":
        return self

    def eval(self) -> "AdapterOff":
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "AdapterOff":
        return self

    @property
    def config(self):
        return self.model.config


def merged_copy(model):
    """A plain transformers model with the adapters merged into the weights (a copy: `model` keeps training);
    a model without adapters is returned as it is."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def merge_in_place(model):
    """Merge the adapters into the wrapped model's own weights and return that plain model (the object the caller
    passed to `add_lora`, now holding the trained weights). A model without adapters is returned as it is."""
    return model.merge_and_unload() if is_lora(model) else model


# ------------------------------------------------------------------------------ what a LoRA layer computes (lab 09)
def _lora_rank(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor) -> int:
    """r, once weight (d_out, d_in), lora_A (r, d_in) and lora_B (d_out, r) fit together; else a ValueError naming
    the shapes."""
    for name, tensor in (("weight", weight), ("lora_A", lora_A), ("lora_B", lora_B)):
        if tensor.dim() != 2:
            raise ValueError(f"{name} must be a matrix (2-D); got shape {tuple(tensor.shape)}.")
    (d_out, d_in), r = weight.shape, lora_A.shape[0]
    if r == 0:
        raise ValueError(f"lora_A has shape {tuple(lora_A.shape)}: rank r = 0 has no adapter to apply and alpha / r "
                         f"divides by zero; use the frozen layer itself (rank 0 means no LoRA).")
    if lora_A.shape[1] != d_in:
        raise ValueError(f"lora_A has shape {tuple(lora_A.shape)} but weight {tuple(weight.shape)} takes "
                         f"d_in = {d_in} inputs: lora_A must be (r, d_in) = ({r}, {d_in}).")
    if tuple(lora_B.shape) != (d_out, r):
        raise ValueError(f"lora_B has shape {tuple(lora_B.shape)}; with weight {tuple(weight.shape)} and lora_A "
                         f"{tuple(lora_A.shape)} it must be (d_out, r) = ({d_out}, {r}).")
    return r


def lora_forward(x: torch.Tensor, weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """A linear layer with a LoRA adapter, as peft runs it:

        y = x @ weight.T + bias + (alpha / r) * (x @ lora_A.T) @ lora_B.T,    r = lora_A.shape[0]

    x: (..., d_in); weight: (d_out, d_in), the frozen weight (torch Linear convention; GPT-2's Conv1D stores its
    transpose); lora_A: (r, d_in); lora_B: (d_out, r); alpha: a number; bias: (d_out,) or None. Returns y:
    (..., d_out). peft starts lora_B at zero, so an adapter begins as no change at all.

    The low-rank path is two thin matmuls, down to r numbers per position and back up: it never forms the
    (d_out, d_in) product lora_B @ lora_A, which would cost as much memory as the frozen weight and d_in * d_out
    multiplications per position, where the two thin ones cost r * (d_in + d_out).

    ValueError for shapes that do not fit together (naming them) and for r = 0.
    """
    r = _lora_rank(weight, lora_A, lora_B)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x has shape {tuple(x.shape)} but weight {tuple(weight.shape)} takes d_in = "
                         f"{weight.shape[1]} inputs: x must be (..., {weight.shape[1]}).")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias has shape {tuple(bias.shape)}; with weight {tuple(weight.shape)} it must be "
                         f"(d_out,) = ({weight.shape[0]},), or None.")
    y = x @ weight.T + (alpha / r) * ((x @ lora_A.T) @ lora_B.T)
    return y if bias is None else y + bias


def merge_lora(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float) -> torch.Tensor:
    """The weight of the same layer with the adapter folded in, what peft's `merge_and_unload` stores:

        merged = weight + (alpha / r) * lora_B @ lora_A,    r = lora_A.shape[0]

    weight: (d_out, d_in) (torch Linear convention); lora_A: (r, d_in); lora_B: (d_out, r). Returns a new
    (d_out, d_in) tensor (weight is not changed), so that x @ merged.T + bias equals `lora_forward` and the merged
    layer costs nothing extra to run. ValueError for shapes that do not fit together (naming them) and for r = 0.
    """
    r = _lora_rank(weight, lora_A, lora_B)
    return weight + (alpha / r) * (lora_B @ lora_A)
