"""Lab 07: the critic-free baselines, `group_relative_advantages` (GRPO) and `rloo_advantages` (RLOO).

References: `rlhf_kit.losses.group_relative_advantages`, `rlhf_kit.losses.rloo_advantages`. Rewards come prompt by
prompt, group_size samples each, consecutively: [p0 p0 p0 p0 p1 p1 p1 p1 ...].
"""

from __future__ import annotations

import torch

from .. import losses
from .checking import Case, Exercise, Mistake, close, must_reject, randn, show

_ORDER_HINT = ("Your groups are interleaved (samples g, g + n_groups, g + 2 n_groups, ...): each prompt's "
               "group_size samples lie next to each other, so group them with rewards.view(-1, group_size) "
               "(not view(group_size, -1)).")


def _case(rewards, group_size, what, **kwargs) -> Case:
    return Case({"rewards": torch.as_tensor(rewards, dtype=torch.float32), "group_size": group_size, **kwargs},
                what)


def _random_case(n_groups, group_size, seed, constant_group=False, **kwargs) -> Case:
    g = torch.Generator().manual_seed(seed)
    rewards = randn(g, n_groups, group_size) + 3 * randn(g, n_groups, 1)    # groups far apart: batch != group
    if constant_group:
        rewards[1] = 0.5                                                   # every sample of prompt 1 scored 0.5
    what = f"{n_groups} prompts x {group_size} samples" + (", prompt 1's samples all scored 0.5" if constant_group
                                                           else "")
    return _case(rewards.reshape(-1), group_size, what, **kwargs)


# ------------------------------------------------------------------------------------------------ GRPO
def _grpo_mistake(grouping="consecutive", std="sample", eps_used=True, always_divide=False):
    """A wrong group_relative_advantages: the reference recipe with one ingredient changed."""
    def impl(rewards, group_size, normalize_std=True, eps=1e-6):
        if grouping == "batch":
            groups = rewards.reshape(1, -1)
        elif grouping == "interleaved":
            groups = rewards.reshape(group_size, -1).T
        else:
            groups = rewards.reshape(-1, group_size)
        mean = groups.mean(1, keepdim=True)
        spread = groups.std(1, keepdim=True, unbiased=std == "sample")
        centred = groups - mean
        if normalize_std or always_divide:
            centred = centred / (spread + eps) if eps_used else centred / spread
        out = centred.T.reshape(-1) if grouping == "interleaved" else centred.reshape(-1)
        return out, losses.group_relative_advantages(rewards, group_size, normalize_std, eps)[1]
    return impl


def _has_nan(case, got) -> bool:
    advantages = got[0] if isinstance(got, tuple) else got
    return isinstance(advantages, torch.Tensor) and bool(advantages.isnan().any())


_GRPO_MISTAKES = [
    Mistake("You normalised over the whole batch: GRPO compares each sample with the other samples of *its own "
            "prompt*, so take the mean and std per group (rewards.view(-1, group_size), then over dim 1). Over "
            "the batch, an easy prompt's samples all look good and a hard one's all bad.",
            _grpo_mistake(grouping="batch")),
    Mistake(_ORDER_HINT, _grpo_mistake(grouping="interleaved")),
    Mistake("A group whose samples all scored the same has std 0, and 0 / 0 is NaN: divide by (std + eps), so "
            "such a group's advantages are 0 (no preference among equal samples).",
            detect=_has_nan),
    Mistake("Your std divides by group_size: the course (like TRL's GRPOTrainer) uses torch's default, the sample "
            "std, which divides by group_size - 1 (std(unbiased=True)).", _grpo_mistake(std="population")),
    Mistake("With normalize_std=False (Dr. GRPO) the advantage is only the reward minus its group's mean: do not "
            "divide by the std then.", _grpo_mistake(always_divide=True)),
]

_STATS_ADVICE = {
    "group_mean": "stats['group_mean'] should be each group's mean reward, shape (n // group_size,).",
    "group_std": "stats['group_std'] should be each group's sample std (divisor group_size - 1), shape "
                 "(n // group_size,).",
    "zero_std_groups": "stats['zero_std_groups'] should be the share of groups whose rewards are all equal, a "
                       "0-dim tensor (e.g. 0.25 when one group of four is constant).",
}


def _grpo_stats_problem(got, expected) -> str | None:
    stats = got[1] if isinstance(got, tuple) and len(got) == 2 else None
    if not isinstance(stats, dict) or not all(key in stats for key in _STATS_ADVICE):
        return ("the advantages are right, but return (advantages, stats) with stats a dict with keys "
                "'group_mean', 'group_std' and 'zero_std_groups'.")
    for key, advice in _STATS_ADVICE.items():
        value = torch.as_tensor(stats[key], dtype=torch.float32)
        if not close(expected[1][key], value, 1e-4):
            return f"the advantages are right, but {advice} Expected {show(expected[1][key])}, got {show(value)}."
    return None


_GRPO_CASES = [
    Case({"rewards": torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0]), "group_size": 3},
         "worked example: rewards [1, 2, 3, 6, 0, 0], group_size 3",
         expected=torch.tensor([-1.0, 0.0, 1.0, 1.1547, -0.5774, -0.5774])),
    _random_case(4, 4, seed=0),
    _random_case(3, 4, seed=1, constant_group=True),
    _random_case(3, 2, seed=2),
    _random_case(4, 3, seed=3, normalize_std=False),
]

_VALID = {"rewards": torch.tensor([1.0, 2.0, 3.0, 4.0]), "group_size": 2}

GROUP_RELATIVE_ADVANTAGES = Exercise(
    reference=losses.group_relative_advantages,
    cases=_GRPO_CASES,
    mistakes=_GRPO_MISTAKES,
    atol=1e-4,
    outputs=("advantages", "stats"),
    compare=lambda output: output[0],
    extra=_grpo_stats_problem,
    properties=[
        must_reject({**_VALID, "group_size": 1}, "group_size = 1", "a sample needs others of its prompt to compare "
                                                                   "with: group_size >= 2"),
        must_reject({**_VALID, "group_size": 3}, "4 rewards with group_size = 3",
                    "the number of rewards must be a multiple of group_size"),
    ],
)


# ------------------------------------------------------------------------------------------------ RLOO
def _rloo_mistake(baseline):
    def impl(rewards, group_size):
        groups = rewards.reshape(-1, group_size)
        return (groups - baseline(groups, group_size, rewards)).reshape(-1)
    return impl


def _rloo_interleaved(rewards, group_size):
    groups = rewards.reshape(group_size, -1).T
    others = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).T.reshape(-1)


def _rloo_flipped(rewards, group_size):
    return -losses.rloo_advantages(rewards, group_size)


_RLOO_MISTAKES = [
    Mistake("Your baseline includes the sample itself (the plain group mean): leave it out, baseline_i = "
            "(sum of the group - r_i) / (group_size - 1). A baseline that contains r_i depends on the sample and "
            "shrinks every advantage by (group_size - 1) / group_size.",
            _rloo_mistake(lambda groups, k, r: groups.mean(1, keepdim=True))),
    Mistake("Divide the others' sum by group_size - 1, the number of *other* samples, not by group_size.",
            _rloo_mistake(lambda groups, k, r: (groups.sum(1, keepdim=True) - groups) / k)),
    Mistake("Your baseline is the mean of every other sample in the batch: leave-one-out is within each prompt's "
            "group (rewards.view(-1, group_size)), the other samples of the same prompt.",
            _rloo_mistake(lambda groups, k, r: ((r.sum() - groups) / (r.numel() - 1)))),
    Mistake(_ORDER_HINT, _rloo_interleaved),
    Mistake("The sign is flipped: the advantage is the sample's reward minus the baseline, r_i - baseline_i, so a "
            "better-than-the-others sample gets a positive advantage.", _rloo_flipped),
]

_RLOO_CASES = [
    Case({"rewards": torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0]), "group_size": 3},
         "worked example: rewards [1, 2, 3, 6, 0, 0], group_size 3",
         expected=torch.tensor([-1.5, 0.0, 1.5, 6.0, -3.0, -3.0])),
    _random_case(4, 4, seed=4),
    _random_case(3, 2, seed=5),
    _random_case(2, 5, seed=6, constant_group=True),
]

RLOO_ADVANTAGES = Exercise(
    reference=losses.rloo_advantages,
    cases=_RLOO_CASES,
    mistakes=_RLOO_MISTAKES,
    atol=1e-4,
    properties=[
        must_reject({**_VALID, "group_size": 1}, "group_size = 1", "with one sample there are no others to "
                                                                   "average: group_size >= 2"),
        must_reject({**_VALID, "group_size": 3}, "4 rewards with group_size = 3",
                    "the number of rewards must be a multiple of group_size"),
    ],
)
