"""Lab 05: reward hacking's exercises, `best_of_n_select`, `gao_fit` and `adaptive_kl_update`.

References: `rlhf_kit.hacking.best_of_n_select`, `rlhf_kit.hacking.gao_fit`, `rlhf_kit.ppo.adaptive_kl_update`.
"""

from __future__ import annotations

import math

import torch

from .. import hacking, ppo
from .checking import Case, Exercise, Mistake, must_reject, randn


# ------------------------------------------------------------------------------------------------ best_of_n_select
def _select_case(prompts, k, n, seed) -> Case:
    g = torch.Generator().manual_seed(seed)
    return Case({"rewards": randn(g, prompts, k), "n": n},
                f"{prompts} prompts x {k} samples, n={n}: {k // n} groups per prompt")


def _columns(within, n):
    """Indices within each group (prompts, groups) -> columns of rewards."""
    return within + torch.arange(within.shape[1]) * n


def _select_argmin(rewards, n):
    p, k = rewards.shape
    return _columns(rewards.reshape(p, k // n, n).argmin(-1), n)


def _select_within_group(rewards, n):
    p, k = rewards.shape
    return rewards.reshape(p, k // n, n).argmax(-1)


def _select_best_of_all(rewards, n):
    p, k = rewards.shape
    return rewards.argmax(1, keepdim=True).expand(p, k // n).clone()


def _select_interleaved(rewards, n):
    p, k = rewards.shape
    groups = k // n
    return rewards.reshape(p, n, groups).argmax(1) * groups + torch.arange(groups)


def _select_mixing_prompts(rewards, n):
    p, k = rewards.shape
    return _columns(rewards.reshape(k // n, p, n).argmax(-1).T, n)


def _select_flat_indices(rewards, n):
    p, k = rewards.shape
    flat = rewards.reshape(-1, n).argmax(-1) + torch.arange(p * k // n) * n
    return flat.reshape(p, k // n)


def _select_one_based(rewards, n):
    return hacking.best_of_n_select(rewards, n) + 1


def _select_last_group_lost(rewards, n):
    return hacking.best_of_n_select(rewards, n)[:, :-1]


def _select_sliding(rewards, n):
    p, k = rewards.shape
    return torch.stack([rewards[:, s:s + n].argmax(1) + s for s in range(k - n + 1)], 1)


_SELECT_MISTAKES = [
    Mistake("You picked the lowest reward: best-of-n keeps the sample the reward model likes best, argmax, not "
            "argmin.", _select_argmin),
    Mistake("Those are positions within each group (0 .. n-1): return columns of `rewards`, so add each group's "
            "first column, g * n, to the position within group g.", _select_within_group),
    Mistake("You picked the best of all k samples of the prompt, once per group: each group of n is a separate "
            "best-of-n draw, so take the argmax within each group.", _select_best_of_all),
    Mistake("Your groups are interleaved (columns g, g + k//n, g + 2k//n, ...): group g is the n consecutive "
            "columns g*n .. g*n + n - 1, which reshape(prompts, k // n, n) gives (not reshape(prompts, n, k // n)).",
            _select_interleaved),
    Mistake("Your groups mix samples from different prompts: reshape to (prompts, k // n, n), prompt axis first "
            "as in `rewards`, so each prompt's picks come from its own samples.", _select_mixing_prompts),
    Mistake("Those are indices into the flattened rewards (prompt i's columns counted from i * k): return the "
            "column within each prompt's row, 0 .. k-1.", _select_flat_indices),
    Mistake("Your indices are one too high: Python and torch count columns from 0.", _select_one_based),
    Mistake("The last group is missing: a row of k samples holds k // n groups (range(0, k, n) gives their first "
            "columns; range(0, k - n, n) stops one short).", _select_last_group_lost),
    Mistake("Your groups overlap (a window sliding one column at a time): the groups are disjoint, k // n of "
            "them, so no sample is used twice.", _select_sliding),
]

_SELECT_CASES = [
    Case({"rewards": torch.tensor([[0.1, 0.9, 0.4, 0.3], [2.0, -1.0, 0.5, 0.7]]), "n": 2},
         "worked example: 2 prompts x 4 samples, n=2", expected=torch.tensor([[1, 2], [0, 3]])),
    _select_case(3, 8, 4, seed=0),
    _select_case(2, 12, 3, seed=1),
    _select_case(2, 5, 1, seed=2),
    _select_case(4, 6, 6, seed=3),
]

BEST_OF_N_SELECT = Exercise(
    reference=hacking.best_of_n_select,
    cases=_SELECT_CASES,
    mistakes=_SELECT_MISTAKES,
    properties=[
        must_reject({"rewards": torch.zeros(2, 4), "n": 0}, "n = 0", "best-of-n needs n >= 1"),
        must_reject({"rewards": torch.zeros(2, 6), "n": 4}, "n = 4 with 6 samples per prompt",
                    "n must divide the k samples per prompt, or the last group would be short"),
    ],
)


# ------------------------------------------------------------------------------------------------ gao_fit
def _gao_case(form, kl, seed=None, alpha=None, beta=None, noise=0.05) -> Case:
    kl = torch.tensor(kl, dtype=torch.float64)
    if seed is None:                                       # exact synthetic data: the fit must recover alpha, beta
        gain = hacking.gao_curve(kl, alpha, beta, form)
        return Case({"kl": kl, "gain": gain, "form": form},
                    f"'{form}', noise-free data from alpha={alpha}, beta={beta}",
                    expected=torch.tensor([alpha, beta], dtype=torch.float64))
    g = torch.Generator().manual_seed(seed)
    gain = hacking.gao_curve(kl, 1.0, 0.2, form) + noise * torch.randn(len(kl), generator=g, dtype=torch.float64)
    gain[kl == 0] = 0.0
    return Case({"kl": kl, "gain": gain, "form": form}, f"'{form}', {len(kl)} noisy points, KL up to {kl.max():g}")


def _gao_model(feature=None, sqrt=True, sign=-1.0, intercept=False):
    """A wrong gao_fit: the reference recipe with one ingredient changed."""
    def impl(kl, gain, form):
        d = kl.sqrt() if sqrt else kl
        second = (feature or hacking._gao_feature)(d, form)
        columns = [d, sign * second] + ([torch.ones_like(d)] if intercept else [])
        solution = torch.linalg.lstsq(torch.stack(columns, 1), gain[:, None]).solution[:, 0]
        return solution[:2]
    return impl


_AT_ZERO_HINT = ("at d = 0, d * log(d) is 0 * -inf = NaN in floating point, though its limit is 0, and the curve "
                 "starts there (the SFT policy, KL 0). Use torch.xlogy(d, d), which is 0 at d = 0, or "
                 "torch.where(d > 0, d * d.log(), 0).")


def _fits_from_zero(fn) -> str | None:
    """A property check: an RL curve that starts at KL 0, as every curve of the lab does."""
    kl = torch.tensor([0.0, 1.0, 4.0, 9.0, 16.0, 36.0], dtype=torch.float64)
    expected = torch.tensor([0.8, 0.3], dtype=torch.float64)
    try:
        got = fn(kl=kl, gain=hacking.gao_curve(kl, 0.8, 0.3, "rl"), form="rl")
    except Exception as error:  # noqa: BLE001 - lstsq refuses a NaN in its matrix
        return f"it raised {type(error).__name__} on an 'rl' curve that starts at KL 0: {_AT_ZERO_HINT}"
    got = torch.as_tensor(got, dtype=torch.float64)
    if bool(got.isnan().any()):
        return f"it returned NaN on an 'rl' curve that starts at KL 0: {_AT_ZERO_HINT}"
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4):
        return f"on an 'rl' curve that starts at KL 0 (alpha 0.8, beta 0.3) it returned {got.tolist()}."
    return None


_GAO_MISTAKES = [
    Mistake("You fitted against the KL itself: Gao et al.'s forms are in d = sqrt(KL), the distance on the plot's "
            "x axis.", _gao_model(sqrt=False)),
    Mistake("beta has the wrong sign: the forms subtract, gain = alpha d - beta d^2 (or - beta d log d), so the "
            "second column of X is -d^2 (or -d log d); with +d^2 the fit returns -beta.", _gao_model(sign=1.0)),
    Mistake("The two forms are swapped: best-of-n ('bon') is d (alpha - beta d), RL ('rl') is "
            "d (alpha - beta log d).",
            _gao_model(feature=lambda d, form: hacking._gao_feature(d, "rl" if form == "bon" else "bon"))),
    Mistake("The RL form's second term is d log d (gain = d (alpha - beta log d) = alpha d - beta d log d), not "
            "log d.", _gao_model(feature=lambda d, form: d * d if form == "bon" else d.log())),
    Mistake("The RL form uses the natural log (torch.log), not log10: with log10 beta comes out ln(10) times too "
            "large.", _gao_model(feature=lambda d, form: d * d if form == "bon" else d * torch.log10(d))),
    Mistake("You added an intercept: Gao et al.'s forms pass through 0 at d = 0 (no optimisation, no gain), so "
            "fit only the two columns, X = [d, -d^2] or [d, -d log d].", _gao_model(intercept=True)),
]

_GAO_CASES = [
    _gao_case("bon", [0.0, 0.19, 0.64, 1.2, 1.8, 2.5], alpha=1.5, beta=0.25),
    _gao_case("rl", [1.0, 4.0, 9.0, 16.0, 25.0, 49.0], alpha=0.8, beta=0.3),
    _gao_case("rl", [0.5, 2.0, 5.0, 11.0, 20.0, 40.0, 76.0], seed=0),
    _gao_case("bon", [0.0, 0.193, 0.636, 1.204, 1.835], seed=1),
]

GAO_FIT = Exercise(
    reference=hacking.gao_fit,
    cases=_GAO_CASES,
    mistakes=_GAO_MISTAKES,
    atol=1e-4,
    properties=[
        _fits_from_zero,
        must_reject({"kl": torch.tensor([0.0, 1.0, 4.0]), "gain": torch.tensor([0.0, 0.5, 0.8]), "form": "ppo"},
                    "form='ppo'", "only 'bon' and 'rl' are Gao et al.'s forms"),
    ],
)


# ------------------------------------------------------------------------------------------------ adaptive_kl_update
def _kl_update_case(beta, kl, target, n_steps, horizon, what) -> Case:
    return Case({"beta": beta, "kl": kl, "target": target, "n_steps": n_steps, "horizon": horizon},
                f"beta={beta}, kl={kl}, target={target}, n_steps={n_steps}, horizon={horizon}: {what}")


def _kl_update_model(error_fn=lambda kl, target: kl / target - 1, clip_after=False, clip=True, step=None,
                     combine=lambda beta, change: beta * (1 + change)):
    """A wrong adaptive_kl_update: the reference recipe with one ingredient changed."""
    def impl(beta, kl, target, n_steps, horizon):
        error = error_fn(kl, target)
        scale = n_steps / horizon if step is None else step
        if clip and not clip_after:
            error = min(max(error, -0.2), 0.2)
        change = error * scale
        if clip and clip_after:
            change = min(max(change, -0.2), 0.2)
        return combine(beta, change)
    return impl


_KL_UPDATE_MISTAKES = [
    Mistake("The sign is flipped: over budget (kl > target) the penalty must grow, so beta <- beta * (1 + e * "
            "n_steps / horizon) with e = clip(kl / target - 1, -0.2, 0.2) positive there.",
            _kl_update_model(combine=lambda beta, change: beta * (1 - change))),
    Mistake("The ratio is inverted: the error is kl / target - 1 (positive over budget), not target / kl - 1.",
            _kl_update_model(error_fn=lambda kl, target: target / kl - 1)),
    Mistake("The error is not relative: divide by the target, e = clip(kl / target - 1, -0.2, 0.2), so the same "
            "rule works for a budget of 1 nat or 100.", _kl_update_model(error_fn=lambda kl, target: kl - target)),
    Mistake("The clip is applied to e * n_steps / horizon: clip the error first, e = clip(kl / target - 1, "
            "-0.2, 0.2), then scale it by n_steps / horizon.", _kl_update_model(clip_after=True)),
    Mistake("The step is not scaled by n_steps / horizon: beta <- beta * (1 + e * n_steps / horizon); a long "
            "horizon makes beta move slowly.", _kl_update_model(step=1.0)),
    Mistake("The update is additive: it is proportional, beta <- beta * (1 + e * n_steps / horizon), so beta "
            "never changes sign and moves by a fraction of itself.",
            _kl_update_model(combine=lambda beta, change: beta + change)),
    Mistake("The error is not clipped: e = clip(kl / target - 1, -0.2, 0.2), so one batch far over budget "
            "(a KL spike) cannot multiply beta by a large factor.", _kl_update_model(clip=False)),
]

_KL_UPDATE_CASES = [
    _kl_update_case(0.05, 6.6, 6.0, 16, 64, "10% over budget, inside the clip"),
    _kl_update_case(0.05, 12.0, 6.0, 16, 32, "twice the budget: the error is clipped to +0.2"),
    _kl_update_case(0.1, 1.0, 6.0, 8, 16, "far under budget: clipped to -0.2"),
    _kl_update_case(0.2, 5.4, 6.0, 64, 10000, "10% under budget, a long horizon"),
    _kl_update_case(0.3, 2.0, 2.0, 32, 100, "exactly on budget: beta stays"),
]


def _same_beta(expected, got) -> bool:
    try:
        return math.isclose(float(got), float(expected), rel_tol=1e-7, abs_tol=1e-12)
    except (TypeError, ValueError, RuntimeError):
        return False


ADAPTIVE_KL_UPDATE = Exercise(
    reference=ppo.adaptive_kl_update,
    cases=_KL_UPDATE_CASES,
    mistakes=_KL_UPDATE_MISTAKES,
    same=_same_beta,
    mismatch=lambda expected, got: f"expected beta = {float(expected):.6g}, got {got!r}",
    properties=[
        must_reject({"beta": 0.1, "kl": 1.0, "target": 0.0, "n_steps": 8, "horizon": 100}, "target = 0",
                    "the error divides by the KL target, which must be > 0"),
    ],
)
