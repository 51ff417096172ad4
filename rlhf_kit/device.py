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


def _proc_status_kib(key: str) -> int | None:
    """A `/proc/self/status` field in KiB (Linux), or None where there is no such file."""
    try:
        text = open("/proc/self/status").read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _release_freed_memory() -> None:
    """Hand memory that was freed but kept by the C allocator back to the system (glibc's malloc_trim), so that the
    resident memory counts only what is in use: without it, a second block could reuse pages a first one freed and
    look as if it needed none."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """The peak memory a block of code added, in MiB: `with PeakMemory(device) as peak: ...; peak.mib`.

    On a CUDA device: torch's peak allocated memory during the block minus what was allocated at its start. On a
    CPU under Linux: the process's peak resident memory during the block (VmHWM, reset at the start by writing 5
    to /proc/self/clear_refs) minus its resident memory at the start (after freed memory is handed back to the
    system), so it counts everything the block held at once (weights of models it loaded, gradients, optimiser
    state, activations) and nothing held before it.
    `method` says which; elsewhere (macOS, Windows, MPS) `mib` is None and `method` is "unavailable".
    """

    def __init__(self, device=None):
        self.device = torch.device(device or "cpu")
        self.mib: float | None = None
        self.method = "unavailable"

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        elif self.device.type == "cpu" and _proc_status_kib("VmRSS") is not None:
            _release_freed_memory()
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                return self
            self._start = _proc_status_kib("VmRSS") * 1024
            self.method = "peak resident memory (VmHWM)"
        return self

    def __exit__(self, *exc) -> None:
        if self.method.startswith("torch.cuda"):
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self.method.startswith("peak resident"):
            self.mib = (_proc_status_kib("VmHWM") * 1024 - self._start) / 2**20
