"""Lab 05's exercise checkers (`best_of_n_select`, `gao_fit`, `adaptive_kl_update`): each accepts the reference and
independently written correct versions, and names each catalogued mistake.

As in test_exercises_rlhf.py, the wrong implementations are written the way a learner would write them, not copied
from the checker's catalogue, so a test fails if the test vectors stop telling a mistake apart.
"""

import math

import numpy as np
import pytest
import torch
from exercise_contract import contract

from rlhf_kit import hacking, ppo
from rlhf_kit.exercises import EXERCISES, OUTCOMES, summary, verify
from rlhf_kit.exercises import check as check_exercise

LAB05 = {"best_of_n_select": hacking.best_of_n_select, "gao_fit": hacking.gao_fit,
         "adaptive_kl_update": ppo.adaptive_kl_update}


# ------------------------------------------------------------------------------------------------ best_of_n_select
def select_loops(rewards, n):
    """A correct version with loops."""
    prompts, k = rewards.shape
    if n < 1 or k % n != 0:
        raise ValueError("n must divide k")
    out = torch.zeros(prompts, k // n, dtype=torch.long)
    for i in range(prompts):
        for g in range(k // n):
            group = rewards[i, g * n:(g + 1) * n]
            out[i, g] = g * n + int(torch.argmax(group))
    return out


def select_topk(rewards, n):
    """A correct version with unfold and topk."""
    if n <= 0 or rewards.shape[1] % n:
        raise ValueError(f"bad n={n}")
    windows = rewards.unfold(1, n, n)                         # (prompts, groups, n), non-overlapping
    best = windows.topk(1, dim=-1).indices.squeeze(-1)
    return best + n * torch.arange(windows.shape[1])


def select_argmin(rewards, n):
    p, k = rewards.shape
    return rewards.view(p, -1, n).argmin(dim=2) + torch.arange(k // n) * n


def select_no_offset(rewards, n):
    p, k = rewards.shape
    return rewards.view(p, k // n, n).argmax(dim=2)


def select_whole_row(rewards, n):
    p, k = rewards.shape
    best = rewards.argmax(dim=1)
    return torch.stack([best] * (k // n), dim=1)


def select_strided(rewards, n):
    p, k = rewards.shape
    g = k // n
    out = torch.zeros(p, g, dtype=torch.long)
    for j in range(g):
        cols = list(range(j, k, g))                           # every g-th column: interleaved groups
        out[:, j] = torch.tensor(cols)[rewards[:, cols].argmax(1)]
    return out


def select_groups_first(rewards, n):
    p, k = rewards.shape
    g = k // n
    best = rewards.reshape(g, p, n).argmax(-1)                # (groups, prompts): rows mix prompts
    return best.t() + n * torch.arange(g)


def select_flat(rewards, n):
    p, k = rewards.shape
    groups = rewards.flatten().split(n)
    picks = [i * n + int(grp.argmax()) for i, grp in enumerate(groups)]
    return torch.tensor(picks).view(p, -1)


def select_one_based(rewards, n):
    return select_loops(rewards, n) + 1


def select_short_range(rewards, n):
    p, k = rewards.shape
    cols = []
    for start in range(0, k - n, n):                          # stops one group short
        cols.append(rewards[:, start:start + n].argmax(1) + start)
    return torch.stack(cols, 1) if cols else torch.zeros(p, 0, dtype=torch.long)


def select_sliding(rewards, n):
    return torch.stack([rewards[:, s:s + n].argmax(1) + s for s in range(rewards.shape[1] - n + 1)], 1)


# ------------------------------------------------------------------------------------------------ gao_fit
def gao_normal_equations(kl, gain, form):
    """A correct version: the normal equations, by hand."""
    d = torch.sqrt(kl)
    if form == "bon":
        x2 = -d ** 2
    elif form == "rl":
        x2 = -torch.where(d > 0, d * torch.log(d), torch.zeros_like(d))
    else:
        raise ValueError(form)
    X = torch.stack([d, x2], dim=1)
    return torch.linalg.solve(X.T @ X, X.T @ gain)


def gao_numpy(kl, gain, form):
    """A correct version in numpy, returned as a tensor."""
    if form not in ("bon", "rl"):
        raise ValueError("form must be bon or rl")
    d = np.sqrt(kl.numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        second = d ** 2 if form == "bon" else np.nan_to_num(d * np.log(d))
    coef, *_ = np.linalg.lstsq(np.column_stack([d, -second]), gain.numpy(), rcond=None)
    return torch.from_numpy(coef)


def _gao(kl, gain, form, *, d=None, second=None, sign=-1.0, intercept=False):
    d = kl.sqrt() if d is None else d
    if second is None:
        second = d ** 2 if form == "bon" else torch.xlogy(d, d)
    cols = [d, sign * second] + ([torch.ones_like(d)] if intercept else [])
    sol = torch.linalg.lstsq(torch.stack(cols, 1), gain.unsqueeze(1)).solution.squeeze(1)
    return sol[:2]


def gao_on_kl(kl, gain, form):
    return _gao(kl, gain, form, d=kl)


def gao_plus_sign(kl, gain, form):
    return _gao(kl, gain, form, sign=1.0)


def gao_swapped(kl, gain, form):
    d = kl.sqrt()
    return _gao(kl, gain, form, second=torch.xlogy(d, d) if form == "bon" else d ** 2)


def gao_log_only(kl, gain, form):
    d = kl.sqrt()
    return _gao(kl, gain, form, second=d ** 2 if form == "bon" else torch.log(d))


def gao_log10(kl, gain, form):
    d = kl.sqrt()
    return _gao(kl, gain, form, second=d ** 2 if form == "bon" else d * torch.log10(d))


def gao_intercept(kl, gain, form):
    return _gao(kl, gain, form, intercept=True)


def gao_nan_at_zero(kl, gain, form):
    d = kl.sqrt()
    return _gao(kl, gain, form, second=d ** 2 if form == "bon" else d * torch.log(d))


def gao_nan_normal_equations(kl, gain, form):
    if form not in ("bon", "rl"):
        raise ValueError(form)
    d = kl ** 0.5
    X = torch.stack([d, -(d * d if form == "bon" else d * d.log())], 1)
    return torch.linalg.pinv(X.T @ X) @ X.T @ gain


# ------------------------------------------------------------------------------------------------ adaptive_kl_update
def kl_update_numpy(beta, kl, target, n_steps, horizon):
    """A correct version, as TRL's old AdaptiveKLController writes it."""
    if target <= 0:
        raise ValueError("target must be positive")
    proportional_error = np.clip(kl / target - 1, -0.2, 0.2)
    mult = 1 + proportional_error * n_steps / horizon
    return beta * mult


def kl_update_no_clip(beta, kl, target, n_steps, horizon):
    return beta * (1 + (kl / target - 1) * n_steps / horizon)


def kl_update_sign(beta, kl, target, n_steps, horizon):
    e = max(-0.2, min(0.2, kl / target - 1))
    return beta * (1 - e * n_steps / horizon)


def kl_update_inverted(beta, kl, target, n_steps, horizon):
    e = max(-0.2, min(0.2, target / kl - 1))
    return beta * (1 + e * n_steps / horizon)


def kl_update_absolute(beta, kl, target, n_steps, horizon):
    e = max(-0.2, min(0.2, kl - target))
    return beta * (1 + e * n_steps / horizon)


def kl_update_no_horizon(beta, kl, target, n_steps, horizon):
    e = max(-0.2, min(0.2, kl / target - 1))
    return beta * (1 + e)


def kl_update_additive(beta, kl, target, n_steps, horizon):
    e = max(-0.2, min(0.2, kl / target - 1))
    return beta + e * n_steps / horizon


def kl_update_clip_late(beta, kl, target, n_steps, horizon):
    step = (kl / target - 1) * n_steps / horizon
    return beta * (1 + max(-0.2, min(0.2, step)))


def kl_update_no_validation(beta, kl, target, n_steps, horizon):
    e = max(-0.2, min(0.2, kl / target - 1)) if target else 0.2
    return beta * (1 + e * n_steps / horizon)


CORRECT = [
    ("best_of_n_select", select_loops),
    ("best_of_n_select", select_topk),
    ("gao_fit", gao_normal_equations),
    ("gao_fit", gao_numpy),
    ("adaptive_kl_update", kl_update_numpy),
]

# (exercise, wrong implementation, a distinctive phrase of the hint it must get)
WRONG = [
    ("best_of_n_select", select_argmin, "picked the lowest reward"),
    ("best_of_n_select", select_no_offset, "positions within each group"),
    ("best_of_n_select", select_whole_row, "best of all k samples"),
    ("best_of_n_select", select_strided, "groups are interleaved"),
    ("best_of_n_select", select_groups_first, "mix samples from different prompts"),
    ("best_of_n_select", select_flat, "indices into the flattened rewards"),
    ("best_of_n_select", select_one_based, "one too high"),
    ("best_of_n_select", select_short_range, "last group is missing"),
    ("best_of_n_select", select_sliding, "groups overlap"),
    ("gao_fit", gao_on_kl, "against the KL itself"),
    ("gao_fit", gao_plus_sign, "beta has the wrong sign"),
    ("gao_fit", gao_swapped, "forms are swapped"),
    ("gao_fit", gao_log_only, "not log d"),
    ("gao_fit", gao_log10, "natural log"),
    ("gao_fit", gao_intercept, "added an intercept"),
    ("gao_fit", gao_nan_at_zero, "raised RuntimeError on an 'rl' curve that starts at KL 0"),
    ("gao_fit", gao_nan_normal_equations, "torch.xlogy"),
    ("adaptive_kl_update", kl_update_no_clip, "not clipped"),
    ("adaptive_kl_update", kl_update_sign, "sign is flipped"),
    ("adaptive_kl_update", kl_update_inverted, "ratio is inverted"),
    ("adaptive_kl_update", kl_update_absolute, "not relative"),
    ("adaptive_kl_update", kl_update_no_horizon, "not scaled by n_steps / horizon"),
    ("adaptive_kl_update", kl_update_additive, "update is additive"),
    ("adaptive_kl_update", kl_update_clip_late, "clip is applied to e * n_steps / horizon"),
]


def test_worked_examples_agree_with_the_references():
    checked = 0
    for name, reference in LAB05.items():
        for case in EXERCISES[name].cases:
            if case.expected is not None:
                got = reference(**case.kwargs)
                if isinstance(case.expected, torch.Tensor):
                    torch.testing.assert_close(got.to(case.expected.dtype), case.expected, atol=1e-6, rtol=1e-6)
                else:
                    assert math.isclose(got, case.expected, rel_tol=1e-9)
                checked += 1
    assert checked >= 3


def test_argument_checks():
    ok, message = verify("adaptive_kl_update", kl_update_no_validation)
    assert not ok and "target = 0" in message and "ValueError" in message

    def select_no_validation(rewards, n):
        if n < 1:
            raise ValueError("n >= 1")
        p, k = rewards.shape
        return rewards[:, : k // n * n].reshape(p, -1, n).argmax(-1) + torch.arange(k // n) * n

    ok, message = verify("best_of_n_select", select_no_validation)
    assert not ok and "n = 4 with 6 samples per prompt" in message

    def gao_any_form(kl, gain, form):
        return _gao(kl, gain, "rl" if form == "rl" else "bon")

    ok, message = verify("gao_fit", gao_any_form)
    assert not ok and "form='ppo'" in message


def test_adaptive_kl_worked_example_and_the_controller_agree():
    """Twice the budget with n_steps / horizon = 0.5: the error is clipped to 0.2, so beta grows by 10%."""
    assert ppo.adaptive_kl_update(0.05, 12.0, 6.0, 16, 32) == pytest.approx(0.055)
    controller = ppo.AdaptiveKLController(0.05, 6.0, 32)
    assert controller.update(12.0, 16) == pytest.approx(0.055) and controller.beta == pytest.approx(0.055)
    assert controller.update(1.0, 16) == pytest.approx(0.055 * 0.9)


def test_a_lab_05_summary_counts_its_three_exercises(capsys):
    for name in LAB05:
        OUTCOMES.pop(name, None)
    check_exercise("best_of_n_select", select_loops)
    check_exercise("gao_fit", gao_intercept)
    capsys.readouterr()
    passed, total = summary("best_of_n_select", "gao_fit", "adaptive_kl_update")
    out = capsys.readouterr().out
    assert (passed, total) == (1, 3)
    assert "Exercises passed: 1/3" in out and "gao_fit" in out and "adaptive_kl_update" in out


(test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
 test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(LAB05, WRONG, CORRECT)
