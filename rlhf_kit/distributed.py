"""The multi-process bookkeeping of PPO, kept out of the algorithm: shards, global sums, masked moments.

On one process every function here is the plain single-process computation; under `accelerate launch` or
`torchrun` each process holds a contiguous share of the batch and these make its statistics whole-batch ones.
"""

from __future__ import annotations

import torch


class Distributed:
    """Whole-batch arithmetic over the processes of an `accelerate.Accelerator`."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.processes = accelerator.num_processes

    def shard(self, n: int) -> tuple[int, int]:
        """[start, end) of this process's contiguous share of n rows."""
        per, extra = divmod(n, self.processes)
        index = self.accelerator.process_index
        start = index * per + min(index, extra)
        return start, start + per + (index < extra)

    def sum(self, *values) -> torch.Tensor:
        """Element-wise sums over all processes of scalar tensors or floats: a 1-D tensor."""
        local = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.accelerator.device).reshape(())
                             for v in values])
        return self.accelerator.reduce(local, "sum")

    def max(self, value: torch.Tensor) -> float:
        """The largest value of a scalar tensor over all processes."""
        return self.accelerator.gather(value.reshape(1)).max().item()

    def masked_moments(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of x over the response tokens of the whole batch (all processes)."""
        m = mask.to(x.dtype)
        total, total_sq, count = self.sum((x * m).sum(), (x * x * m).sum(), m.sum())
        mean = total / count
        return mean, (total_sq / count - mean * mean).clamp(min=0)

    def row_means(self, **per_row: torch.Tensor) -> dict[str, float]:
        """{name: mean over the whole batch's rows} of (local_rows,) tensors."""
        stacked = self.accelerator.gather(torch.stack([v.float() for v in per_row.values()], dim=1)).mean(0)
        return dict(zip(per_row, stacked.tolist()))

    def token_weighted(self, loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`loss`, a mean over this process's tokens, rescaled so that the average over processes (which DDP
        takes of the gradients) is the mean over the whole minibatch's tokens."""
        tokens = self.sum(mask.sum())[0]
        return loss * mask.sum() * self.processes / tokens
