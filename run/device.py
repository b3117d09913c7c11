"""
The device every script runs on: which one, data parallelism across processes, the precision and its autocast,
and the machine's measured peak speed. Nothing here knows about training.
"""
import ctypes
import functools
import os
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist

# ----------------------------------------------------------------------------------------------------
# Hardware: devices, processes, precision, peak speed

def resolve_device(requested: str) -> torch.device:
    """"auto" picks cuda, then mps, then cpu; anything else is taken as given."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(requested)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(device) -> bool:
    """On a CPU with glibc (Linux), keep the memory a step frees for the next step instead of handing it back to the
    OS. By default glibc serves each block of 128 KiB or more (activations, gradients, logits) with its own mmap and
    unmaps it when PyTorch frees it, and trims the heap's free top; the next step's blocks are then fresh pages
    that the kernel must fault in and zero on first touch. On this 2-core CPU that cost the CPU recipe 20% of its
    time (BENCHMARKS.md, "The loop's own work"). Raising the mmap threshold to its ceiling (32 MiB on 64-bit) and
    never trimming keeps those blocks in the heap; the process holds its peak memory until it exits. Returns
    whether it applied (False on a GPU, whose memory PyTorch caches itself, and off glibc: macOS, Windows, musl)."""
    if torch.device(device).type != "cpu":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False


def setup_distributed(requested_device: str):
    """(rank, world_size, device). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; plain `python` is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # --precision's choices
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


BF16_NATIVE_SPEEDUP = 1.3  # bf16 matmuls this much faster than fp32 count as native (emulated ones are slower)


@functools.cache  # measured once per process: autocast asks at every forward
def cpu_bf16_matmul_speedup(size: int = 512, repeats: int = 8) -> float:
    """fp32 time / bf16 time of the same (2*size, size) x (size, size) matmul on this CPU, best of `repeats` each.
    Hardware is measured, not assumed: CPUs with bf16 instructions (AVX512-BF16, AMX, Arm's BF16) multiply bf16
    about twice as fast as fp32 (measured here: 216 vs 98 GFLOP/s on one core); without them PyTorch converts
    to fp32 inside the kernel and bf16 is slower than fp32. ~0.1 s."""
    def best_seconds(dtype) -> float:
        a, b = torch.randn(2 * size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up: the first call picks and packs its kernel
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)
    return best_seconds(torch.float32) / best_seconds(torch.bfloat16)


def training_precision(device: torch.device, requested: str = "auto") -> str:
    """"bf16", "fp16" or "fp32". auto: bf16 on a CUDA GPU that computes it natively (Ampere and later); fp16 on
    older ones (T4, V100: Colab and most course clusters), where bf16 is only emulated, slowly; on a CPU, bf16
    where its matmuls measure faster than fp32 (cpu_bf16_matmul_speedup), else fp32; fp32 on MPS. fp16's narrow
    exponent range needs a gradient scaler (gradient_scaler)."""
    if requested != "auto":
        return requested
    if device.type == "cpu":
        return "bf16" if cpu_bf16_matmul_speedup() >= BF16_NATIVE_SPEEDUP else "fp32"
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def precision_note(device: torch.device, precision: str) -> str:
    """What the machine: line and --plan add after the precision: fp16's gradient scaler, or why a CPU run computes
    in bf16 or fp32 ("" otherwise)."""
    if precision == "fp16":
        return " with a gradient scaler"
    if device.type != "cpu" or precision not in ("bf16", "fp32"):
        return ""
    speedup = cpu_bf16_matmul_speedup()
    if speedup >= BF16_NATIVE_SPEEDUP:
        return f" (bf16 matmuls measured {speedup:.1f}x fp32's speed on this CPU: native)"
    return f" (bf16 matmuls measured {speedup:.1f}x fp32's speed on this CPU: emulated{', slow' if precision == 'bf16' else ''})"


def autocast(device: torch.device, precision: str = "auto"):
    """Mixed precision for forward passes: matmuls in bf16/fp16, reductions kept in fp32 by autocast; full fp32
    is no autocast at all."""
    precision = training_precision(device, precision)
    return nullcontext() if precision == "fp32" else torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def gradient_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16 gradients underflow to 0 unless the loss is scaled up before backward: the scaler multiplies it,
    divides the gradients back before clipping (unscale_), skips a step whose gradients overflowed to inf/NaN
    and lowers the scale after one. For bf16 (fp32's exponent range) and fp32 it is disabled: a pass-through."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def measure_peak_flops(device: torch.device, seconds: float = 0.5, precision: str = "auto") -> float:
    """Measured, not looked up: the FLOP/s of a large matmul in the training precision on this device,
    used as the denominator of MFU (so MFU here means "share of this machine's achievable matmul speed")."""
    n = 4096 if device.type == "cuda" else 1024
    dtype = AUTOCAST_DTYPES[training_precision(device, precision)]
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if count % 8 == 0:
            synchronize(device)
    synchronize(device)
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------
# Files: written whole or not at all, and plots when matplotlib (optional) is installed


