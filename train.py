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
from dataclasses import asdict

import torch
import torch.distributed as dist
from tqdm import tqdm

from grow import check_growth_flags, grow_run
from model import MASK_RATE, CramBERT, count_kept
from run.build import LoopState, Run, attach_data, build_model
from run.checkpoint import load_checkpoint, load_checkpoints, model_checkpoint, rng_states, save_checkpoint
from run.config import (TrainConfig, describe_budget, duration, full_batch_micro_steps, keep_minutes, max_mask_rate,
                        parse_train_args, validate_config)
from run.corpus import corpus_outlook
from run.device import autocast, precision_note, setup_distributed
from run.folder import EXIT_INTERRUPTED, RunFolder, StoppedBeforeTraining
from run.machine import CPU_COMPILE_MIN_BUDGET_SECONDS, measure_speed
from run.report import SilentBar, StepLog, log_start, print_evaluation, what_it_knows

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
    """The learning rate at `progress` (0..1 of the schedule) or optimizer `step`, by config.schedule: "one-cycle"
    (a function of progress), "bert" (of steps: --warmup-steps, --schedule-steps) or "constant"; peak config.lr."""
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
    rows_per_micro_step, full = config.micro_batch_size * world_size, full_batch_micro_steps(config, world_size)
    if not config.batch_ramp:
        return full * rows_per_micro_step
    fraction = min(1.0, schedule_progress(config, progress) / config.ramp_until)
    return max(1, round(1 + (full - 1) * fraction)) * rows_per_micro_step


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


def budget_progress(config: TrainConfig, state: LoopState) -> float:
    """Share of the budget spent: the largest of the time, step and FLOP fractions."""
    return max(state.elapsed / config.budget_seconds if config.budget_seconds else 0.0,
               state.step / config.max_steps if config.max_steps else 0.0,
               state.flops / config.max_flops if config.max_flops else 0.0)


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
# Evaluation: held-out loss against the unigram line (data/loader.py: unigram_log_probs), bits per byte

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


def evaluate_now(run: Run, progress: float, bar):
    """Evaluate and log: the held-out loss against the unigram line (the ratio compares across vocabularies), bits
    per masked byte (the masked tokens' total cross-entropy over the bytes they cover: compares across tokenizers),
    and what the model knows (report.what_it_knows: probe fill-ins, BLiMP)."""
    config, state, reference = run.config, run.state, run.reference
    state.val_loss = evaluate(run.raw_model, run.val_batches, run.device, run.rank, run.world_size,
                              max_mask_rate(config), precision=config.precision)
    state.val_step = state.step
    record = {"val_loss": state.val_loss, "unigram_loss": reference["unigram_loss"],
              "below_unigram": reference["unigram_loss"] - state.val_loss,
              "unigram_ratio": state.val_loss / reference["unigram_loss"],
              "bits_per_byte": state.val_loss * reference["masked_tokens"] / reference["masked_bytes"] / math.log(2),
              **what_it_knows(run)}
    run.log({"kind": "eval", "step": state.step, "tokens": state.tokens, "flops": state.flops,
             "elapsed": state.elapsed, "progress": progress, **record})
    print_evaluation(run, record, bar)
    # the next multiple of --eval-interval past this progress (the 1e-9: 0.29 / 0.01 is 28.999…, not 29)
    state.next_eval = (math.floor(progress / config.eval_interval + 1e-9) + 1) * config.eval_interval


# ----------------------------------------------------------------------------------------------------
# The checkpoint

def save(run: Run, path: str | None = None):
    """The unwrapped model with its config and tokenizer, and everything the loop needs to carry on exactly where it
    was (--resume): optimizer, loop state, data position, RNG streams, loss scale and policy."""
    run.state.log_bytes = os.path.getsize(run.log_file.name) if run.log_file else None
    save_checkpoint(path or os.path.join(run.config.out_dir, "ckpt.pt"), model_checkpoint(
        run.raw_model, run.tokenizer, train_config=asdict(run.config), optimizer=run.optimizer.state_dict(),
        loop=asdict(run.state), data=run.train_data.state_dict(), rng=rng_states(), scaler=run.scaler.state_dict(),
        policy=run.policy.state_dict() if run.policy else None, data_identity=run.data_identity))


def keep_copy(run: Run, minutes: float, bar):
    """--keep-minutes: a copy of the checkpoint as ckpt-{minutes}min.pt beside ckpt.pt, just evaluated (the log
    holds its held-out loss), for scoring downstream later (blimp.py, glue_eval.py)."""
    path = os.path.join(run.config.out_dir, f"ckpt-{minutes:g}min.pt")
    save(run, path)
    run.log({"kind": "kept", "step": run.state.step, "elapsed": run.state.elapsed, "minutes": minutes, "path": path})
    bar.write(f"step {run.state.step:6d} | kept {path} ({minutes:g} min of budget)")


# ----------------------------------------------------------------------------------------------------
# The loop

def wait_for_the_main_process(run: Run):
    """After work the main process does alone (a checkpoint, a kept copy, BLiMP at an evaluation), every process
    waits here with its clock stopped: otherwise the others' clocks run meanwhile, and the next all-reduce of the
    elapsed time (MAX) bills their waiting to the budget."""
    if run.world_size > 1:
        dist.barrier()


def run_training(run: Run, folder: RunFolder) -> dict:
    """The loop. Ctrl-C is looked at once per step (folder.stop_requested): the step or evaluation in progress
    finishes, then a checkpoint is written and the loop returns."""
    config, state, is_main = run.config, run.state, run.rank == 0
    log_start(run, budget_tokens(config, run.tokens_per_second, run.flops_per_token, run.world_size))
    # tqdm.write is a class method, so a disabled bar still prints: the other processes get a silent stand-in
    bar = tqdm(total=1000, desc="budget", unit="‰", disable=not config.progress_bar) if is_main else SilentBar()
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
        progress = budget_progress(config, state)
        keep_now = bool(keep_marks) and state.elapsed >= keep_marks[0] * 60  # --keep-minutes: evaluate and copy
        due = (progress >= state.next_eval or progress >= 1.0) and state.val_step != state.step
        if (due and not stop_requested) or keep_now:  # off the clock; then back to the top (Ctrl-C meanwhile?)
            clock.stop()
            evaluate_now(run, progress, bar)
            if keep_now and is_main:
                keep_copy(run, keep_marks[0], bar)
            keep_marks = keep_marks[1:] if keep_now else keep_marks
            wait_for_the_main_process(run)
            clock.start()
            continue
        if progress >= 1.0 or stop_requested or (config.stop_after_steps and steps_this_session >= config.stop_after_steps):
            break
        if config.grow_at and not state.grown and progress >= config.grow_at:  # LiGO: on the clock, growth is training
            grow_run(run, bar)

        step_start = clock.elapsed()
        loss, grad_norm, rows = train_step(run, progress)
        state.step, steps_this_session = state.step + 1, steps_this_session + 1
        state.tokens += rows * config.seq_len
        state.flops += rows * config.seq_len * run.flops_per_token
        step_log.add(run, loss, grad_norm, rows, clock.elapsed() - step_start, progress, clock.elapsed(), bar)
        bar.update(int(budget_progress(config, state) * 1000) - bar.n)
        save_due = is_main and time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60
        if run.world_size > 1:  # rank 0's clock decides, for all: every process stops its clock for the save
            flag = torch.tensor([float(save_due)], device=run.device)
            dist.broadcast(flag, src=0)
            save_due = bool(flag.item())
        if save_due:  # off the clock on every process, and with the step just taken on the books (a resume's elapsed)
            clock.stop()
            state.elapsed = clock.elapsed()
            if is_main:
                save(run)
            wait_for_the_main_process(run)
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
        save(run)
    summary = {"kind": "summary", "final_val_loss": state.val_loss if state.val_step == state.step else None,
               "last_val_loss": state.val_loss, "last_val_step": state.val_step, "steps": state.step,
               "tokens": state.tokens, "flops": state.flops, "elapsed_seconds": state.elapsed,
               "params": run.raw_model.num_params(), "non_embedding_params": run.raw_model.num_params(non_embedding=True),
               "checkpoint": os.path.join(config.out_dir, "ckpt.pt"), "log": os.path.join(config.out_dir, "log.jsonl"),
               "interrupted": interrupted, "finished": budget_progress(config, state) >= 1.0}
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
        run = build_model(config, rank, world_size, device, checkpoint, init_checkpoint)  # measured before data
        run, preparer = attach_data(run, checkpoint, init_checkpoint, budget_tokens(
            run.config, run.tokens_per_second, run.flops_per_token, world_size))
        del checkpoint, init_checkpoint  # what the run needs is in it now: free the memory (the GPU's, on CUDA)
        try:  # the background preparer, if any, goes with the run: ended, failed or interrupted
            run.log_file = folder.open_log(run.state.log_bytes)  # every check has passed: only now may files change
            folder.training_started()
            return run_training(run, folder)
        finally:
            if preparer:
                preparer.stop()


# ----------------------------------------------------------------------------------------------------
# --plan: a measured preview of the run

def preview_run(config: TrainConfig) -> dict:
    """--plan: what this run would do on this machine, measured, without training. The model is built, fitted
    to the machine, compiled and timed exactly as the run would (run/build.py); no data is prepared, nothing is
    trained or written. Returns the plan's numbers: the fitted settings, the measured tokens/s, the budget's tokens and the corpus's passes."""
    rank, world_size, device = setup_distributed(config.device)
    init_checkpoint = load_checkpoint(config.init_from, map_location=device) if config.init_from else None
    start = time.perf_counter()
    run = build_model(config, rank, world_size, device, None, init_checkpoint)
    build_seconds = time.perf_counter() - start
    config, speed = run.config, run.speed
    if speed is None:  # a step or FLOP budget: the run does not time itself, the plan still does
        speed = measure_speed(run.model, run.optimizer, config, device, world_size, seconds=1.0)
    tokens_per_second = speed.tokens_per_second
    tokens = budget_tokens(config, tokens_per_second, run.flops_per_token, world_size)
    training_seconds = tokens / tokens_per_second
    evaluations = math.floor(1 / config.eval_interval) + 1  # at the start, every --eval-interval and at the end
    eval_seconds = evaluations * config.eval_rows * config.seq_len / (3 * tokens_per_second)  # forward ≈ 1/3 of the work
    wall_seconds = training_seconds + eval_seconds
    full_batch_rows = batch_rows(config, 1.0, world_size)
    return {"device": f"{device} x{world_size}", "threads": torch.get_num_threads(), "precision": config.precision,
            "precision_note": precision_note(device, config.precision), "compile": config.compile,
            "build_seconds": build_seconds, "micro_batch_size": config.micro_batch_size,
            "accumulation": full_batch_rows // (config.micro_batch_size * world_size),
            "batch_tokens": full_batch_rows * config.seq_len, "params": run.raw_model.num_params(),
            "tokens_per_second": tokens_per_second, "speed_low": speed.low, "speed_high": speed.high,
            "speed_steps": speed.steps, "budget_tokens": tokens, "training_seconds": training_seconds,
            **corpus_outlook(config, tokens), "checkpoint_minutes": config.checkpoint_minutes,
            "checkpoints": math.floor(wall_seconds / (config.checkpoint_minutes * 60)) + 1,  # and one at the end
            "evaluations": evaluations, "eval_seconds": eval_seconds,
            "end": time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + wall_seconds))}


def print_preview(plan: dict, config: TrainConfig):
    passes = "unknown until prepared" if plan["passes"] is None else \
        f"{plan['passes']:.2f} (at most {config.max_passes:g} wanted: --max-passes)"
    compile_text = "on" if plan["compile"] else "off" + ("" if config.compile is False else
                                                         f" (CPU budgets under {CPU_COMPILE_MIN_BUDGET_SECONDS // 60} min run eager)")
    print(f"""plan (nothing is trained or written):
  device        {plan['device']} ({plan['threads']} thread{'s' if plan['threads'] > 1 else ''} each)
  precision     {plan['precision']}{plan['precision_note']}
  compile       {compile_text}
  start-up      building, {'compiling, ' if plan['compile'] else ''}warming up and timing the model took {plan['build_seconds']:.0f} s, before the clock
  micro-batch   {plan['micro_batch_size']} rows x {plan['accumulation']} accumulation steps = {plan['batch_tokens']:,} tokens per full batch
  model         {plan['params'] / 1e6:.1f}M parameters
  speed         {plan['tokens_per_second']:,.0f} tokens/s (the median of {plan['speed_steps']} timed micro-steps with the optimizer's; 10-90%: {plan['speed_low']:,.0f}-{plan['speed_high']:,.0f})
  budget        {describe_budget(config)}: ~{plan['budget_tokens']:,.0f} tokens, {duration(plan['training_seconds'])} of training
  corpus        {plan['corpus']}
  passes        {passes}
  checkpoints   every {plan['checkpoint_minutes']:g} min: ~{plan['checkpoints']} (the last at the end)
  evaluations   {plan['evaluations']}, ~{plan['eval_seconds'] / 60:.1f} min off the clock (estimate)
  expected end  {plan['end']}{'' if plan['prepared'] else ' + the time to prepare the corpus (a sharded one: its part 0) first'}""")
    if plan["warning"]:
        print(plan["warning"], file=sys.stderr)


def parse_args(argv=None) -> TrainConfig:
    return parse_train_args(argv, description=__doc__)


def main(argv=None):
    config = parse_args(argv)
    try:
        if config.plan:
            validate_config(config)
            print_preview(preview_run(config), config)
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
