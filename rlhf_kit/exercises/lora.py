"""Lab 09: what a LoRA layer computes, `lora_forward` (the adapted layer's output) and `merge_lora` (the adapter
folded into the weight).

References: `rlhf_kit.lora.lora_forward`, `rlhf_kit.lora.merge_lora`. Shapes in the torch Linear convention:
weight (d_out, d_in), lora_A (r, d_in), lora_B (d_out, r); the update is scaled by alpha / r.
"""

from __future__ import annotations

import copy

import torch

from .. import lora
from .checking import Case, Exercise, Mistake, close, must_reject, randn

# The worked example, by hand: d_in = d_out = r = 2 (square, so that the mistakes with the wrong order or a missing
# transpose still run and can be named), alpha 8, so the scale alpha / r is 4.
#   x @ weight.T = [1, 4]; x @ lora_A.T = [3, 2]; (x @ lora_A.T) @ lora_B.T = [3, -2]; times 4: [12, -8]
#   y = [1, 4] + bias [1, -1] + [12, -8] = [14, -5]
#   merged = weight + 4 * lora_B @ lora_A = [[1, 0], [2, 1]] + 4 * [[1, 1], [0, -1]] = [[5, 4], [2, -3]]
_WORKED = {"weight": [[1.0, 0.0], [2.0, 1.0]], "lora_A": [[1.0, 1.0], [0.0, 1.0]], "lora_B": [[1.0, 0.0], [0.0, -1.0]]}
_WORKED_WHAT = ("weight [[1, 0], [2, 1]], lora_A [[1, 1], [0, 1]], lora_B [[1, 0], [0, -1]], alpha 8 "
                "(r = 2, scale alpha / r = 4)")


def _worked(**extra) -> dict:
    return {**{k: torch.tensor(v) for k, v in _WORKED.items()}, "alpha": 8.0,
            **{k: torch.tensor(v) for k, v in extra.items()}}


def _weights(d_in, d_out, r, alpha, seed, zero_B=False) -> dict:
    g = torch.Generator().manual_seed(seed)
    lora_A, lora_B = randn(g, r, d_in), randn(g, d_out, r)
    return {"weight": randn(g, d_out, d_in), "lora_A": lora_A, "lora_B": lora_B * 0 if zero_B else lora_B,
            "alpha": alpha}


def _shape_what(d_in, d_out, r, alpha) -> str:
    square = " (square: d_in = d_out)" if d_in == d_out else ""
    return f"d_in {d_in}, d_out {d_out}{square}, r {r}, alpha {alpha:g}"


# ------------------------------------------------------------------------------------------------ shared mistakes
_SCALES = {
    "none": lambda alpha, r: 1.0,
    "alpha": lambda alpha, r: alpha,
    "inverse_r": lambda alpha, r: 1 / r,
    "upside_down": lambda alpha, r: r / alpha,
}
_SCALE_HINTS = {
    "none": "You left out the scale: the low-rank update is multiplied by alpha / r (r = lora_A.shape[0], the "
            "rank). The scale keeps the update's size from changing with r, so a new rank needs no new learning "
            "rate; multiply the update by alpha / r.",
    "alpha": "You scaled the update by alpha only: divide by the rank too, scale = alpha / r with r = "
             "lora_A.shape[0].",
    "inverse_r": "You scaled the update by 1 / r only: multiply by alpha too, scale = alpha / r.",
    "upside_down": "Your scale is upside down (r / alpha): it is alpha / r, alpha over the rank r = "
                   "lora_A.shape[0].",
}


def _any_of(*impls):
    """A `detect` rule: the learner's output matches one of several spellings of the same mistake."""
    def detect(case: Case, got) -> bool:
        for impl in impls:
            try:
                modelled = impl(**copy.deepcopy(case.kwargs))
            except Exception:  # noqa: BLE001 - a spelling that cannot run on this case does not match it
                continue
            if close(modelled, got, 1e-4):
                return True
        return False
    return detect


# ------------------------------------------------------------------------------------------------ lora_forward
def _forward_mistake(scale="right", order="A then B", transpose_adapters=True, frozen="x @ weight.T",
                     with_bias=True):
    """A wrong lora_forward: the reference recipe with one ingredient changed."""
    def impl(x, weight, lora_A, lora_B, alpha, bias=None):
        r = lora_A.shape[0]
        if order == "B then A":
            update = (x @ lora_B) @ lora_A
        else:
            update = (x @ lora_A.T) @ lora_B.T if transpose_adapters else (x @ lora_A) @ lora_B
        y = (alpha / r if scale == "right" else _SCALES[scale](alpha, r)) * update
        if frozen == "x @ weight.T":
            y = y + x @ weight.T
        elif frozen == "x @ weight":
            y = y + x @ weight
        return y + bias if with_bias and bias is not None else y
    return impl


_FORWARD_MISTAKES = [
    *[Mistake(hint, _forward_mistake(scale=scale)) for scale, hint in _SCALE_HINTS.items()],
    Mistake("You applied lora_B before lora_A (x @ lora_B @ lora_A, or x @ (lora_B @ lora_A)): the input goes "
            "down through A to r numbers, then up through B to d_out: (x @ lora_A.T) @ lora_B.T. Your order only "
            "ran because this case is square (d_in = d_out); on other shapes it fails.",
            _forward_mistake(order="B then A")),
    Mistake("You multiplied by weight untransposed (x @ weight): torch stores a Linear weight as (d_out, d_in), so "
            "the frozen path is x @ weight.T. Yours only ran because this case is square (d_in = d_out).",
            _forward_mistake(frozen="x @ weight")),
    Mistake("You used lora_A and lora_B untransposed (x @ lora_A @ lora_B): like weight, they are stored (out, in), "
            "lora_A (r, d_in) and lora_B (d_out, r), so the update is (x @ lora_A.T) @ lora_B.T. Yours only ran "
            "because this case is square (d_in = d_out = r).",
            detect=_any_of(_forward_mistake(transpose_adapters=False),
                           _forward_mistake(transpose_adapters=False, frozen="x @ weight"))),
    Mistake("You returned only the low-rank update: LoRA adds it to the frozen layer's output, y = x @ weight.T + "
            "bias + (alpha / r) * (x @ lora_A.T) @ lora_B.T; it does not replace it (the frozen weight is the "
            "pretrained model, the adapter a small change to it).",
            detect=_any_of(_forward_mistake(frozen="none"), _forward_mistake(frozen="none", with_bias=False))),
    Mistake("You forgot the bias: when it is not None, add it to the output, y = x @ weight.T + bias + "
            "(alpha / r) * (x @ lora_A.T) @ lora_B.T.", _forward_mistake(with_bias=False)),
]


def _forward_case(d_in, d_out, r, alpha, lead, seed, bias="random", zero_B=False) -> Case:
    g = torch.Generator().manual_seed(1000 + seed)
    kwargs = {"x": randn(g, *lead, d_in), **_weights(d_in, d_out, r, alpha, seed, zero_B=zero_B)}
    if bias == "random":
        kwargs["bias"] = randn(g, d_out)
    elif bias == "None":
        kwargs["bias"] = None
    what = (f"x of shape {(*lead, d_in)}, {_shape_what(d_in, d_out, r, alpha)}, "
            + {"random": "with a bias", "None": "bias=None", "left out": "no bias argument (default None)"}[bias]
            + (", lora_B = 0 as peft initialises it: the layer is unchanged" if zero_B else ""))
    return Case(kwargs, what)


_FORWARD_CASES = [
    Case({"x": torch.tensor([[1.0, 2.0]]), **_worked(bias=[1.0, -1.0])},
         f"worked example: x [[1, 2]], {_WORKED_WHAT}, bias [1, -1]", expected=torch.tensor([[14.0, -5.0]])),
    _forward_case(6, 4, 2, 8.0, (5,), seed=1),
    _forward_case(4, 6, 4, 2.0, (3,), seed=2, bias="left out"),
    _forward_case(5, 5, 1, 3.0, (2, 3), seed=3),
    _forward_case(3, 7, 4, 16.0, (2, 3), seed=4, bias="None"),
    _forward_case(6, 4, 2, 16.0, (4,), seed=5, zero_B=True),
]


def _shape_checks(valid: dict) -> list:
    """The argument checks both exercises share: rank 0, lora_A not (r, d_in), lora_B not (d_out, r)."""
    return [
        must_reject({**valid, "lora_A": torch.zeros(0, 2), "lora_B": torch.zeros(2, 0)},
                    "rank r = 0 (lora_A of shape (0, 2), lora_B of shape (2, 0))",
                    "r = lora_A.shape[0] must be at least 1; alpha / r would divide by zero"),
        must_reject({**valid, "lora_A": torch.ones(2, 3)}, "lora_A of shape (2, 3) with weight of shape (2, 2)",
                    "lora_A must be (r, d_in), its columns as many as weight's"),
        must_reject({**valid, "lora_B": torch.ones(2, 3)}, "lora_B of shape (2, 3) with lora_A of shape (2, 2)",
                    "lora_B must be (d_out, r): as many rows as weight, as many columns as lora_A has rows"),
    ]


LORA_FORWARD = Exercise(
    reference=lora.lora_forward,
    cases=_FORWARD_CASES,
    mistakes=_FORWARD_MISTAKES,
    atol=1e-4,
    properties=_shape_checks({"x": torch.tensor([[1.0, 2.0]]), **_worked(bias=[1.0, -1.0])}),
)


# ------------------------------------------------------------------------------------------------ merge_lora
def _merge_mistake(scale="right", update="B @ A", add=True):
    """A wrong merge_lora: the reference recipe with one ingredient changed."""
    def impl(weight, lora_A, lora_B, alpha):
        r = lora_A.shape[0]
        product = {"B @ A": lambda: lora_B @ lora_A, "A @ B": lambda: lora_A @ lora_B,
                   "transposed": lambda: lora_A.T @ lora_B.T}[update]()
        delta = (alpha / r if scale == "right" else _SCALES[scale](alpha, r)) * product
        return weight + delta if add else delta
    return impl


_MERGE_MISTAKES = [
    *[Mistake(hint, _merge_mistake(scale=scale)) for scale, hint in _SCALE_HINTS.items()],
    Mistake("You multiplied lora_A @ lora_B: the update is lora_B @ lora_A, (d_out, r) @ (r, d_in) = (d_out, d_in), "
            "the weight's own shape. Yours only ran because this case is square (d_in = d_out = r).",
            _merge_mistake(update="A @ B")),
    Mistake("Your update is transposed (lora_A.T @ lora_B.T, or (lora_B @ lora_A).T), (d_in, d_out): the weight is "
            "(d_out, d_in), so add lora_B @ lora_A. ((d_in, d_out) is how GPT-2's Conv1D stores its weight, which "
            "is why peft transposes the update for it.) Yours only ran because this case is square.",
            _merge_mistake(update="transposed")),
    Mistake("You returned only the update (alpha / r) * lora_B @ lora_A: the merged weight is the frozen weight "
            "plus the update, weight + (alpha / r) * lora_B @ lora_A.", _merge_mistake(add=False)),
]


def _merge_case(d_in, d_out, r, alpha, seed) -> Case:
    return Case(_weights(d_in, d_out, r, alpha, seed), _shape_what(d_in, d_out, r, alpha))


_MERGE_CASES = [
    Case(_worked(), f"worked example: {_WORKED_WHAT}", expected=torch.tensor([[5.0, 4.0], [2.0, -3.0]])),
    _merge_case(6, 4, 2, 8.0, seed=11),
    _merge_case(4, 6, 4, 2.0, seed=12),
    _merge_case(5, 5, 1, 3.0, seed=13),
    _merge_case(3, 7, 4, 16.0, seed=14),
]

MERGE_LORA = Exercise(
    reference=lora.merge_lora,
    cases=_MERGE_CASES,
    mistakes=_MERGE_MISTAKES,
    atol=1e-4,
    properties=_shape_checks(_worked()),
)
