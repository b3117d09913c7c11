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
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from blimp import blimp_accuracy, evaluation_pairs
from checkpoint import (check_tokenizer, claim_out_dir, load_checkpoint, model_checkpoint, open_run_log, release_out_dir,
                        rng_states, save_checkpoint, set_rng_states)
from common import (autocast, gradient_scaler, make_optimizer, measure_peak_flops, precision_note,
                    setup_distributed)
from config import (AUTO_MICRO_BATCH, TrainConfig, check_prepared_folder, check_resume, growth_target, head_fraction,
                    keep_minutes, parse_train_args, validate_config)
from data.fetch import CORPORA, passes_warning, shards_needed, train_tokens_to_prepare
from data.loader import (MLMBatches, PartedBatches, TokenFile, data_identity, data_tokenizer, is_prepared, mask_tokens,
                         parts_missing, read_meta, train_token_files, training_batches, validation_batches)
from data.prepare import BackgroundPreparation, PrepareConfig, is_sharded, prepare
from data.tokenizer import Tokenizer, embedding_rows
from grow import grow_model, growth_flops
from machine import CPU_COMPILE_MIN_BUDGET_SECONDS, compile_with_fallback, fit_to_machine, measure_tokens_per_second
from model import MASK_RATE, CramBERT, ModelConfig, fill_masks, model_config_from_dict, preset_config, sparse_rows
from plot import plot_runs, read_log
from policy import LearningLawPolicy, LearningLawPolicyConfig, policy_flops, weighted_mlm_loss
from scaling import plan_for_machine

EXIT_INTERRUPTED = 130  # exit status of a run stopped by Ctrl-C / SIGTERM (128 + SIGINT, as shells report); failure is 1


class StoppedBeforeTraining(KeyboardInterrupt):
    """Ctrl-C / SIGTERM before the first step: nothing to save, so out at once, out_dir as it was."""


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


def announce_machine(config: TrainConfig, how: str, device, world_size: int):
    """One log line: what machine.fit_to_machine decided."""
    full_rows, micro_rows = batch_rows(config, 1.0, world_size), config.micro_batch_size * world_size
    threads = torch.get_num_threads()
    print(f"machine: {device} x{world_size} ({threads} thread{'s' if threads > 1 else ''} each), {config.precision}"
          f"{precision_note(device, config.precision)}, torch.compile "
          f"{'on' if config.compile else 'off'}, micro-batch {config.micro_batch_size} rows ({how}) x "
          f"{full_rows // micro_rows} accumulation steps x {world_size} = {full_rows * config.seq_len:,} tokens per full batch")


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
# The training run

def charged_flops_per_token(model: CramBERT, config: TrainConfig,
                            policy_config: LearningLawPolicyConfig | None) -> float:
    """Training FLOPs charged per token against --max-flops (and used for MFU): the model's forward and backward
    (model.flops_per_token) plus, with --policy learning-law, the policy's own work on each micro-batch (a
    decoder-sized product for the contributions and the amortised desired-gradient refresh: policy.policy_flops)."""
    model_flops = model.flops_per_token(config.seq_len, head_fraction(config))
    if policy_config is None:
        return model_flops
    micro_batch_tokens = config.micro_batch_size * config.seq_len
    return model_flops + policy_flops(model.config, config.micro_batch_size, config.seq_len, head_fraction(config),
                                      policy_config) / micro_batch_tokens


def requested_model_config(config: TrainConfig, device: torch.device, rank: int, world_size: int,
                           vocab_size: int, init_checkpoint: dict | None = None) -> ModelConfig:
    """The model these flags ask for: the --init-from checkpoint's (loaded by the caller), a preset, or
    Chinchilla's plan (auto)."""
    if init_checkpoint is not None:
        model_config = model_config_from_dict(init_checkpoint["model_config"])
        if model_config.max_seq_len < config.seq_len:
            raise ValueError(f"{config.init_from} covers {model_config.max_seq_len} positions < --seq-len {config.seq_len}")
        return model_config
    overrides = {"max_seq_len": config.seq_len, "vocab_size": vocab_size, **config.model_overrides}
    if config.preset != "auto":
        return preset_config(config.preset, **overrides)
    if not config.budget_seconds:
        raise ValueError("--model auto sizes the model for a wall-clock budget: give --hours/--minutes/--seconds")
    planned = [None]
    if rank == 0:  # one process measures and plans; the others take its answer
        plan = plan_for_machine(config.budget_seconds, str(device), seq_len=config.seq_len,
                                micro_batch_size=AUTO_MICRO_BATCH if config.micro_batch_size == "auto" else config.micro_batch_size)
        print(plan.explanation)
        planned = [plan.model_config]
    if world_size > 1:
        dist.broadcast_object_list(planned, src=0)
    return ModelConfig(**{**asdict(planned[0]), **overrides})


def grow_during_run(raw_model: CramBERT, config: TrainConfig, train_data: MLMBatches | PartedBatches,
                    device) -> CramBERT:
    """Swap the small model for a grown one (grow.py). LiGO trains its operator on the next training rows,
    the same rows on every process, so all processes grow the same model."""
    rows = config.micro_batch_size

    def batches(step):
        input_ids, labels = train_data.batch_after(step * rows, rows)
        return input_ids.to(device), labels.to(device)

    grown = grow_model(raw_model, preset_config(config.grow_to), config.grow_method, batches, config.ligo_steps,
                       device=device, seed=config.seed, progress_bar=False, mask_rate=head_fraction(config))
    if config.grow_method == "ligo":
        train_data.advance(config.ligo_steps * rows)
    return grown


def wrap(raw_model: CramBERT, config: TrainConfig, world_size: int, device) -> torch.nn.Module:
    """What the loop calls: compiled and/or DDP-wrapped. We always save raw_model (no key prefixes)."""
    model = compile_with_fallback(raw_model, config, device) if config.compile else raw_model
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


def ensure_prepared(config: TrainConfig, rank: int, world_size: int, device) -> BackgroundPreparation | None:
    """Prepare --data-dir on first use (rank 0; the others wait). A local corpus is prepared whole. A named
    multi-shard corpus (c4) is sized to the budget: the run's model is built, fitted and timed first, as --plan
    does, and the tokens the budget will consume over --max-passes are prepared, one part per shard: part 0 (with
    val.bin and the tokenizer) now, the rest by a background process while training runs, so a day's run does
    not spend its first hour downloading. Returns that process (rank 0, while parts are missing), else None."""
    meta = read_meta(config.data_dir)
    check_prepared_folder(config, meta)  # on every process: one refusing alone would leave the others at the barrier
    needed = not is_prepared(config.data_dir)
    if dist.is_initialized():
        dist.barrier()  # every process has looked before rank 0 writes
    prepare_config = PrepareConfig(corpus=config.corpus, out_dir=config.data_dir, tokenizer=config.tokenizer,
                                   max_tokens_per_char=config.max_tokens_per_char, vocab_size=config.vocab_size)
    if needed and is_sharded(config.corpus):  # every process measures: fitting may wrap the model in DDP
        prepare_config.max_train_tokens = budget_target(config, rank, world_size, device)
    preparer = None
    if rank == 0 and (needed or parts_missing(config.data_dir)):
        if needed:
            print(f"no token files in {config.data_dir}: preparing them from {config.corpus}")
        else:  # parts an earlier run left unwritten: resume its preparation, with its settings and token target
            prepare_config = PrepareConfig(**meta["config"])
        try:
            prepare(prepare_config, max_parts=1)  # all of a local corpus; part 0 of a sharded one
        except (FileNotFoundError, RuntimeError) as error:
            raise FileNotFoundError(
                f"{error}\nfix: python -m data.prepare --corpus PATH_OR_URL --out-dir {config.data_dir}  "
                f"(offline in this repo's workplace: --corpus ../shared/data/wiki)") from error
        if parts_missing(config.data_dir):
            preparer = BackgroundPreparation(prepare_config)
            print(f"preparing the other parts of {config.data_dir} in the background (pid {preparer.process.pid}, "
                  f"output in {preparer.log_path})")
    if dist.is_initialized():
        dist.barrier()
    return preparer


def budget_target(config: TrainConfig, rank: int, world_size: int, device) -> int:
    """Training tokens to prepare of a named multi-shard corpus: what the budget consumes (measured_budget),
    over --max-passes, said in one log line."""
    tokens, tokens_per_second = measured_budget(config, rank, world_size, device)[:2]
    target = train_tokens_to_prepare(tokens, config.max_passes)
    named = CORPORA[config.corpus]
    shards = shards_needed(tokens, named.tokens_per_shard, config.max_passes, named.num_shards)
    if rank == 0:
        speed = f" at {tokens_per_second:,.0f} tokens/s" if config.budget_seconds else f" ({describe_budget(config)})"
        print(f"budget ~{tokens:,.0f} tokens{speed}: preparing {target:,} tokens of {named.name} (~{shards} shards, "
              f"~{shards * named.download_bytes_per_shard / 1e9:.1f} GB) for ≤ {config.max_passes:g} passes")
    return target


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
             should_stop=lambda: False, precision: str = "auto") -> float | None:
    """Held-out MLM loss, averaged over masked tokens; each process takes every world_size-th batch.
    mask_rate: the most any batch masks (the sparse head's count, sparse_rows). None if should_stop() turns
    true between batches (Ctrl-C): an abandoned evaluation has no loss."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, device=device)  # (summed loss, masked tokens)
    for input_ids, labels in batches[rank::world_size]:
        if should_stop():
            model.train(was_training)
            return None
        with autocast(device, precision):
            _, loss = model(input_ids.to(device), labels=labels.to(device),
                            n_kept=sparse_rows(*input_ids.shape, mask_rate))
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
    # out_dir is this run's until it returns or fails
    lock = claim_out_dir(config.out_dir, config.resume, config.overwrite) if rank == 0 else None
    stop = {"signal": None, "training": False}  # signal: set by the first SIGINT / SIGTERM once training runs
    previous_handlers = install_stop_handlers(stop, announce=rank == 0)
    preparer = None  # the background process writing the corpus's later parts, if any
    try:
        preparer = ensure_prepared(config, rank, world_size, device)
        run = build_run(config, rank, world_size, device)
        if rank == 0:  # every check has passed: only now may the previous run's files change
            run.log_file = open_run_log(config.out_dir, config.resume, config.overwrite, run.state.log_bytes)
        stop["training"] = True
        return run_training(run, stop)
    finally:
        if preparer:  # training ended, failed or was interrupted: the preparer goes with it
            preparer.stop()
        restore_handlers(previous_handlers)
        if lock:
            release_out_dir(lock)


def install_stop_handlers(stop: dict, announce: bool = True) -> dict:
    """The first SIGINT (Ctrl-C) or SIGTERM sets stop["signal"] and says so at once: the loop then abandons
    an evaluation in progress or an unfinished step, writes a checkpoint and returns. The second restores
    the previous handlers and raises KeyboardInterrupt: an immediate exit, the last checkpoint written
    stays (writes are atomic). Before training has started (stop["training"]: preparing data, building and
    measuring the model) the first raises StoppedBeforeTraining at once: there is nothing to save, and a
    checkpoint of step 0 would make the same command refuse to run again. Returns the previous handlers."""
    previous = {}

    def handler(number, frame):
        if not stop["training"]:
            restore_handlers(previous)
            raise StoppedBeforeTraining
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


@dataclass
class Run:
    """What the loop works on. Growth replaces raw_model, model and optimizer together (grow_now)."""
    config: TrainConfig
    rank: int
    world_size: int
    device: torch.device
    tokenizer: Tokenizer
    train_data: MLMBatches | PartedBatches  # the training rows, in a resumable order (train.bin, or parts)
    val_batches: list  # the fixed validation set
    reference: dict  # the unigram line and bytes of the validation set (reference_metrics)
    raw_model: CramBERT  # what we save: never a compiled or DDP wrapper
    model: torch.nn.Module  # what the loop calls (wrap)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16's loss scaling; a pass-through in bf16 and fp32 (common.gradient_scaler)
    policy: LearningLawPolicy | None  # --policy learning-law, else None (uniform)
    state: LoopState
    flops_per_token: float  # charged per training token: the model's, plus the policy's (charged_flops_per_token)
    peak_flops: float  # measured, for MFU
    tokens_per_second: float | None  # measured before the clock starts, for a wall-clock budget (else None)
    log_file: object = None  # out_dir/log.jsonl, on the main process only
    blimp_pairs: list = field(default_factory=list)  # --blimp-pairs: scored at each evaluation (main process)

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.config.out_dir, "ckpt.pt")

    def log(self, record: dict):
        if self.log_file:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()

    def progress(self) -> float:
        """Share of the budget spent: the largest of the time, step and FLOP fractions."""
        config, s = self.config, self.state
        fractions = [s.elapsed / config.budget_seconds if config.budget_seconds else 0.0,
                     s.step / config.max_steps if config.max_steps else 0.0,
                     s.flops / config.max_flops if config.max_flops else 0.0]
        return max(fractions)

    def save(self, path: str | None = None):
        self.state.log_bytes = os.path.getsize(self.log_file.name) if self.log_file else None
        save_checkpoint(path or self.checkpoint_path, model_checkpoint(
            self.raw_model, self.tokenizer, train_config=asdict(self.config), optimizer=self.optimizer.state_dict(),
            loop=asdict(self.state), data=self.train_data.state_dict(), rng=rng_states(), scaler=self.scaler.state_dict(),
            policy=self.policy.state_dict() if self.policy else None, data_identity=data_identity(self.config.data_dir)))


def build_run(config: TrainConfig, rank: int, world_size: int, device: torch.device) -> Run:
    """Data, model, optimizer and policy for a new run, or restored from out_dir/ckpt.pt with --resume."""
    torch.manual_seed(config.seed)  # the same initial weights on every process
    checkpoint_path = os.path.join(config.out_dir, "ckpt.pt")
    checkpoint = load_checkpoint(checkpoint_path, map_location=device) if config.resume else None
    if checkpoint:
        check_resume(config, checkpoint, checkpoint_path)
    tokenizer = data_tokenizer(config.data_dir)  # train() has prepared data_dir (ensure_prepared)
    train_data = training_batches(config.data_dir, tokenizer, config.seq_len, config.mask_rate, seed=config.seed)
    state = LoopState(**checkpoint["loop"]) if checkpoint else LoopState()
    init_checkpoint = load_checkpoint(config.init_from, map_location=device) if config.init_from else None
    for source, loaded in ((checkpoint_path, checkpoint), (config.init_from, init_checkpoint)):
        check_tokenizer(loaded, tokenizer, source, config.data_dir)
    if checkpoint and config.preset == "auto":
        model_config = model_config_from_dict(checkpoint["model_config"])  # the plan made when the run started
    else:
        model_config = requested_model_config(config, device, rank, world_size, tokenizer.vocab_size, init_checkpoint)
        if state.grown:
            model_config = growth_target(config, model_config)
        if checkpoint and model_config_from_dict(checkpoint["model_config"]) != model_config:
            raise ValueError(f"{checkpoint_path} holds a model of another config: {checkpoint['model_config']}")
    if config.grow_at and not state.grown:
        growth_target(config, model_config)  # an --init-from or auto model can grow into --grow-to: fail now, not later
    raw_model = CramBERT(model_config).to(device)
    if init_checkpoint and not checkpoint:
        raw_model.load_state_dict(init_checkpoint["model"])
    optimizer = make_optimizer(raw_model, config)
    policy = None
    if config.policy == "learning-law":
        policy_config = LearningLawPolicyConfig()
        policy = LearningLawPolicy(policy_config, desired_batch(config, policy_config.desired_batch_size))
        policy.watch(raw_model)  # before torch.compile traces the model, so the hook is part of the graph
    elif config.policy != "uniform":
        raise ValueError(f"unknown policy {config.policy!r}; choose uniform or learning-law")
    if checkpoint:
        raw_model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        train_data.load_state_dict(checkpoint["data"])
        set_rng_states(checkpoint["rng"])
        if policy:
            policy.load_state_dict(checkpoint["policy"])
    config, how = fit_to_machine(config, raw_model, optimizer, device, world_size)  # before the clock
    if rank == 0:
        announce_machine(config, how, device, world_size)
    val_batches = validation_batches(TokenFile(os.path.join(config.data_dir, "val.bin"), tokenizer), config.seq_len,
                                     config.eval_mask_rate, config.micro_batch_size, config.eval_rows)
    # The unigram line counts train.bin, or part 0 of a folder in parts: the parts present grow while a run
    # trains, and the reference must be the same at every start and resume (a shard's ~0.17 B tokens is plenty).
    first_train_file = train_token_files(config.data_dir, tokenizer)[0]
    reference = reference_metrics(val_batches, unigram_log_probs(first_train_file.tokens, tokenizer.vocab_size),
                                  byte_lengths(tokenizer, tokenizer.vocab_size))
    scaler = gradient_scaler(device, config.precision)
    if checkpoint and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    flops_per_token = charged_flops_per_token(raw_model, config, policy.config if policy else None)
    peak_flops = measure_peak_flops(device, precision=config.precision)  # after the RNG restore, as before: it draws from torch's generator
    model = wrap(raw_model, config, world_size, device)
    if config.compile and getattr(model, "module", model) is raw_model:  # compiling failed: eager from now on,
        config = replace(config, compile=False)  # and a growth later does not try (and fail) again
    tokens_per_second = measure_tokens_per_second(model, config, device, world_size) if config.budget_seconds else None
    return Run(config, rank, world_size, device, tokenizer, train_data, val_batches, reference, raw_model, model,
               optimizer, scaler, policy, state, flops_per_token, peak_flops, tokens_per_second,  # train() opens the log
               blimp_pairs=evaluation_pairs(config.blimp_dir, config.blimp_pairs) if rank == 0 else [])


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


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.3g} s"


def describe_budget(config: TrainConfig) -> str:
    """The budget as given: "24 h", "100 steps", or several joined by "or" (the first reached ends the run)."""
    seconds = config.budget_seconds
    return " or ".join(part for part in (duration(seconds) if seconds else "", f"{config.max_steps} steps" if config.max_steps else "",
                                         f"{config.max_flops:.3g} FLOPs" if config.max_flops else "") if part)


def log_start(run: Run):
    """The config line at the top of log.jsonl, and the model's and the budget's lines on the console (the
    budget's warning also on stderr, where it survives a redirected log)."""
    raw_model, reference, config = run.raw_model, run.reference, run.config
    tokens = budget_tokens(config, run.tokens_per_second, run.flops_per_token, run.world_size)
    outlook = corpus_outlook(config, tokens)
    passes, warning = outlook["passes"], outlook["warning"]
    run.log({"kind": "config", "config": asdict(run.config), "model_config": asdict(raw_model.config),
             "budget_tokens": tokens, "passes": passes, "measured_tokens_per_second": run.tokens_per_second,
             "params": raw_model.num_params(), "non_embedding_params": raw_model.num_params(non_embedding=True),
             "flops_per_token": run.flops_per_token, "peak_flops": run.peak_flops, "world_size": run.world_size,
             "device": str(run.device), "git": git_commit(), "resumed_at_step": run.state.step,
             "tokenizer": run.tokenizer.name, **reference})
    if run.rank == 0:
        print(f"{raw_model.num_params() / 1e6:.1f}M parameters, {run.flops_per_token / 1e6:.1f} MFLOPs/token, "
              f"device {run.device} x{run.world_size}, measured peak {run.peak_flops / 1e12:.2f} TFLOP/s, "
              f"tokenizer {run.tokenizer.name}, unigram line {reference['unigram_loss']:.3f} nats")
        print(f"budget: {describe_budget(config)} = ~{tokens:,.0f} training tokens = {passes:.2f} passes over "
              f"{outlook['corpus']} (--max-passes {config.max_passes:g})")
        if warning:
            print(warning, file=sys.stderr)


def evaluate_now(run: Run, progress: float, interrupted, bar) -> bool:
    """Evaluate, log and plot; False if Ctrl-C abandoned the evaluation (no partial loss is recorded)."""
    config, state = run.config, run.state
    val_loss = evaluate(run.raw_model, run.val_batches, run.device, run.rank, run.world_size, head_fraction(config),
                        should_stop=interrupted, precision=config.precision)
    if val_loss is None:
        return False
    state.val_loss, state.val_step = val_loss, state.step
    record = eval_record(state.val_loss, run.reference, run.raw_model, run.tokenizer, run.device)
    if run.blimp_pairs:  # zero-shot grammar: the share of minimal pairs whose good sentence scores higher
        record["blimp"] = blimp_accuracy(run.raw_model, run.tokenizer, run.blimp_pairs, run.device, config.precision)
    grammar = f", BLiMP {record['blimp']:.1%}" if "blimp" in record else ""
    run.log({"kind": "eval", "step": state.step, "tokens": state.tokens, "flops": state.flops,
             "elapsed": state.elapsed, "progress": progress, **record})
    bar.write(f"step {state.step:6d} | val loss {state.val_loss:.4f}, {record['below_unigram']:.3f} nats below "
              f"unigram ({record['unigram_ratio']:.3f}x), {record['bits_per_byte']:.3f} bits/byte{grammar} | "
              f"{state.elapsed:7.1f}s of budget")
    for text, fills in record["probes"].items():
        bar.write(f"    {text}  ->  " + " | ".join(",".join(repr(t) for t in fill) for fill in fills))
    if run.rank == 0 and not plot_runs([read_log(config.out_dir)], os.path.join(config.out_dir, "loss.png")) \
            and state.step == 0:
        bar.write("matplotlib is not installed: no loss.png (pip install matplotlib); plot.py still prints tables")
    state.next_eval = (math.floor(progress / config.eval_interval) + 1) * config.eval_interval
    return True


def keep_copy(run: Run, minutes: float, bar):
    """--keep-minutes: a copy of the checkpoint as ckpt-{minutes}min.pt beside ckpt.pt, just evaluated (the log
    holds its held-out loss), for scoring downstream later (blimp.py, glue_eval.py)."""
    path = os.path.join(run.config.out_dir, f"ckpt-{minutes:g}min.pt")
    run.save(path)
    run.log({"kind": "kept", "step": run.state.step, "elapsed": run.state.elapsed, "minutes": minutes, "path": path})
    bar.write(f"step {run.state.step:6d} | kept {path} ({minutes:g} min of budget)")


def grow_now(run: Run, elapsed: float, bar):
    """--grow-at: swap the small model for a grown one (grow.py), with a fresh optimizer and wrapper. LiGO
    trains its operator on the next training rows, the same rows on every process, so all processes grow
    the same model; its FLOPs count against the budget."""
    config, state = run.config, run.state
    small_params, small_config = run.raw_model.num_params(), run.raw_model.config
    run.raw_model = grow_during_run(run.raw_model, config, run.train_data, run.device)
    run.optimizer = make_optimizer(run.raw_model, config)
    run.model = wrap(run.raw_model, config, run.world_size, run.device)
    state.flops += growth_flops(small_config, run.raw_model.config, config.grow_method, config.ligo_steps,  # LiGO's
                                config.micro_batch_size * config.seq_len, config.seq_len, head_fraction(config))
    run.flops_per_token = charged_flops_per_token(run.raw_model, config, run.policy.config if run.policy else None)
    state.grown = True
    run.log({"kind": "grow", "step": state.step, "elapsed": elapsed, "method": config.grow_method,
             "from_params": small_params, "to_params": run.raw_model.num_params(),
             "model_config": asdict(run.raw_model.config)})
    bar.write(f"step {state.step:6d} | grew {small_params / 1e6:.1f}M -> {run.raw_model.num_params() / 1e6:.1f}M "
              f"parameters with {config.grow_method}")


def train_step(run: Run, progress: float, interrupted) -> tuple[float, torch.Tensor, int] | None:
    """One optimizer step, batch size and learning rate from the budget schedules. Returns (mean micro-batch
    loss, gradient norm, rows), or None when Ctrl-C dropped the unfinished step (the checkpoint then holds
    the last whole one)."""
    config, rank, world_size, model, optimizer = run.config, run.rank, run.world_size, run.model, run.optimizer
    lr = learning_rate(config, progress, run.state.step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    rows = batch_rows(config, progress, world_size)
    accumulation = rows // (config.micro_batch_size * world_size)
    n_kept = sparse_rows(config.micro_batch_size, config.seq_len, head_fraction(config))  # static, for torch.compile
    loss_sum = torch.zeros((), device=run.device)
    for micro_step in range(accumulation):
        if interrupted():
            break
        # Global row layout: micro-step k on process r reads rows k*world+r of this step's batch, so the
        # same global batch gives the same gradients whatever the number of processes.
        offset = (micro_step * world_size + rank) * config.micro_batch_size
        input_ids, labels = run.train_data.batch_after(offset, config.micro_batch_size)
        input_ids, labels = input_ids.to(run.device), labels.to(run.device)
        sync = micro_step == accumulation - 1 or world_size == 1  # DDP: all-reduce on the last micro-step only
        if run.policy:
            run.policy.watch(run.raw_model)  # keeps the decoder's input from the forward pass below (a no-op once hooked)
        with (nullcontext() if sync else model.no_sync()), autocast(run.device, config.precision):
            logits, loss = model(input_ids, labels=labels, n_kept=n_kept)
            if run.policy:  # the Learning Law weights this micro-batch's examples (uniform: the plain mean above)
                weights = run.policy.weights(run.raw_model, logits, labels, n_kept)
                loss = weighted_mlm_loss(logits, labels, weights, n_kept)
        # Each micro-batch loss is a MEAN over its masked tokens. Gradients from backward() SUM over
        # micro-steps, so dividing by the count makes the sum the gradient of the mean over the whole
        # batch, independent of how many micro-steps it took (DDP then averages over processes).
        run.scaler.scale(loss / accumulation).backward()  # fp16: scaled up so small gradients do not flush to 0
        loss_sum += loss.detach()
    if interrupted():
        optimizer.zero_grad(set_to_none=True)
        return None
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


class StepLog:
    """Averages between log lines: one line per log_interval steps with loss, lr, batch, grad norm, tokens/s, MFU."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.loss, self.steps, self.tokens, self.seconds = 0.0, 0, 0, 0.0

    def add(self, run: Run, loss: float, grad_norm: torch.Tensor, rows: int, seconds: float, progress: float,
            elapsed: float, bar):
        config, state = run.config, run.state
        self.loss += loss
        self.steps += 1
        self.tokens += rows * config.seq_len
        self.seconds += seconds
        if state.step % config.log_interval:
            return
        mean_loss = torch.tensor(self.loss / self.steps, device=run.device)
        if run.world_size > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= run.world_size
        tokens_per_second = self.tokens / self.seconds
        lr = run.optimizer.param_groups[0]["lr"]
        record = {"kind": "train", "step": state.step, "tokens": state.tokens, "flops": state.flops,
                  "elapsed": elapsed, "progress": progress, "loss": mean_loss.item(), "lr": lr,
                  "batch_tokens": rows * config.seq_len, "grad_norm": grad_norm.item(),
                  "tokens_per_second": tokens_per_second,
                  "mfu": tokens_per_second * run.flops_per_token / (run.peak_flops * run.world_size)}
        run.log(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", batch=rows, tok_s=f"{tokens_per_second:,.0f}",
                        mfu=f"{record['mfu']:.0%}")
        self.reset()


def run_training(run: Run, stop: dict) -> dict:
    """The loop, in an out_dir that train() has claimed; stop["signal"] is set on SIGINT / SIGTERM."""
    config, state, is_main = run.config, run.state, run.rank == 0

    def interrupted() -> bool:
        """Ctrl-C seen inside a step or an evaluation. One process only: with several, each stops only at a
        step boundary, where they agree through the all-reduce below."""
        return run.world_size == 1 and stop["signal"] is not None

    log_start(run)
    bar = tqdm(total=1000, desc="budget", unit="‰", disable=not (is_main and config.progress_bar))
    clock, step_log = BudgetClock(state.elapsed), StepLog()
    keep_marks = [m for m in keep_minutes(config) if m * 60 >= state.elapsed]  # a resumed run has kept the earlier ones
    last_checkpoint, steps_this_session = time.monotonic(), 0
    clock.start()
    while True:
        state.elapsed = clock.elapsed()
        stop_requested = stop["signal"] is not None
        if run.world_size > 1:  # every process must take the same decisions: batch size, lr, when to stop
            shared = torch.tensor([state.elapsed, float(stop_requested)], device=run.device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            state.elapsed, stop_requested = shared[0].item(), bool(shared[1].item())
        progress = run.progress()
        keep_now = bool(keep_marks) and state.elapsed >= keep_marks[0] * 60  # --keep-minutes: evaluate and copy
        if progress >= state.next_eval or progress >= 1.0 or keep_now:  # evaluation is off the clock
            clock.stop()
            if not evaluate_now(run, progress, interrupted, bar):  # Ctrl-C during the evaluation
                stop_requested = True
                break
            if keep_now:
                minutes = keep_marks.pop(0)
                if is_main:
                    keep_copy(run, minutes, bar)
            clock.start()
        if progress >= 1.0 or stop_requested or (config.stop_after_steps and steps_this_session >= config.stop_after_steps):
            break
        if config.grow_at and not state.grown and progress >= config.grow_at:  # on the clock: growth is training
            grow_now(run, clock.elapsed(), bar)

        step_start = clock.elapsed()
        result = train_step(run, progress, interrupted)
        if result is None:  # Ctrl-C inside the step: dropped
            stop_requested = True
            break
        loss, grad_norm, rows = result
        state.step += 1
        steps_this_session += 1
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
    if is_main:
        run.save()
    final_val_loss = state.val_loss if state.val_step == state.step else None  # an interrupted run has none
    summary = {"kind": "summary", "final_val_loss": final_val_loss, "last_val_loss": state.val_loss,
               "last_val_step": state.val_step, "steps": state.step, "tokens": state.tokens,
               "flops": state.flops, "elapsed_seconds": state.elapsed, "params": run.raw_model.num_params(),
               "non_embedding_params": run.raw_model.num_params(non_embedding=True), "checkpoint": run.checkpoint_path,
               "log": os.path.join(config.out_dir, "log.jsonl"), "interrupted": stop_requested,
               "finished": run.progress() >= 1.0}
    run.log(summary)
    if run.log_file:
        run.log_file.close()
    return summary


# ----------------------------------------------------------------------------------------------------
# --plan: what a run will do, measured on this machine, without training

def planned_vocab_size(config: TrainConfig) -> int:
    """The embedding rows the run's model will have: its prepared folder's tokenizer, or the one that preparing
    it will make (--vocab-size counts the special tokens, so it is the BPE's num_tokens)."""
    if is_prepared(config.data_dir):
        return data_tokenizer(config.data_dir).vocab_size
    if config.vocab_size:
        return embedding_rows(config.vocab_size)
    return Tokenizer.from_spec(config.tokenizer).vocab_size


def corpus_outlook(config: TrainConfig, tokens: float) -> dict:
    """The corpus against the tokens the budget consumes: counted when --data-dir is prepared (while parts are
    still being written, the preparation's target stands in for them: the parts end at or just past it),
    estimated from data/fetch.py's registry for a named corpus, unknown for local text not tokenised yet."""
    def rows_of(stream_tokens: float) -> int:  # whole rows of seq_len - 1 tokens, as MLMBatches cuts them
        return int(stream_tokens // (config.seq_len - 1))

    if is_prepared(config.data_dir):
        files = train_token_files(config.data_dir, data_tokenizer(config.data_dir))
        rows, prepared = sum(rows_of(file.num_tokens) for file in files), True
        corpus = config.data_dir if len(files) == 1 and files[0].path.endswith("train.bin") else \
            f"{config.data_dir} ({len(files)} part(s))"
        if parts_missing(config.data_dir):
            target = read_meta(config.data_dir)["config"]["max_train_tokens"]
            rows = max(rows, rows_of(target))
            corpus = (f"{config.data_dir} ({len(files)} part(s) prepared so far, the rest in the background"
                      f"{f' up to {target:,} training tokens' if target else ''})")
    elif config.corpus in CORPORA:
        named = CORPORA[config.corpus]
        shards, stream_tokens = 1, named.tokens_per_shard  # a single-file corpus is prepared whole
        if named.num_shards > 1:  # as many whole shards as the budget needs (ensure_prepared)
            shards = shards_needed(tokens, named.tokens_per_shard, config.max_passes, named.num_shards)
            stream_tokens = min(train_tokens_to_prepare(tokens, config.max_passes), named.num_shards * named.tokens_per_shard)
        rows, prepared = rows_of(stream_tokens), False
        corpus = (f"{named.name}, not prepared yet: ~{shards} of its {named.num_shards} shard(s), ~"
                  f"{shards * named.download_bytes_per_shard / 1e9:.1f} GB to download (estimates)"
                  f"{'; part 0 before training, the rest in the background' if shards > 1 else ''}")
    else:
        return {"prepared": False, "corpus_tokens": None, "passes": None, "warning": None,
                "corpus": f"{config.corpus}, not prepared in {config.data_dir} yet: counted once tokenised, when the "
                          f"run logs its passes (and warns above --max-passes {config.max_passes:g})"}
    passes, warning = passes_warning(rows * config.seq_len, tokens, config.max_passes, corpus)
    return {"prepared": prepared, "corpus_tokens": rows * config.seq_len, "passes": passes, "warning": warning,
            "corpus": f"{corpus}: {rows * config.seq_len:,} tokens a pass"}


def measured_budget(config: TrainConfig, rank: int, world_size: int, device) -> tuple:
    """Build the run's model, fit it to the machine (precision, compile, micro-batch) and time a few forward and
    backward passes on random tokens: (training tokens the budget consumes, tokens/s, the fitted config, the
    model, flops per token, seconds spent compiling). What --plan reports, and what sizes a corpus prepared for the run (budget_target)."""
    torch.manual_seed(config.seed)
    init_checkpoint = load_checkpoint(config.init_from, map_location=device) if config.init_from else None
    model_config = requested_model_config(config, device, rank, world_size, planned_vocab_size(config), init_checkpoint)
    raw_model = CramBERT(model_config).to(device)
    config, _ = fit_to_machine(config, raw_model, make_optimizer(raw_model, config), device, world_size)
    compile_start = time.perf_counter()
    model = wrap(raw_model, config, world_size, device)  # compiles (and warms up) with --compile
    compile_seconds = time.perf_counter() - compile_start if config.compile else 0.0
    tokens_per_second = measure_tokens_per_second(model, config, device, world_size)
    policy_config = LearningLawPolicyConfig() if config.policy == "learning-law" else None  # as build_run makes it
    flops_per_token = charged_flops_per_token(raw_model, config, policy_config)
    tokens = budget_tokens(config, tokens_per_second, flops_per_token, world_size)
    return tokens, tokens_per_second, config, raw_model, flops_per_token, compile_seconds


def plan_run(config: TrainConfig) -> dict:
    """`train.py ... --plan`: builds the model, fits it to the machine and times it (measured_budget). Prepares no
    data, trains nothing, writes nothing."""
    rank, world_size, device = setup_distributed(config.device)
    tokens, tokens_per_second, config, raw_model, _, compile_seconds = measured_budget(config, rank, world_size, device)
    training_seconds = tokens / tokens_per_second
    evaluations = math.floor(1 / config.eval_interval) + 1  # at the start, every --eval-interval and at the end
    eval_seconds = evaluations * config.eval_rows * config.seq_len / (3 * tokens_per_second)  # forward ≈ 1/3 of the work
    wall_seconds = training_seconds + eval_seconds
    full_batch_rows = batch_rows(config, 1.0, world_size)
    return {"device": f"{device} x{world_size}", "threads": torch.get_num_threads(), "precision": config.precision,
            "precision_note": precision_note(device, config.precision), "compile": config.compile,
            "compile_seconds": compile_seconds,
            "micro_batch_size": config.micro_batch_size,
            "accumulation": full_batch_rows // (config.micro_batch_size * world_size),
            "batch_tokens": full_batch_rows * config.seq_len, "params": raw_model.num_params(),
            "tokens_per_second": tokens_per_second, "budget_tokens": tokens, "training_seconds": training_seconds,
            **corpus_outlook(config, tokens), "checkpoint_minutes": config.checkpoint_minutes,
            "checkpoints": math.floor(wall_seconds / (config.checkpoint_minutes * 60)) + 1,  # and one at the end
            "evaluations": evaluations, "eval_seconds": eval_seconds,
            "end": time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + wall_seconds))}


def print_plan(plan: dict, config: TrainConfig):
    passes = "unknown until prepared" if plan["passes"] is None else \
        f"{plan['passes']:.2f} (at most {config.max_passes:g} wanted: --max-passes)"
    compile_text = f"on: compiling and warming up took {plan['compile_seconds']:.0f} s, before the clock" \
        if plan["compile"] else "off" + ("" if config.compile is False else
                                          f" (CPU budgets under {CPU_COMPILE_MIN_BUDGET_SECONDS // 60} min run eager)")
    print(f"""plan (nothing is trained or written):
  device        {plan['device']} ({plan['threads']} threads each)
  precision     {plan['precision']}{plan['precision_note']}
  compile       {compile_text}
  micro-batch   {plan['micro_batch_size']} rows x {plan['accumulation']} accumulation steps = {plan['batch_tokens']:,} tokens per full batch
  model         {plan['params'] / 1e6:.1f}M parameters
  speed         {plan['tokens_per_second']:,.0f} tokens/s (measured: forward and backward of one micro-batch, no optimizer step)
  budget        {describe_budget(config)}: ~{plan['budget_tokens']:,.0f} tokens, {duration(plan['training_seconds'])} of training
  corpus        {plan['corpus']}
  passes        {passes}
  checkpoints   every {plan['checkpoint_minutes']:g} min: ~{plan['checkpoints']} (the last at the end)
  evaluations   {plan['evaluations']}, ~{plan['eval_seconds'] / 60:.1f} min off the clock (estimate)
  expected end  {plan['end']}{'' if plan['prepared'] else ' + the time to prepare the corpus (a sharded one: its part 0) first'}""")
    if plan["warning"]:
        print(plan["warning"], file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# Command line

def parse_args(argv=None) -> TrainConfig:
    return parse_train_args(argv, description=__doc__)


def main(argv=None):
    config = parse_args(argv)
    try:
        if config.plan:
            validate_config(config)
            print_plan(plan_run(config), config)
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
