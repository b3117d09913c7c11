"""
What a run tells you while it trains: the start lines (model, budget, corpus), one log line per --log-interval
steps, each evaluation's line with the probe sentences' fill-ins, and loss.png. Everything also goes to
out_dir/log.jsonl, one JSON record per line, which plot.py reads.
"""
import os
import subprocess
import sys
from dataclasses import asdict

import torch
import torch.distributed as dist

from blimp import blimp_accuracy
from model import fill_masks
from plot import plot_runs, read_log
from run.config import describe_budget
from run.corpus import corpus_outlook


def log_start(run, tokens: float):
    """The config line at the top of log.jsonl; the model's and the budget's lines on the console (the budget's
    warning on stderr, where it survives a redirected log)."""
    raw_model, config = run.raw_model, run.config
    outlook = corpus_outlook(config, tokens)
    run.log({"kind": "config", "config": asdict(config), "model_config": asdict(raw_model.config),
             "budget_tokens": tokens, "passes": outlook["passes"], "measured_tokens_per_second": run.tokens_per_second,
             "params": raw_model.num_params(), "non_embedding_params": raw_model.num_params(non_embedding=True),
             "flops_per_token": run.flops_per_token, "peak_flops": run.peak_flops, "world_size": run.world_size,
             "device": str(run.device), "git": git_commit(), "resumed_at_step": run.state.step,
             "tokenizer": run.tokenizer.name, **run.reference})
    if run.rank == 0:
        print(f"{raw_model.num_params() / 1e6:.1f}M parameters, {run.flops_per_token / 1e6:.1f} MFLOPs/token, "
              f"device {run.device} x{run.world_size}, measured peak {run.peak_flops / 1e12:.2f} TFLOP/s, "
              f"tokenizer {run.tokenizer.name}, unigram line {run.reference['unigram_loss']:.3f} nats")
        print(f"budget: {describe_budget(config)} = ~{tokens:,.0f} training tokens = {outlook['passes']:.2f} passes "
              f"over {outlook['corpus']} (--max-passes {config.max_passes:g})")
        if outlook["warning"]:
            print(outlook["warning"], file=sys.stderr)


PROBES = ("The capital of France is [MASK].", "She [MASK] to the store yesterday.",
          "The [MASK] is the largest planet in the solar system.", "He was born in 1950 and [MASK] in 2010.")


def what_it_knows(run) -> dict:
    """Beside each evaluation's loss: the top-5 fill-ins of the probe sentences and, with --blimp-pairs, the share
    of BLiMP's minimal pairs (blimp.py) the model scores right: grammar it knows, read without any fine-tuning."""
    record = {"probes": {text: fill_masks(run.raw_model, run.tokenizer, text, run.device) for text in PROBES}}
    if run.blimp_pairs:
        record["blimp"] = blimp_accuracy(run.raw_model, run.tokenizer, run.blimp_pairs, run.device, run.config.precision)
    return record


def print_evaluation(run, record: dict, bar):
    """The evaluation's line and the probe sentences' top-5 fill-ins; loss.png redrawn (with matplotlib)."""
    state, config = run.state, run.config
    grammar = f", BLiMP {record['blimp']:.1%}" if "blimp" in record else ""
    bar.write(f"step {state.step:6d} | val loss {state.val_loss:.4f}, {record['below_unigram']:.3f} nats below "
              f"unigram ({record['unigram_ratio']:.3f}x), {record['bits_per_byte']:.3f} bits/byte{grammar} | "
              f"{state.elapsed:7.1f}s of budget")
    for text, fills in record["probes"].items():
        bar.write(f"    {text}  ->  " + " | ".join(",".join(repr(t) for t in fill) for fill in fills))
    if run.rank == 0 and not plot_runs([read_log(config.out_dir)], os.path.join(config.out_dir, "loss.png")) \
            and state.step == 0:
        bar.write("matplotlib is not installed: no loss.png (pip install matplotlib); plot.py still prints tables")


class StepLog:
    """One log line per --log-interval steps: loss, lr, batch, grad norm, tokens/s and MFU averaged since the last."""

    def __init__(self):
        self.loss, self.steps, self.tokens, self.seconds = 0.0, 0, 0, 0.0

    def add(self, run, loss: float, grad_norm: torch.Tensor, rows: int, seconds: float, progress: float,
            elapsed: float, bar):
        config, state = run.config, run.state
        self.loss, self.steps, self.tokens, self.seconds = (self.loss + loss, self.steps + 1,
                                                            self.tokens + rows * config.seq_len, self.seconds + seconds)
        if state.step % config.log_interval:
            return
        mean_loss = torch.tensor(self.loss / self.steps, device=run.device)
        if run.world_size > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= run.world_size
        tokens_per_second, lr = self.tokens / self.seconds, run.optimizer.param_groups[0]["lr"]
        record = {"kind": "train", "step": state.step, "tokens": state.tokens, "flops": state.flops,
                  "elapsed": elapsed, "progress": progress, "loss": mean_loss.item(), "lr": lr,
                  "batch_tokens": rows * config.seq_len, "grad_norm": grad_norm.item(), "tokens_per_second": tokens_per_second,
                  "mfu": tokens_per_second * run.flops_per_token / (run.peak_flops * run.world_size)}
        run.log(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", batch=rows, tok_s=f"{tokens_per_second:,.0f}",
                        mfu=f"{record['mfu']:.0%}")
        self.__init__()


def git_commit() -> str:
    """The code's commit, for a run's log (empty outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


class SilentBar:
    """The progress bar of a process that is not the main one: counts nothing and prints nothing."""
    n = 0

    def update(self, n: int = 1):
        pass

    def write(self, text: str):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass
