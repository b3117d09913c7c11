"""
`python train.py ... --plan`: what a run would do on this machine, measured, without training: the model is built,
fitted to the machine, compiled and timed exactly as the run would (launch.build_model); no data is prepared, nothing
is trained or written.
"""
import math
import sys
import time

import torch

from checkpoint import load_checkpoint
from common import precision_note, setup_distributed
from config import TrainConfig, describe_budget, duration
from data.corpus import corpus_outlook
from machine import CPU_COMPILE_MIN_BUDGET_SECONDS, measure_tokens_per_second
from launch import build_model
from train import batch_rows, budget_tokens


def plan_run(config: TrainConfig) -> dict:
    """The plan's numbers: the fitted settings, the measured tokens/s, the budget's tokens and the corpus's passes."""
    rank, world_size, device = setup_distributed(config.device)
    init_checkpoint = load_checkpoint(config.init_from, map_location=device) if config.init_from else None
    start = time.perf_counter()
    run = build_model(config, rank, world_size, device, None, init_checkpoint)
    build_seconds = time.perf_counter() - start
    config, tokens_per_second = run.config, run.tokens_per_second
    if tokens_per_second is None:  # a step or FLOP budget: the run does not time itself, the plan still does
        tokens_per_second = measure_tokens_per_second(run.model, config, device, world_size)
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
            "tokens_per_second": tokens_per_second, "budget_tokens": tokens, "training_seconds": training_seconds,
            **corpus_outlook(config, tokens), "checkpoint_minutes": config.checkpoint_minutes,
            "checkpoints": math.floor(wall_seconds / (config.checkpoint_minutes * 60)) + 1,  # and one at the end
            "evaluations": evaluations, "eval_seconds": eval_seconds,
            "end": time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + wall_seconds))}


def print_plan(plan: dict, config: TrainConfig):
    passes = "unknown until prepared" if plan["passes"] is None else \
        f"{plan['passes']:.2f} (at most {config.max_passes:g} wanted: --max-passes)"
    compile_text = "on" if plan["compile"] else "off" + ("" if config.compile is False else
                                                         f" (CPU budgets under {CPU_COMPILE_MIN_BUDGET_SECONDS // 60} min run eager)")
    print(f"""plan (nothing is trained or written):
  device        {plan['device']} ({plan['threads']} threads each)
  precision     {plan['precision']}{plan['precision_note']}
  compile       {compile_text}
  start-up      building, {'compiling, ' if plan['compile'] else ''}warming up and timing the model took {plan['build_seconds']:.0f} s, before the clock
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
