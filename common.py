"""
Plumbing every script shares: the device, data parallelism, precision, the machine's measured peak speed,
the optimizer, and writing files so that a crash never leaves half of one. Nothing here knows about training.
"""
import json
import os
import time
from contextlib import contextmanager, nullcontext, suppress

import torch
import torch.distributed as dist


# ----------------------------------------------------------------------------------------------------
# Hardware: devices, processes, precision, peak speed

def resolve_device(requested: str) -> torch.device:
    """"auto" picks cuda, then mps, then cpu; anything else is taken as given."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(requested)


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


def autocast(device: torch.device):
    """bf16 autocast on GPU (no loss scaling needed, unlike fp16); full fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def measure_peak_flops(device: torch.device, seconds: float = 0.5) -> float:
    """Measured, not looked up: the FLOP/s of a large matmul in the training precision on this device,
    used as the denominator of MFU (so MFU here means "share of this machine's achievable matmul speed")."""
    n = 4096 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
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


def make_optimizer(model: torch.nn.Module, config) -> torch.optim.AdamW:
    """AdamW with BERT's weight-decay split: matrices (embedding included) decay; norms, biases and the
    position scale (all 1-D) do not, since shrinking them towards 0 only fights the normalisation.
    config: anything with lr, weight_decay, betas and eps (config.py's TrainConfig)."""
    parameters = {id(p): p for p in model.parameters()}.values()  # a tied matrix once
    groups = [{"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                             fused=torch.cuda.is_available() and next(model.parameters()).is_cuda)


# ----------------------------------------------------------------------------------------------------
# Files: written whole or not at all, and plots when matplotlib (optional) is installed

@contextmanager
def atomic_path(path: str, suffix: str = ""):
    """A temporary name beside `path` to write to; renamed onto `path` when the block ends without error
    (atomic on POSIX and Windows), so a crash mid-write leaves the previous file, never half a file.
    suffix: an extension for writers that read it (matplotlib's savefig wants ".png")."""
    temporary = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with suppress(FileNotFoundError):
            os.remove(temporary)


def write_json(path: str, payload, indent: int = 1):
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        json.dump(payload, f, indent=indent)


def pyplot():
    """matplotlib.pyplot drawing to files only (the Agg backend), or None when matplotlib is not installed."""
    try:
        import matplotlib  # optional dependency
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
