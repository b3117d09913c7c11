"""
Pretrain a crammed BERT with masked language modelling inside a wall-clock budget.

    python train.py --hours 24                                   # prepares as much C4 as the budget needs on first use
    python train.py --minutes 5 --preset mini --corpus ../shared/data/wiki/enwiki-2015-00.txt.gz
    torchrun --nproc_per_node=8 train.py --hours 24              # data parallel on 8 GPUs

The budget is wall-clock time (Geiping & Goldstein 2022, Sec. 2): the learning rate and the batch size
are functions of progress = elapsed training seconds / budget, so the run ends on time on any hardware.
Evaluation and checkpointing stop the clock. A run can also end on a step or FLOP budget (progress is the
largest of the three fractions), which is what the tests and the scaling sweep use.
"""
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from blimp import blimp_accuracy, evaluation_pairs
from checkpoint import check_tokenizer, load_checkpoints, model_checkpoint, rng_states, save_checkpoint, set_rng_states
from common import autocast, gradient_scaler, make_optimizer, measure_peak_flops, setup_distributed
from config import TrainConfig, check_resume_data, max_mask_rate, keep_minutes, parse_train_args, validate_config
from data.corpus import ensure_prepared, planned_vocab_size, training_batches
from data.loader import TokenFile, data_identity, data_tokenizer, train_token_files, validation_batches
from data.tokenizer import Tokenizer
from grow import check_growth_flags, grow_on_training_rows, growth_flops, growth_target
from machine import announce_machine, fit_to_machine, measure_tokens_per_second, wrap
from model import MASK_RATE, CramBERT, fill_masks, model_config_from_dict, count_kept
from report import StepLog, log_start, print_evaluation
from policy import LearningLawPolicy, charged_flops_per_token, held_out_batch, make_policy
from runfolder import EXIT_INTERRUPTED, RunFolder, StoppedBeforeTraining
from scaling import requested_model_config


# ----------------------------------------------------------------------------------------------------
# Schedules: pure functions of progress (0 at the start of the budget, 1 at its end)

def schedule_progress(config: TrainConfig, progress: float) -> float:
    """Where this run's progress falls on its schedule. A run may be only the piece [--schedule-from, --schedule-to]
    of one longer schedule: a small model stops mid-schedule, and the model grown from it carries on with the
    learning rate and batch size where they were, instead of warming up to the peak again and losing the small
    model's lead. The grown model's optimizer still starts fresh; LiGO's released BERT recipe likewise trains
    the grown model with no second warmup (--warmup_steps 0; Wang et al. 2023, github.com/VITA-Group/LiGO)."""
    return config.schedule_from + (config.schedule_to - config.schedule_from) * progress


def learning_rate(config: TrainConfig, progress: float, step: int) -> float:
    """The schedule's value at this run's progress; with --rewarm, ramped up from 0 again just after growth."""
    at = schedule_progress(config, progress)
    lr = scheduled_learning_rate(config, at, step)
    if config.rewarm and (config.grow_at or config.init_from):
        since_growth = at - schedule_progress(config, config.grow_at)  # an --init-from run starts grown (grow_at 0)
        if 0 <= since_growth < config.rewarm:
            lr *= since_growth / config.rewarm
    return lr


def scheduled_learning_rate(config: TrainConfig, progress: float, step: int) -> float:
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
    fraction = min(1.0, schedule_progress(config, progress) / config.ramp_until)
    return max(1, round(1 + (full - 1) * fraction)) * rows_per_micro_step


@dataclass
class LoopState:
    step: int = 0  # optimizer steps taken
    tokens: int = 0  # training tokens processed (all devices)
    flops: float = 0.0  # training FLOPs spent
    elapsed: float = 0.0  # seconds on the budget clock
    next_eval: float = 0.0  # progress at which the next evaluation is due
    val_loss: float | None = None  # latest held-out loss
    val_step: int | None = None  # the step val_loss was measured at
    log_bytes: int | None = None  # length of log.jsonl when this state was saved: --resume cuts the log back to it
    grown: bool = False  # the model was grown (--grow-at) in this run


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
def evaluate(model: CramBERT, batches, device, rank: int, world_size: int, mask_rate: float = MASK_RATE,
             precision: str = "auto") -> float:
    """Held-out MLM loss, averaged over masked tokens; each process takes every world_size-th batch.
    mask_rate: the most any batch masks (the sparse head's count, count_kept)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, device=device)  # (summed loss, masked tokens)
    for input_ids, labels in batches[rank::world_size]:
        with autocast(device, precision):
            _, loss = model(input_ids.to(device), labels=labels.to(device),
                            n_kept=count_kept(*input_ids.shape, mask_rate))
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


# ----------------------------------------------------------------------------------------------------
# Building a run: the model is built, fitted to the machine, compiled and timed once, before the clock

@dataclass
class Run:
    """What the loop works on. Growth replaces raw_model, model and optimizer together (grow_now)."""
    config: TrainConfig  # as fitted to the machine (machine.fit_to_machine: precision, compile, micro-batch)
    rank: int
    world_size: int
    device: torch.device
    raw_model: CramBERT  # what we save: never a compiled or DDP wrapper
    model: torch.nn.Module  # what the loop calls (machine.wrap)
    optimizer: torch.optim.Optimizer
    policy: LearningLawPolicy | None  # --policy learning-law, else None (uniform)
    state: LoopState
    tokens_per_second: float | None  # measured before the clock, for a wall-clock budget (else None)
    flops_per_token: float  # charged per training token: the model's, plus the policy's (charged_flops_per_token)
    peak_flops: float  # measured, for MFU
    tokenizer: Tokenizer = None
    train_data: object = None  # the training rows in a resumable order: MLMBatches (train.bin) or PartedBatches
    val_batches: list = None  # the fixed validation set
    reference: dict = None  # the unigram line and bytes of the validation set (reference_metrics)
    scaler: torch.amp.GradScaler = None  # fp16's loss scaling; a pass-through in bf16 and fp32
    log_file: object = None  # out_dir/log.jsonl, on the main process only
    blimp_pairs: list = field(default_factory=list)  # --blimp-pairs: scored at each evaluation (main process)

    def log(self, record: dict):
        if self.log_file:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()

    def progress(self) -> float:
        """Share of the budget spent: the largest of the time, step and FLOP fractions."""
        config, s = self.config, self.state
        return max(s.elapsed / config.budget_seconds if config.budget_seconds else 0.0,
                   s.step / config.max_steps if config.max_steps else 0.0,
                   s.flops / config.max_flops if config.max_flops else 0.0)

    def save(self, path: str | None = None):
        self.state.log_bytes = os.path.getsize(self.log_file.name) if self.log_file else None
        save_checkpoint(path or os.path.join(self.config.out_dir, "ckpt.pt"), model_checkpoint(
            self.raw_model, self.tokenizer, train_config=asdict(self.config), optimizer=self.optimizer.state_dict(),
            loop=asdict(self.state), data=self.train_data.state_dict(), rng=rng_states(), scaler=self.scaler.state_dict(),
            policy=self.policy.state_dict() if self.policy else None, data_identity=data_identity(self.config.data_dir)))


def build_model(config: TrainConfig, rank: int, world_size: int, device, checkpoint: dict | None,
                init_checkpoint: dict | None) -> Run:
    """The model these flags ask for (a resumed run's, an --init-from checkpoint's, a preset, or Chinchilla's plan
    for the budget: scaling.requested_model_config), its optimizer and policy, fitted to the machine, compiled and
    timed. No data yet: a corpus prepared for the budget is sized from the tokens/s measured here."""
    torch.manual_seed(config.seed)  # the same initial weights on every process
    state = LoopState(**checkpoint["loop"]) if checkpoint else LoopState()
    if checkpoint and config.preset == "auto":
        model_config = model_config_from_dict(checkpoint["model_config"])  # the plan made when the run started
    else:
        model_config = requested_model_config(config, device, rank, world_size, planned_vocab_size(config), init_checkpoint)
        if state.grown:
            model_config = growth_target(config, model_config)
        if checkpoint and model_config_from_dict(checkpoint["model_config"]) != model_config:
            raise ValueError(f"{config.out_dir}/ckpt.pt holds a model of another config: {checkpoint['model_config']}")
    if config.grow_at and not state.grown:
        growth_target(config, model_config)  # an --init-from or auto model can grow into --grow-to: fail now, not later
    raw_model = CramBERT(model_config).to(device)
    if init_checkpoint and not checkpoint:
        raw_model.load_state_dict(init_checkpoint["model"])
    optimizer, policy = make_optimizer(raw_model, config), make_policy(config)
    if policy:
        policy.watch(raw_model)  # before torch.compile traces the model, so the hook is part of the graph
    config, how = fit_to_machine(config, raw_model, optimizer, device, world_size)
    model = wrap(raw_model, config, world_size, device)
    if config.compile and getattr(model, "module", model) is raw_model:  # compiling failed: eager from now on,
        config = replace(config, compile=False)  # and a growth later does not try (and fail) again
    if rank == 0:
        announce_machine(config, how, device, world_size, batch_rows(config, 1.0, world_size))
    tokens_per_second = measure_tokens_per_second(model, config, device, world_size) if config.budget_seconds else None
    return Run(config, rank, world_size, device, raw_model, model, optimizer, policy, state, tokens_per_second,
               charged_flops_per_token(raw_model, config, policy.config if policy else None),
               measure_peak_flops(device, precision=config.precision))


def attach_data(run: Run, checkpoint: dict | None, init_checkpoint: dict | None):
    """The prepared folder's tokenizer, training rows, validation set and unigram line; a resumed run's weights,
    optimizer, data position, RNG and policy from its checkpoint."""
    config = run.config
    run.tokenizer = data_tokenizer(config.data_dir)
    for source, loaded in ((os.path.join(config.out_dir, "ckpt.pt"), checkpoint), (config.init_from, init_checkpoint)):
        check_tokenizer(loaded, run.tokenizer, source, config.data_dir)
    run.train_data = training_batches(config.data_dir, run.tokenizer, config.seq_len, config.mask_rate, seed=config.seed)
    run.scaler = gradient_scaler(run.device, config.precision)
    if checkpoint:
        check_resume_data(config, checkpoint, os.path.join(config.out_dir, "ckpt.pt"))
        run.raw_model.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.train_data.load_state_dict(checkpoint["data"])
        set_rng_states(checkpoint["rng"])
        if run.policy:
            run.policy.load_state_dict(checkpoint["policy"])
            run.flops_per_token = charged_flops_per_token(run.raw_model, config, run.policy.config)  # its own config
        if checkpoint.get("scaler"):
            run.scaler.load_state_dict(checkpoint["scaler"])
    elif run.policy:
        run.policy.desired_batch = held_out_batch(config, run.policy.config.desired_batch_size)
    run.val_batches = validation_batches(TokenFile(os.path.join(config.data_dir, "val.bin"), run.tokenizer),
                                         config.seq_len, config.eval_mask_rate, config.micro_batch_size, config.eval_rows)
    # The unigram line counts train.bin, or part 0 of a folder in parts: the parts present grow while a run
    # trains, and the reference must be the same at every start and resume (a shard's ~0.17 B tokens is plenty).
    first_train_file = train_token_files(config.data_dir, run.tokenizer)[0]
    run.reference = reference_metrics(run.val_batches, unigram_log_probs(first_train_file.tokens, run.tokenizer.vocab_size),
                                      byte_lengths(run.tokenizer, run.tokenizer.vocab_size))
    run.blimp_pairs = evaluation_pairs(config.blimp_dir, config.blimp_pairs) if run.rank == 0 else []


def budget_tokens(config: TrainConfig, tokens_per_second: float | None, flops_per_token: float,
                  world_size: int) -> float:
    """Training tokens the budget will consume: the first of its limits reached ends the run. Time: the measured
    tokens/s (evaluation is off the clock); steps: the batch schedule summed; FLOPs: at flops_per_token."""
    limits = []
    if config.budget_seconds:
        limits.append(tokens_per_second * config.budget_seconds)
    if config.max_steps:
        limits.append(config.seq_len * sum(batch_rows(config, step / config.max_steps, world_size)
                                           for step in range(config.max_steps)))
    if config.max_flops:
        limits.append(config.max_flops / flops_per_token)
    return min(limits)


# ----------------------------------------------------------------------------------------------------
# One optimizer step

def train_step(run: Run, progress: float) -> tuple[float, torch.Tensor, int]:
    """One optimizer step, its batch size and learning rate from the budget schedules. Returns (mean micro-batch
    loss, gradient norm before clipping, rows)."""
    config, world_size, model, optimizer = run.config, run.world_size, run.model, run.optimizer
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, progress, run.state.step)
    rows = batch_rows(config, progress, world_size)
    accumulation = rows // (config.micro_batch_size * world_size)
    n_kept = count_kept(config.micro_batch_size, config.seq_len, max_mask_rate(config))  # static, for torch.compile
    loss_sum = torch.zeros((), device=run.device)
    for micro_step in range(accumulation):
        # Global row layout: micro-step k on process r reads rows k*world+r of this step's batch, so the
        # same global batch gives the same gradients whatever the number of processes.
        offset = (micro_step * world_size + run.rank) * config.micro_batch_size
        input_ids, labels = (t.to(run.device) for t in run.train_data.batch_after(offset, config.micro_batch_size))
        sync = micro_step == accumulation - 1 or world_size == 1  # DDP: all-reduce on the last micro-step only
        with (nullcontext() if sync else model.no_sync()), autocast(run.device, config.precision):
            logits, loss = model(input_ids, labels=labels, n_kept=n_kept)
            if run.policy:  # the Learning Law weights this micro-batch's examples (uniform: the plain mean above)
                loss = run.policy.weighted_loss(run.raw_model, logits, labels, n_kept)
        # Each micro-batch loss is a MEAN over its masked tokens. Gradients from backward() SUM over
        # micro-steps, so dividing by the count makes the sum the gradient of the mean over the whole
        # batch, independent of how many micro-steps it took (DDP then averages over processes).
        run.scaler.scale(loss / accumulation).backward()  # fp16: scaled up so small gradients do not flush to 0
        loss_sum += loss.detach()
    grad_norm = apply_gradients(run.raw_model, optimizer, run.scaler, config.grad_clip)
    run.train_data.advance(rows)
    return loss_sum.item() / accumulation, grad_norm, rows  # .item() syncs: a fair end point for step timing


def apply_gradients(raw_model: CramBERT, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    grad_clip: float) -> torch.Tensor:
    """Clip and step; returns the gradient norm before clipping. Under fp16 the scaler first divides its scale
    back out (clipping must see the true norm), skips the step if a gradient overflowed to inf/NaN and lowers
    the scale; in bf16 and fp32 it is a pass-through."""
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


# ----------------------------------------------------------------------------------------------------
# The loop, and what it logs

def evaluate_now(run: Run, progress: float, bar):
    """Evaluate, log, print and plot; with --blimp-pairs also the share of BLiMP minimal pairs it gets right."""
    config, state = run.config, run.state
    state.val_loss = evaluate(run.raw_model, run.val_batches, run.device, run.rank, run.world_size,
                              max_mask_rate(config), precision=config.precision)
    state.val_step = state.step
    record = eval_record(state.val_loss, run.reference, run.raw_model, run.tokenizer, run.device)
    if run.blimp_pairs:
        record["blimp"] = blimp_accuracy(run.raw_model, run.tokenizer, run.blimp_pairs, run.device, config.precision)
    run.log({"kind": "eval", "step": state.step, "tokens": state.tokens, "flops": state.flops,
             "elapsed": state.elapsed, "progress": progress, **record})
    print_evaluation(run, record, bar)
    # the next multiple of --eval-interval past this progress (the 1e-9: 0.29 / 0.01 is 28.999…, not 29)
    state.next_eval = (math.floor(progress / config.eval_interval + 1e-9) + 1) * config.eval_interval


def keep_copy(run: Run, minutes: float, bar):
    """--keep-minutes: a copy of the checkpoint as ckpt-{minutes}min.pt beside ckpt.pt, just evaluated (the log
    holds its held-out loss), for scoring downstream later (blimp.py, glue_eval.py)."""
    path = os.path.join(run.config.out_dir, f"ckpt-{minutes:g}min.pt")
    run.save(path)
    run.log({"kind": "kept", "step": run.state.step, "elapsed": run.state.elapsed, "minutes": minutes, "path": path})
    bar.write(f"step {run.state.step:6d} | kept {path} ({minutes:g} min of budget)")


def grow_now(run: Run, elapsed: float, bar):
    """--grow-at: swap the small model for a grown one (grow.py) with a fresh optimizer and wrapper; LiGO's
    operator training counts against the budget."""
    config, state, small = run.config, run.state, run.raw_model
    run.raw_model = grow_on_training_rows(small, config, run.train_data, run.device)
    if run.policy:
        run.policy.watch(run.raw_model)  # the hook moves to the grown model before it is compiled
    run.optimizer, run.model = make_optimizer(run.raw_model, config), wrap(run.raw_model, config, run.world_size, run.device)
    state.flops += growth_flops(small.config, run.raw_model.config, config.grow_method, config.ligo_steps,
                                config.micro_batch_size * config.seq_len, config.seq_len, max_mask_rate(config))
    run.flops_per_token = charged_flops_per_token(run.raw_model, config, run.policy.config if run.policy else None)
    state.grown = True
    run.log({"kind": "grow", "step": state.step, "elapsed": elapsed, "method": config.grow_method,
             "from_params": small.num_params(), "to_params": run.raw_model.num_params(),
             "model_config": asdict(run.raw_model.config)})
    bar.write(f"step {state.step:6d} | grew {small.num_params() / 1e6:.1f}M -> {run.raw_model.num_params() / 1e6:.1f}M "
              f"parameters with {config.grow_method}")


def run_training(run: Run, folder: RunFolder) -> dict:
    """The loop. Ctrl-C is looked at once per step (folder.stop_requested): the step or evaluation in progress
    finishes, then a checkpoint is written and the loop returns."""
    config, state, is_main = run.config, run.state, run.rank == 0
    log_start(run, budget_tokens(config, run.tokens_per_second, run.flops_per_token, run.world_size))
    bar = tqdm(total=1000, desc="budget", unit="‰", disable=not (is_main and config.progress_bar))
    clock, step_log = BudgetClock(state.elapsed), StepLog()
    keep_marks = [m for m in keep_minutes(config) if m * 60 >= state.elapsed]  # a resumed run has kept the earlier ones
    last_checkpoint, steps_this_session = time.monotonic(), 0
    clock.start()
    while True:
        state.elapsed, stop_requested = clock.elapsed(), folder.stop_requested  # the one place Ctrl-C is looked at
        if run.world_size > 1:  # every process must take the same decisions: batch size, lr, when to stop
            shared = torch.tensor([state.elapsed, float(stop_requested)], device=run.device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            state.elapsed, stop_requested = shared[0].item(), bool(shared[1].item())
        progress = run.progress()
        keep_now = bool(keep_marks) and state.elapsed >= keep_marks[0] * 60  # --keep-minutes: evaluate and copy
        due = (progress >= state.next_eval or progress >= 1.0) and state.val_step != state.step
        if (due and not stop_requested) or keep_now:  # off the clock; then back to the top (Ctrl-C meanwhile?)
            clock.stop()
            evaluate_now(run, progress, bar)
            if keep_now and is_main:
                keep_copy(run, keep_marks[0], bar)
            keep_marks = keep_marks[1:] if keep_now else keep_marks
            clock.start()
            continue
        if progress >= 1.0 or stop_requested or (config.stop_after_steps and steps_this_session >= config.stop_after_steps):
            break
        if config.grow_at and not state.grown and progress >= config.grow_at:  # LiGO: on the clock, growth is training
            grow_now(run, clock.elapsed(), bar)

        step_start = clock.elapsed()
        loss, grad_norm, rows = train_step(run, progress)
        state.step, steps_this_session = state.step + 1, steps_this_session + 1
        state.tokens += rows * config.seq_len
        state.flops += rows * config.seq_len * run.flops_per_token
        step_log.add(run, loss, grad_norm, rows, clock.elapsed() - step_start, progress, clock.elapsed(), bar)
        bar.update(int(run.progress() * 1000) - bar.n)
        if is_main and time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60:
            clock.stop()
            run.save()
            last_checkpoint = time.monotonic()
            clock.start()

    clock.stop()
    state.elapsed = clock.elapsed()
    bar.close()
    return finish(run, interrupted=stop_requested)


def finish(run: Run, interrupted: bool) -> dict:
    """The last checkpoint and the run's summary (the last line of log.jsonl)."""
    config, state = run.config, run.state
    if run.rank == 0:
        run.save()
    summary = {"kind": "summary", "final_val_loss": state.val_loss if state.val_step == state.step else None,
               "last_val_loss": state.val_loss, "last_val_step": state.val_step, "steps": state.step,
               "tokens": state.tokens, "flops": state.flops, "elapsed_seconds": state.elapsed,
               "params": run.raw_model.num_params(), "non_embedding_params": run.raw_model.num_params(non_embedding=True),
               "checkpoint": os.path.join(config.out_dir, "ckpt.pt"), "log": os.path.join(config.out_dir, "log.jsonl"),
               "interrupted": interrupted, "finished": run.progress() >= 1.0}
    run.log(summary)
    if run.log_file:
        run.log_file.close()
    return summary


def train(config: TrainConfig) -> dict:
    """Run (or resume) one pretraining run in out_dir; returns a summary dict (also the last line of log.jsonl)."""
    notes = validate_config(config, world_size=int(os.environ.get("WORLD_SIZE", 1)))
    check_growth_flags(config)
    rank, world_size, device = setup_distributed(config.device)
    for note in notes if rank == 0 else []:
        print(note)
    with RunFolder(config.out_dir, config.resume, config.overwrite, is_main=rank == 0) as folder:
        checkpoint, init_checkpoint = load_checkpoints(config, device)  # and the checks that need no model
        run = build_model(config, rank, world_size, device, checkpoint, init_checkpoint)
        preparer = ensure_prepared(run.config, rank, budget_tokens(run.config, run.tokens_per_second,
                                                                    run.flops_per_token, world_size))
        try:  # the background preparer, if any, goes with the run: ended, failed or interrupted
            if not (checkpoint or init_checkpoint) and data_tokenizer(config.data_dir).vocab_size != run.raw_model.config.vocab_size:
                print("note: the BPE just learned stopped short of --vocab-size (a small corpus): the model is built again for it")
                run = build_model(config, rank, world_size, device, None, None)
            attach_data(run, checkpoint, init_checkpoint)
            del checkpoint, init_checkpoint  # what the run needs is in it now: free the memory (the GPU's, on CUDA)
            run.log_file = folder.open_log(run.state.log_bytes)  # every check has passed: only now may files change
            folder.training_started()
            return run_training(run, folder)
        finally:
            if preparer:
                preparer.stop()


def parse_args(argv=None) -> TrainConfig:
    return parse_train_args(argv, description=__doc__)


def main(argv=None):
    config = parse_args(argv)
    try:
        if config.plan:
            import plan  # only here: plan.py measures a run with this file's pieces
            validate_config(config)
            plan.print_plan(plan.plan_run(config), config)
            return
        summary = train(config)
    except (FileNotFoundError, ValueError) as error:  # bad input: one clear message, no traceback
        sys.exit(f"error: {error}")
    except StoppedBeforeTraining:
        print(f"interrupted before training started: nothing written to {config.out_dir}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
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
