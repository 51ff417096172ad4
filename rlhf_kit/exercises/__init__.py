"""Exercise checkers: run a learner's function on test vectors, compare with the reference, name the mistake.

    ok, message = verify("sft_loss", my_sft_loss)      # quiet: for tests and tools
    sft_loss = check("sft_loss", my_sft_loss)          # notebook-facing: prints the verdict, returns a function
    summary("sft_loss", "build_response_mask")         # a lab's last cell: "Exercises passed: k/n", and which not

`check` returns the learner's function when it passes and the reference implementation otherwise, saying so,
so the rest of the lab still runs. When the answer is wrong the message names the likely mistake: each
exercise carries a catalogue of typical wrong implementations, and the learner's output is matched against
them on the same inputs.

The machinery is in `checking`; each lab topic's test vectors and mistake catalogues in its own module (`sampling`,
`sft`, `ranking`, `reward`, `ppo`, `hacking`, `dpo`, `grpo`, `evaluation`, `lora`), with the references in
`rlhf_kit.losses`, `rlhf_kit.sampling`, `rlhf_kit.preferences`, `rlhf_kit.agreement`, `rlhf_kit.reward`,
`rlhf_kit.hacking`, `rlhf_kit.ppo`, `rlhf_kit.ratings` and `rlhf_kit.lora`.
"""

from __future__ import annotations

from typing import Callable

from . import checking, dpo, evaluation, grpo, hacking, lora, ppo, ranking, reward, sampling, sft
from .checking import TIME_LIMIT, Exercise

__all__ = ["EXERCISES", "check", "summary", "verify"]

EXERCISES: dict[str, Exercise] = {
    "next_token_distribution": sampling.NEXT_TOKEN_DISTRIBUTION,
    "sample_next_token": sampling.SAMPLE_NEXT_TOKEN,
    "build_response_mask": sft.BUILD_RESPONSE_MASK,
    "sft_loss": sft.SFT_LOSS,
    "bradley_terry_loss": reward.BRADLEY_TERRY_LOSS,
    "rewards_at_last_token": reward.REWARDS_AT_LAST_TOKEN,
    "kl_penalized_rewards": ppo.KL_PENALIZED_REWARDS,
    "reinforce_loss": ppo.REINFORCE_LOSS,
    "gae": ppo.GAE,
    "ppo_policy_loss": ppo.PPO_POLICY_LOSS,
    "ranking_to_pairs": ranking.RANKING_TO_PAIRS,
    "cohens_kappa": ranking.COHENS_KAPPA,
    "agreement_with_labels": reward.AGREEMENT_WITH_LABELS,
    "swap_sentiment": reward.SWAP_SENTIMENT,
    "value_loss": ppo.VALUE_LOSS,
    "best_of_n_select": hacking.BEST_OF_N_SELECT,
    "gao_fit": hacking.GAO_FIT,
    "adaptive_kl_update": hacking.ADAPTIVE_KL_UPDATE,
    "sequence_logprobs": dpo.SEQUENCE_LOGPROBS,
    "dpo_loss": dpo.DPO_LOSS,
    "ipo_loss": dpo.IPO_LOSS,
    "group_relative_advantages": grpo.GROUP_RELATIVE_ADVANTAGES,
    "rloo_advantages": grpo.RLOO_ADVANTAGES,
    "win_rate": evaluation.WIN_RATE,
    "bradley_terry_ratings": evaluation.BRADLEY_TERRY_RATINGS,
    "distinct_n": evaluation.DISTINCT_N,
    "lora_forward": lora.LORA_FORWARD,
    "merge_lora": lora.MERGE_LORA,
}


# name -> whether the learner's last `check` of it passed (this kernel only); `summary` reads it
OUTCOMES: dict[str, bool] = {}


def _exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"No exercise called {name!r}. Known exercises: {', '.join(EXERCISES)}.")
    return EXERCISES[name]


def verify(name: str, fn: Callable, time_limit: float = TIME_LIMIT) -> tuple[bool, str]:
    """Check `fn` against the reference of exercise `name` on every test vector. Prints nothing.

    Returns (True, summary) when every case matches, else (False, message naming the likely mistake).
    A function that changes an input in place fails, naming the argument, even when its result is right.
    Each call of `fn` may take `time_limit` seconds.
    """
    return checking.verify(name, _exercise(name), fn, time_limit)


def check(name: str, fn: Callable, time_limit: float = TIME_LIMIT) -> Callable:
    """Notebook-facing: print the verdict; return `fn` if it passes, else the reference (and say so).

    The verdict is `verify`'s, so a function that changes its inputs in place or runs past the time limit is
    reported as failing and the rest of the lab (PPO included) runs on the reference, never on it."""
    ok, message = verify(name, fn, time_limit)
    OUTCOMES[name] = ok
    if ok:
        print(f"✅ {message}")
        return fn
    print(f"❌ {message}")
    print(f"   Using the reference implementation of {name} for the rest of this lab, so everything below "
          f"still runs. Fix your function and re-run this cell to use your own.")
    return _exercise(name).reference


def summary(*names: str) -> tuple[int, int]:
    """Notebook-facing, a lab's last cell: print "Exercises passed: k/n" for the lab's exercises `names`, and name
    the ones that fell back to the reference or were never checked in this kernel. Returns (k, n)."""
    for name in names:
        _exercise(name)
    passed = [name for name in names if OUTCOMES.get(name)]
    failed = [name for name in names if OUTCOMES.get(name) is False]
    unchecked = [name for name in names if name not in OUTCOMES]
    print(f"Exercises passed: {len(passed)}/{len(names)}" + (" - all yours." if len(passed) == len(names) else ""))
    if failed:
        print(f"   Ran on the reference instead of yours: {', '.join(failed)}. Fix them, re-run their check cells "
              f"and the cells below them to see your own versions at work.")
    if unchecked:
        print(f"   Not checked in this session: {', '.join(unchecked)} (run their check cells).")
    return len(passed), len(names)
