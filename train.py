"""
Pretrain a crammed BERT with masked language modelling inside a wall-clock budget.

    python train.py --hours 24                                   # prepares the default corpus on first use
    python train.py --minutes 5 --preset mini --corpus ../shared/data/wiki/enwiki-2015-00.txt.gz
    torchrun --nproc_per_node=8 train.py --hours 24              # data parallel on 8 GPUs

The budget is wall-clock time (Geiping & Goldstein 2022, Sec. 2): the learning rate and the batch size
are functions of progress = elapsed training seconds / budget, so the run ends on time on any hardware.
Evaluation and checkpointing stop the clock. A run can also end on a step or FLOP budget (progress is the
largest of the three fractions), which is what the tests and the scaling sweep use.
"""
import argparse
import glob
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from data.loader import MLMBatches, TokenFile, data_tokenizer, mask_tokens, validation_batches
from data.prepare import PrepareConfig, default_corpus, prepare
from data.tokenizer import Tokenizer
from model import PRESETS, CramBERT, ModelConfig, fill_masks, preset_config
from plot import plot_runs, read_log

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "cramlm-checkpoint", 1
MIN_SEQ_LEN, MAX_SEQ_LEN = 8, 2048  # --seq-len range: the position table is built for seq_len rows, and
# attention memory grows with seq_len² (at 2048, scores alone take micro_batch × heads × 16 MiB in fp32)
EXIT_INTERRUPTED = 130  # exit status of a run stopped by Ctrl-C / SIGTERM (128 + SIGINT, as shells report); failure is 1


@dataclass
class TrainConfig:
    # --- data ---
    data_dir: str = "data/cache/default"  # prepared train.bin / val.bin (made from `corpus` if missing)
    corpus: str = field(default_factory=default_corpus)  # text to prepare into data_dir on first use
    seq_len: int = 128  # tokens per row, [CLS] included
    mask_rate: float = 0.25  # share of tokens to predict (cramming: 0.25; BERT: 0.15)
    eval_mask_rate: float = 0.25  # validation masking: fixed, so runs with other mask rates stay comparable
    max_tokens_per_char: float = 0.3  # cramming's data filter used when preparing data_dir (0 = off)
    tokenizer: str = "gpt2"  # preparing data_dir: "gpt2" or a .bpe file (ignored when vocab_size > 0)
    vocab_size: int = 0  # preparing data_dir: train our own BPE of this many ids first (data/bpe.py)
    # --- model ---
    preset: str = "crammed"  # a model.PRESETS name, or "auto": the Chinchilla-optimal size for the budget (scaling.py)
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields to change (sizes, recipe switches)
    init_from: str = ""  # start from this checkpoint's weights and config (e.g. grow.py's output)
    # --- budget: the run ends when the first of these is spent; 0 means "no limit of this kind" ---
    budget_seconds: float = 24 * 3600.0  # training wall-clock seconds (evaluation excluded)
    max_steps: int = 0  # optimizer steps
    max_flops: float = 0.0  # training FLOPs, as counted by model.flops_per_token
    stop_after_steps: int = 0  # checkpoint and exit after this many steps without ending the schedule (pause)
    # --- optimisation ---
    lr: float = 1e-3  # peak learning rate
    schedule: str = "one-cycle"  # "one-cycle": triangle over the budget; "bert": warmup + linear decay by steps; "constant"
    peak_at: float = 0.75  # one-cycle: fraction of the budget at which the learning rate peaks
    warmup_steps: int = 10_000  # bert schedule: linear warmup steps
    schedule_steps: int = 0  # bert schedule: steps at which it reaches 0 (default: max_steps)
    batch_tokens: int = 524_288  # tokens per optimizer step at full batch (4096 rows of 128)
    micro_batch_size: int = 128  # rows per forward/backward on one device; the rest is accumulation
    batch_ramp: bool = True  # grow the batch linearly from one micro-batch to full by `ramp_until`
    ramp_until: float = 0.6  # fraction of the budget at which the batch reaches batch_tokens
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-12
    grad_clip: float = 0.5  # max global gradient norm
    # --- evaluation, logging, checkpoints ---
    out_dir: str = "runs/default"  # checkpoint ckpt.pt and log.jsonl
    eval_interval: float = 0.05  # evaluate every this fraction of the budget (and at start and end)
    eval_rows: int = 1024  # rows of val.bin in the fixed validation set
    log_interval: int = 10  # optimizer steps between log lines
    checkpoint_minutes: float = 30.0  # wall-clock minutes between checkpoints
    resume: bool = False  # continue from out_dir/ckpt.pt
    overwrite: bool = False  # start afresh in an out_dir holding another run's checkpoint (deletes it and its log)
    # --- system ---
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    compile: bool = False  # torch.compile the model
    seed: int = 0
    progress_bar: bool = True
    # --- data policy (policy.py) and growth (grow.py) ---
    policy: str = "uniform"  # "learning-law": weight each batch's examples by their contribution (Gu et al. 2024)
    grow_at: float = 0.0  # grow the model at this fraction of the budget (0 = never)
    grow_to: str = ""  # preset to grow into
    grow_method: str = "ligo"  # ligo, stack, net2net or scratch (see grow.py)
    ligo_steps: int = 100  # steps that train LiGO's growth operator (their time counts against the budget)


# Two recipes, one per kind of machine (README: "Which recipe for which machine"). A recipe fills every
# flag the command line leaves out; `--recipe auto` takes "gpu" when CUDA is present and "cpu" otherwise.
RECIPES = {
    # Cramming's (the TrainConfig defaults): the 16-layer crammed BERT, GPT-2 ids, batches ramped to 512 k tokens.
    "gpu": {},
    # Found by measurement on a 2-core CPU (BENCHMARKS.md, "An hour of CPU"): a small model on our own
    # 16 k BPE, many small constant-size batches, and a learning rate that peaks early.
    "cpu": dict(preset="laptop", data_dir="data/cache/default-bpe16k", vocab_size=16384, seq_len=128, lr=2e-3,
                peak_at=0.1, batch_tokens=1024, micro_batch_size=8, batch_ramp=False, eval_rows=256),
}
RECIPE_FIELDS = sorted(set().union(*RECIPES.values()))


# ----------------------------------------------------------------------------------------------------
# Schedules: pure functions of progress (0 at the start of the budget, 1 at its end)

def learning_rate(config: TrainConfig, progress: float, step: int) -> float:
    if config.schedule == "one-cycle":  # cramming's budget triangle: up to the peak, then down to 0 at the end
        if progress < config.peak_at:
            return config.lr * progress / config.peak_at
        return config.lr * max(0.0, (1 - progress) / (1 - config.peak_at))
    if config.schedule == "bert":  # Devlin et al.: warmup then linear decay, both counted in steps
        total = config.schedule_steps or config.max_steps
        if not total:
            raise ValueError("the bert schedule needs --schedule-steps (or --max-steps)")
        warmup = min(config.warmup_steps, total)
        if step < warmup:
            return config.lr * step / warmup
        return config.lr * max(0.0, (total - step) / max(1, total - warmup))
    if config.schedule == "constant":
        return config.lr
    raise ValueError(f"unknown schedule {config.schedule!r}")


def batch_rows(config: TrainConfig, progress: float, world_size: int) -> int:
    """Rows in this optimizer step: a whole number of micro-batches on every device. Cramming ramps the
    batch up over the run (Sec. 4.3): small batches make faster progress early, large ones later."""
    rows_per_micro_step = config.micro_batch_size * world_size
    full = max(1, round(config.batch_tokens / config.seq_len / rows_per_micro_step))  # micro-steps at full batch
    if not config.batch_ramp:
        return full * rows_per_micro_step
    fraction = min(1.0, progress / config.ramp_until)
    return max(1, round(1 + (full - 1) * fraction)) * rows_per_micro_step


# ----------------------------------------------------------------------------------------------------
# Checking the settings before any data is prepared or the clock starts

def validate_config(config: TrainConfig, world_size: int = 1) -> list[str]:
    """Every setting checked up front. Raises one ValueError with one line per problem, each naming the
    flag and the fix; returns notes to print (how --batch-tokens is rounded)."""
    errors, notes = [], []

    def check(ok: bool, message: str):
        if not ok:
            errors.append(message)

    # budgets: written `not (x > 0)` so that NaN fails too
    check(not config.budget_seconds < 0, f"--hours/--minutes/--seconds gives {config.budget_seconds:g} s: the budget must be > 0")
    check(config.max_steps >= 0, f"--max-steps {config.max_steps}: must be >= 1 (0 = no step budget)")
    check(not config.max_flops < 0, f"--max-flops {config.max_flops:g}: must be > 0 (0 = no FLOP budget)")
    check(errors or config.budget_seconds > 0 or config.max_steps > 0 or config.max_flops > 0,
          "no budget: give --hours/--minutes/--seconds, --max-steps or --max-flops")
    check(config.stop_after_steps >= 0, f"--stop-after-steps {config.stop_after_steps}: must be >= 0")
    # data
    seq_len_ok = MIN_SEQ_LEN <= config.seq_len <= MAX_SEQ_LEN
    check(seq_len_ok, f"--seq-len {config.seq_len} is outside [{MIN_SEQ_LEN}, {MAX_SEQ_LEN}]: the position table is built "
                      f"for --seq-len positions and attention memory grows with its square; cramming uses 128")
    for flag, rate in (("--mask-rate", config.mask_rate), ("--eval-mask-rate", config.eval_mask_rate)):
        if not 0 < rate < 1:
            errors.append(f"{flag} {rate:g} is outside (0, 1): the share of tokens to predict, e.g. 0.25 (cramming) or 0.15 (BERT)")
        elif seq_len_ok and int(rate * config.seq_len) < 1:
            errors.append(f"{flag} {rate:g} masks no token of a {config.seq_len}-token row: use at least {1 / config.seq_len:.3g} "
                          f"or a longer --seq-len")
    check(config.max_tokens_per_char >= 0, f"--max-tokens-per-char {config.max_tokens_per_char:g}: must be >= 0 (0 = off)")
    # model
    model_config = None
    if config.preset != "auto":
        try:
            model_config = preset_config(config.preset, **{"max_seq_len": max(1, config.seq_len), **config.model_overrides})
        except (ValueError, TypeError, ZeroDivisionError) as error:
            errors.append(f"--preset {config.preset} with the size/recipe flags: {error}")
    # optimisation
    check(config.lr > 0, f"--lr {config.lr:g}: the peak learning rate must be > 0")
    check(config.micro_batch_size >= 1, f"--micro-batch-size {config.micro_batch_size}: must be >= 1 row")
    if config.micro_batch_size >= 1 and seq_len_ok:
        micro = config.micro_batch_size * config.seq_len * world_size  # tokens in one micro-step on all processes
        detail = (f"one micro-batch (--micro-batch-size {config.micro_batch_size} × --seq-len {config.seq_len}"
                  f"{f' × {world_size} processes' if world_size > 1 else ''} = {micro} tokens)")
        if config.batch_tokens < micro:
            errors.append(f"--batch-tokens {config.batch_tokens} is less than {detail}: raise it to at least {micro} "
                          f"or lower --micro-batch-size")
        elif config.batch_tokens % micro:
            notes.append(f"note: --batch-tokens {config.batch_tokens} is not a whole number of micro-batches: rounded to "
                         f"{round(config.batch_tokens / micro) * micro} ({detail})")
    for flag, value in (("--peak-at", config.peak_at), ("--ramp-until", config.ramp_until),
                        ("--eval-interval", config.eval_interval)):
        check(0 < value <= 1, f"{flag} {value:g} is a fraction of the budget: use a value in (0, 1]")
    check(config.warmup_steps >= 0 and config.schedule_steps >= 0, "--warmup-steps and --schedule-steps must be >= 0")
    check(config.schedule != "bert" or config.schedule_steps or config.max_steps,
          "--schedule bert decays over steps: give --schedule-steps (or --max-steps)")
    check(config.weight_decay >= 0, f"--weight-decay {config.weight_decay:g}: must be >= 0")
    check(config.grad_clip > 0, f"--grad-clip {config.grad_clip:g}: must be > 0")
    # evaluation, checkpoints, growth
    check(config.eval_rows >= 1, f"--eval-rows {config.eval_rows}: must be >= 1")
    check(config.log_interval >= 1, f"--log-interval {config.log_interval}: must be >= 1 step")
    check(config.checkpoint_minutes > 0, f"--checkpoint-minutes {config.checkpoint_minutes:g}: must be > 0")
    check(not (config.resume and config.overwrite), "--resume and --overwrite contradict each other: pick one")
    check(0 <= config.grow_at < 1, f"--grow-at {config.grow_at:g} is a fraction of the budget: use a value in [0, 1) (0 = never)")
    check(not config.grow_at or config.grow_to, "--grow-at needs --grow-to PRESET")
    check(config.ligo_steps >= 0, f"--ligo-steps {config.ligo_steps}: must be >= 0")
    if config.grow_at and config.grow_to and model_config is not None and not config.init_from:
        try:  # fail now, not at --grow-at of the budget (an --init-from or auto model is checked once it is known)
            growth_target(config, model_config)
        except ValueError as error:
            errors.append(f"--grow-to {config.grow_to} from --preset {config.preset}: {error}")
    if errors:
        raise ValueError("\nerror: ".join(errors))  # main() prefixes the first line with "error: "
    return notes


RESUME_DATA_SETTINGS = {"data_dir": "--data-dir", "seq_len": "--seq-len", "mask_rate": "--mask-rate",
                        "eval_mask_rate": "--eval-mask-rate", "seed": "--seed", "max_tokens_per_char": "--max-tokens-per-char"}


def check_resume(config: TrainConfig, checkpoint: dict, path: str):
    """A resumed run must read the same data the same way; name every setting that differs."""
    saved, current = checkpoint["train_config"], asdict(config)
    differ = []
    for name, flag in RESUME_DATA_SETTINGS.items():
        value = saved.get(name, current[name])
        same = value == current[name] or (name == "data_dir" and os.path.realpath(value) == os.path.realpath(current[name]))
        if not same:
            differ.append(f"{flag} {current[name]} differs from the checkpoint's {value}")
    if differ:
        raise ValueError(f"cannot --resume {path} with other data settings: {'; '.join(differ)}. Resume with the "
                         f"checkpoint's values, or start a new run in another --out-dir")


# ----------------------------------------------------------------------------------------------------
# Checkpoints: the unwrapped model, its config, and the whole loop state

def save_checkpoint(path: str, checkpoint: dict):
    """Write atomically: a crash mid-write leaves the previous checkpoint intact, never half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint}, temporary)
    os.replace(temporary, path)  # atomic on POSIX and Windows


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load and validate a cramlm checkpoint; raise one clear error for anything else."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:  # weights_only: tensors and plain Python types only, so a crafted file cannot run code while loading
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} holds Python objects beyond tensors and plain types, which could run code when "
                         f"loaded, so it was not loaded (checkpoints of cramlm before weights-only loading hold "
                         f"numpy arrays; only trusted files should be converted): {str(error).splitlines()[0]}") from error
    except Exception as error:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a cramlm checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {checkpoint.get('version')}, this code reads {CHECKPOINT_VERSION}")
    return checkpoint


def claim_out_dir(config: TrainConfig) -> str:
    """Make out_dir this run's own before anything is written; returns the lock file (release_out_dir).
    A live run holding out_dir/LOCK (its pid) is refused; a lock whose process is gone is stale and taken
    over. Another run's ckpt.pt is never replaced silently: --resume continues it, --overwrite deletes it
    and its log. Temporary checkpoints left by a run killed mid-write are removed."""
    os.makedirs(config.out_dir, exist_ok=True)
    lock = os.path.join(config.out_dir, "LOCK")
    while True:
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = lock_holder(lock)
            if holder is not None and holder != os.getpid() and process_alive(holder):
                raise ValueError(f"{config.out_dir} is in use by a live run (pid {holder}, see {lock}): wait for it, "
                                 f"stop it, or pick another --out-dir (if no such run exists, delete {lock})") from None
            with suppress(FileNotFoundError):  # stale: its process is gone (or it is this process's own leftover)
                os.remove(lock)
    with os.fdopen(descriptor, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        checkpoint = os.path.join(config.out_dir, "ckpt.pt")
        if os.path.exists(checkpoint) and not config.resume:
            if not config.overwrite:
                raise ValueError(f"{checkpoint} holds another run: pass --resume to continue it, --overwrite to "
                                 f"replace it (and its log.jsonl), or pick another --out-dir")
            for name in ("ckpt.pt", "log.jsonl"):
                with suppress(FileNotFoundError):
                    os.remove(os.path.join(config.out_dir, name))
        for orphan in glob.glob(glob.escape(checkpoint) + ".tmp*"):  # a kill mid-write; we hold the lock
            os.remove(orphan)
    except BaseException:
        release_out_dir(lock)
        raise
    return lock


def release_out_dir(lock: str):
    with suppress(FileNotFoundError):
        os.remove(lock)


def lock_holder(lock: str) -> int | None:
    try:
        with open(lock) as f:
            return int(f.read().strip())
    except (OSError, ValueError):  # unreadable or half-written: treat as stale
        return None


def process_alive(pid: int) -> bool:
    if os.name == "nt":  # no cheap check without extra packages: assume it is, the message says how to clear it
        return True
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only the existence check
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def model_from_checkpoint(checkpoint: dict) -> CramBERT:
    """Rebuild the model from the config stored beside its weights."""
    model = CramBERT(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model


def tokenizer_from_checkpoint(checkpoint: dict) -> Tokenizer:
    """The vocabulary the model was trained with (checkpoints before this field used GPT-2's)."""
    return Tokenizer.from_state(checkpoint.get("tokenizer"))


def model_checkpoint(model: CramBERT, tokenizer: Tokenizer | None, **extra) -> dict:
    """The minimal checkpoint: config + weights of the unwrapped model (no `_orig_mod.`/`module.` prefixes),
    and the tokenizer (its .bpe text is embedded, so the checkpoint alone can read and write text)."""
    return {"model_config": asdict(model.config), "model": model.state_dict(),
            "tokenizer": tokenizer.state_dict() if tokenizer else None, **extra}


def rng_states() -> dict:
    """Every generator's state as tensors and plain types (weights-only loadable): numpy's key array becomes a tensor."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state = {"bit_generator": numpy_state["bit_generator"], "has_gauss": int(numpy_state["has_gauss"]),
                   "gauss": float(numpy_state["gauss"]), "pos": int(numpy_state["state"]["pos"]),
                   "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))}
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict):
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state({"bit_generator": numpy_state["bit_generator"], "has_gauss": numpy_state["has_gauss"],
                         "gauss": numpy_state["gauss"], "state": {"pos": numpy_state["pos"],
                                                                  "key": numpy_state["key"].numpy().astype(np.uint32)}})
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class LoopState:
    step: int = 0  # optimizer steps taken
    tokens: int = 0  # training tokens processed (all devices)
    flops: float = 0.0  # training FLOPs spent
    elapsed: float = 0.0  # seconds on the budget clock
    next_eval: float = 0.0  # progress at which the next evaluation is due
    val_loss: float | None = None  # latest held-out loss
    grown: bool = False  # the model was grown (--grow-at) in this run


# ----------------------------------------------------------------------------------------------------
# Hardware: devices, precision, peak speed

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


class BudgetClock:
    """Seconds of training time: stopped while evaluating or checkpointing (modded-nanogpt's habit)."""

    def __init__(self, already_elapsed: float = 0.0):
        self.banked, self.started = already_elapsed, None

    def start(self):
        self.started = time.perf_counter()

    def stop(self):
        self.banked, self.started = self.elapsed(), None

    def elapsed(self) -> float:
        return self.banked + (time.perf_counter() - self.started if self.started is not None else 0.0)


# ----------------------------------------------------------------------------------------------------
# The training run

def requested_model_config(config: TrainConfig, device: torch.device, rank: int, world_size: int,
                           tokenizer: Tokenizer, init_checkpoint: dict | None = None) -> ModelConfig:
    """The model these flags ask for: the --init-from checkpoint's (loaded by the caller), a preset, or
    Chinchilla's plan (auto)."""
    if init_checkpoint is not None:
        model_config = ModelConfig(**init_checkpoint["model_config"])
        if model_config.max_seq_len < config.seq_len:
            raise ValueError(f"{config.init_from} covers {model_config.max_seq_len} positions < --seq-len {config.seq_len}")
        return model_config
    # The sparse head's static count must cover the training and the validation masking.
    overrides = {"max_seq_len": config.seq_len, "mlm_fraction": max(config.mask_rate, config.eval_mask_rate),
                 "vocab_size": tokenizer.vocab_size, **config.model_overrides}
    if config.preset != "auto":
        return preset_config(config.preset, **overrides)
    if not config.budget_seconds:
        raise ValueError("--model auto sizes the model for a wall-clock budget: give --hours/--minutes/--seconds")
    planned = [None]
    if rank == 0:  # one process measures and plans; the others take its answer
        from scaling import plan_for_machine
        plan = plan_for_machine(config.budget_seconds, str(device), seq_len=config.seq_len,
                                micro_batch_size=config.micro_batch_size)
        print(plan.explanation)
        planned = [plan.model_config]
    if world_size > 1:
        dist.broadcast_object_list(planned, src=0)
    return ModelConfig(**{**asdict(planned[0]), **overrides})


def growth_target(config: TrainConfig, small: ModelConfig) -> ModelConfig:
    from grow import grown_config
    return grown_config(small, preset_config(config.grow_to))


def grow_during_run(raw_model: CramBERT, config: TrainConfig, train_data: MLMBatches, device) -> CramBERT:
    """Swap the small model for a grown one (grow.py). LiGO trains its operator on the next training rows,
    the same rows on every process, so all processes grow the same model."""
    from grow import grow_model
    rows, epoch, cursor = config.micro_batch_size, train_data.epoch, train_data.cursor

    def batches(step):
        input_ids, labels = train_data.batch_at(epoch, cursor + step * rows, rows)
        return input_ids.to(device), labels.to(device)

    grown = grow_model(raw_model, preset_config(config.grow_to), config.grow_method, batches, config.ligo_steps,
                       device=device, seed=config.seed, progress_bar=False)
    if config.grow_method == "ligo":
        train_data.advance(config.ligo_steps * rows)
    return grown


def wrap(raw_model: CramBERT, config: TrainConfig, world_size: int, device) -> torch.nn.Module:
    """What the loop calls: compiled and/or DDP-wrapped. We always save raw_model (no key prefixes)."""
    model = torch.compile(raw_model) if config.compile else raw_model
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def desired_batch(config: TrainConfig, rows: int):
    """The Learning Law's "desired" data: held-out rows just after the evaluation rows of val.bin, so the
    policy aims at the held-out distribution without ever seeing the rows we report losses on."""
    val = MLMBatches(TokenFile(os.path.join(config.data_dir, "val.bin"), data_tokenizer(config.data_dir)),
                     config.seq_len, config.eval_mask_rate)
    if config.eval_rows + rows > val.num_rows:
        raise ValueError(f"val.bin has {val.num_rows} rows: too few for --eval-rows {config.eval_rows} plus the "
                         f"policy's {rows} desired rows; lower --eval-rows")
    ids = val.rows(np.arange(config.eval_rows, config.eval_rows + rows))
    input_ids, labels = mask_tokens(ids, config.eval_mask_rate, torch.Generator().manual_seed(config.seed), val.tokenizer)
    return input_ids, None, labels


def make_optimizer(model: CramBERT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with BERT's weight-decay split: matrices (embedding included) decay; norms, biases and the
    position scale (all 1-D) do not, since shrinking them towards 0 only fights the normalisation."""
    parameters = {id(p): p for p in model.parameters()}.values()  # a tied matrix once
    groups = [{"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                             fused=torch.cuda.is_available() and next(model.parameters()).is_cuda)


def ensure_prepared(config: TrainConfig, rank: int):
    """Prepare the corpus into data_dir on first use (rank 0 only; the others wait)."""
    if rank == 0 and not os.path.isfile(os.path.join(config.data_dir, "train.bin")):
        print(f"no token files in {config.data_dir}: preparing them from {config.corpus}")
        try:
            prepare(PrepareConfig(corpus=config.corpus, out_dir=config.data_dir, max_tokens_per_char=config.max_tokens_per_char,
                                  tokenizer=config.tokenizer, vocab_size=config.vocab_size))
        except (FileNotFoundError, RuntimeError) as error:
            raise FileNotFoundError(
                f"{error}\nfix: python -m data.prepare --corpus PATH_OR_URL --out-dir {config.data_dir}  "
                f"(offline in this repo's workplace: --corpus ../shared/data/wiki)") from error
    if dist.is_initialized():
        dist.barrier()
    meta_path = os.path.join(config.data_dir, "meta.json")
    if os.path.isfile(meta_path):  # the filter is part of the recipe: refuse data prepared with another one
        with open(meta_path) as f:
            prepared_filter = json.load(f)["config"]["max_tokens_per_char"]
        if prepared_filter != config.max_tokens_per_char:
            raise ValueError(f"{config.data_dir} was prepared with max_tokens_per_char={prepared_filter}, "
                             f"not {config.max_tokens_per_char}: pass that value or prepare another folder")


# ----------------------------------------------------------------------------------------------------
# Evaluation: held-out loss, the unigram reference line, bits per byte, and probe sentences

def unigram_log_probs(tokens: np.ndarray, vocab_size: int) -> torch.Tensor:
    """log p(id) from token counts on the training split, add-one smoothed so no id has probability 0.
    A model that predicts every masked token from these frequencies alone, ignoring the context, scores
    the "unigram line": an MLM loss above it means the model has learned nothing beyond word counts."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(tokens), 1 << 24):  # in chunks: the memmap is never read into memory whole
        counts += np.bincount(tokens[start:start + (1 << 24)], minlength=vocab_size)
    counts += 1
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def byte_lengths(tokenizer: Tokenizer, vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes of text each id stands for (0 for special and padding ids), for bits per byte."""
    lengths = torch.zeros(vocab_size)
    lengths[:tokenizer.num_ordinary] = torch.tensor([len(tokenizer.token_bytes(i)) for i in range(tokenizer.num_ordinary)])
    return lengths


def reference_metrics(batches, unigram: torch.Tensor, lengths: torch.Tensor) -> dict:
    """The unigram line on exactly the validation set's masked positions, and the bytes they cover."""
    labels = torch.cat([labels[labels != -100] for _, labels in batches])
    return {"unigram_loss": -unigram[labels].mean().item(), "masked_bytes": lengths[labels].sum().item(),
            "masked_tokens": len(labels)}


@torch.no_grad()
def evaluate(model: CramBERT, batches, device, rank: int, world_size: int, should_stop=lambda: False) -> float | None:
    """Held-out MLM loss, averaged over masked tokens; each process takes every world_size-th batch.
    None if should_stop() turns true between batches (Ctrl-C): an abandoned evaluation has no loss."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, device=device)  # (summed loss, masked tokens)
    for input_ids, labels in batches[rank::world_size]:
        if should_stop():
            model.train(was_training)
            return None
        with autocast(device):
            _, loss = model(input_ids.to(device), labels=labels.to(device))
        count = (labels != -100).sum()
        totals += torch.stack([loss.float() * count, count.to(device).float()])
    if world_size > 1:
        dist.all_reduce(totals)
    model.train(was_training)
    return (totals[0] / totals[1]).item()


PROBES = ("The capital of France is [MASK].", "She [MASK] to the store yesterday.",
          "The [MASK] is the largest planet in the solar system.", "He was born in 1950 and [MASK] in 2010.")


def eval_record(val_loss: float, reference: dict, model: CramBERT, tokenizer: Tokenizer, device) -> dict:
    """What each evaluation logs: the loss against the unigram line (the ratio compares across
    vocabularies), bits per masked byte (total masked-token cross-entropy / bytes those tokens cover,
    comparable across tokenizers), and the top-5 fill-ins of the probe sentences."""
    return {"val_loss": val_loss, "unigram_loss": reference["unigram_loss"],
            "below_unigram": reference["unigram_loss"] - val_loss,
            "unigram_ratio": val_loss / reference["unigram_loss"],
            "bits_per_byte": val_loss * reference["masked_tokens"] / reference["masked_bytes"] / math.log(2),
            "probes": {text: fill_masks(model, tokenizer, text, device) for text in PROBES}}


def check_tokenizer(checkpoint: dict | None, tokenizer: Tokenizer, source: str, data_dir: str):
    """A model only fits data of its own vocabulary: same ids, same meanings."""
    if checkpoint is None:
        return
    stored = (checkpoint.get("tokenizer") or {"name": "gpt2"})["name"]
    if stored != tokenizer.name:
        raise ValueError(f"{source} was trained with tokenizer {stored!r} but {data_dir} holds {tokenizer.name!r} "
                         f"tokens: prepare the data with that checkpoint's tokenizer or start a new run")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def train(config: TrainConfig) -> dict:
    """Run (or resume) one pretraining run; returns a summary dict (also the last line of log.jsonl)."""
    notes = validate_config(config, world_size=int(os.environ.get("WORLD_SIZE", 1)))
    rank, world_size, device = setup_distributed(config.device)
    if rank == 0:
        for note in notes:
            print(note)
    lock = claim_out_dir(config) if rank == 0 else None  # out_dir is this run's until it returns or fails
    stop = {"signal": None}  # set by the first SIGINT / SIGTERM; the loop checks it
    previous_handlers = install_stop_handlers(stop, announce=rank == 0)
    try:
        return run_training(config, rank, world_size, device, stop)
    finally:
        restore_handlers(previous_handlers)
        if lock:
            release_out_dir(lock)


def install_stop_handlers(stop: dict, announce: bool = True) -> dict:
    """The first SIGINT (Ctrl-C) or SIGTERM sets stop["signal"] and says so at once: the loop then abandons
    an evaluation in progress or an unfinished step, writes a checkpoint and returns. The second restores
    the previous handlers and raises KeyboardInterrupt: an immediate exit, the last checkpoint written
    stays (writes are atomic). Returns the previous handlers (restore_handlers)."""
    previous = {}

    def handler(number, frame):
        if stop["signal"] is None:
            stop["signal"] = number
            if announce:
                sys.stderr.write("\nstopping after this step, writing checkpoint… (Ctrl-C again to exit at once)\n")
            return
        restore_handlers(previous)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # Python only lets the main thread set handlers
        previous.update({number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)})
    return previous


def restore_handlers(previous: dict):
    for number, handler in previous.items():
        signal.signal(number, handler)


def run_training(config: TrainConfig, rank: int, world_size: int, device: torch.device, stop: dict) -> dict:
    """The run itself, in an out_dir that train() has claimed; stop["signal"] is set on SIGINT / SIGTERM."""
    is_main = rank == 0
    torch.manual_seed(config.seed)  # the same initial weights on every process
    checkpoint_path = os.path.join(config.out_dir, "ckpt.pt")
    checkpoint = load_checkpoint(checkpoint_path, map_location=device) if config.resume else None
    if checkpoint:
        check_resume(config, checkpoint, checkpoint_path)
    ensure_prepared(config, rank)
    tokenizer = data_tokenizer(config.data_dir)
    train_file = TokenFile(os.path.join(config.data_dir, "train.bin"), tokenizer)
    train_data = MLMBatches(train_file, config.seq_len, config.mask_rate, seed=config.seed)
    val_batches = validation_batches(TokenFile(os.path.join(config.data_dir, "val.bin"), tokenizer), config.seq_len,
                                     config.eval_mask_rate, config.micro_batch_size, config.eval_rows)
    reference = reference_metrics(val_batches, unigram_log_probs(train_file.tokens, tokenizer.vocab_size),
                                  byte_lengths(tokenizer, tokenizer.vocab_size))

    state = LoopState(**checkpoint["loop"]) if checkpoint else LoopState()
    init_checkpoint = load_checkpoint(config.init_from, map_location=device) if config.init_from else None
    for source, loaded in ((checkpoint_path, checkpoint), (config.init_from, init_checkpoint)):
        check_tokenizer(loaded, tokenizer, source, config.data_dir)
    if checkpoint and config.preset == "auto":
        model_config = ModelConfig(**checkpoint["model_config"])  # the plan made when the run started
    else:
        model_config = requested_model_config(config, device, rank, world_size, tokenizer, init_checkpoint)
        if state.grown:
            model_config = growth_target(config, model_config)
        if checkpoint and checkpoint["model_config"] != asdict(model_config):
            raise ValueError(f"{checkpoint_path} holds a model of another config: {checkpoint['model_config']}")
    if config.grow_at and not state.grown:
        growth_target(config, model_config)  # an --init-from or auto model can grow into --grow-to: fail now, not later
    raw_model = CramBERT(model_config).to(device)  # what we save: never a compiled or DDP wrapper
    if init_checkpoint and not checkpoint:
        raw_model.load_state_dict(init_checkpoint["model"])
    optimizer = make_optimizer(raw_model, config)
    policy = None
    if config.policy == "learning-law":
        from policy import LearningLawPolicy, LearningLawPolicyConfig
        policy_config = LearningLawPolicyConfig()
        policy = LearningLawPolicy(policy_config, desired_batch(config, policy_config.desired_batch_size))
    elif config.policy != "uniform":
        raise ValueError(f"unknown policy {config.policy!r}; choose uniform or learning-law")
    if checkpoint:
        raw_model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        train_data.load_state_dict(checkpoint["data"])
        set_rng_states(checkpoint["rng"])
        if policy:
            policy.load_state_dict(checkpoint["policy"])
    flops_per_token = raw_model.flops_per_token(config.seq_len)
    peak_flops = measure_peak_flops(device)
    model = wrap(raw_model, config, world_size, device)

    os.makedirs(config.out_dir, exist_ok=True)
    log_file = open(os.path.join(config.out_dir, "log.jsonl"), "a") if is_main else None

    def log(record: dict):
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    def progress_of(s: LoopState) -> float:
        fractions = [s.elapsed / config.budget_seconds if config.budget_seconds else 0.0,
                     s.step / config.max_steps if config.max_steps else 0.0,
                     s.flops / config.max_flops if config.max_flops else 0.0]
        return max(fractions)

    def interrupted() -> bool:
        """Ctrl-C seen inside a step or an evaluation. One process only: with several, each stops only at a
        step boundary, where they agree through the all-reduce below."""
        return world_size == 1 and stop["signal"] is not None

    def checkpoint_now():
        save_checkpoint(checkpoint_path, model_checkpoint(
            raw_model, tokenizer, train_config=asdict(config), optimizer=optimizer.state_dict(), loop=asdict(state),
            data=train_data.state_dict(), rng=rng_states(), policy=policy.state_dict() if policy else None))

    log({"kind": "config", "config": asdict(config), "model_config": asdict(raw_model.config),
         "params": raw_model.num_params(), "non_embedding_params": raw_model.num_params(non_embedding=True),
         "flops_per_token": flops_per_token, "peak_flops": peak_flops, "world_size": world_size,
         "device": str(device), "git": git_commit(), "resumed_at_step": state.step, "tokenizer": tokenizer.name,
         **reference})
    if is_main:
        print(f"{raw_model.num_params() / 1e6:.1f}M parameters, {flops_per_token / 1e6:.1f} MFLOPs/token, "
              f"device {device} x{world_size}, measured peak {peak_flops / 1e12:.2f} TFLOP/s, tokenizer {tokenizer.name}, "
              f"unigram line {reference['unigram_loss']:.3f} nats")
    bar = tqdm(total=1000, desc="budget", unit="‰", disable=not (is_main and config.progress_bar))
    clock = BudgetClock(state.elapsed)
    last_checkpoint = time.monotonic()
    window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}  # averages between log lines
    steps_this_session = 0
    clock.start()
    while True:
        state.elapsed = clock.elapsed()
        stop_requested = stop["signal"] is not None
        if world_size > 1:  # every process must take the same decisions: batch size, lr, when to stop
            shared = torch.tensor([state.elapsed, float(stop_requested)], device=device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            state.elapsed, stop_requested = shared[0].item(), bool(shared[1].item())
        progress = progress_of(state)
        if progress >= state.next_eval or progress >= 1.0:  # evaluation is off the clock
            clock.stop()
            val_loss = evaluate(raw_model, val_batches, device, rank, world_size, should_stop=interrupted)
            if val_loss is None:  # Ctrl-C during the evaluation: abandoned, no partial loss is recorded
                stop_requested = True
                break
            state.val_loss = val_loss
            record = eval_record(state.val_loss, reference, raw_model, tokenizer, device)
            log({"kind": "eval", "step": state.step, "tokens": state.tokens, "flops": state.flops,
                 "elapsed": state.elapsed, "progress": progress, **record})
            bar.write(f"step {state.step:6d} | val loss {state.val_loss:.4f}, {record['below_unigram']:.3f} nats below "
                      f"unigram ({record['unigram_ratio']:.3f}x), {record['bits_per_byte']:.3f} bits/byte | "
                      f"{state.elapsed:7.1f}s of budget")
            for text, fills in record["probes"].items():
                bar.write(f"    {text}  ->  " + " | ".join(",".join(repr(t) for t in fill) for fill in fills))
            if is_main and not plot_runs([read_log(config.out_dir)], os.path.join(config.out_dir, "loss.png")) \
                    and state.step == 0:
                bar.write("matplotlib is not installed: no loss.png (pip install matplotlib); plot.py still prints tables")
            state.next_eval = (math.floor(progress / config.eval_interval) + 1) * config.eval_interval
            clock.start()
        if progress >= 1.0 or stop_requested or (config.stop_after_steps and steps_this_session >= config.stop_after_steps):
            break
        if config.grow_at and not state.grown and progress >= config.grow_at:  # on the clock: growth is training
            from grow import growth_flops
            small_params, small_config = raw_model.num_params(), raw_model.config
            raw_model = grow_during_run(raw_model, config, train_data, device)
            optimizer = make_optimizer(raw_model, config)
            model = wrap(raw_model, config, world_size, device)
            state.flops += growth_flops(small_config, raw_model.config, config.grow_method, config.ligo_steps,
                                        config.micro_batch_size * config.seq_len, config.seq_len)  # LiGO's operator training
            flops_per_token = raw_model.flops_per_token(config.seq_len)
            state.grown = True
            log({"kind": "grow", "step": state.step, "elapsed": clock.elapsed(), "method": config.grow_method,
                 "from_params": small_params, "to_params": raw_model.num_params(), "model_config": asdict(raw_model.config)})
            bar.write(f"step {state.step:6d} | grew {small_params / 1e6:.1f}M -> {raw_model.num_params() / 1e6:.1f}M "
                      f"parameters with {config.grow_method}")

        # --- one optimizer step: batch size and learning rate from the budget schedules ---
        step_start = clock.elapsed()
        lr = learning_rate(config, progress, state.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = batch_rows(config, progress, world_size)
        accumulation = rows // (config.micro_batch_size * world_size)
        loss_sum = torch.zeros((), device=device)
        for micro_step in range(accumulation):
            if interrupted():  # Ctrl-C: drop this unfinished step; the checkpoint holds the last whole one
                break
            # Global row layout: micro-step k on process r reads rows k*world+r of this step's batch, so the
            # same global batch gives the same gradients whatever the number of processes.
            start = train_data.cursor + (micro_step * world_size + rank) * config.micro_batch_size
            input_ids, labels = train_data.batch_at(train_data.epoch, start, config.micro_batch_size)
            input_ids, labels = input_ids.to(device), labels.to(device)
            sync = micro_step == accumulation - 1 or world_size == 1  # DDP: all-reduce on the last micro-step only
            # The Learning Law policy weights this micro-batch's examples (uniform: plain mean); its cost is on the clock.
            weights = policy.weights(raw_model, input_ids, None, labels) if policy else None
            with (nullcontext() if sync else model.no_sync()), autocast(device):
                _, loss = model(input_ids, labels=labels, example_weights=weights)
            # Each micro-batch loss is a MEAN over its masked tokens. Gradients from backward() SUM over
            # micro-steps, so dividing by the count makes the sum the gradient of the mean over the whole
            # batch, independent of how many micro-steps it took (DDP then averages over processes).
            (loss / accumulation).backward()
            loss_sum += loss.detach()
        if interrupted():
            optimizer.zero_grad(set_to_none=True)
            stop_requested = True
            break
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_data.advance(rows)
        state.step += 1
        steps_this_session += 1
        state.tokens += rows * config.seq_len
        state.flops += rows * config.seq_len * flops_per_token

        window["loss"] += loss_sum.item() / accumulation  # .item() syncs: a fair end point for step timing
        window["steps"] += 1
        window["tokens"] += rows * config.seq_len
        window["seconds"] += clock.elapsed() - step_start
        if state.step % config.log_interval == 0:
            mean_loss = torch.tensor(window["loss"] / window["steps"], device=device)
            if world_size > 1:
                dist.all_reduce(mean_loss)
                mean_loss /= world_size
            tokens_per_second = window["tokens"] / window["seconds"]
            record = {"kind": "train", "step": state.step, "tokens": state.tokens, "flops": state.flops,
                      "elapsed": clock.elapsed(), "progress": progress, "loss": mean_loss.item(), "lr": lr,
                      "batch_tokens": rows * config.seq_len, "grad_norm": grad_norm.item(),
                      "tokens_per_second": tokens_per_second,
                      "mfu": tokens_per_second * flops_per_token / (peak_flops * world_size)}
            log(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", batch=rows, tok_s=f"{tokens_per_second:,.0f}",
                            mfu=f"{record['mfu']:.0%}")
            window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}
        bar.update(int(progress_of(state) * 1000) - bar.n)
        if is_main and time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60:
            clock.stop()
            checkpoint_now()
            last_checkpoint = time.monotonic()
            clock.start()

    clock.stop()
    state.elapsed = clock.elapsed()
    bar.close()
    if is_main:
        checkpoint_now()
    summary = {"kind": "summary", "final_val_loss": state.val_loss, "steps": state.step, "tokens": state.tokens,
               "flops": state.flops, "elapsed_seconds": state.elapsed, "params": raw_model.num_params(),
               "non_embedding_params": raw_model.num_params(non_embedding=True), "checkpoint": checkpoint_path,
               "log": os.path.join(config.out_dir, "log.jsonl"), "interrupted": stop_requested,
               "finished": progress_of(state) >= 1.0}
    log(summary)
    if log_file:
        log_file.close()
    return summary


# ----------------------------------------------------------------------------------------------------
# Command line

def parse_args(argv=None) -> TrainConfig:
    recipe_default = TrainConfig()  # a flag that a recipe sets has no argparse default: the recipe fills it
    defaults = argparse.Namespace(**{name: None if name in RECIPE_FIELDS else getattr(recipe_default, name)
                                     for name in asdict(recipe_default)})
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=("auto", "gpu", "cpu"), default="auto",
                        help="defaults for the flags not given: 'gpu' is cramming's recipe, 'cpu' the one measured "
                             f"for a 2-core CPU ({', '.join(RECIPE_FIELDS)}); auto = gpu when CUDA is available")
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=defaults.data_dir, help="folder with train.bin / val.bin")
    data.add_argument("--corpus", default=defaults.corpus,
                      help="text prepared into --data-dir when it is empty: file, folder, glob or URL "
                           "(default $CRAMLM_CORPUS or WikiText-103)")
    data.add_argument("--tokenizer", default=defaults.tokenizer,
                      help="for preparing --data-dir: gpt2, or a .bpe file (python -m data.prepare --help)")
    data.add_argument("--vocab-size", type=int, default=defaults.vocab_size,
                      help="for preparing --data-dir: train our own BPE with this many ids first (0 = use --tokenizer)")
    data.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per row")
    data.add_argument("--mask-rate", type=float, default=defaults.mask_rate, help="share of tokens masked (BERT: 0.15)")
    data.add_argument("--eval-mask-rate", type=float, default=defaults.eval_mask_rate,
                      help="masking of the fixed validation set (kept equal across runs to compare losses)")
    data.add_argument("--max-tokens-per-char", type=float, default=defaults.max_tokens_per_char,
                      help="cramming's data filter for preparing --data-dir: drop documents above this ratio (0 = off)")

    model = parser.add_argument_group("model (sizes and recipe switches; defaults = crammed recipe)")
    model.add_argument("--preset", "--model", default=defaults.preset,
                       help="tiny, mini, small, base, crammed, or auto: the Chinchilla-optimal size for --hours on "
                            "this machine's measured speed (scaling.py)")
    model.add_argument("--init-from", default="", help="start from this checkpoint's weights and config")
    for name in ("n_layer", "n_head", "n_embd", "intermediate_size"):
        model.add_argument("--" + name.replace("_", "-"), type=int, help=f"override the preset's {name}")
    model.add_argument("--norm-position", choices=("pre", "post"), help="pre-LN (crammed) or post-LN (BERT)")
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, help="biases in linear layers (BERT: on)")
    model.add_argument("--ffn", choices=("glu", "gelu"), help="gated GELU (crammed) or plain GELU (BERT)")
    model.add_argument("--mlm-head", choices=("sparse", "dense"), help="logits at masked positions only, or everywhere")
    model.add_argument("--pos-emb", choices=("sinusoidal", "learned", "rope"),
                       help="scaled sinusoidal (crammed), learned (BERT) or rotary (RoFormer)")
    model.add_argument("--dropout", type=float, help="dropout in pretraining (crammed: 0, BERT: 0.1)")
    model.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, help="share input/output embeddings")

    budget = parser.add_argument_group("budget (the run ends when the first is spent)")
    clock = budget.add_mutually_exclusive_group()
    clock.add_argument("--hours", type=float, help="wall-clock training budget (default 24 if no other budget)")
    clock.add_argument("--minutes", type=float, help="the same in minutes")
    clock.add_argument("--seconds", type=float, help="the same in seconds")
    budget.add_argument("--max-steps", type=int, default=0, help="optimizer-step budget")
    budget.add_argument("--max-flops", type=float, default=0.0, help="training-FLOP budget")
    budget.add_argument("--stop-after-steps", type=int, default=0,
                        help="checkpoint and exit after this many steps of this session; continue with --resume")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    optim.add_argument("--schedule", choices=("one-cycle", "bert", "constant"), default=defaults.schedule,
                       help="budget triangle (crammed), warmup + linear decay by steps (BERT), or constant")
    optim.add_argument("--peak-at", type=float, default=defaults.peak_at, help="one-cycle: budget fraction of the peak")
    optim.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps, help="bert schedule: warmup steps")
    optim.add_argument("--schedule-steps", type=int, default=0, help="bert schedule: step at which lr reaches 0")
    optim.add_argument("--batch-tokens", type=int, default=defaults.batch_tokens, help="tokens per step at full batch")
    optim.add_argument("--micro-batch-size", type=int, default=defaults.micro_batch_size, help="rows per forward pass per device")
    optim.add_argument("--batch-ramp", action=argparse.BooleanOptionalAction, default=defaults.batch_ramp,
                       help="ramp the batch up to --batch-tokens over the first --ramp-until of the budget")
    optim.add_argument("--ramp-until", type=float, default=defaults.ramp_until, help="budget fraction where the ramp ends")
    optim.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay on matrices")
    optim.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="max gradient norm")

    run = parser.add_argument_group("evaluation, logging, checkpoints, system")
    run.add_argument("--out-dir", default=defaults.out_dir, help="where ckpt.pt and log.jsonl go")
    run.add_argument("--eval-interval", type=float, default=defaults.eval_interval, help="budget fraction between evaluations")
    run.add_argument("--eval-rows", type=int, default=defaults.eval_rows, help="rows in the fixed validation set")
    run.add_argument("--log-interval", type=int, default=defaults.log_interval, help="steps between log lines")
    run.add_argument("--checkpoint-minutes", type=float, default=defaults.checkpoint_minutes, help="minutes between checkpoints")
    run.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an --out-dir that holds another run's checkpoint (deletes it and its log)")
    run.add_argument("--device", default=defaults.device, help="auto, cuda, mps or cpu")
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights, data order and masking")
    run.add_argument("--no-progress-bar", action="store_true", help="no tqdm bar (log lines still print)")
    extensions = parser.add_argument_group("data policy (policy.py) and growth (grow.py)")
    extensions.add_argument("--policy", choices=("uniform", "learning-law"), default=defaults.policy,
                            help="per-example data weights: uniform, or the Learning Law's contribution-based policy")
    extensions.add_argument("--grow-at", type=float, default=0.0, help="grow the model at this budget fraction (0 = never)")
    extensions.add_argument("--grow-to", default="", help="preset to grow into (with --grow-at)")
    extensions.add_argument("--grow-method", choices=("ligo", "stack", "net2net", "scratch"), default=defaults.grow_method,
                            help="how to grow (LiGO learns the growth operator)")
    extensions.add_argument("--ligo-steps", type=int, default=defaults.ligo_steps, help="LiGO operator-training steps")
    args = parser.parse_args(argv)
    recipe = args.recipe
    if recipe == "auto":
        recipe = "gpu" if resolve_device(args.device).type == "cuda" else "cpu"
        print(f"recipe: {recipe} ({'CUDA found' if recipe == 'gpu' else 'no CUDA GPU'}); "
              f"{'--recipe cpu' if recipe == 'gpu' else '--recipe gpu'} for the other one")
    for name in RECIPE_FIELDS:  # flags given on the command line win over the recipe
        if getattr(args, name) is None:
            setattr(args, name, RECIPES[recipe].get(name, getattr(recipe_default, name)))

    if args.hours is not None or args.minutes is not None or args.seconds is not None:
        budget_seconds = args.hours * 3600 if args.hours is not None else (
            args.minutes * 60 if args.minutes is not None else args.seconds)
    else:
        budget_seconds = 0.0 if (args.max_steps or args.max_flops) else defaults.budget_seconds
    switches = {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd,
                "intermediate_size": args.intermediate_size, "norm_position": args.norm_position,
                "bias": args.bias, "ffn": args.ffn, "mlm_head": args.mlm_head, "pos_emb": args.pos_emb,
                "dropout": args.dropout, "tie_embeddings": args.tie_embeddings}
    return TrainConfig(
        data_dir=args.data_dir, corpus=args.corpus, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        seq_len=args.seq_len, mask_rate=args.mask_rate,
        eval_mask_rate=args.eval_mask_rate, max_tokens_per_char=args.max_tokens_per_char,
        preset=args.preset, model_overrides={k: v for k, v in switches.items() if v is not None},
        init_from=args.init_from, budget_seconds=budget_seconds, max_steps=args.max_steps, max_flops=args.max_flops,
        stop_after_steps=args.stop_after_steps, lr=args.lr, schedule=args.schedule, peak_at=args.peak_at,
        warmup_steps=args.warmup_steps, schedule_steps=args.schedule_steps, batch_tokens=args.batch_tokens,
        micro_batch_size=args.micro_batch_size, batch_ramp=args.batch_ramp, ramp_until=args.ramp_until,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, out_dir=args.out_dir,
        eval_interval=args.eval_interval, eval_rows=args.eval_rows, log_interval=args.log_interval,
        checkpoint_minutes=args.checkpoint_minutes, resume=args.resume, overwrite=args.overwrite, device=args.device,
        compile=args.compile, seed=args.seed, progress_bar=not args.no_progress_bar, policy=args.policy,
        grow_at=args.grow_at, grow_to=args.grow_to, grow_method=args.grow_method, ligo_steps=args.ligo_steps)


def main(argv=None):
    config = parse_args(argv)
    try:
        summary = train(config)
    except (FileNotFoundError, ValueError) as error:  # bad input: one clear message, no traceback
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:  # a second Ctrl-C: out at once, the last checkpoint written stays
        print(f"interrupted again: exited at once; the last checkpoint written is {os.path.join(config.out_dir, 'ckpt.pt')}",
              file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if summary["interrupted"]:
        print(f"interrupted: checkpoint saved to {summary['checkpoint']}; continue with the same command plus --resume")
    print(json.dumps(summary, indent=2))
    if summary["interrupted"]:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
