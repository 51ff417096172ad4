"""Lab 07's checkers (group_relative_advantages, rloo_advantages): each accepts the reference and independently
written correct versions, and names each typical mistake. The wrong versions are written the way a learner would
write them, apart from the checker's catalogue, so a test fails if the test vectors stop telling a mistake apart."""

import torch
from exercise_contract import contract

from rlhf_kit import losses
from rlhf_kit.exercises import verify

NAMES = ["group_relative_advantages", "rloo_advantages"]


def _stats(rewards, group_size):
    return losses.group_relative_advantages(rewards, group_size)[1]


# ------------------------------------------------------------------------------------------------ GRPO
def grpo_loop(rewards, group_size, normalize_std=True, eps=1e-6):
    """Correct, one group at a time."""
    if group_size < 2 or len(rewards) % group_size:
        raise ValueError("bad group_size")
    out, means, stds, constant = [], [], [], 0
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        mean = sum(group.tolist()) / group_size
        std = (sum((x - mean) ** 2 for x in group.tolist()) / (group_size - 1)) ** 0.5
        constant += std == 0
        means.append(mean)
        stds.append(std)
        out += [(x - mean) / (std + eps) if normalize_std else x - mean for x in group.tolist()]
    return torch.tensor(out), {"group_mean": torch.tensor(means), "group_std": torch.tensor(stds),
                               "zero_std_groups": torch.tensor(constant / len(means))}


def grpo_batch(rewards, group_size, normalize_std=True, eps=1e-6):
    a = rewards - rewards.mean()
    return (a / (rewards.std() + eps) if normalize_std else a), _stats(rewards, group_size)


def grpo_transposed(rewards, group_size, normalize_std=True, eps=1e-6):
    g = rewards.view(group_size, -1)
    a = (g - g.mean(0)) / (g.std(0) + eps) if normalize_std else g - g.mean(0)
    return a.reshape(-1), _stats(rewards, group_size)


def grpo_no_eps(rewards, group_size, normalize_std=True, eps=1e-6):
    g = rewards.view(-1, group_size)
    a = g - g.mean(1, keepdim=True)
    return (a / g.std(1, keepdim=True) if normalize_std else a).reshape(-1), _stats(rewards, group_size)


def grpo_population_std(rewards, group_size, normalize_std=True, eps=1e-6):
    g = rewards.view(-1, group_size)
    a = g - g.mean(1, keepdim=True)
    std = ((a ** 2).mean(1, keepdim=True)).sqrt()
    return (a / (std + eps) if normalize_std else a).reshape(-1), _stats(rewards, group_size)


def grpo_ignores_flag(rewards, group_size, normalize_std=True, eps=1e-6):
    g = rewards.view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).reshape(-1), _stats(rewards, group_size)


def grpo_no_stats(rewards, group_size, normalize_std=True, eps=1e-6):
    return losses.group_relative_advantages(rewards, group_size, normalize_std, eps)[0], {}


# ------------------------------------------------------------------------------------------------ RLOO
def rloo_loop(rewards, group_size):
    if group_size < 2 or len(rewards) % group_size:
        raise ValueError("bad group_size")
    out = []
    for i, r in enumerate(rewards.tolist()):
        start = i // group_size * group_size
        others = [x for j, x in enumerate(rewards.tolist()[start:start + group_size]) if start + j != i]
        out.append(r - sum(others) / len(others))
    return torch.tensor(out)


def rloo_scaled(rewards, group_size):
    """Correct: G / (G - 1) times the reward minus the group mean."""
    if group_size < 2 or len(rewards) % group_size:
        raise ValueError("bad group_size")
    g = rewards.view(-1, group_size)
    return (group_size / (group_size - 1) * (g - g.mean(1, keepdim=True))).reshape(-1)


def rloo_with_self(rewards, group_size):
    g = rewards.view(-1, group_size)
    return (g - g.mean(1, keepdim=True)).reshape(-1)


def rloo_divides_by_g(rewards, group_size):
    g = rewards.view(-1, group_size)
    return (g - (g.sum(1, keepdim=True) - g) / group_size).reshape(-1)


def rloo_whole_batch(rewards, group_size):
    return rewards - (rewards.sum() - rewards) / (len(rewards) - 1)


def rloo_transposed(rewards, group_size):
    g = rewards.view(group_size, -1)
    return (g - (g.sum(0) - g) / (group_size - 1)).reshape(-1)


def rloo_flipped(rewards, group_size):
    g = rewards.view(-1, group_size)
    return ((g.sum(1, keepdim=True) - g) / (group_size - 1) - g).reshape(-1)


WRONG = [
    ("group_relative_advantages", grpo_batch, "whole batch"),
    ("group_relative_advantages", grpo_transposed, "interleaved"),
    ("group_relative_advantages", grpo_no_eps, "0 / 0 is NaN"),
    ("group_relative_advantages", grpo_population_std, "divides by group_size"),
    ("group_relative_advantages", grpo_ignores_flag, "normalize_std=False"),
    ("rloo_advantages", rloo_with_self, "includes the sample itself"),
    ("rloo_advantages", rloo_divides_by_g, "number of *other* samples"),
    ("rloo_advantages", rloo_whole_batch, "every other sample in the batch"),
    ("rloo_advantages", rloo_transposed, "interleaved"),
    ("rloo_advantages", rloo_flipped, "sign is flipped"),
]
CORRECT = [("group_relative_advantages", grpo_loop), ("rloo_advantages", rloo_loop),
           ("rloo_advantages", rloo_scaled)]

(test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
 test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(NAMES, WRONG, CORRECT)


def test_missing_stats_are_named():
    ok, message = verify("group_relative_advantages", grpo_no_stats)
    assert not ok and "stats a dict with keys 'group_mean'" in message, message
