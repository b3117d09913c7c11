"""Assignment 4: the budget's schedules and gradient accumulation (course/04-schedule.md)."""
import math

import torch

from course.kit import Assignment, byte_tokenizer
from course.pretrain import pretrain
from data.loader import mask_tokens
from model import CramBERT, make_optimizer, preset_config
from run.build import LoopState, Run
from run.config import TrainConfig
from run.device import gradient_scaler
from train import batch_rows, budget_progress, scheduled_learning_rate, train_step

ASSIGNMENT = Assignment(
    number=4, slug="schedule", title="One-cycle, batch ramp, accumulation",
    functions=("train.py:scheduled_learning_rate", "train.py:batch_rows", "train.py:budget_progress",
               "train.py:train_step"),
    metric="unigram_ratio",
    paper="Geiping & Goldstein 2022, Sec. 2 (budget) and Sec. 4.3 (one-cycle, batch ramp)")


def check_one_cycle():
    """one-cycle: 0 at the start, the peak at peak_at, 0 at the end, linear in between"""
    config = TrainConfig(lr=1e-3, peak_at=0.25)
    for progress, expected in [(0.0, 0.0), (0.125, 0.5e-3), (0.25, 1e-3), (0.625, 0.5e-3), (1.0, 0.0)]:
        got = scheduled_learning_rate(config, progress, step=7)
        assert math.isclose(got, expected, abs_tol=1e-12), f"lr at progress {progress}: {got} != {expected}"


def check_bert_and_constant():
    """bert: linear warmup then linear decay over steps; constant: the peak throughout"""
    bert = TrainConfig(lr=1e-3, schedule="bert", warmup_steps=10, schedule_steps=110)
    got = [scheduled_learning_rate(bert, 0.5, step) for step in (0, 5, 10, 60, 110, 200)]
    assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(got, [0, 5e-4, 1e-3, 5e-4, 0, 0])), f"bert: {got}"
    assert scheduled_learning_rate(TrainConfig(lr=2e-3, schedule="constant"), 0.9, 7) == 2e-3, "constant"


def check_batch_ramp():
    """batch rows: whole micro-batches on every process, ramped linearly to the full batch by ramp_until"""
    config = TrainConfig(batch_tokens=128 * 64, seq_len=128, micro_batch_size=4, ramp_until=0.6)
    got = [batch_rows(config, p, world_size=1) for p in (0.0, 0.3, 0.6, 1.0)]
    assert got == [4, 4 * round(1 + 15 * 0.5), 64, 64], f"rows at progress 0, 0.3, 0.6, 1: {got}"
    assert batch_rows(config, 0.6, world_size=2) == 64, "2 processes: 8 micro-steps of 4 rows each, 64 in all"
    assert batch_rows(TrainConfig(batch_tokens=128 * 64, seq_len=128, micro_batch_size=4, batch_ramp=False),
                      0.0, 1) == 64, "no ramp: the full batch from the start"


def check_budget_progress():
    """progress is the largest of the time, step and FLOP fractions spent"""
    config = TrainConfig(budget_seconds=100, max_steps=50, max_flops=1e12)
    state = LoopState(step=10, elapsed=30.0, flops=1e11)
    assert math.isclose(budget_progress(config, state), 0.3), "time 0.3 > steps 0.2 > FLOPs 0.1"
    state = LoopState(step=40, elapsed=30.0, flops=1e11)
    assert math.isclose(budget_progress(config, state), 0.8), "steps 0.8 is the largest"


class FixedRows:
    """Training rows for train_step that are one fixed, already masked batch (what MLMBatches.batch_after gives)."""

    def __init__(self, input_ids: torch.Tensor, labels: torch.Tensor):
        self.input_ids, self.labels = input_ids, labels

    def batch_after(self, offset: int, size: int):
        return self.input_ids[offset:offset + size], self.labels[offset:offset + size]

    def advance(self, size: int):
        pass


def one_step(micro_batch_size: int, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[dict, float]:
    """One train_step of a fresh tiny model on the 16-row batch, taken as micro-batches of micro_batch_size."""
    config = TrainConfig(preset="tiny", seq_len=input_ids.size(1), micro_batch_size=micro_batch_size,
                         batch_tokens=input_ids.numel(), batch_ramp=False, schedule="constant", lr=1e-2,
                         precision="fp32", mask_rate=0.25)
    torch.manual_seed(0)
    model = CramBERT(preset_config("tiny", vocab_size=byte_tokenizer().vocab_size, max_seq_len=config.seq_len))
    run = Run(config=config, rank=0, world_size=1, device=torch.device("cpu"), raw_model=model, model=model,
              optimizer=make_optimizer(model, config), policy=None, state=LoopState(), speed=None,
              flops_per_token=0.0, peak_flops=0.0, train_data=FixedRows(input_ids, labels),
              scaler=gradient_scaler(torch.device("cpu"), "fp32"))
    loss, grad_norm, rows = train_step(run, progress=0.5)
    assert rows == 16, f"train_step took {rows} rows, the full batch is 16"
    return {name: p.detach().clone() for name, p in model.state_dict().items()}, float(grad_norm)


def check_accumulation_matches_one_big_batch():
    """one step on 16 rows as 1 micro-batch of 16 or as 4 micro-batches of 4: the same gradient and weights"""
    tokenizer, generator = byte_tokenizer(), torch.Generator().manual_seed(5)
    ids = torch.randint(0, tokenizer.num_ordinary, (16, 32), generator=generator)
    input_ids, labels = mask_tokens(ids, 0.25, generator, tokenizer)  # the same count masked in every row
    (whole, whole_norm), (accumulated, accumulated_norm) = one_step(16, input_ids, labels), \
        one_step(4, input_ids, labels)
    assert math.isclose(whole_norm, accumulated_norm, rel_tol=1e-4), \
        f"gradient norm {accumulated_norm:.5f} with accumulation != {whole_norm:.5f} without: average the " \
        f"micro-batch losses (divide by the number of micro-steps), do not sum them"
    worst = max((whole[name] - accumulated[name]).abs().max().item() for name in whole)
    assert worst < 1e-5, f"weights differ by up to {worst:.2e} after one step"


def generated(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    peak_at, ramp_until = (0.05 + 0.9 * torch.rand(2, generator=generator)).tolist()
    config = TrainConfig(lr=1e-3, peak_at=peak_at, ramp_until=ramp_until, batch_tokens=64 * 96, seq_len=64,
                         micro_batch_size=int(torch.randint(1, 8, (1,), generator=generator)))
    progress = torch.rand(20, generator=generator).tolist() + [0.0, 1.0]
    return {"lr": [scheduled_learning_rate(config, p, 3) for p in progress],
            "rows": [batch_rows(config, p, world_size) for p in progress for world_size in (1, 3)]}


def experiment(seed: int) -> dict:
    """The tiny encoder pretrained on Wikipedia for 1,500 steps (course/pretrain.py), one-cycle, each 2,048-token
    batch taken as 4 micro-batches of 8 rows: assignment 2's run, which takes it whole, but for the masks (each
    micro-batch is masked on its own), so its band overlaps assignment 2's."""
    return pretrain(seed, name="tiny-accumulated", micro_batch_size=8)
