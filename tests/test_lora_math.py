"""Lab 09's LoRA references compute what peft computes: `lora_forward` is a peft LoRA layer's output, `merge_lora`
the weight `merge_and_unload` leaves, for a torch Linear and for GPT-2's Conv1D (whose weight is stored transposed,
(d_in, d_out), so the test transposes it into the torch Linear convention the references use)."""

import pytest
import torch
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from rlhf_kit.lora import lora_forward, merge_lora

peft = pytest.importorskip("peft")

D_IN, D_OUT = 6, 4


class Tiny(torch.nn.Module):
    """One layer to adapt: a torch Linear (`proj`) or a GPT-2 Conv1D (`c_attn`, nf outputs, nx inputs)."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(D_IN, D_OUT) if kind == "linear" else Conv1D(nf=D_OUT, nx=D_IN)
        if kind == "conv1d":
            torch.nn.init.normal_(self.layer.bias)                 # Conv1D starts its bias at 0: make it count

    def forward(self, x):
        return self.layer(x)


def _frozen_weight(layer: torch.nn.Module, kind: str) -> torch.Tensor:
    """The layer's weight as (d_out, d_in), the torch Linear convention."""
    return layer.weight.T if kind == "conv1d" else layer.weight


def _peft_model(kind: str, rank: int, alpha: float):
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=["layer"], lora_dropout=0.0,
                             fan_in_fan_out=kind == "conv1d")
    return peft.get_peft_model(Tiny(kind), config)


def _randomise_adapters(model, seed: int):
    """lora_A, lora_B ((r, d_in), (d_out, r)) set to random values: peft starts lora_B at 0, which would hide the
    update."""
    layer = model.base_model.model.layer
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (layer.lora_A["default"], layer.lora_B["default"]):
            module.weight.copy_(torch.randn(module.weight.shape, generator=g))
    return layer, layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("rank, alpha", [(1, 2.0), (3, 5.0), (4, 16.0)])
def test_references_agree_with_peft(kind, rank, alpha):
    model = _peft_model(kind, rank, alpha)
    layer, lora_A, lora_B = _randomise_adapters(model, seed=rank)
    assert lora_A.shape == (rank, D_IN) and lora_B.shape == (D_OUT, rank)
    weight = _frozen_weight(layer.base_layer, kind).detach().clone()
    bias = layer.base_layer.bias.detach().clone()
    x = torch.randn(2, 3, D_IN, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        peft_out = model(x)
        frozen_out = layer.base_layer(x)
    ours = lora_forward(x, weight, lora_A, lora_B, alpha, bias=bias)
    assert ours.shape == peft_out.shape == (2, 3, D_OUT)
    assert torch.allclose(ours, peft_out, atol=1e-5)
    assert not torch.allclose(peft_out, frozen_out, atol=1e-2)      # the adapter really changed the output

    merged = model.merge_and_unload()
    assert not isinstance(merged.layer, peft.tuners.lora.LoraLayer)   # a plain Linear / Conv1D again
    ours_merged = merge_lora(weight, lora_A, lora_B, alpha)
    assert torch.allclose(ours_merged, _frozen_weight(merged.layer, kind), atol=1e-5)
    assert torch.allclose(F.linear(x, ours_merged, bias), ours, atol=1e-5)   # the merged layer runs the same


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_a_fresh_adapter_changes_nothing(kind):
    """peft starts lora_B at 0, so LoRA begins as the frozen layer: lora_forward with lora_B = 0 is the frozen
    layer, whatever lora_A and alpha are, and merging such an adapter leaves the weight as it was."""
    model = _peft_model(kind, rank=4, alpha=16.0)
    layer = model.base_model.model.layer
    lora_A, lora_B = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    assert torch.count_nonzero(lora_B) == 0 and torch.count_nonzero(lora_A) > 0
    weight, bias = _frozen_weight(layer.base_layer, kind).detach(), layer.base_layer.bias.detach()
    x = torch.randn(5, D_IN, generator=torch.Generator().manual_seed(3))
    ours = lora_forward(x, weight, lora_A, lora_B, 16.0, bias=bias)
    assert torch.allclose(ours, F.linear(x, weight, bias), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(ours, model(x), atol=1e-6)
    assert torch.equal(merge_lora(weight, lora_A, lora_B, 16.0), weight)


def test_the_update_is_two_thin_matmuls():
    """lora_forward never forms the (d_out, d_in) product lora_B @ lora_A: its multiplications are the frozen
    path's n * d_in * d_out and the adapter's n * r * (d_in + d_out), for n positions; forming the product would
    add r * d_in * d_out more, as much again as the frozen path r times over."""
    from torch.utils.flop_counter import FlopCounterMode

    d_in, d_out, r = 64, 48, 2
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 3, d_in, generator=g), torch.randn(d_out, d_in, generator=g)
    lora_A, lora_B = torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g)
    with FlopCounterMode(display=False) as counter:
        lora_forward(x, weight, lora_A, lora_B, alpha=4.0)
    n = 2 * 3
    assert counter.get_total_flops() == 2 * (n * d_in * d_out + n * r * (d_in + d_out))   # 2 flops: multiply, add
