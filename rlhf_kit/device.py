"""The one place that picks the device and dtype, and seeds every random number generator."""

from __future__ import annotations

import contextlib
import os

import torch
import transformers

ENV_VAR = "RLHF_KIT_DEVICE"


def _available() -> list[str]:
    """The device types usable here, best first (cuda, mps, cpu)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if torch.backends.mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def pick_device(prefer: str | None = None) -> torch.device:
    """cuda > mps > cpu. `prefer` (or $RLHF_KIT_DEVICE) forces one; an unavailable choice is a ValueError."""
    prefer = prefer or os.environ.get(ENV_VAR)
    available = _available()
    if prefer:
        kind = prefer.split(":")[0]
        if kind not in available:
            raise ValueError(f"Device {prefer!r} is not available here; available: {', '.join(available)}. "
                             f"Unset {ENV_VAR} or choose one of those.")
        return torch.device(prefer)
    return torch.device(available[0])


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on a CUDA GPU that supports it; None (plain fp32) on CPU and MPS."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device):
    """torch.autocast in bf16 where `autocast_dtype` gives one, else a no-op context."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy and torch (CPU and every GPU), all with `seed`.

    `transformers.set_seed` does exactly that (and also seeds the accelerators transformers knows beyond CUDA),
    so it is the one call; a seed must lie in [0, 2**32) because NumPy accepts no other.
    """
    transformers.set_seed(seed)


def describe_device(device: torch.device) -> str:
    """'cpu (2 cores)', or 'cuda: NVIDIA H100 80GB HBM3, 79.1 GiB'."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda: {props.name}, {props.total_memory / 2**30:.1f} GiB"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({os.cpu_count()} cores)"
