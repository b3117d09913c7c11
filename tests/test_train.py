import json
import math
import shutil
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fake_c4, synthetic_documents
from data.loader import MLMBatches, TokenFile, data_identity, data_tokenizer, read_meta
from data.tokenizer import Tokenizer
from data.prepare import PrepareConfig, prepare
from model import CramBERT, preset_config
import run.build as build_module
import train as train_module
from blimp import blimp_accuracy
from data.blimp import blimp_subset
from run.checkpoint import load_checkpoint, model_checkpoint, model_from_checkpoint, save_checkpoint
from run.config import check_resume_data
from run.corpus import ensure_prepared, prepared_tokenizer_settings
from run.folder import EXIT_INTERRUPTED, claim_out_dir
from model import make_optimizer
import grow
from grow import grow_model
from run.machine import auto_micro_batch_size
from policy import LearningLawPolicyConfig, policy_flops
from data.loader import reference_metrics, unigram_log_probs
from run.report import PROBES
from train import TrainConfig, batch_rows, learning_rate, train

REPO = Path(__file__).resolve().parents[1]


def tiny_run(data_dir, out_dir, **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data_dir), out_dir=str(out_dir), preset="tiny", seq_len=32, micro_batch_size=8,
                    batch_tokens=512, budget_seconds=0, lr=3e-3, eval_rows=32, log_interval=1, progress_bar=False)
    return TrainConfig(**{**settings, **overrides})


def records(out_dir, kind):
    with open(Path(out_dir) / "log.jsonl") as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def test_one_cycle_schedule_and_batch_ramp_follow_their_formulas():
    config = TrainConfig(lr=1e-3, peak_at=0.75, batch_tokens=128 * 64, seq_len=128, micro_batch_size=4, ramp_until=0.6)
    for progress, expected in [(0.0, 0.0), (0.6, 0.8e-3), (0.75, 1e-3), (0.875, 0.5e-3), (1.0, 0.0)]:
        assert math.isclose(learning_rate(config, progress, step=123), expected, abs_tol=1e-12)
    # full batch: 64 rows = 16 micro-batches of 4; the ramp climbs linearly from 1 micro-batch at 0 to 16 at 0.6
    assert [batch_rows(config, p, world_size=1) for p in (0.0, 0.3, 0.6, 0.75, 1.0)] == [4, 4 * round(1 + 15 * 0.5), 64, 64, 64]
    assert batch_rows(config, 0.6, world_size=2) == 64  # 8 micro-steps of 4 rows on each of 2 processes
    no_ramp = TrainConfig(batch_tokens=128 * 64, seq_len=128, micro_batch_size=4, batch_ramp=False)
    assert batch_rows(no_ramp, 0.0, 1) == 64


def test_bert_and_constant_schedules():
    bert = TrainConfig(lr=1e-3, schedule="bert", warmup_steps=10, schedule_steps=110)
    assert [learning_rate(bert, 0.5, s) for s in (0, 5, 10, 60, 110, 200)] == pytest.approx([0, 5e-4, 1e-3, 5e-4, 0, 0])
    assert learning_rate(TrainConfig(lr=2e-3, schedule="constant"), 0.9, 7) == 2e-3
    with pytest.raises(ValueError, match="schedule-steps"):
        learning_rate(TrainConfig(schedule="bert"), 0.1, 1)


def test_tiny_model_overfits_one_batch(tiny_corpus):
    torch.manual_seed(0)
    model = CramBERT(preset_config("tiny", max_seq_len=32))
    optimizer = make_optimizer(model, TrainConfig(lr=3e-3))
    input_ids, labels = MLMBatches(TokenFile(str(tiny_corpus / "train.bin"), Tokenizer.gpt2()), 32, 0.25).batch_at(0, 0, 8)
    losses = []
    for _ in range(60):
        _, loss = model(input_ids, labels=labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[0] > math.log(50304) - 1.0  # starts near chance
    assert losses[-1] < 1.0  # and memorises the batch


def test_budgeted_run_ends_on_time_with_eval_off_the_clock(tiny_corpus, tmp_path):
    start = time.perf_counter()
    summary = train(tiny_run(tiny_corpus, tmp_path, budget_seconds=3.0, eval_interval=0.1))
    wall = time.perf_counter() - start
    # The run stops at the first step boundary past the budget: the step before ended inside it. Only what load
    # cannot change is asserted: how many steps fit in 3 s (and so the loss reached) is the machine's business.
    step_ends = [r["elapsed"] for r in records(tmp_path, "train")]
    step_starts = [0.0] + step_ends  # a step starts where the one before ended: on a starved core one step may take 3 s
    assert summary["finished"] and step_starts[len(step_ends) - 1] < 3.0 <= summary["elapsed_seconds"]
    assert step_ends[-1] <= summary["elapsed_seconds"] and summary["steps"] == len(step_ends)
    evals = records(tmp_path, "eval")  # at the start, at most once per tenth of the budget, and at the end
    assert evals[0]["step"] == 0 and evals[-1]["step"] == summary["steps"] and 2 <= len(evals) <= 12
    assert wall > summary["elapsed_seconds"]  # evaluation happened, yet did not count against the budget
    checkpoint = load_checkpoint(summary["checkpoint"])
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in checkpoint["model"])
    assert checkpoint["loop"]["step"] == summary["steps"] and checkpoint["train_config"]["budget_seconds"] == 3.0


def test_keep_minutes_keeps_evaluated_copies_once_across_a_resume(tiny_corpus, tmp_path):
    # 0 is kept before the first step; 1e-6 minutes at the first step boundary past it; 1000 never
    config = tiny_run(tiny_corpus, tmp_path, max_steps=6, eval_interval=1.0, keep_minutes="1e-6,0,1000")
    train(replace(config, stop_after_steps=3))
    first_copy = (tmp_path / "ckpt-1e-06min.pt").read_bytes()
    summary = train(replace(config, resume=True))
    kept = records(tmp_path, "kept")
    assert summary["finished"] and [(r["minutes"], r["step"]) for r in kept] == [(0, 0), (1e-6, 1)]  # not again
    assert (tmp_path / "ckpt-1e-06min.pt").read_bytes() == first_copy and not (tmp_path / "ckpt-1000min.pt").exists()
    for record in kept:  # each copy is the run's whole state at that step, with its held-out loss in the log
        assert load_checkpoint(record["path"])["loop"]["step"] == record["step"]
        assert record["step"] in {r["step"] for r in records(tmp_path, "eval")}


def test_each_evaluation_logs_the_accuracy_on_a_fixed_blimp_subset(tiny_corpus, tmp_path):
    from test_blimp import write_fixture  # BLiMP's format, two paradigms
    blimp_dir = str(write_fixture(tmp_path / "blimp"))
    summary = train(tiny_run(tiny_corpus, tmp_path / "run", max_steps=3, eval_interval=0.5, blimp_pairs=2,
                             blimp_dir=blimp_dir))
    evals = records(tmp_path / "run", "eval")
    pairs = blimp_subset(blimp_dir, 2)
    final = model_from_checkpoint(load_checkpoint(summary["checkpoint"]))
    expected = blimp_accuracy(final, data_tokenizer(str(tiny_corpus)), pairs, "cpu", "fp32")
    assert len(pairs) == 4 and [r["step"] for r in evals] == [0, 2, 3] and evals[-1]["blimp"] == expected


def test_resume_continues_exactly(tiny_corpus, tmp_path):
    full = train(tiny_run(tiny_corpus, tmp_path / "full", max_steps=8))
    train(tiny_run(tiny_corpus, tmp_path / "split", max_steps=8, stop_after_steps=4))
    checkpoint = load_checkpoint(str(tmp_path / "split" / "ckpt.pt"))
    assert checkpoint["loop"]["step"] == 4 and checkpoint["data_identity"] == data_identity(str(tiny_corpus))
    with open(tmp_path / "split" / "log.jsonl", "a") as f:  # a session killed (SIGKILL) after logging step 5
        f.write(json.dumps({"kind": "train", "step": 5, "loss": 99.0}) + "\n")
    resumed = train(tiny_run(tiny_corpus, tmp_path / "split", max_steps=8, resume=True))
    uninterrupted = {r["step"]: r["loss"] for r in records(tmp_path / "full", "train")}
    continued = {r["step"]: r["loss"] for r in records(tmp_path / "split", "train")}
    assert [r["step"] for r in records(tmp_path / "split", "train")] == list(range(1, 9))  # cut back, not repeated
    for step in range(5, 9):
        assert continued[step] == pytest.approx(uninterrupted[step], rel=1e-5)
    assert resumed["final_val_loss"] == pytest.approx(full["final_val_loss"], rel=1e-5)


def test_a_checkpoint_with_the_old_mlm_fraction_resumes(tiny_corpus, tmp_path):
    train(tiny_run(tiny_corpus, tmp_path, max_steps=2, stop_after_steps=1))
    checkpoint = load_checkpoint(str(tmp_path / "ckpt.pt"))
    checkpoint["model_config"]["mlm_fraction"] = 0.25  # as ModelConfig stored it before the caller passed n_kept
    save_checkpoint(str(tmp_path / "ckpt.pt"), checkpoint)
    assert train(tiny_run(tiny_corpus, tmp_path, max_steps=2, resume=True))["steps"] == 2


def test_resume_refuses_a_checkpoint_of_another_model(tiny_corpus, tmp_path):
    train(tiny_run(tiny_corpus, tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="another config"):
        train(tiny_run(tiny_corpus, tmp_path, max_steps=2, resume=True, model_overrides={"n_layer": 3}))


class RunsACommand:
    """A pickle payload: unpickling it calls os.system, which here creates a marker file."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_loading_a_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "ckpt.pt"
    torch.save({"format": "cramlm-checkpoint", "version": 1, "model": RunsACommand(marker)}, crafted)
    with pytest.raises(ValueError, match="could run code"):
        load_checkpoint(str(crafted))
    assert not marker.exists()


def test_a_full_training_checkpoint_loads_weights_only(tiny_corpus, tmp_path):
    summary = train(tiny_run(tiny_corpus, tmp_path, max_steps=1, policy="learning-law", eval_rows=8))
    checkpoint = torch.load(summary["checkpoint"], weights_only=True)  # no allow-list needed
    assert checkpoint["loop"]["step"] == 1 and checkpoint["policy"]["calls"] > 0 and "numpy" in checkpoint["rng"]


def test_a_second_run_into_a_folder_with_a_checkpoint_is_refused(tiny_corpus, tmp_path):
    train(tiny_run(tiny_corpus, tmp_path, max_steps=3))
    with pytest.raises(ValueError, match="--resume to continue it, --overwrite to replace it"):
        train(tiny_run(tiny_corpus, tmp_path, max_steps=2))
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["loop"]["step"] == 3  # untouched
    (tmp_path / "ckpt.pt.tmp4242").write_bytes(b"half a checkpoint")  # left by a run killed mid-write
    train(tiny_run(tiny_corpus, tmp_path, max_steps=2, overwrite=True))
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["loop"]["step"] == 2
    assert len(records(tmp_path, "config")) == 1  # the old run's log went with its checkpoint
    assert not list(tmp_path.glob("ckpt.pt.tmp*")) and not (tmp_path / "LOCK").exists()


def test_overwrite_deletes_nothing_until_the_new_run_has_passed_its_checks(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"a trained run")
    (out / "log.jsonl").write_text('{"kind": "config"}\n')
    with pytest.raises(FileNotFoundError):  # a typo in --data-dir
        train(tiny_run(tmp_path / "typo", out, max_steps=1, overwrite=True, corpus=str(tmp_path / "absent")))
    with pytest.raises(FileNotFoundError):  # a missing --init-from
        train(tiny_run(tiny_corpus, out, max_steps=1, overwrite=True, init_from=str(tmp_path / "absent.pt")))
    assert (out / "ckpt.pt").read_bytes() == b"a trained run" and (out / "log.jsonl").read_text() == '{"kind": "config"}\n'
    assert not (out / "LOCK").exists()


def test_overwrite_also_deletes_the_old_runs_kept_copies(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("ckpt.pt", "ckpt-15min.pt", "ckpt-30min.pt"):
        (out / name).write_bytes(b"the old run")
    train(tiny_run(tiny_corpus, out, max_steps=1, overwrite=True, eval_interval=1.0))
    assert not (out / "ckpt-15min.pt").exists() and not (out / "ckpt-30min.pt").exists()
    assert load_checkpoint(str(out / "ckpt.pt"))["loop"]["step"] == 1


def test_the_lock_is_never_empty_so_a_run_starting_at_the_same_instant_is_refused(tmp_path):
    # The other run's pid is slow to come (a loaded machine): before the fix its LOCK existed empty meanwhile, was
    # taken as stale, and both runs held the folder.
    script = ("import os, sys, time; from run import folder; real = os.getpid\n"
              "def slow_getpid():\n    time.sleep(1.5)\n    return real()\n"
              "os.getpid = slow_getpid\n"
              "folder.claim_out_dir(sys.argv[1], False, False)\nprint('held', flush=True)\ntime.sleep(30)\n")
    other = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 30
        # LOCK itself, not the LOCK.<pid> it is linked from: seen alone, that would let this claim win the race
        while time.time() < deadline and not (tmp_path / "LOCK").exists():
            time.sleep(0.01)
        with pytest.raises(ValueError, match=f"in use by a live run \\(pid {other.pid}"):
            claim_out_dir(str(tmp_path), False, False)
        assert other.stdout.readline() == "held\n"
    finally:
        other.kill()
        other.wait()


def test_a_live_run_locks_its_folder_and_a_dead_ones_lock_is_stale(tiny_corpus, tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / "LOCK").write_text(f"{live.pid}\n")
        with pytest.raises(ValueError, match=f"in use by a live run \\(pid {live.pid}"):
            train(tiny_run(tiny_corpus, tmp_path, max_steps=1))
    finally:
        live.kill()
        live.wait()
    (tmp_path / "log.jsonl").write_text('{"kind": "config", "run": "died before its first checkpoint"}\n')
    train(tiny_run(tiny_corpus, tmp_path, max_steps=1))  # the same lock, now of a dead process: taken over
    assert not (tmp_path / "LOCK").exists()
    assert "died before" in (tmp_path / "log.1.jsonl").read_text()  # the old log moved aside, not appended to
    assert len(records(tmp_path, "config")) == 1 and "died before" not in (tmp_path / "log.jsonl").read_text()


def cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_sigint_leaves_a_loadable_checkpoint(tiny_corpus, tmp_path):
    process = cli("--data-dir", str(tiny_corpus), "--out-dir", str(tmp_path), "--preset", "tiny", "--seq-len", "32",
                  "--micro-batch-size", "8", "--batch-tokens", "512", "--seconds", "120", "--log-interval", "1",
                  "--no-progress-bar", "--eval-rows", "16", "--blimp-pairs", "0")
    log = tmp_path / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and '"kind": "train"' in log.read_text()):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED == 130, stderr  # distinct from success (0) and failure (1)
    assert "stopping after this step, writing checkpoint" in stderr and "interrupted" in stdout
    checkpoint = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert checkpoint["loop"]["step"] >= 1 and checkpoint["loop"]["elapsed"] < 120
    summary = json.loads(stdout[stdout.index("\n{") + 1:])
    assert summary["last_val_loss"] is not None  # the evaluation at step 0 at least...
    if summary["last_val_step"] != summary["steps"]:  # ...is not a final loss of a run stopped later
        assert summary["final_val_loss"] is None


def interrupt_at_forward(monkeypatch, evaluating: bool, at_call: int, times: int = 1) -> list:
    """Send this process SIGINT (`times` times) at the `at_call`-th forward pass of an evaluation (evaluating)
    or of a training step: signals arrive at a known point, whatever the machine's speed."""
    real_autocast, calls = train_module.autocast, []

    def autocast(device, precision="auto"):
        if torch.is_grad_enabled() != evaluating:  # evaluate() runs under no_grad
            calls.append(1)
            if len(calls) == at_call:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
        return real_autocast(device, precision)
    monkeypatch.setattr(train_module, "autocast", autocast)
    return calls


@pytest.fixture
def own_sigint_handler():
    """A SIGINT handler of the test's own, restored afterwards: the tests check train() puts back the handler that
    was there before, whatever the one pytest was started with (a shell's background job ignores SIGINT)."""
    def handler(number, frame):
        raise AssertionError("train() should have had its own handler in place")
    previous = signal.signal(signal.SIGINT, handler)
    yield handler
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_an_evaluation_finishes_it_then_stops_with_a_checkpoint(tiny_corpus, tmp_path, monkeypatch,
                                                                             own_sigint_handler):
    # Ctrl-C is looked at once per step, at the top of the loop: an evaluation in progress is completed and logged
    calls = interrupt_at_forward(monkeypatch, evaluating=True, at_call=2)
    summary = train(tiny_run(tiny_corpus, tmp_path, max_steps=5, eval_rows=64))  # 8 validation batches of 8 rows
    assert summary["interrupted"] and len(calls) == 8 and summary["steps"] == 0  # the whole evaluation, no step after
    assert [r["step"] for r in records(tmp_path, "eval")] == [0] and summary["final_val_loss"] == summary["last_val_loss"]
    assert load_checkpoint(summary["checkpoint"])["loop"]["step"] == 0
    assert signal.getsignal(signal.SIGINT) is own_sigint_handler  # handlers restored


def test_ctrl_c_inside_a_step_finishes_that_step_and_checkpoints_it_whole(tiny_corpus, tmp_path, monkeypatch):
    train(tiny_run(tiny_corpus, tmp_path, max_steps=6, stop_after_steps=2, batch_ramp=False))  # 2 micro-steps a step
    calls = interrupt_at_forward(monkeypatch, evaluating=False, at_call=1)
    summary = train(tiny_run(tiny_corpus, tmp_path, max_steps=6, batch_ramp=False, resume=True))
    assert summary["interrupted"] and len(calls) == 2 and summary["steps"] == 3  # both micro-steps, then out
    checkpoint = load_checkpoint(summary["checkpoint"])
    assert checkpoint["loop"]["step"] == 3 and checkpoint["data"]["cursor"] == 3 * 16  # weights, data, step agree


def test_a_second_ctrl_c_exits_at_once_keeping_the_last_checkpoint(tiny_corpus, tmp_path, monkeypatch, capsys,
                                                                   own_sigint_handler):
    flags = ["--data-dir", str(tiny_corpus), "--out-dir", str(tmp_path), "--preset", "tiny", "--seq-len", "32",
             "--micro-batch-size", "8", "--batch-tokens", "512", "--max-steps", "6", "--no-progress-bar",
             "--eval-rows", "16", "--blimp-pairs", "0"]
    train_module.main(flags + ["--stop-after-steps", "2"])  # a pause exits 0 (returns)
    before = (tmp_path / "ckpt.pt").read_bytes()
    calls = interrupt_at_forward(monkeypatch, evaluating=False, at_call=1, times=2)
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(flags + ["--resume"])
    assert exit_info.value.code == EXIT_INTERRUPTED and len(calls) == 1
    assert "interrupted again: exited at once" in capsys.readouterr().err
    assert (tmp_path / "ckpt.pt").read_bytes() == before  # no new checkpoint, the last good one intact
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["loop"]["step"] == 2
    assert signal.getsignal(signal.SIGINT) is own_sigint_handler


def test_ctrl_c_while_preparing_exits_at_once_leaving_the_folder_as_it_was(tiny_corpus, tmp_path, monkeypatch, capsys,
                                                                          own_sigint_handler):
    def ctrl_c_while_preparing(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return None
    monkeypatch.setattr(build_module, "ensure_prepared", ctrl_c_while_preparing)
    monkeypatch.setattr(build_module, "data_tokenizer", lambda *args: pytest.fail("went on after Ctrl-C"))
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(["--data-dir", str(tiny_corpus), "--out-dir", str(tmp_path), "--preset", "tiny", "--seq-len",
                           "32", "--micro-batch-size", "8", "--batch-tokens", "512", "--max-steps", "6"])
    assert exit_info.value.code == EXIT_INTERRUPTED
    assert "interrupted before training started: nothing written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no step-0 checkpoint (so no --resume needed), no LOCK
    assert signal.getsignal(signal.SIGINT) is own_sigint_handler


@pytest.mark.parametrize("flags, message", [
    (["--mask-rate", "0"], "--mask-rate 0 is outside (0, 1)"),
    (["--mask-rate", "1.5"], "--mask-rate 1.5 is outside (0, 1)"),
    (["--mask-rate", "0.01", "--seq-len", "32"], "--mask-rate 0.01 masks no token of a 32-token row"),
    (["--hours", "-1"], "--hours/--minutes/--seconds gives -3600 s"),
    (["--hours", "nan"], "--hours/--minutes/--seconds gives nan s"),
    (["--max-flops", "inf"], "--max-flops inf: must be a number > 0"),
    (["--vocab-size", "100"], "--vocab-size 100: must be in [260, 65536]"),
    (["--batch-tokens", "1"], "--batch-tokens 1 is less than one micro-batch (--micro-batch-size 16 × --seq-len 128"),
    (["--micro-batch-size", "0"], "--micro-batch-size 0: must be >= 1"),
    (["--seq-len", "100000"], "--seq-len 100000 is outside [8, 2048]"),
    (["--lr", "0"], "--lr 0: the peak learning rate must be > 0"),
    (["--peak-at", "1.5"], "--peak-at 1.5 is a fraction of the budget"),
    (["--eval-interval", "0"], "--eval-interval 0 is a fraction of the budget"),
    (["--preset", "tiny", "--grow-at", "0.5", "--grow-to", "mini"], "--grow-to mini from --preset tiny: the head dim"),
    (["--grow-at", "0.5"], "--grow-at needs --grow-to"),
    (["--resume", "--overwrite"], "--resume and --overwrite contradict"),
    (["--keep-minutes", "15,x"], "--keep-minutes '15,x': give minutes >= 0"),
    (["--keep-minutes", "-5"], "--keep-minutes '-5': give minutes >= 0"),
    (["--schedule-from", "0.5", "--schedule-to", "0.5"], "--schedule-from 0.5 and --schedule-to 0.5 are shares"),
    (["--schedule", "bert", "--max-steps", "9", "--schedule-from", "0.5"], "--schedule bert counts steps"),
    (["--rewarm", "1"], "--rewarm 1 is a share of the schedule"),
])
def test_bad_flags_are_refused_before_any_data_is_prepared(tmp_path, flags, message):
    # --data-dir is empty and --corpus absent: reaching data preparation would fail with another message
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(["--recipe", "cpu", "--data-dir", str(tmp_path / "tokens"), "--corpus", str(tmp_path / "absent"),
                           "--out-dir", str(tmp_path / "run"), *flags])
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)
    assert not (tmp_path / "run").exists()


def test_every_bad_flag_gets_its_own_line_and_a_non_zero_exit(tmp_path):
    process = cli("--data-dir", str(tmp_path), "--mask-rate", "0", "--micro-batch-size", "0", "--hours", "-1")
    _, stderr = process.communicate(timeout=60)
    lines = stderr.strip().splitlines()
    assert process.returncode == 1 and "Traceback" not in stderr and len(lines) == 3
    assert all(line.startswith("error: --") for line in lines)


def test_the_command_line_is_derived_from_train_config():
    # every flag() field is a flag whose default is the field's (the gpu recipe is TrainConfig's defaults, plus the
    # BLiMP subset at each evaluation: off in TrainConfig, so that tests and experiments do not pay for it)...
    assert train_module.parse_args(["--recipe", "gpu"]) == TrainConfig(blimp_pairs=4)
    # ...each value reaches its field, and the model flags land in model_overrides
    config = train_module.parse_args(["--recipe", "gpu", "--seq-len", "64", "--no-batch-ramp", "--compile",
                                      "--no-progress-bar", "--grow-method", "stack", "--n-layer", "3", "--no-bias"])
    assert (config.seq_len, config.batch_ramp, config.compile, config.progress_bar, config.grow_method) == \
        (64, False, True, False, "stack")
    assert config.model_overrides == {"n_layer": 3, "bias": False}
    with pytest.raises(SystemExit):  # choices come from flag(..., choices=...)
        train_module.parse_args(["--grow-method", "sideways"])


def test_batch_tokens_rounding_is_announced():
    notes = train_module.validate_config(TrainConfig(seq_len=32, micro_batch_size=8, batch_tokens=600))
    assert notes == ["note: --batch-tokens 600 is not a whole number of micro-batches: rounded to 512 "
                     "(one micro-batch (--micro-batch-size 8 × --seq-len 32 = 256 tokens))"]


def test_resume_with_other_data_settings_names_them(tiny_corpus, tmp_path):
    train(tiny_run(tiny_corpus, tmp_path, max_steps=4, stop_after_steps=1))
    with pytest.raises(ValueError, match=r"--mask-rate 0.15 differs from the checkpoint's 0.25; --seed 3 differs"):
        train(tiny_run(tiny_corpus, tmp_path, max_steps=4, resume=True, mask_rate=0.15, seed=3))


def test_resume_refuses_a_folder_prepared_again_from_other_text(tiny_corpus, tmp_path, capsys):
    config = tiny_run(tmp_path / "tokens", tmp_path / "run", max_steps=4)
    shutil.copytree(tiny_corpus, tmp_path / "tokens")
    checkpoint = {"train_config": asdict(config), "data_identity": data_identity(str(tmp_path / "tokens"))}
    check_resume_data(config, checkpoint, "ckpt.pt")  # the same data: fine
    (tmp_path / "other.txt").write_text("\n\n".join(synthetic_documents(300, seed=7)) + "\n")
    prepare(PrepareConfig(corpus=str(tmp_path / "other.txt"), out_dir=str(tmp_path / "tokens"), val_fraction=0.1))
    with pytest.raises(ValueError, match="holds other tokens than it was trained on"):
        check_resume_data(config, checkpoint, "ckpt.pt")
    del checkpoint["data_identity"]  # a checkpoint from before fingerprints: accepted, with a warning
    check_resume_data(config, checkpoint, "ckpt.pt")
    assert "older than data fingerprints" in capsys.readouterr().err


def test_a_tokenizer_flag_on_a_prepared_folder_is_not_silently_ignored(tiny_corpus, capsys):
    ensure_prepared(TrainConfig(data_dir=str(tiny_corpus), vocab_size=16384), 0, 1.0)
    assert "--vocab-size 16384 only applies to preparing a folder, so it is ignored" in capsys.readouterr().err
    ensure_prepared(TrainConfig(data_dir=str(tiny_corpus)), 0, 1.0)  # its own settings: silent
    assert capsys.readouterr().err == ""


def test_a_config_built_in_code_takes_the_prepared_folders_tokenizer(tiny_corpus, tmp_path, capsys):
    # grow_bench and scaling_sweep build TrainConfigs for a prepared folder: with its BPE's settings, no warning
    (tmp_path / "corpus.txt").write_text((tiny_corpus.parent / "corpus.txt").read_text()[:20_000])
    prepare(PrepareConfig(corpus=str(tmp_path / "corpus.txt"), out_dir=str(tmp_path / "bpe"), vocab_size=320,
                          val_fraction=0.2, max_tokens_per_char=0))
    settings = prepared_tokenizer_settings(read_meta(str(tmp_path / "bpe")))
    assert settings == {"tokenizer": "gpt2", "vocab_size": 320}  # our BPE is trained from vocab_size; gpt2 is unused
    capsys.readouterr()
    ensure_prepared(TrainConfig(data_dir=str(tmp_path / "bpe"), max_tokens_per_char=0), 0, 1.0)  # the defaults warn
    assert "--tokenizer gpt2 only applies to preparing a folder" in capsys.readouterr().err
    ensure_prepared(TrainConfig(data_dir=str(tmp_path / "bpe"), max_tokens_per_char=0, **settings), 0, 1.0)
    assert capsys.readouterr().err == ""
    assert prepared_tokenizer_settings(read_meta(str(tmp_path / "empty"))) == {}  # not prepared: train.py's defaults stay


def test_missing_data_names_the_fix(tmp_path):
    process = cli("--data-dir", str(tmp_path / "tokens"), "--corpus", str(tmp_path / "absent"), "--max-steps", "1")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "python -m data.prepare --corpus" in stderr and "Traceback" not in stderr


def test_ddp_two_processes_match_one_process_and_keep_rank_0s_work_off_the_clock(tiny_corpus, tmp_path):
    common = ["--data-dir", str(tiny_corpus), "--preset", "tiny", "--seq-len", "32", "--micro-batch-size", "4",
              "--batch-tokens", "256", "--no-batch-ramp", "--max-steps", "3", "--log-interval", "1",
              "--eval-rows", "16", "--no-progress-bar", "--device", "cpu"]
    single = cli(*common, "--out-dir", str(tmp_path / "one"))
    assert single.wait(timeout=120) == 0, single.stderr.read()
    # Rank 0 alone writes a checkpoint after every step, each taking 1 s (a slow disk): every process stops its clock
    # for it, so the budget's elapsed time stays at the steps' own time; and each evaluation is printed once, by
    # rank 0 (tqdm.write prints even from a disabled bar).
    script = tmp_path / "slow_save.py"
    script.write_text("import sys, time\nimport train\nreal = train.save\n"
                      "def slow(run, path=None):\n    time.sleep(1.0)\n    real(run, path)\n"
                      "train.save = slow\ntrain.main(sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                          str(script), *common, "--out-dir", str(tmp_path / "two"), "--checkpoint-minutes", "1e-6"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert records(tmp_path / "two", "summary")[0]["elapsed_seconds"] < 2.0  # three 1-s saves are not on it
    assert ddp.stdout.count("| val loss") == len(records(tmp_path / "two", "eval")), ddp.stdout
    one = [r["loss"] for r in records(tmp_path / "one", "train")]
    two = [r["loss"] for r in records(tmp_path / "two", "train")]
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-4)  # same global batch, same data, same updates
    assert records(tmp_path / "two", "summary")[0]["final_val_loss"] == pytest.approx(
        records(tmp_path / "one", "summary")[0]["final_val_loss"], rel=1e-4)


def test_real_wikipedia_run_lowers_held_out_loss(wiki_shard, tmp_path):
    prepare(PrepareConfig(corpus=str(wiki_shard), out_dir=str(tmp_path / "wiki"), max_train_tokens=300_000,
                          val_fraction=0.05))
    # a step budget, not seconds: the same updates (and losses) however loaded the machine is
    summary = train(tiny_run(tmp_path / "wiki", tmp_path / "run", seq_len=64, micro_batch_size=16,
                             batch_tokens=2048, max_steps=40, eval_interval=0.25, log_interval=20, eval_rows=64))
    evals = records(tmp_path / "run", "eval")
    print("held-out loss curve:", [(r["step"], round(r["val_loss"], 3)) for r in evals])
    assert evals[0]["val_loss"] > 10.0  # chance is ln(50304) = 10.8
    assert summary["final_val_loss"] < evals[0]["val_loss"] - 2.0


def test_learning_law_policy_runs_saves_and_resumes(tiny_corpus, tmp_path):
    settings = dict(max_steps=4, policy="learning-law", eval_rows=8)
    full = train(tiny_run(tiny_corpus, tmp_path / "full", **settings))
    train(tiny_run(tiny_corpus, tmp_path / "split", stop_after_steps=2, **settings))
    saved = load_checkpoint(str(tmp_path / "split" / "ckpt.pt"))["policy"]
    assert saved["calls"] > 0 and saved["desired_losses"] is not None
    resumed = train(tiny_run(tiny_corpus, tmp_path / "split", resume=True, **settings))
    assert resumed["final_val_loss"] == pytest.approx(full["final_val_loss"], rel=1e-5)
    assert load_checkpoint(str(tmp_path / "split" / "ckpt.pt"))["policy"]["calls"] == \
        load_checkpoint(str(tmp_path / "full" / "ckpt.pt"))["policy"]["calls"]


def test_max_flops_charges_the_learning_law_policys_own_passes(tiny_corpus, tmp_path):
    # The policy's contribution product and desired-gradient refresh count against --max-flops: on a budget of
    # K uniform steps, with K large enough for the policy's few per cent to cost a whole step, it trains on fewer
    # tokens than uniform weighting, exactly as many steps as its charged FLOPs per token allow.
    model = CramBERT(preset_config("tiny", max_seq_len=32))
    per_token = model.flops_per_token(32, 0.25)
    extra = policy_flops(model.config, 8, 32, 0.25, LearningLawPolicyConfig()) / (8 * 32)
    uniform_steps = math.ceil(per_token / extra) + 1  # then the policy needs at least one step fewer
    budget = uniform_steps * 256 * per_token
    settings = dict(max_flops=budget, batch_tokens=256, eval_rows=8, eval_interval=1.0)
    uniform = train(tiny_run(tiny_corpus, tmp_path / "uniform", **settings))
    policy = train(tiny_run(tiny_corpus, tmp_path / "policy", policy="learning-law", **settings))
    assert records(tmp_path / "uniform", "config")[0]["flops_per_token"] == pytest.approx(per_token)
    assert records(tmp_path / "policy", "config")[0]["flops_per_token"] == pytest.approx(per_token + extra)
    assert policy["flops"] == pytest.approx(policy["tokens"] * (per_token + extra)) and policy["flops"] >= budget
    assert uniform["tokens"] == uniform_steps * 256
    assert policy["tokens"] == math.ceil(budget / (256 * (per_token + extra))) * 256 < uniform["tokens"]


def test_growing_inside_one_budget(tiny_corpus, tmp_path):
    # tiny with one head of 64 grows into mini (4 heads of 64): LiGO keeps the head size and adds heads.
    settings = dict(max_steps=4, grow_at=0.5, grow_to="mini", ligo_steps=2, model_overrides={"n_head": 1}, eval_rows=8,
                    eval_interval=1.0)
    config = tiny_run(tiny_corpus, tmp_path, **settings)
    summary = train(config)
    # one schedule through growth: the grown model's fresh optimizer takes the lr where it was, no second warmup
    assert [r["lr"] for r in records(tmp_path, "train")] == pytest.approx([learning_rate(config, step / 4, step)
                                                                           for step in range(4)])
    grow_record = records(tmp_path, "grow")[0]
    assert grow_record["step"] == 2 and grow_record["to_params"] > grow_record["from_params"]
    checkpoint = load_checkpoint(summary["checkpoint"])
    assert (checkpoint["model_config"]["n_layer"], checkpoint["model_config"]["n_embd"]) == (4, 256)
    assert checkpoint["loop"]["grown"] and summary["steps"] == 4


def test_a_piece_of_a_schedule_is_that_part_of_the_whole():
    # --schedule-from/--schedule-to: the run's progress p sits at from + (to - from) p of one longer schedule,
    # for the learning rate and the batch ramp alike.
    whole = TrainConfig(lr=1e-3, peak_at=0.1, batch_tokens=128 * 64, seq_len=128, micro_batch_size=4, ramp_until=0.6)
    for start, end in [(0.0, 0.3), (0.3, 1.0), (0.2, 0.5)]:
        piece = replace(whole, schedule_from=start, schedule_to=end)
        for p in (0.0, 0.25, 1.0):
            at = start + (end - start) * p
            assert learning_rate(piece, p, step=7) == pytest.approx(learning_rate(whole, at, step=7), abs=1e-15)
            assert batch_rows(piece, p, 1) == batch_rows(whole, at, 1)
    assert learning_rate(replace(whole, schedule_from=0.3), 0.0, 0) == pytest.approx(1e-3 * 0.7 / 0.9)  # no warmup


def test_rewarm_ramps_the_lr_back_up_after_growth_only_when_asked():
    # --rewarm 0.1 with --grow-at 0.5: from the schedule's value at 0.5 the lr falls to 0 and climbs back to the
    # schedule by 0.6; before growth and after the ramp, and for a run that never grows, it is the schedule's.
    config = TrainConfig(lr=1.0, peak_at=0.1, grow_at=0.5, grow_to="mini", rewarm=0.1)
    one_cycle = lambda at: (1 - at) / 0.9  # noqa: E731  (past the peak)
    for progress, expected in [(0.4, one_cycle(0.4)), (0.5, 0.0), (0.55, 0.5 * one_cycle(0.55)), (0.6, one_cycle(0.6))]:
        assert learning_rate(config, progress, 0) == pytest.approx(expected)
    continued = TrainConfig(lr=1.0, peak_at=0.1, init_from="grown.pt", schedule_from=0.5, rewarm=0.1)
    assert learning_rate(continued, 0.0, 0) == 0.0 and learning_rate(continued, 0.1, 0) == pytest.approx(0.5 * one_cycle(0.55))
    assert learning_rate(replace(config, grow_at=0.0, grow_to=""), 0.5, 0) == pytest.approx(one_cycle(0.5))


def test_a_grown_checkpoint_continues_the_small_runs_schedule(tiny_corpus, tmp_path):
    # The small run covers [0, 0.5] of a one-cycle schedule and stops with the lr still up; the model grown from
    # it (--init-from, a fresh optimizer) takes its first step at the schedule's value at 0.5, not at a warmup's ~0.
    small = train(tiny_run(tiny_corpus, tmp_path / "small", max_steps=4, peak_at=0.1, schedule_to=0.5, eval_rows=8,
                           eval_interval=1.0))
    grown = grow_model(model_from_checkpoint(load_checkpoint(small["checkpoint"])), preset_config("tiny", n_layer=4),
                       "stack")
    save_checkpoint(str(tmp_path / "grown.pt"), model_checkpoint(grown, Tokenizer.gpt2()))
    train(tiny_run(tiny_corpus, tmp_path / "big", max_steps=2, peak_at=0.1, schedule_from=0.5, eval_rows=8,
                   eval_interval=1.0, init_from=str(tmp_path / "grown.pt"), seed=1))
    small_lrs = [r["lr"] for r in records(tmp_path / "small", "train")]
    grown_lrs = [r["lr"] for r in records(tmp_path / "big", "train")]
    at_the_stop = 3e-3 * (1 - 0.5) / (1 - 0.1)  # one-cycle's value where the small run's schedule stopped
    assert small_lrs[-1] > at_the_stop and grown_lrs[0] == pytest.approx(at_the_stop)
    assert grown_lrs[1] == pytest.approx(3e-3 * (1 - 0.75) / (1 - 0.1))  # and on down to 0 at the end


def test_unigram_line_matches_a_hand_computation():
    # Training tokens 0,0,1,2 in a vocabulary of 4: add-one counts 3,2,2,1 of 8.
    log_probs = unigram_log_probs(np.array([0, 0, 1, 2], dtype=np.uint16), 4)
    assert torch.allclose(log_probs, torch.log(torch.tensor([3, 2, 2, 1]) / 8.0))
    # Validation masked positions hold labels 0, 1, 3 (and -100 elsewhere); the unigram loss is their mean
    # -log p; the bytes are looked up per label id.
    batches = [(None, torch.tensor([[0, -100, 1], [-100, 3, -100]]))]
    reference = reference_metrics(batches, log_probs, torch.tensor([1.0, 2.0, 0.0, 4.0]))
    expected = -(math.log(3 / 8) + math.log(2 / 8) + math.log(1 / 8)) / 3
    assert reference == {"unigram_loss": pytest.approx(expected), "masked_bytes": 7.0, "masked_tokens": 3}


def test_evaluations_log_the_unigram_line_bits_per_byte_and_probes(tiny_corpus, tmp_path):
    train(tiny_run(tiny_corpus, tmp_path, max_steps=2))
    config, last = records(tmp_path, "config")[0], records(tmp_path, "eval")[-1]
    assert last["unigram_loss"] == config["unigram_loss"] and last["below_unigram"] == pytest.approx(
        last["unigram_loss"] - last["val_loss"])
    bits = last["val_loss"] * config["masked_tokens"] / config["masked_bytes"] / math.log(2)
    assert last["bits_per_byte"] == pytest.approx(bits)
    assert set(last["probes"]) == set(PROBES) and all(len(fill) == 5 for fills in last["probes"].values() for fill in fills)


def test_tiny_run_ends_below_its_unigram_line(tiny_corpus, tmp_path):
    # The synthetic grammar ("the cat sees the ball.") is easy from context, hard from counts alone.
    summary = train(tiny_run(tiny_corpus, tmp_path, max_steps=60, eval_interval=0.5))
    evals = records(tmp_path, "eval")
    assert evals[0]["val_loss"] > evals[0]["unigram_loss"]  # random init is worse than word counts...
    assert summary["final_val_loss"] < 0.8 * evals[-1]["unigram_loss"]  # ...and 60 steps beat them clearly


def test_a_checkpoint_of_another_tokenizer_is_refused(tiny_corpus, tmp_path):
    first = train(tiny_run(tiny_corpus, tmp_path / "gpt2", max_steps=1))
    documents = (tiny_corpus.parent / "corpus.txt").read_text()
    (tmp_path / "corpus.txt").write_text(documents)
    prepare(PrepareConfig(corpus=str(tmp_path / "corpus.txt"), out_dir=str(tmp_path / "bpe"), val_fraction=0.1,
                          vocab_size=320))
    with pytest.raises(ValueError, match=r"trained with tokenizer 'gpt2'.*'bpe\d+-"):
        train(tiny_run(tmp_path / "bpe", tmp_path / "next", max_steps=1, init_from=first["checkpoint"]))


def test_a_c4_run_trains_on_part_0_while_the_other_parts_are_prepared_in_the_background(tmp_path, monkeypatch, capsys):
    fake_c4(tmp_path, monkeypatch, documents_per_shard=300)  # ~11.6 k training tokens = ~375 rows of 32 a shard
    monkeypatch.chdir(tmp_path)  # the downloads go to ./data/cache/downloads
    # 40 steps of 512 tokens = 20 480 tokens, at most 1 pass: two shards, so the run must read part 1
    summary = train(tiny_run(tmp_path / "tokens", tmp_path / "run", corpus="c4", max_steps=40, batch_ramp=False,
                             max_passes=1, eval_rows=2, eval_interval=1.0, device="cpu", max_tokens_per_char=0))
    out = capsys.readouterr().out
    assert "budget ~20,480 tokens (40 steps): preparing 20,480 tokens of c4 (~2 shards" in out
    assert "preparing the other parts of" in out and summary["steps"] == 40
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    assert meta["complete"] and meta["parts"] == ["train-00000.bin", "train-00001.bin"]
    assert sorted(p.name for p in (tmp_path / "tokens").glob("train*")) == meta["parts"]  # shards 2, 3 not needed
    assert "part 1: " in (tmp_path / "tokens" / "prepare.log").read_text()  # written by the background process
    rows_of_part_0 = MLMBatches(TokenFile(str(tmp_path / "tokens" / "train-00000.bin"), Tokenizer.gpt2()), 32, 0.25).num_rows
    assert load_checkpoint(summary["checkpoint"])["data"] == {"pass": 0, "part": 1, "cursor": 40 * 16 - rows_of_part_0,
                                                              "seed": 0}
    assert multiprocessing.active_children() == []  # the preparer did not outlive train()


def test_a_run_in_a_folder_with_parts_missing_resumes_their_preparation_with_its_target(tmp_path, monkeypatch, capsys):
    fake_c4(tmp_path, monkeypatch, documents_per_shard=300)
    monkeypatch.chdir(tmp_path)
    # an earlier run that stopped after part 0 of a 2-shard target (20 480 tokens)
    prepare(PrepareConfig(corpus="c4", out_dir=str(tmp_path / "tokens"), max_train_tokens=20_480, max_tokens_per_char=0),
            max_parts=1)
    # this run's own budget would need one shard (15 360 tokens at 2 passes): the folder's target wins, unmeasured.
    # 30 steps of 16 rows read past part 0's ~375 rows, so the run waits for part 1 if it is not there yet.
    summary = train(tiny_run(tmp_path / "tokens", tmp_path / "run", corpus="c4", max_steps=30, batch_ramp=False,
                             eval_rows=2, eval_interval=1.0, device="cpu", max_tokens_per_char=0))
    out = capsys.readouterr().out
    assert "preparing the other parts of" in out and "budget ~" not in out and summary["steps"] == 30
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    assert meta["complete"] and meta["parts"] == ["train-00000.bin", "train-00001.bin"]
    assert meta["config"]["max_train_tokens"] == 20_480 and multiprocessing.active_children() == []
    assert load_checkpoint(summary["checkpoint"])["data"]["part"] == 1


def test_each_step_is_evaluated_once_even_where_the_interval_rounds_down(tiny_corpus, tmp_path):
    # 0.29 / 0.01 is 28.999… in floating point: the next evaluation once came out at the progress just evaluated,
    # and a loop that goes back to its top after an evaluation evaluated step 29 for ever
    train(tiny_run(tiny_corpus, tmp_path, max_steps=100, eval_interval=0.01, eval_rows=8, stop_after_steps=31))
    steps = [r["step"] for r in records(tmp_path, "eval")]
    assert steps == list(range(32))  # every step from 0 to the pause once, step 29 among them


def test_a_bpe_that_stops_short_of_vocab_size_gets_a_model_of_its_own_size(tmp_path):
    # A small corpus runs out of merges before --vocab-size: the model, built before the data, is built again
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(synthetic_documents(1500)) + "\n")
    summary = train(tiny_run(tmp_path / "tokens", tmp_path / "run", corpus=str(corpus), vocab_size=16384, max_steps=2,
                             eval_rows=8))
    checkpoint = load_checkpoint(summary["checkpoint"])
    rows = data_tokenizer(str(tmp_path / "tokens")).vocab_size
    assert rows < 16384 and checkpoint["model_config"]["vocab_size"] == rows and summary["steps"] == 2


def test_a_periodic_checkpoint_keeps_the_step_it_follows_on_the_budget(tiny_corpus, tmp_path, monkeypatch):
    # Every step takes >= 0.3 s; a checkpoint is due after every step. The elapsed time each save stores (what a
    # --resume starts from) must include the step just taken: before, it was read before that step, a free step.
    real_step, real_save, saved = train_module.train_step, train_module.save, []

    def slow_step(run, progress):
        time.sleep(0.3)
        return real_step(run, progress)

    def recording_save(run, path=None):
        saved.append((run.state.step, run.state.elapsed))
        real_save(run, path)

    monkeypatch.setattr(train_module, "train_step", slow_step)
    monkeypatch.setattr(train_module, "save", recording_save)
    train(tiny_run(tiny_corpus, tmp_path, max_steps=3, checkpoint_minutes=1e-6, eval_interval=1.0))
    periodic = saved[:-1]  # the last is the final save
    assert [step for step, _ in periodic] == [1, 2, 3]
    assert all(elapsed >= 0.3 * step for step, elapsed in periodic), periodic


def test_growth_fits_the_micro_batch_again_for_the_grown_model(tiny_corpus, tmp_path, monkeypatch):
    # --micro-batch-size auto was fitted to the small model; the grown one (4 x 256) is bigger. The same
    # out-of-memory trial as the auto micro-batch's tests: above 4 rows of the grown model, "CUDA out of memory".

    def fit_on_a_small_gpu(config, raw_model, optimizer, device, world_size):
        def fits(rows):
            if raw_model.config.n_embd > 64 and rows > 4:
                raise torch.OutOfMemoryError(f"CUDA out of memory: {rows} rows")
        full_rows = round(config.batch_tokens / config.seq_len / world_size)
        return replace(config, micro_batch_size=auto_micro_batch_size(full_rows, fits)), "auto: the largest that fit"

    monkeypatch.setattr(grow, "fit_to_machine", fit_on_a_small_gpu)
    config = tiny_run(tiny_corpus, tmp_path, micro_batch_size="auto", max_steps=4, grow_at=0.5, grow_to="mini",
                      ligo_steps=2, model_overrides={"n_head": 1}, eval_rows=8, eval_interval=1.0)
    summary = train(config)
    assert records(tmp_path, "config")[0]["config"]["micro_batch_size"] == 16  # 512 tokens of 32: one micro-batch
    assert records(tmp_path, "grow")[0]["micro_batch_size"] == 4
    assert load_checkpoint(summary["checkpoint"])["train_config"]["micro_batch_size"] == 4
    assert summary["steps"] == 4 and [r["batch_tokens"] for r in records(tmp_path, "train")] == [512] * 4
