"""Fitting a run to the machine: precision and the fp16 gradient scaler, the compile fallback, the micro-batch
search, --plan, and the budget's tokens and passes at start-up. The CUDA paths are forced on CPU."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import run.machine as machine
import train as train_module
import run.build as build_module
import run.device as run_device
from run.device import autocast, gradient_scaler, precision_note, training_precision
from model import make_optimizer
from run.config import TrainConfig
from data.loader import MLMBatches, TokenFile, data_tokenizer
from model import CramBERT, preset_config, count_kept
from run.machine import announce_machine, auto_micro_batch_size, compile_by_default, fit_to_machine, random_batch
import policy
from policy import LearningLawPolicyConfig, policy_flops
from train import preview_run
from train import apply_gradients, train

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_run(data_dir, out_dir, **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data_dir), out_dir=str(out_dir), preset="tiny", seq_len=32, micro_batch_size=8,
                    batch_tokens=512, budget_seconds=0, lr=3e-3, eval_rows=32, eval_interval=1.0, log_interval=1,
                    progress_bar=False)
    return TrainConfig(**{**settings, **overrides})


def rows_of(data_dir, seq_len: int = 32) -> int:
    """Training rows in a prepared folder: one pass over them is rows x seq_len tokens ([CLS] included)."""
    return MLMBatches(TokenFile(str(Path(data_dir) / "train.bin"), data_tokenizer(str(data_dir))), seq_len, 0.25).num_rows


def records(out_dir, kind):
    with open(Path(out_dir) / "log.jsonl") as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def test_precision_is_bf16_on_gpus_that_have_it_fp16_on_older_ones_fp32_on_cpu(monkeypatch):
    asked = []

    def bf16_supported(native: bool):
        def is_bf16_supported(including_emulation=True):
            asked.append(including_emulation)
            return native
        return is_bf16_supported

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_supported(True))
    assert training_precision(cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_supported(False))
    assert training_precision(cuda) == "fp16"  # a T4 or V100
    assert asked == [False, False]  # emulated bf16 (slow) does not count
    cpu = torch.device("cpu")
    monkeypatch.setattr(run_device, "cpu_bf16_matmul_speedup", lambda: 2.2)  # AVX512-BF16 / AMX: measured ~2x
    assert training_precision(cpu) == "bf16" and "2.2x fp32's speed on this CPU: native" in precision_note(cpu, "bf16")
    monkeypatch.setattr(run_device, "cpu_bf16_matmul_speedup", lambda: 0.6)  # emulated: slower than fp32
    assert training_precision(cpu) == "fp32" and precision_note(cpu, "fp32").endswith("emulated)")
    assert precision_note(cpu, "bf16").endswith("emulated, slow)")  # --precision bf16 forced: still runs, says so
    assert training_precision(cuda, "fp32") == "fp32" and training_precision(torch.device("cpu"), "fp16") == "fp16"
    assert gradient_scaler(torch.device("cpu"), "fp16").is_enabled()
    assert not gradient_scaler(torch.device("cpu"), "bf16").is_enabled()


def test_fp16_with_the_gradient_scaler_trains(tiny_corpus, tmp_path):
    summary = train(tiny_run(tiny_corpus, tmp_path, precision="fp16", max_steps=6, batch_tokens=256))
    losses = [r["loss"] for r in records(tmp_path, "train")]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert summary["finished"] and records(tmp_path, "config")[0]["config"]["precision"] == "fp16"
    scaler_state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["scaler"]
    assert scaler_state["scale"] > 0  # saved, so a resumed run keeps the scale it had found


def test_an_overflowing_fp16_gradient_skips_the_step_and_lowers_the_scale():
    torch.manual_seed(0)
    model = CramBERT(preset_config("tiny", max_seq_len=32))
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    cpu = torch.device("cpu")
    scaler = gradient_scaler(cpu, "fp16")
    input_ids, labels = random_batch(4, 32, 0.25, 256, cpu)

    def scaled_backward():  # as train_step does it
        with autocast(cpu, "fp16"):
            _, loss = model(input_ids, labels=labels, n_kept=count_kept(4, 32, 0.25))
        scaler.scale(loss).backward()

    scaled_backward()
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    next(p for p in model.parameters() if p.dim() == 2).grad[0, 0] = float("inf")
    grad_norm = apply_gradients(model, optimizer, scaler, grad_clip=0.5)
    assert not math.isfinite(grad_norm.item())
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))  # skipped
    assert scaler.get_scale() == scale / 2 and all(p.grad is None for p in model.parameters())
    scaled_backward()
    grad_norm = apply_gradients(model, optimizer, scaler, grad_clip=0.5)
    assert math.isfinite(grad_norm.item())  # unscaled before clipping: the true norm, not 32768 times it
    assert grad_norm.item() < 100 and not all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_a_failing_compile_falls_back_to_eager_with_one_line(tiny_corpus, tmp_path, monkeypatch, capsys):
    def broken_compile(module):
        def forward(*args, **kwargs):
            raise RuntimeError("InductorError: no working C compiler\nsecond line")
        return forward
    monkeypatch.setattr(torch, "compile", broken_compile)
    # The run grows half-way (a new model to wrap): having failed once, it does not try to compile again.
    summary = train(tiny_run(tiny_corpus, tmp_path, compile=True, max_steps=2, grow_at=0.5, grow_to="mini",
                             ligo_steps=1, model_overrides={"n_head": 1}))
    failures = [line for line in capsys.readouterr().out.splitlines() if "torch.compile failed" in line]
    assert summary["finished"] and records(tmp_path, "grow") and failures == [
        "torch.compile failed (RuntimeError: InductorError: no working C compiler); training in eager mode instead "
        "(--no-compile skips the attempt)"]


def test_the_compiled_path_gives_eagers_losses_and_bf16_stays_close(tiny_corpus, tmp_path, monkeypatch):
    # No test runs inductor (its C++ build takes a minute); aot_eager traces the model with dynamo and AOT
    # autograd exactly as inductor's input is traced, then runs the captured graphs eagerly.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend="aot_eager"))
    losses = {}
    for name, overrides in {"eager": {}, "compiled": {"compile": True}, "bf16": {"precision": "bf16"}}.items():
        summary = train(tiny_run(tiny_corpus, tmp_path / name, max_steps=4, **overrides))
        assert summary["finished"]
        losses[name] = [record["loss"] for record in records(tmp_path / name, "train")]
    assert len(losses["eager"]) == 4 and losses["eager"][-1] < losses["eager"][0]
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    assert losses["bf16"] == pytest.approx(losses["eager"], rel=0.02)  # bf16 keeps 8 bits of mantissa


def test_auto_micro_batch_halves_until_it_fits():
    def fits_up_to(most: int, tried: list):
        def fits(rows):
            tried.append(rows)
            if rows > most:
                raise torch.OutOfMemoryError(f"CUDA out of memory: {rows} rows")
        return fits

    tried = []
    assert auto_micro_batch_size(4096, fits_up_to(20, tried)) == 16 and tried == [128, 64, 32, 16]
    tried = []  # a batch of 48 rows: only divisors, so accumulation keeps exactly --batch-tokens
    assert auto_micro_batch_size(48, fits_up_to(20, tried)) == 12 and tried == [48, 24, 12]
    with pytest.raises(ValueError, match="not even one row fits"):
        auto_micro_batch_size(48, fits_up_to(0, []))


def test_compile_is_on_by_default_on_cuda_and_for_cpu_budgets_that_repay_it():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert compile_by_default(TrainConfig(budget_seconds=0, max_steps=10), cuda)
    assert compile_by_default(TrainConfig(budget_seconds=600), cpu)  # a 10-minute CPU run compiles
    assert not compile_by_default(TrainConfig(budget_seconds=60), cpu)  # a 1-minute one would mostly wait
    assert not compile_by_default(TrainConfig(budget_seconds=0, max_steps=10_000), cpu)  # steps/FLOPs: tests, sweeps
    assert not compile_by_default(TrainConfig(budget_seconds=3600), torch.device("mps"))


def test_auto_flags_resolve_without_trials_on_cpu(capsys):
    model = CramBERT(preset_config("tiny", max_seq_len=32))
    config = TrainConfig(seq_len=32, batch_tokens=32 * 48, micro_batch_size="auto")
    fitted, how = fit_to_machine(config, model, make_optimizer(model, config), torch.device("cpu"), world_size=1)
    # TrainConfig's default budget is 24 hours: long enough for compile_by_default to compile on a CPU
    assert (fitted.precision, fitted.compile, fitted.micro_batch_size) == ("fp32", True, 48)
    announce_machine(fitted, how, torch.device("cpu"), world_size=1)
    assert "micro-batch 48 rows (auto, not tried off CUDA) x 1 accumulation steps" in capsys.readouterr().out


def test_the_command_line_takes_auto_and_the_new_switches():
    parse = train_module.parse_args
    assert parse(["--recipe", "gpu"]).micro_batch_size == "auto" and parse(["--recipe", "gpu"]).compile is None
    assert parse(["--micro-batch-size", "16"]).micro_batch_size == 16
    assert parse(["--no-compile"]).compile is False and parse(["--compile"]).compile is True
    assert parse(["--dry-run"]).plan and parse(["--plan", "--precision", "fp16"]).precision == "fp16"
    with pytest.raises(SystemExit):
        parse(["--precision", "fp8"])


def test_plan_prints_consistent_numbers_and_trains_nothing(tiny_corpus, tmp_path, capsys, monkeypatch):
    real_measure = build_module.measure_speed  # timed for 0.3 s, not 3: the arithmetic is the point here
    monkeypatch.setattr(build_module, "measure_speed", lambda *args, seconds: real_measure(*args, seconds=0.3))
    config = tiny_run(tiny_corpus, tmp_path / "run", budget_seconds=600.0, checkpoint_minutes=4.0, plan=True,
                      compile=False)  # no test compiles: the suite must stay fast
    plan = preview_run(config)
    assert plan["budget_tokens"] == pytest.approx(plan["tokens_per_second"] * 600)
    assert plan["passes"] == pytest.approx(plan["budget_tokens"] / plan["corpus_tokens"])
    assert plan["corpus_tokens"] == rows_of(tiny_corpus) * 32
    wall = plan["training_seconds"] + plan["eval_seconds"]
    assert plan["training_seconds"] == pytest.approx(600) and plan["checkpoints"] == math.floor(wall / 240) + 1
    assert (plan["precision"], plan["compile"], plan["micro_batch_size"], plan["accumulation"]) == ("fp32", False, 8, 2)
    capsys.readouterr()
    train_module.main(["--recipe", "cpu", "--preset", "tiny", "--seq-len", "32", "--batch-tokens", "512",
                       "--data-dir", str(tiny_corpus), "--out-dir", str(tmp_path / "run"), "--minutes", "10", "--plan",
                       "--no-compile"])
    out = capsys.readouterr()
    for field in ("device        cpu x1", "precision     fp32", "compile       off", "micro-batch   16 rows x 1",
                  "speed ", "budget        10 min: ~", "corpus        ", "passes ", "checkpoints   every 30 min",
                  "expected end  "):
        assert field in out.out
    assert "WARNING" in out.err and "passes over the same data" in out.err  # 10 minutes repeat the tiny corpus
    assert not (tmp_path / "run").exists()  # no checkpoint, no log: nothing was trained


@pytest.mark.parametrize("score", ["loss", "decoder"])
def test_plan_charges_the_learning_law_policy_like_the_run_does(tiny_corpus, tmp_path, monkeypatch, score):
    # A FLOP budget buys fewer tokens with the policy: its own work (policy.policy_flops) is charged per token,
    # whichever score the policy uses.
    monkeypatch.setattr(policy, "LearningLawPolicyConfig", lambda: LearningLawPolicyConfig(score=score))
    uniform = preview_run(tiny_run(tiny_corpus, tmp_path / "run", max_flops=1e12, plan=True))
    reweighted = preview_run(tiny_run(tiny_corpus, tmp_path / "run", max_flops=1e12, plan=True, policy="learning-law"))
    model = CramBERT(preset_config("tiny", vocab_size=data_tokenizer(tiny_corpus).vocab_size, max_seq_len=32))
    per_token = model.flops_per_token(32, 0.25)
    extra = policy_flops(model.config, 8, 32, 0.25, LearningLawPolicyConfig(score=score)) / (8 * 32)
    assert reweighted["budget_tokens"] == pytest.approx(uniform["budget_tokens"] * per_token / (per_token + extra), rel=1e-3)
    assert reweighted["budget_tokens"] < uniform["budget_tokens"]


def test_start_up_logs_the_tokens_the_budget_consumes_and_warns_above_max_passes(tiny_corpus, tmp_path, capsys):
    summary = train(tiny_run(tiny_corpus, tmp_path, max_steps=4, max_passes=0.01))
    logged = records(tmp_path, "config")[0]
    assert logged["budget_tokens"] == summary["tokens"]  # a step budget: the batch schedule summed, exactly
    assert logged["passes"] == pytest.approx(summary["tokens"] / (rows_of(tiny_corpus) * 32))
    out = capsys.readouterr()
    assert f"budget: 4 steps = ~{summary['tokens']:,} training tokens = " in out.out
    assert "WARNING: this run will consume" in out.err and "(more than 0.01)" in out.err


FAULTS_PER_STEP = """
import resource, sys
from dataclasses import replace
import torch
from run.device import keep_freed_memory
from run.machine import random_batch
from model import CramBERT, count_kept, preset_config
kept = keep_freed_memory("cpu") if sys.argv[1] == "keep" else None
torch.manual_seed(0)
model = CramBERT(replace(preset_config("tiny"), vocab_size=16384))  # an 8 MiB embedding: gradients above 128 KiB
optimizer = torch.optim.AdamW(model.parameters(), fused=True)
input_ids, labels = random_batch(8, 128, 0.15, 16384, "cpu")
def step():
    _, loss = model(input_ids, labels=labels, n_kept=count_kept(8, 128, 0.2))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
for _ in range(10):
    step()
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sorted(faults)[5])  # the median step
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and minor-fault counts are Linux's")
def test_keeping_freed_memory_stops_every_step_faulting_in_fresh_pages():
    """Each in a fresh process (the setting is process-wide): plain glibc hands a step's large blocks back to the
    OS and faults them in again next step; with keep_freed_memory a step reuses them."""
    def faults_per_step(mode: str) -> tuple[str, float]:  # the median of 10 steps, after 10 warm-up steps
        result = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr
        kept, faults = result.stdout.split()
        return kept, float(faults)
    kept, faults = faults_per_step("keep")
    if kept != "True":
        pytest.skip("not glibc: mallopt is not there")
    plain = faults_per_step("plain")[1]
    assert plain > 1000  # 3 000–10 000 here: 4 KiB pages of the gradients and activations, every step
    assert faults < 50  # 0 here: the median step reuses the blocks the step before freed


def test_the_speed_is_the_median_step_and_the_run_starts_untouched(monkeypatch):
    # A neighbour takes the core during every third step (0.5 s each): a mean of a few steps would report a
    # fraction of the real speed; the median of the steps does not, and the 10% quantile shows the spread.
    torch.manual_seed(0)
    model = CramBERT(preset_config("tiny", max_seq_len=32, vocab_size=512))  # a step of a few ms
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    config = TrainConfig(preset="tiny", seq_len=32, micro_batch_size=4, precision="fp32")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    real, calls = machine.forward_backward, []

    def stretched(*args):
        calls.append(None)
        real(*args)
        if len(calls) % 3 == 0:
            time.sleep(0.5)

    monkeypatch.setattr(machine, "forward_backward", stretched)
    speed = machine.measure_speed(model, optimizer, config, torch.device("cpu"), 1, seconds=0.5, warmup=1,
                                  min_steps=12)
    slow_rate = 4 * 32 / 0.5  # tokens/s of a stretched step, at best
    assert speed.steps >= 12 and speed.tokens_per_second > 4 * slow_rate and speed.low < slow_rate < speed.high
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())  # weights back
    assert optimizer.state_dict()["state"] == {}  # and the optimizer as it was: never stepped


def test_a_busy_cpu_trains_on_the_thread_count_that_measured_faster(monkeypatch):
    # Two threads whose steps a neighbour stretches (each OpenMP barrier waits for the thread it holds up) against
    # one that runs freely: the run keeps one thread, and the timing leaves no trace in the weights.
    torch.manual_seed(0)
    model = CramBERT(preset_config("tiny", max_seq_len=32, vocab_size=512))
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    config = TrainConfig(preset="tiny", seq_len=32, micro_batch_size=4, precision="fp32", budget_seconds=600)
    real = machine.forward_backward

    def contended(*args):
        real(*args)
        if torch.get_num_threads() > 1:
            time.sleep(0.02)

    monkeypatch.setattr(machine, "forward_backward", contended)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        note = machine.choose_cpu_threads(model, optimizer, config, torch.device("cpu"), seconds=0.2)
        assert torch.get_num_threads() == 1 and note.startswith("1 of 2")
        assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
        assert optimizer.state_dict()["state"] == {}

        monkeypatch.setattr(machine, "forward_backward", real)  # idle: two threads stay when they are faster,
        torch.set_num_threads(2)
        monkeypatch.setattr(machine, "timed_steps", lambda step, *args: [0.01 if torch.get_num_threads() == 2 else 0.02])
        assert machine.choose_cpu_threads(model, optimizer, config, torch.device("cpu")).startswith("2 of 2")
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # and a user's OMP_NUM_THREADS is their choice: nothing timed
        assert machine.choose_cpu_threads(model, optimizer, config, torch.device("cpu")) is None
        monkeypatch.delenv("OMP_NUM_THREADS")
        short = TrainConfig(preset="tiny", seq_len=32, micro_batch_size=4, precision="fp32", budget_seconds=60)
        assert machine.choose_cpu_threads(model, optimizer, short, torch.device("cpu")) is None  # nor for 1 minute
    finally:
        torch.set_num_threads(threads_before)
