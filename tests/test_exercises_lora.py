"""Lab 09's checkers (lora_forward, merge_lora): each accepts the reference and independently written correct
versions, and names each typical mistake. The wrong versions are written the way a learner would write them, apart
from the checker's catalogue, so a test fails if the test vectors stop telling a mistake apart."""

import pytest
import torch
import torch.nn.functional as F
from exercise_contract import contract

from rlhf_kit.exercises import EXERCISES, verify
from rlhf_kit.lora import lora_forward, merge_lora

NAMES = ["lora_forward", "merge_lora"]


def _rank(weight, lora_A, lora_B):
    """The learner's own shape checks: r, or ValueError."""
    r = lora_A.shape[0]
    if r < 1 or lora_A.shape[1] != weight.shape[1] or lora_B.shape != (weight.shape[0], r):
        raise ValueError(f"bad LoRA shapes {weight.shape}, {lora_A.shape}, {lora_B.shape}")
    return r


# ------------------------------------------------------------------------------------------------ lora_forward
def forward_with_linear(x, weight, lora_A, lora_B, alpha, bias=None):
    """Correct, with F.linear, the adapters as two small layers."""
    r = _rank(weight, lora_A, lora_B)
    return F.linear(x, weight, bias) + alpha / r * F.linear(F.linear(x, lora_A), lora_B)


def forward_einsum(x, weight, lora_A, lora_B, alpha, bias=None):
    """Correct, index by index."""
    r = _rank(weight, lora_A, lora_B)
    down = torch.einsum("...i,ri->...r", x, lora_A)
    y = torch.einsum("...i,oi->...o", x, weight) + torch.einsum("...r,or->...o", down, lora_B) * (alpha / r)
    return y if bias is None else y + bias


def forward_via_merged_weight(x, weight, lora_A, lora_B, alpha, bias=None):
    """Correct values (though it forms the full product the reference avoids)."""
    r = _rank(weight, lora_A, lora_B)
    return F.linear(x, weight + (alpha / r) * lora_B @ lora_A, bias)


def _frozen(x, weight, bias):
    return F.linear(x, weight, bias)


def forward_no_scale(x, weight, lora_A, lora_B, alpha, bias=None):
    return _frozen(x, weight, bias) + x @ lora_A.T @ lora_B.T


def forward_alpha_only(x, weight, lora_A, lora_B, alpha, bias=None):
    return _frozen(x, weight, bias) + alpha * (x @ lora_A.T @ lora_B.T)


def forward_one_over_r(x, weight, lora_A, lora_B, alpha, bias=None):
    return _frozen(x, weight, bias) + (x @ lora_A.T @ lora_B.T) / lora_A.shape[0]


def forward_r_over_alpha(x, weight, lora_A, lora_B, alpha, bias=None):
    return _frozen(x, weight, bias) + lora_A.shape[0] / alpha * (x @ lora_A.T @ lora_B.T)


def forward_b_first(x, weight, lora_A, lora_B, alpha, bias=None):
    return _frozen(x, weight, bias) + alpha / len(lora_A) * (x @ (lora_B @ lora_A))


def forward_weight_untransposed(x, weight, lora_A, lora_B, alpha, bias=None):
    y = torch.matmul(x, weight) + alpha / lora_A.shape[0] * F.linear(F.linear(x, lora_A), lora_B)
    return y if bias is None else y + bias


def forward_adapters_untransposed(x, weight, lora_A, lora_B, alpha, bias=None):
    return _frozen(x, weight, bias) + (alpha / lora_A.shape[0]) * torch.matmul(torch.matmul(x, lora_A), lora_B)


def forward_update_only(x, weight, lora_A, lora_B, alpha, bias=None):
    update = (alpha / lora_A.shape[0]) * F.linear(F.linear(x, lora_A), lora_B)
    return update if bias is None else update + bias


def forward_update_only_no_bias(x, weight, lora_A, lora_B, alpha, bias=None):
    return (alpha / lora_A.shape[0]) * (x @ lora_A.T) @ lora_B.T


def forward_no_bias(x, weight, lora_A, lora_B, alpha, bias=None):
    return x @ weight.T + (alpha / lora_A.shape[0]) * (x @ lora_A.T) @ lora_B.T


def forward_no_checks(x, weight, lora_A, lora_B, alpha, bias=None):
    """Right values, but r = 0 divides by zero and bad shapes fail inside matmul."""
    return F.linear(x, weight, bias) + alpha / lora_A.shape[0] * (x @ lora_A.T @ lora_B.T)


# ------------------------------------------------------------------------------------------------ merge_lora
def merge_loop(weight, lora_A, lora_B, alpha):
    """Correct, entry by entry."""
    r = _rank(weight, lora_A, lora_B)
    merged = weight.clone()
    for o in range(weight.shape[0]):
        for i in range(weight.shape[1]):
            merged[o, i] += alpha / r * sum(lora_B[o, k] * lora_A[k, i] for k in range(r))
    return merged


def merge_outer_products(weight, lora_A, lora_B, alpha):
    """Correct: a sum of r rank-one matrices."""
    r = _rank(weight, lora_A, lora_B)
    return weight + alpha / r * sum(torch.outer(lora_B[:, k], lora_A[k]) for k in range(r))


def merge_no_scale(weight, lora_A, lora_B, alpha):
    return weight + lora_B @ lora_A


def merge_alpha_only(weight, lora_A, lora_B, alpha):
    return weight + alpha * lora_B @ lora_A


def merge_one_over_r(weight, lora_A, lora_B, alpha):
    return weight + torch.mm(lora_B, lora_A) / lora_A.shape[0]


def merge_r_over_alpha(weight, lora_A, lora_B, alpha):
    return weight + (lora_A.shape[0] / alpha) * torch.mm(lora_B, lora_A)


def merge_a_times_b(weight, lora_A, lora_B, alpha):
    return weight + alpha / lora_A.shape[0] * torch.mm(lora_A, lora_B)


def merge_transposed(weight, lora_A, lora_B, alpha):
    return weight + (alpha / lora_A.shape[0] * (lora_B @ lora_A)).T


def merge_delta_only(weight, lora_A, lora_B, alpha):
    return alpha / lora_A.shape[0] * (lora_B @ lora_A)


def merge_in_place(weight, lora_A, lora_B, alpha):
    _rank(weight, lora_A, lora_B)
    weight += alpha / lora_A.shape[0] * lora_B @ lora_A
    return weight


WRONG = [
    ("lora_forward", forward_no_scale, "You left out the scale"),
    ("lora_forward", forward_alpha_only, "by alpha only"),
    ("lora_forward", forward_one_over_r, "by 1 / r only"),
    ("lora_forward", forward_r_over_alpha, "upside down"),
    ("lora_forward", forward_b_first, "lora_B before lora_A"),
    ("lora_forward", forward_weight_untransposed, "weight untransposed (x @ weight)"),
    ("lora_forward", forward_adapters_untransposed, "lora_A and lora_B untransposed"),
    ("lora_forward", forward_update_only, "only the low-rank update"),
    ("lora_forward", forward_update_only_no_bias, "only the low-rank update"),
    ("lora_forward", forward_no_bias, "You forgot the bias"),
    ("merge_lora", merge_no_scale, "You left out the scale"),
    ("merge_lora", merge_alpha_only, "by alpha only"),
    ("merge_lora", merge_one_over_r, "by 1 / r only"),
    ("merge_lora", merge_r_over_alpha, "upside down"),
    ("merge_lora", merge_a_times_b, "You multiplied lora_A @ lora_B"),
    ("merge_lora", merge_transposed, "Your update is transposed"),
    ("merge_lora", merge_delta_only, "only the update"),
]
CORRECT = [("lora_forward", forward_with_linear), ("lora_forward", forward_einsum),
           ("lora_forward", forward_via_merged_weight), ("merge_lora", merge_loop),
           ("merge_lora", merge_outer_products)]

(test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
 test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(NAMES, WRONG, CORRECT)


# ------------------------------------------------------------------------------------------------ worked examples
def _worked():
    return (torch.tensor([[1.0, 0.0], [2.0, 1.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]]),
            torch.tensor([[1.0, 0.0], [0.0, -1.0]]))


def test_worked_examples_by_hand():
    """d_in = d_out = r = 2, alpha 8: the scale is 4. x @ W.T = [1, 4], the update 4 * [3, -2], the bias [1, -1]."""
    weight, lora_A, lora_B = _worked()
    y = lora_forward(torch.tensor([[1.0, 2.0]]), weight, lora_A, lora_B, 8, bias=torch.tensor([1.0, -1.0]))
    assert torch.equal(y, torch.tensor([[14.0, -5.0]]))
    assert torch.equal(merge_lora(weight, lora_A, lora_B, 8), torch.tensor([[5.0, 4.0], [2.0, -3.0]]))
    for name, expected in (("lora_forward", [[14.0, -5.0]]), ("merge_lora", [[5.0, 4.0], [2.0, -3.0]])):
        case = EXERCISES[name].cases[0]
        assert case.what.startswith("worked example") and torch.equal(case.expected, torch.tensor(expected))


def test_every_mistake_is_told_apart_on_the_worked_example():
    """Each catalogued mistake model runs on the (square) worked example and gives a value of its own there, so the
    first case already names it: no two hints compete for the same wrong answer."""
    for name in NAMES:
        exercise = EXERCISES[name]
        case = exercise.cases[0]
        right = exercise.reference(**case.kwargs)
        outputs = [m.impl(**case.kwargs) for m in exercise.mistakes if m.impl is not None]
        values = [right, *outputs]
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                assert not torch.allclose(a, b, atol=1e-3), name


def test_batches_and_bias_cases_are_covered():
    cases = EXERCISES["lora_forward"].cases
    assert {c.kwargs["lora_A"].shape[0] for c in cases} >= {1, 2, 4}
    assert any(c.kwargs["x"].dim() == 3 for c in cases)
    assert any(c.kwargs.get("bias") is not None for c in cases) and any(c.kwargs.get("bias") is None for c in cases)
    assert any("bias" not in c.kwargs for c in cases)            # the default bias=None is used, too


def test_missing_argument_checks_are_named():
    ok, message = verify("lora_forward", forward_no_checks)
    assert not ok and "rank r = 0" in message and "raise ValueError" in message, message


def test_merging_in_place_is_named():
    ok, message = verify("merge_lora", merge_in_place)
    assert not ok and "changed its input `weight` in place" in message, message


@pytest.mark.parametrize("kwargs, match", [
    ({"lora_A": torch.zeros(0, 2), "lora_B": torch.zeros(2, 0)}, r"rank r = 0"),
    ({"lora_A": torch.ones(3, 5)}, r"lora_A has shape \(3, 5\) but weight \(2, 2\) takes d_in = 2"),
    ({"lora_B": torch.ones(2, 3)}, r"lora_B has shape \(2, 3\).*must be \(d_out, r\) = \(2, 2\)"),
    ({"weight": torch.ones(2)}, r"weight must be a matrix"),
])
def test_reference_errors_name_the_shapes(kwargs, match):
    weight, lora_A, lora_B = _worked()
    args = {"weight": weight, "lora_A": lora_A, "lora_B": lora_B, "alpha": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        merge_lora(**args)
    with pytest.raises(ValueError, match=match):
        lora_forward(torch.ones(1, 2), **args)


def test_forward_rejects_x_and_bias_of_the_wrong_size():
    weight, lora_A, lora_B = _worked()
    with pytest.raises(ValueError, match=r"x has shape \(4, 3\).*must be \(\.\.\., 2\)"):
        lora_forward(torch.ones(4, 3), weight, lora_A, lora_B, 8)
    with pytest.raises(ValueError, match=r"bias has shape \(3,\)"):
        lora_forward(torch.ones(4, 2), weight, lora_A, lora_B, 8, bias=torch.ones(3))
