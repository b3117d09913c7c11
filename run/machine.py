"""
Fit a training run to the machine it runs on, before the clock starts: precision, micro-batch, compilation,
and the tokens/s a wall-clock budget will buy.

Hardware is measured, not assumed: the micro-batch that fits is found by trying it (forward and backward,
halving on out-of-memory), compilation is tried on one micro-batch and abandoned for eager mode when it fails,
and the speed is timed. train.py calls fit_to_machine, compile_with_fallback and measure_speed
while it builds a run; `train.py --plan` calls them to say what a run would do without running it.
"""
import copy
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from model import MASK_RATE, CramBERT, ModelConfig, count_kept, make_optimizer, scored_share
from run.config import AUTO_MICRO_BATCH, TrainConfig, full_batch_micro_steps, max_mask_rate
from run.device import autocast, keep_freed_memory, precision_note, synchronize, training_precision


def forward_backward(model: torch.nn.Module, config: TrainConfig, device, rows: int):
    """One micro-step's forward and backward on random tokens (what the data costs, without reading any): the
    micro-batch trial, the compile warm-up and the speed measurement. The caller drops the gradients, and the
    optimizer never runs, so the weights are untouched."""
    # ids below 256 exist in every vocabulary (the byte tokens come first), and their values cost nothing
    input_ids, labels = random_batch(rows, config.seq_len, config.mask_rate, 256, device)
    with autocast(device, config.precision):
        _, loss = model(input_ids, labels=labels, n_kept=count_kept(rows, config.seq_len, max_mask_rate(config)))
    loss.backward()


def largest_divisor(number: int, at_most: int) -> int:
    return max(d for d in range(1, min(number, at_most) + 1) if number % d == 0)


def auto_micro_batch_size(full_rows: int, fits) -> int:
    """The largest micro-batch that fits: `fits(rows)` runs a trial and raises torch.OutOfMemoryError when it
    does not. Tries the largest divisor of full_rows (a full batch's rows on one device) up to AUTO_MICRO_BATCH,
    then the largest divisor up to half of the last try, and so on. A divisor, so that a whole number of
    accumulation steps makes exactly the --batch-tokens batch: any other size would round the batch."""
    rows = largest_divisor(full_rows, AUTO_MICRO_BATCH)
    while True:
        try:
            fits(rows)
            return rows
        except torch.OutOfMemoryError:
            pass  # retry outside the except block: the error's traceback holds the failed trial's tensors until it ends
        if rows == 1:
            raise ValueError("--micro-batch-size auto: not even one row fits in GPU memory; use a smaller --preset "
                             "or --seq-len")
        rows = largest_divisor(full_rows, rows // 2)


def micro_batch_trial(raw_model: CramBERT, optimizer: torch.optim.Optimizer, config: TrainConfig, device):
    """fits(rows) for auto_micro_batch_size: a forward and backward of `rows` rows, with AdamW's two moments
    allocated too when the optimizer has none yet (it creates them at its first step, inside the budget)."""
    def fits(rows: int):
        raw_model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()  # what the previous, failed trial held
        moments = [] if optimizer.state else [torch.empty_like(p) for p in raw_model.parameters() for _ in range(2)]
        try:
            forward_backward(raw_model, config, device, rows)
        finally:
            del moments
            raw_model.zero_grad(set_to_none=True)
    return fits


CPU_COMPILE_MIN_BUDGET_SECONDS = 300  # shorter CPU budgets run eager under --compile's default


def compile_by_default(config: TrainConfig, device) -> bool:
    """--compile's default. CUDA: always. CPU: for a wall-clock budget of at least 5 minutes. Compiling happens
    before the clock, so it never costs budget, but it costs the user ~30-60 s of waiting (--plan prints it) and
    buys ~1.3-1.6x the tokens/s: worth it for a 10-minute run, not for a 1-minute one, and not for step- or
    FLOP-budgeted runs (tests, sweeps of many short runs), where waiting is all it would add. Off on MPS."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (config.budget_seconds or 0) >= CPU_COMPILE_MIN_BUDGET_SECONDS


def fit_to_machine(config: TrainConfig, raw_model: CramBERT, optimizer: torch.optim.Optimizer, device,
                   world_size: int) -> tuple[TrainConfig, str]:
    """The config with its machine-dependent flags decided: --precision, --compile (compile_by_default),
    --micro-batch-size auto (on CUDA, tried with forward and backward passes; elsewhere AUTO_MICRO_BATCH rows or
    fewer) and, on a CPU, the thread count (choose_cpu_threads). All processes take the smallest micro-batch any
    of them found, so they step together. On a CPU, freed memory is kept for the next step
    (run.device.keep_freed_memory). Also returns how the micro-batch was chosen."""
    keep_freed_memory(device)
    precision = training_precision(device, config.precision)
    compile_model = compile_by_default(config, device) if config.compile is None else config.compile
    micro_batch_size, how = config.micro_batch_size, "given"
    if micro_batch_size == "auto":
        full_rows = max(1, round(config.batch_tokens / config.seq_len / world_size))
        if device.type == "cuda":
            config = replace(config, precision=precision)  # the trial runs in the training precision
            with torch.random.fork_rng(devices=[device]):  # dropout draws numbers: the run's own must not move
                micro_batch_size = auto_micro_batch_size(full_rows, micro_batch_trial(raw_model, optimizer, config, device))
            how = "auto: the largest that fit"
        else:
            micro_batch_size, how = largest_divisor(full_rows, AUTO_MICRO_BATCH), "auto, not tried off CUDA"
        if world_size > 1:
            smallest = torch.tensor(micro_batch_size, device=device)
            dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
            micro_batch_size = int(smallest.item())
    config = replace(config, precision=precision, compile=compile_model, micro_batch_size=micro_batch_size)
    if world_size == 1 and (threads := choose_cpu_threads(raw_model, optimizer, config, device)):
        print(f"threads: {threads}")
    return config, how


def announce_machine(config: TrainConfig, how: str, device, world_size: int):
    """One log line: what fit_to_machine decided, and why (precision_note)."""
    accumulation, threads = full_batch_micro_steps(config, world_size), torch.get_num_threads()
    print(f"machine: {device} x{world_size} ({threads} thread{'s' if threads > 1 else ''} each), {config.precision}"
          f"{precision_note(device, config.precision)}, torch.compile {'on' if config.compile else 'off'}, micro-batch "
          f"{config.micro_batch_size} rows ({how}) x {accumulation} accumulation steps x {world_size} = "
          f"{accumulation * config.micro_batch_size * world_size * config.seq_len:,} tokens per full batch")


def wrap(raw_model: CramBERT, config: TrainConfig, world_size: int, device) -> torch.nn.Module:
    """What the training loop calls: compiled (compile_with_fallback) and/or DDP-wrapped. Checkpoints always save
    raw_model, so their keys carry no _orig_mod. or module. prefix."""
    model = compile_with_fallback(raw_model, config, device) if config.compile else raw_model
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def compile_with_fallback(raw_model: CramBERT, config: TrainConfig, device) -> torch.nn.Module:
    """torch.compile(raw_model), warmed up on one micro-batch before the clock starts. Compilation is lazy: a
    missing C compiler or Triton, an unsupported GPU or a compiler bug surfaces at the first forward or backward,
    so that is where we catch it, and fall back to eager mode with one log line rather than lose the run."""
    compiled = torch.compile(raw_model)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            forward_backward(compiled, config, device, config.micro_batch_size)
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # compilers fail in many ways: BackendCompilerFailed, RuntimeError, OSError, ...
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        print(f"torch.compile failed ({type(error).__name__}: {first_line}); training in eager mode instead "
              f"(--no-compile skips the attempt)")
        return raw_model
    finally:
        raw_model.zero_grad(set_to_none=True)
    return compiled


@dataclass
class Speed:
    tokens_per_second: float  # training tokens/s of all processes at the median step: what the budget buys
    low: float  # at the 10th and 90th percentile steps: the spread --plan reports
    high: float
    steps: int  # timed steps


@contextmanager
def weights_kept(model: torch.nn.Module, optimizer: torch.optim.Optimizer, device):
    """Steps taken inside leave no trace: the weights, the optimizer's state and the random number generators
    are restored afterwards, so a run that times itself starts where it would have."""
    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    raw_model = getattr(raw_model, "_orig_mod", raw_model)
    weights = {name: tensor.detach().clone() for name, tensor in raw_model.state_dict().items()}
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
    with torch.no_grad():
        raw_model.load_state_dict(weights)
    optimizer.load_state_dict(optimizer_state)


def timed_steps(step, device, seconds: float, warmup: int, min_steps: int) -> list[float]:
    """Seconds of each call of `step()` after `warmup` untimed ones (compilation, the allocator's first requests),
    timed one by one until ~`seconds` have passed and at least `min_steps` were timed. The callers take the median
    step, not the mean of a few: a neighbour that takes a core for a moment (another job, an evaluation beside the
    run) stretches some steps, which the median ignores and a 3-step mean does not."""
    for _ in range(warmup):
        step()
    step_seconds = []
    while len(step_seconds) < min_steps or sum(step_seconds) < seconds:
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        step_seconds.append(time.perf_counter() - start)
    return step_seconds


def micro_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, device):
    """A whole micro-step on random tokens, the optimizer's included: what measure_speed times. Each process
    alone: a DDP model is stepped through its module, so no all-reduce runs inside."""
    timed = model.module if isinstance(model, DistributedDataParallel) else model

    def step():
        forward_backward(timed, config, device, config.micro_batch_size)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def measure_speed(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, device,
                  world_size: int, seconds: float = 3.0, warmup: int = 3, min_steps: int = 5) -> Speed:
    """Training tokens/s of all processes, from the median of whole micro-steps (timed_steps), with the 10-90%
    spread that --plan reports. The weights and the optimizer's state are restored afterwards (weights_kept)."""
    with weights_kept(model, optimizer, device):
        step_seconds = timed_steps(micro_step(model, optimizer, config, device), device, seconds, warmup, min_steps)
    tokens = config.micro_batch_size * config.seq_len * world_size
    quantiles = statistics.quantiles(step_seconds, n=10)  # 9 cut points: [0] is the 10th percentile, [-1] the 90th
    return Speed(tokens / statistics.median(step_seconds), tokens / quantiles[-1], tokens / quantiles[0],
                 len(step_seconds))


def choose_cpu_threads(raw_model: CramBERT, optimizer: torch.optim.Optimizer, config: TrainConfig, device,
                       seconds: float = 1.5) -> str | None:
    """On a CPU that something else is using too, one thread can train faster than one per core: every OpenMP
    barrier waits for the slowest thread, and a thread whose core another job holds makes every step wait for
    it. So the eager micro-step is timed with every thread and with one, and the run keeps the faster (before
    compiling: the compiled kernels keep the thread count they were built with). Only for CPU budgets that
    compile (>= 5 minutes, where a lost 3 s is noise) and only when OMP_NUM_THREADS does not already say how many
    (torchrun sets it to 1 for each of several processes). Returns what was measured, for the log, or None."""
    all_threads = torch.get_num_threads()
    if device.type != "cpu" or all_threads == 1 or "OMP_NUM_THREADS" in os.environ or \
            (config.budget_seconds or 0) < CPU_COMPILE_MIN_BUDGET_SECONDS:
        return None
    tokens = config.micro_batch_size * config.seq_len
    tokens_per_second = {}
    with weights_kept(raw_model, optimizer, device):
        for threads in (all_threads, 1):
            torch.set_num_threads(threads)
            step_seconds = timed_steps(micro_step(raw_model, optimizer, config, device), device, seconds, 2, 5)
            tokens_per_second[threads] = tokens / statistics.median(step_seconds)
    chosen = max(tokens_per_second, key=tokens_per_second.get)
    torch.set_num_threads(chosen)
    return (f"{chosen} of {all_threads} (eager, measured: " +
            ", ".join(f"{n} thread{'s' if n > 1 else ''} {tps:,.0f} tokens/s" for n, tps in tokens_per_second.items())
            + "; OMP_NUM_THREADS=N chooses instead)")


# ----------------------------------------------------------------------------------------------------
# Measuring the machine: random batches, timed training steps, parameters, memory and achieved FLOP/s
# (forward_backward above, experiments/bench.py and scaling.py's plan use them)

def random_batch(batch_size: int, seq_len: int, mask_rate: float, vocab_size: int, device):
    """Random tokens with labels at an exact mask_rate share of each row, as data/loader.py masks."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g)
    labels = torch.full_like(input_ids, -100)
    masked_per_row = int(mask_rate * seq_len)
    positions = torch.rand(input_ids.shape, generator=g).argsort(dim=1)[:, :masked_per_row]
    labels.scatter_(1, positions, input_ids.gather(1, positions))
    return input_ids.to(device), labels.to(device)


def time_training(loss_fn, optimizer, input_ids, labels, device, warmup: int = 1, steps: int = 0,
                  seconds: float = 0.0, precision: str = "auto") -> tuple[int, float]:
    """Run `warmup` untimed training steps, then `steps` timed ones (or as many as fit in `seconds`).
    Returns (timed steps, their seconds). experiments/bench.py times its table with it, and
    shape_tokens_per_second times each step alone instead, for scaling.py's plan."""
    def step():
        with autocast(device, precision):
            loss = loss_fn(input_ids, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):  # first-call allocations, autotuning and compilation are not what a long run sees
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done, start = 0, time.perf_counter()
    while done < steps or (seconds and (done == 0 or time.perf_counter() - start < seconds)):
        step()
        done += 1
    synchronize(device)
    return done, time.perf_counter() - start


def shape_tokens_per_second(config: ModelConfig, device: str = "cpu", seconds: float = 3.0, micro_batch_size: int = 8,
                            seq_len: int | None = None, precision: str = "auto", warmup: int = 2,
                            mask_rate: float = MASK_RATE) -> float:
    """Training tokens/s of one shape: forward, backward and an AdamW step on random tokens in the run's precision,
    from the median of its steps (timed_steps)."""
    seq_len = seq_len or config.max_seq_len
    device = torch.device(device)
    model = CramBERT(config).to(device)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4))
    input_ids, labels = random_batch(micro_batch_size, seq_len, mask_rate, config.vocab_size, device)
    n_kept = count_kept(micro_batch_size, seq_len, mask_rate)
    precision = training_precision(device, precision)

    def step():
        with autocast(device, precision):
            loss = model(input_ids, labels=labels, n_kept=n_kept)[1]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return micro_batch_size * seq_len / statistics.median(timed_steps(step, device, seconds, warmup, min_steps=3))


def count_params(config: ModelConfig) -> int:
    """model.num_params() without allocating the model: the blocks are identical, so build a one-block
    model on the meta device (shapes, no storage) and add the remaining blocks' share."""
    with torch.device("meta"):
        model = CramBERT(replace(config, n_layer=1))
    block = sum(p.numel() for p in model.encoder.blocks[0].parameters())
    return model.num_params() + (config.n_layer - 1) * block


def training_memory_bytes(config: ModelConfig, params: int, micro_batch_size: int, seq_len: int,
                          bytes_per_value: int = 4, mask_rate: float = MASK_RATE) -> int:
    """Peak training memory, estimated, for a model of `params` (count_params) parameters. Weights,
    gradients and AdamW's two moments are 4 fp32 copies of the parameters (16 bytes each). Activations
    are what autograd saves per token (the tests check this against the tensors it really saves): ~3C
    in the embedding, 9C + 2I per block (norm inputs and outputs, qkv, attention output, FFN hidden
    states) and, at the MLM head's rows, 4C plus the log-softmax over the vocabulary and its gradient."""
    C, I, V = config.n_embd, config.intermediate_size, config.vocab_size
    per_token = 3 * C + config.n_layer * (9 * C + 2 * I) + scored_share(config, mask_rate) * (4 * C + 2 * V)
    return int(16 * params + bytes_per_value * per_token * micro_batch_size * seq_len)


def available_memory_bytes(device: str) -> int:
    """Free memory on a GPU; the machine's physical memory on a CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
