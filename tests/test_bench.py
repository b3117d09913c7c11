"""experiments/bench.py's CPU table: which variants it times, and that each one reaches the timed process as asked."""
import torch

from experiments import bench
from experiments.bench import BenchConfig, cpu_table


def test_the_cpu_table_times_every_variant_once(monkeypatch):
    asked = []
    monkeypatch.setattr(bench, "benchmark", lambda config: asked.append(config) or [{"model": "cramlm"}])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    results = cpu_table(BenchConfig(preset="tiny", steps=1))
    variants = [(c.threads, c.compile, c.precision, c.device) for c in asked]
    assert len(results) == 8 and sorted(variants) == sorted(
        (threads, compiled, precision, "cpu") for threads in (1, 2) for compiled in (False, True)
        for precision in ("fp32", "bf16"))


def test_run_one_uses_the_asked_threads_and_precision(monkeypatch):
    threads = torch.get_num_threads()
    try:
        result = bench.run_one("cramlm", BenchConfig(preset="tiny", seq_len=32, micro_batch_size=2, steps=1, warmup=0,
                                                     vocab_size=512, device="cpu", threads=1, precision="bf16"))
    finally:
        torch.set_num_threads(threads)
    assert (result["threads"], result["precision"], result["compile"]) == (1, "bf16", False)
    assert result["tokens_per_second"] > 0 and result["params"] > 0
