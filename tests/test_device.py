import os
import random
import sys

import numpy as np
import pytest
import torch

from rlhf_kit.device import PeakMemory, autocast, autocast_dtype, describe_device, pick_device, seed_everything


def test_cpu_here_and_forcing(monkeypatch):
    monkeypatch.delenv("RLHF_KIT_DEVICE", raising=False)
    if not torch.cuda.is_available():
        assert pick_device().type == "cpu"
        with pytest.raises(ValueError, match="not available here; available: .*cpu"):
            pick_device("cuda")
    assert pick_device("cpu").type == "cpu"
    monkeypatch.setenv("RLHF_KIT_DEVICE", "cpu")
    assert pick_device().type == "cpu"


def test_fp32_on_cpu():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None
    with autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_seed_everything_repeats():
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(7)
    assert random.random() == first[0] and np.random.rand() == first[1] and torch.equal(torch.rand(3), first[2])


def test_describe():
    assert describe_device(torch.device("cpu")) == f"cpu ({os.cpu_count()} cores)"


def test_peak_memory_counts_what_the_block_held_at_once_and_not_what_came_before():
    before = torch.ones(64 * 2**20 // 4)        # 64 MiB held before the block: not counted
    with PeakMemory("cpu") as peak:
        block = torch.ones(128 * 2**20 // 4)    # 128 MiB, freed inside the block: still its peak
        del block
    del before
    if not sys.platform.startswith("linux"):
        assert peak.mib is None and peak.method == "unavailable"
        return
    assert peak.method == "peak resident memory (VmHWM)"
    assert 120 < peak.mib < 180, peak.mib
    with PeakMemory("cpu") as small:
        torch.ones(1024)
    assert small.mib < 20, small.mib
    for _ in range(2):                           # a second block that reuses freed memory is measured the same
        with PeakMemory("cpu") as again:
            held = [torch.ones(2**20) for _ in range(24)]     # 96 MiB in 4 MiB pieces, freed at the end
            del held
        assert 80 < again.mib < 140, again.mib
