"""A tiny PPO run whose results `test_ppo.py` compares between one process and two.

    python tests/ppo_two_process.py HOME OUT.json [ESTIMATOR]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ppo_two_process.py HOME OUT.json [ESTIMATOR]

ESTIMATOR is "gae" (PPO, the default), "grpo" or "rloo" (lab 07: groups of 2 responses per prompt, which the two
processes split, so the group advantages must be computed over the whole batch).

HOME holds a finished `micro-seed0` workspace (the tests' one). The main process writes OUT.json: the number
of processes, every step's statistics (samples and timings left out) and the final policy weights, flattened.
"""

import json
import sys
from dataclasses import replace

import torch

from rlhf_kit.ppo import PPOConfig, PPOTrainer
from rlhf_kit.workspace import Workspace

CONFIG = PPOConfig(steps=2, batch_size=4, minibatch_size=4, ppo_epochs=2, lr=1e-3, max_new_tokens=8, seed=0)


def run(home: str, estimator: str = "gae") -> dict:
    config = replace(CONFIG, estimator=estimator, group_size=1 if estimator == "gae" else 2, kl_in=None)
    trainer = PPOTrainer.from_workspace(Workspace("micro", home, seed=0), config)
    history = trainer.train()
    weights = torch.cat([p.detach().float().flatten().cpu() for p in trainer.unwrapped_policy.parameters()])
    trainer.close()          # without it a process could abort at exit while the other still held the group
    return {"processes": trainer.accelerator.num_processes,
            "history": [{k: v for k, v in s.items() if k not in ("samples", "seconds")} for s in history],
            "weights": weights.tolist()}


if __name__ == "__main__":
    result = run(sys.argv[1], *sys.argv[3:])
    from accelerate import PartialState

    if PartialState().is_main_process:
        with open(sys.argv[2], "w") as f:
            json.dump(result, f)
