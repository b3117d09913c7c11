"""
Training throughput on this device: tokens/s, peak memory and MFU of one cramlm training step
(forward, backward, AdamW), next to Hugging Face's BertForMaskedLM of the same size when the optional
`transformers` package is installed. Each model runs in its own fresh process, so peak memory is its own.

    python -m experiments.bench --preset base --micro-batch-size 128 --compile        # GPU: the README's H100 numbers
    python -m experiments.bench --preset mini --micro-batch-size 16 --steps 5         # CPU

MFU = achieved training FLOP/s (model.flops_per_token x tokens/s) / the matmul FLOP/s measured on this
device in the same precision (common.measure_peak_flops): a measured peak, never a datasheet number.
"""
import argparse
import multiprocessing
import resource
from dataclasses import asdict, dataclass, replace

import torch

from model import CramBERT, count_kept, flops_per_token, make_optimizer, preset_config
from run.config import TrainConfig
from run.device import PRECISIONS, measure_peak_flops, resolve_device, training_precision
from run.machine import random_batch, time_training


@dataclass
class BenchConfig:
    preset: str = "base"  # model size (model.PRESETS)
    seq_len: int = 128  # tokens per row
    micro_batch_size: int = 128  # rows per step
    steps: int = 20  # timed steps
    warmup: int = 3  # untimed steps first (allocator, autotuning, compilation)
    mask_rate: float = 0.25  # share of positions with labels
    vocab_size: int = 50304  # embedding rows: GPT-2's padded 50 304, or our own BPE's (e.g. 16384, the CPU recipe)
    device: str = "auto"  # auto, cuda or cpu
    compile: bool = False  # torch.compile both models
    precision: str = "auto"  # autocast precision (common.training_precision): auto, bf16, fp16 or fp32
    threads: int = 0  # CPU threads for the timed process (0: torch's default, one per core)


def build(kind: str, config: BenchConfig, device):
    """(model, loss function of (input_ids, labels), training FLOPs per token) for one side of the table."""
    model_config = preset_config(config.preset, max_seq_len=config.seq_len, vocab_size=config.vocab_size)
    if kind == "cramlm":
        model = CramBERT(model_config)
        n_kept = count_kept(config.micro_batch_size, config.seq_len, config.mask_rate)  # static, as train.py does
        return (model, lambda ids, labels: model(ids, labels=labels, n_kept=n_kept)[1],
                flops_per_token(model_config, config.seq_len, config.mask_rate))
    from transformers import BertConfig, BertForMaskedLM  # optional dependency, benchmark only
    hf_config = BertConfig(vocab_size=model_config.vocab_size, hidden_size=model_config.n_embd,
                           num_hidden_layers=model_config.n_layer, num_attention_heads=model_config.n_head,
                           intermediate_size=model_config.intermediate_size, max_position_embeddings=512,
                           attn_implementation="sdpa")  # BERT's own defaults otherwise (dropout 0.1, biases, post-LN)
    model = BertForMaskedLM(hf_config)
    # Its FLOPs: a plain-GELU FFN and a dense head over every position (biases add a negligible amount).
    hf_shape = replace(model_config, ffn="gelu", mlm_head="dense", bias=True)
    return model, lambda ids, labels: model(input_ids=ids, labels=labels).loss, flops_per_token(hf_shape, config.seq_len)


def run_one(kind: str, config: BenchConfig) -> dict:
    """Time `steps` training steps of one model; called in a fresh process."""
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    model, loss_fn, model_flops_per_token = build(kind, config, device)
    model.to(device).train()
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4))
    step_fn = torch.compile(loss_fn) if config.compile else loss_fn
    input_ids, labels = random_batch(config.micro_batch_size, config.seq_len, config.mask_rate,
                                     model.config.vocab_size, device)
    steps, seconds = time_training(step_fn, optimizer, input_ids, labels, device, config.warmup, config.steps,
                                   precision=config.precision)
    tokens_per_second = steps * config.micro_batch_size * config.seq_len / seconds
    peak_memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                   else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux reports KiB
    precision = training_precision(device, config.precision)
    peak_flops = measure_peak_flops(device, precision=precision)
    return {"model": kind, "precision": precision, "compile": config.compile, "threads": torch.get_num_threads(), "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
            "tokens_per_second": tokens_per_second, "peak_memory_gb": peak_memory / 1e9,
            "mfu": tokens_per_second * model_flops_per_token / peak_flops, "peak_tflops": peak_flops / 1e12,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def benchmark(config: BenchConfig) -> list[dict]:
    kinds = ["cramlm"]
    try:
        import transformers  # noqa: F401
        kinds.append("hf-bert")
    except ImportError:
        print("transformers is not installed: benchmarking cramlm only (pip install transformers to compare)")
    context = multiprocessing.get_context("spawn")  # a fresh process per model: its own peak memory
    results = []
    for kind in kinds:
        with context.Pool(1) as pool:
            results.append(pool.apply(run_one, (kind, config)))
    return results


def cpu_table(config: BenchConfig) -> list[dict]:
    """--cpu-table: every CPU variant of the training step, one after another, each model in a fresh process:
    eager and compiled, fp32 and bf16 autocast, on 1 thread and on every core. What `--precision auto` and
    `--compile`'s default choose on a CPU comes from this trade-off (machine.py, common.py)."""
    results = []
    for threads in sorted({1, torch.get_num_threads()}):
        for compile_model in (False, True):
            for precision in ("fp32", "bf16"):
                variant = replace(config, device="cpu", threads=threads, compile=compile_model, precision=precision)
                results += benchmark(variant)
    return results


def main(argv=None):
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(prog="python -m experiments.bench",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=defaults.preset, help="model size: tiny, laptop, mini, small, base, crammed")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per row")
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size,
                        help="vocabulary rows (GPT-2: 50304; the CPU recipe's BPE: 16384)")
    parser.add_argument("--micro-batch-size", type=int, default=defaults.micro_batch_size, help="rows per step")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="timed steps")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed warm-up steps")
    parser.add_argument("--device", default=defaults.device, help="auto, cuda or cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--precision", default=defaults.precision, choices=PRECISIONS,
                        help="autocast precision (auto: as train.py decides for this device)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="CPU threads (0: one per core)")
    parser.add_argument("--cpu-table", action="store_true",
                        help="every CPU variant: eager/compiled x fp32/bf16 x 1 thread/all cores, both models")
    args = parser.parse_args(argv)
    run_table = args.cpu_table
    del args.cpu_table
    config = BenchConfig(**vars(args))
    print(f"config: {asdict(config)}")
    results = cpu_table(config) if run_table else benchmark(config)
    print("\n| model | threads | precision | compile | params | tokens/s | peak memory (GB) | MFU | device (measured peak TFLOP/s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['threads']} | {r['precision']} | {'on' if r['compile'] else 'off'} | "
              f"{r['params'] / 1e6:.1f}M | {r['tokens_per_second']:,.0f} | {r['peak_memory_gb']:.2f} "
              f"| {r['mfu']:.1%} | {r['device']} ({r['peak_tflops']:.2f}) |")
    if len(results) == 2:
        print(f"\ncramlm / hf-bert tokens/s: {results[0]['tokens_per_second'] / results[1]['tokens_per_second']:.2f}x")


if __name__ == "__main__":
    main()
