"""
A run's parts, put together before the clock starts (train.py's train() calls these two in order):

    build_model   the model the flags ask for, its optimizer and policy, fitted to the machine, compiled and timed
                  once; no data yet, because a corpus prepared for the budget is sized from the tokens/s timed here
    attach_data   the prepared folder (prepared now, if it is not yet), its tokenizer, training rows, validation set
                  and unigram line; a resumed run's weights, optimizer, data position, RNG and policy

Run is what the loop in train.py works on; LoopState is the part of it a checkpoint saves and --resume restores.
"""
import json
import os
from dataclasses import dataclass, field, replace

import torch

from blimp import evaluation_pairs
from data.loader import (TokenFile, byte_lengths, data_identity, data_tokenizer, reference_metrics, train_token_files,
                         training_batches, unigram_log_probs, validation_batches)
from data.tokenizer import Tokenizer
from grow import growth_target
from model import CramBERT, make_optimizer, model_config_from_dict
from policy import LearningLawPolicy, charged_flops_per_token, held_out_batch, make_policy
from run.checkpoint import check_run_tokenizers, set_rng_states
from run.config import TrainConfig, check_resume_data
from run.corpus import ensure_prepared, planned_vocab_size
from run.device import gradient_scaler, measure_peak_flops
from run.machine import Speed, announce_machine, fit_to_machine, measure_speed, wrap
from scaling import requested_model_config


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


@dataclass
class Run:
    """What the loop works on. Growth replaces raw_model, model and optimizer together (grow.grow_run)."""
    config: TrainConfig  # as fitted to the machine (machine.fit_to_machine: precision, compile, micro-batch)
    rank: int
    world_size: int
    device: torch.device
    raw_model: CramBERT  # what we save: never a compiled or DDP wrapper
    model: torch.nn.Module  # what the loop calls (machine.wrap)
    optimizer: torch.optim.Optimizer
    policy: LearningLawPolicy | None  # --policy learning-law, else None (uniform)
    state: LoopState
    speed: Speed | None  # measured before the clock, for a wall-clock budget (else None): machine.Speed
    flops_per_token: float  # charged per training token: the model's, plus the policy's (charged_flops_per_token)
    peak_flops: float  # measured, for MFU
    tokenizer: Tokenizer = None
    train_data: object = None  # the training rows in a resumable order: MLMBatches (train.bin) or PartedBatches
    data_identity: str = None  # the prepared folder's fingerprint, saved so --resume can refuse another one
    val_batches: list = None  # the fixed validation set
    reference: dict = None  # the unigram line and bytes of the validation set (data.loader.reference_metrics)
    scaler: torch.amp.GradScaler = None  # fp16's loss scaling; a pass-through in bf16 and fp32
    log_file: object = None  # out_dir/log.jsonl, on the main process only
    blimp_pairs: list = field(default_factory=list)  # --blimp-pairs: scored at each evaluation (main process)
    micro_batch_request: int | str = "auto"  # --micro-batch-size as asked: growth fits "auto" to the grown model

    @property
    def tokens_per_second(self) -> float | None:  # what a wall-clock budget buys, at the measured median step
        return self.speed.tokens_per_second if self.speed else None

    def log(self, record: dict):
        if self.log_file:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()


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
    micro_batch_request = config.micro_batch_size
    if policy:
        policy.watch(raw_model)  # before torch.compile traces the model, so the hook is part of the graph
    config, how = fit_to_machine(config, raw_model, optimizer, device, world_size)
    model = wrap(raw_model, config, world_size, device)
    if config.compile and getattr(model, "module", model) is raw_model:  # compiling failed: eager from now on,
        config = replace(config, compile=False)  # and a growth later does not try (and fail) again
    if rank == 0:
        announce_machine(config, how, device, world_size)
    # timed for up to 3 s, but never more than 2% of a short budget (a test's, an ablation's few seconds); the
    # peak matmul speed, MFU's denominator, for 0.1 s: a logged ratio needs no more (experiments/bench.py takes 0.5)
    speed = measure_speed(model, optimizer, config, device, world_size, seconds=min(3.0, 0.02 * config.budget_seconds)) \
        if config.budget_seconds else None
    return Run(config, rank, world_size, device, raw_model, model, optimizer, policy, state, speed,
               charged_flops_per_token(raw_model, config, policy.config if policy else None),
               measure_peak_flops(device, seconds=0.1, precision=config.precision),
               micro_batch_request=micro_batch_request)


def attach_data(run: Run, checkpoint: dict | None, init_checkpoint: dict | None, budget_tokens: float):
    """Prepares --data-dir if it is not yet (data.corpus.ensure_prepared, for the budget's tokens), then gives the
    run its data and a resumed run its state. Returns (run, the background preparer or None: stop it when the run
    ends). The run is built again when a BPE just learned stopped short of --vocab-size (a small corpus)."""
    config = run.config
    preparer = ensure_prepared(config, run.rank, budget_tokens)
    try:
        run.tokenizer = data_tokenizer(config.data_dir)
        if not (checkpoint or init_checkpoint) and run.tokenizer.vocab_size != run.raw_model.config.vocab_size:
            print("note: the BPE just learned stopped short of --vocab-size (a small corpus): the model is built again for it")
            tokenizer, run = run.tokenizer, build_model(config, run.rank, run.world_size, run.device, None, None)
            run.tokenizer, config = tokenizer, run.config
        check_run_tokenizers(config, checkpoint, init_checkpoint, run.tokenizer)  # a folder prepared just now
        run.train_data = training_batches(config.data_dir, run.tokenizer, config.seq_len, config.mask_rate, seed=config.seed)
        run.data_identity, run.scaler = data_identity(config.data_dir), gradient_scaler(run.device, config.precision)
        if checkpoint:
            restore(run, checkpoint)
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
    except BaseException:
        if preparer:
            preparer.stop()
        raise
    return run, preparer


def restore(run: Run, checkpoint: dict):
    """--resume: the weights, optimizer, data position, RNG streams, policy and loss scale where they were."""
    check_resume_data(run.config, checkpoint, os.path.join(run.config.out_dir, "ckpt.pt"))
    run.raw_model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.train_data.load_state_dict(checkpoint["data"])
    set_rng_states(checkpoint["rng"])
    if run.policy:
        run.policy.load_state_dict(checkpoint["policy"])
        run.flops_per_token = charged_flops_per_token(run.raw_model, run.config, run.policy.config)  # its own config
    if checkpoint.get("scaler"):
        run.scaler.load_state_dict(checkpoint["scaler"])
