"""
Fine-tune a pretrained cramlm checkpoint on each GLUE task and report the dev-set scores.

    python glue_eval.py --ckpt out/ckpt.pt --glue-dir ../shared/data/glue --tasks all --seeds 5 --out glue.json
    python glue_eval.py --random-init mini --glue-dir ../shared/data/glue   # the no-pretraining baseline
    python glue_eval.py --ckpt CKPT --random-init CKPT --lr-grid 1e-4,3e-4,1e-3 --seeds 5   # both, compared
    python glue_eval.py --download data/glue                                # fetch the nine tasks first

The protocol is the one cramming uses for its crammed BERT (Geiping & Goldstein 2022, section
"Fine-tuning performance on GLUE"): one hyper-parameter set for every task (AdamW lr 4e-5, batch 16,
5 epochs, warmup then decay, dropout 0.1), a fresh classifier on the [CLS] token per task, scores on the
dev sets (GLUE's test labels are private), and the median over several fine-tuning seeds, because the
small tasks (RTE, MRPC, CoLA) vary a lot from seed to seed.
With --ckpt and --random-init together both arms run under one protocol, each choosing its own learning
rate from --lr-grid on its mean dev score, and the table adds pretrained - random-init with its standard error;
--method probe / lp-ft, --report-drift and --train-sizes look at why and where pretraining helps (README.md).
Scores are reported x100 and the GLUE average is the mean of task scores, a task with two metrics
(MRPC, QQP, STS-B, MNLI m/mm) scoring the mean of the two, as the GLUE paper (Wang et al. 2018) does.
"""
import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from data.files import check_writable, write_json
from data.glue import TASKS, GlueTask, compute_metrics, download_glue, read_tasks, subsample
from data.tokenizer import Tokenizer
from evaluation.finetune import (SMALL_TASK_ROWS, FinetuneConfig, collate, encode, epochs_for, finetune_task, predict,
                                 probe_task)
from evaluation.transfer import PROBE_HELD_OUT, PROBE_L2_GRID, DriftMonitor
from model import CramBERT
from plot import plot_label_efficiency
from run.checkpoint import encoder_from_file, encoder_shape
from run.device import PRECISIONS, keep_freed_memory, training_precision

DEFAULT_GLUE_DIR = (Path(__file__).resolve().parent / ".." / "shared" / "data" / "glue").resolve()


# ----------------------------------------------------------------------------------------------------
# The protocol: arms, learning rates, seeds, training-set sizes; mean, sd and the difference's standard error

@dataclass
class Arm:
    name: str  # "pretrained" or "random-init": the column it gets in the tables
    mlm_model: CramBERT  # its weights start the classifier when pretrained; only its config is used otherwise
    tokenizer: Tokenizer  # the vocabulary of the encoder
    pretrained: bool  # start from mlm_model's weights (True) or from a fresh init of its shape (False)
    source: str  # the checkpoint path or preset, for the results file


def score_seed(arm: Arm, task: GlueTask, train: tuple, dev_sets: list, config: FinetuneConfig, seed: int,
               device="cpu", report_drift: bool = False) -> tuple[dict, dict]:
    """One run of config.method: ({metric: fraction} on every dev set, {what the run chose or measured})."""
    notes = {}
    if config.method == "probe":
        answer, notes["probe_l2"] = probe_task(arm.mlm_model, task, train, config, seed, device, arm.pretrained,
                                               arm.tokenizer)
    else:
        monitor = None
        if report_drift:  # a fixed batch of the first training sentences, and the token ids the training set uses
            sequences = encode(arm.tokenizer, train[0], train[1], config.max_len)
            seen = torch.tensor(sorted({token for ids in sequences for token in ids}))
            monitor = DriftMonitor(collate(sequences[:config.eval_batch_size], device, arm.tokenizer.pad_id), seen)
        model = finetune_task(arm.mlm_model, task, train, config, seed, device, arm.pretrained, arm.tokenizer,
                              monitor=monitor)
        if monitor:
            notes["drift"] = monitor.records

        def answer(texts_a, texts_b):
            return predict(model, texts_a, texts_b, config, device, arm.tokenizer)
    metrics = {}
    for suffix, (texts_a, texts_b, labels) in dev_sets:
        metrics.update(compute_metrics(task, answer(texts_a, texts_b), labels, suffix))
    return metrics, notes


def task_scores(per_seed: dict) -> np.ndarray:
    """Each seed's task score: the mean of the task's metrics (GLUE's rule for MRPC, STS-B, ...)."""
    return np.mean([values for values in per_seed.values()], axis=0)


def mean_sd(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); sd None from one value."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None


def difference(first, second) -> dict:
    """mean(first) - mean(second) and its standard error sqrt(sd₁²/n₁ + sd₂²/n₂) (independent seeds on each
    side); se None unless both sides have two values or more."""
    (mean_1, sd_1), (mean_2, sd_2) = mean_sd(first), mean_sd(second)
    se = None if sd_1 is None or sd_2 is None else math.sqrt(sd_1 ** 2 / len(first) + sd_2 ** 2 / len(second))
    return {"difference": mean_1 - mean_2, "se": se}


def run_task(arm: Arm, task: GlueTask, train: tuple, dev_sets: list, config: FinetuneConfig, lr_grid: list,
             seeds: int = 1, device="cpu", report_drift: bool = False) -> dict:
    """Every learning rate of the grid with every seed; the rate with the best mean dev score is this arm's
    choice, and its seeds are reported: selection on dev, the same rule for every arm. Scores are x100."""
    config = replace(config, epochs=epochs_for(config, len(train[2])))
    per_lr, notes = {}, {}
    for lr in lr_grid:  # None: the probe, which has no learning rate
        run_config = config if lr is None else replace(config, learning_rate=lr)
        for seed in range(seeds):
            metrics, seed_notes = score_seed(arm, task, train, dev_sets, run_config, seed, device, report_drift)
            for name, value in metrics.items():
                per_lr.setdefault(str(lr), {}).setdefault(name, []).append(100 * value)
            if seed_notes:
                notes.setdefault(str(lr), []).append(seed_notes)
    chosen = max(per_lr, key=lambda lr: task_scores(per_lr[lr]).mean())  # the first of equals
    per_seed = per_lr[chosen]
    return {"chosen_lr": None if chosen == "None" else float(chosen), "epochs": config.epochs,
            "train_examples": len(train[2]), "mean": {name: mean_sd(values)[0] for name, values in per_seed.items()},
            "sd": {name: mean_sd(values)[1] for name, values in per_seed.items()},
            "median": {name: float(np.median(values)) for name, values in per_seed.items()},
            "score": mean_sd(task_scores(per_seed)), "per_seed": per_seed, "per_lr": per_lr, "notes": notes}


def compare_arms(tasks: dict, arm_names: list) -> dict:
    """The GLUE average of each arm (its mean and sd over seeds: seed i's average is the mean over tasks of
    seed i's task scores), and, for two arms, first minus second per task and on the average."""
    per_seed_average = {arm: np.mean([task_scores(records[arm]["per_seed"]) for records in tasks.values()], axis=0)
                        for arm in arm_names}
    block = {"average": {arm: dict(zip(("mean", "sd"), mean_sd(values)), per_seed=values.tolist())
                         for arm, values in per_seed_average.items()}}
    if len(arm_names) == 2:
        first, second = arm_names
        block["difference"] = {name: difference(task_scores(records[first]["per_seed"]),
                                                task_scores(records[second]["per_seed"]))
                               for name, records in tasks.items()}
        block["difference"]["average"] = difference(per_seed_average[first], per_seed_average[second])
    return block


def run_protocol(arms: list, task_data: dict, config: FinetuneConfig, lr_grid: list, seeds: int, sizes: list,
                 subsample_seed: int = 0, device="cpu", report_drift: bool = False) -> dict:
    """Every training-set size x task x arm. A size is a fixed subsample drawn with subsample_seed, the same rows
    for every arm, and the smaller sizes nested in the larger ones (subsample keeps a prefix of one permutation)."""
    results = {}
    for size in sizes:
        tasks = {}
        for name, (train, dev_sets) in task_data.items():
            subset = subsample(train, size, subsample_seed)
            tasks[name] = {arm.name: run_task(arm, TASKS[name], subset, dev_sets, config, lr_grid, seeds, device,
                                              report_drift) for arm in arms}
        results[size_label(size)] = {"tasks": tasks, **compare_arms(tasks, [arm.name for arm in arms])}
    return results


def size_label(size: int | None) -> str:
    return "all" if size is None else str(size)


# ----------------------------------------------------------------------------------------------------
# Tables and the label-efficiency plot

def format_cell(mean: float, spread: float | None, signed: bool = False) -> str:
    """'mean ± spread'; 'n/a' for the spread of one seed."""
    return (f"{mean:+.2f}" if signed else f"{mean:.2f}") + (" ± n/a" if spread is None else f" ± {spread:.2f}")


def format_table(block: dict, arm_names: list, skipped: dict) -> str:
    """One training-set size: each task's metrics as mean ± sd over seeds per arm, the task score's
    difference ± its standard error (two arms), each arm's chosen lr and epochs, and the GLUE average."""
    two, width = len(arm_names) == 2, 16
    difference_column = f"{'difference ± SE':>{width + 2}}" if two else ""
    lines = [f"{'task':<6} {'metric':<12} " + "".join(f"{arm:>{width}}" for arm in arm_names) + difference_column]
    for name, records in block["tasks"].items():
        metrics = list(records[arm_names[0]]["mean"])
        rows = [(metric, [(records[arm]["mean"][metric], records[arm]["sd"][metric]) for arm in arm_names])
                for metric in metrics]
        if len(metrics) > 1:  # the task score (mean of its metrics): what the difference and the average use
            rows.append(("score", [records[arm]["score"] for arm in arm_names]))
        for index, (label, cells) in enumerate(rows):
            line = f"{name:<6} {label:<12} " + "".join(f"{format_cell(*cell):>{width}}" for cell in cells)
            if two and index == len(rows) - 1:
                change = block["difference"][name]
                line += f"{format_cell(change['difference'], change['se'], signed=True):>{width + 2}}"
            lines.append(line)
        choices = ["probe" if records[arm]["chosen_lr"] is None else
                   f"{records[arm]['chosen_lr']:g}, {records[arm]['epochs']}" for arm in arm_names]
        lines.append(f"{name:<6} {'lr, epochs':<12} " + "".join(f"{choice:>{width}}" for choice in choices))
    lines += [f"{name:<6} skipped: {reason}" for name, reason in skipped.items()]
    average = "".join(f"{format_cell(block['average'][arm]['mean'], block['average'][arm]['sd']):>{width}}"
                      for arm in arm_names)
    line = f"{'GLUE average':<19} " + average
    if two:
        change = block["difference"]["average"]
        line += f"{format_cell(change['difference'], change['se'], signed=True):>{width + 2}}"
    if skipped:  # the mean of the tasks that ran is not the GLUE average: say so, and which are missing
        ran = len(block["tasks"])
        line += f"  (partial: {ran} of {ran + len(skipped)} tasks; missing {', '.join(skipped)})"
    return "\n".join(lines + [line])


def label_efficiency(results: dict, arm_names: list) -> dict:
    """{arm: [(training examples, mean, standard error of the mean)]} per size, on the GLUE average of the tasks
    run (one task: its score); x is the largest task's training rows at that size."""
    curves = {arm: [] for arm in arm_names}
    for block in results.values():
        rows = max(records[arm_names[0]]["train_examples"] for records in block["tasks"].values())
        for arm in arm_names:
            average = block["average"][arm]
            se = None if average["sd"] is None else average["sd"] / math.sqrt(len(average["per_seed"]))
            curves[arm].append((rows, average["mean"], se))
    return curves


def format_sizes_table(results: dict, arm_names: list) -> str:
    """Rows: training-set sizes; columns: each arm's score (GLUE average of the tasks run) as mean ± sd over
    seeds, and the difference ± SE for two arms."""
    lines = [f"{'labels':<8}" + "".join(f"{arm:>16}" for arm in arm_names)
             + (f"{'difference ± SE':>18}" if len(arm_names) == 2 else "")]
    for size, block in results.items():
        line = f"{size:<8}" + "".join(f"{format_cell(block['average'][arm]['mean'], block['average'][arm]['sd']):>16}"
                                      for arm in arm_names)
        if len(arm_names) == 2:
            change = block["difference"]["average"]
            line += f"{format_cell(change['difference'], change['se'], signed=True):>18}"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# The command line

def parse_tasks(text: str) -> list[str]:
    names = list(TASKS) if text == "all" else [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or text!r}; choose from {', '.join(TASKS)} or 'all'")
    return names


def parse_list(text: str, flag: str, convert, allow_all: bool = False) -> list:
    """A comma-separated flag value: positive numbers (and 'all' -> None where allowed)."""
    values = []
    for item in (item.strip() for item in text.split(",") if item.strip()):
        if allow_all and item == "all":
            values.append(None)
            continue
        try:
            value = convert(item)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise ValueError(f"{flag} {text!r}: {item!r} is not a positive number" + (" or 'all'" if allow_all else ""))
        values.append(value)
    if not values:
        raise ValueError(f"{flag} is empty")
    return values


def load_arms(args) -> list[Arm]:
    """The pretrained arm (--ckpt) and/or the random-init arm (--random-init: a checkpoint's exact shape and
    tokenizer, or a preset with GPT-2's vocabulary)."""
    arms = []
    if args.ckpt:
        arms.append(Arm("pretrained", *encoder_from_file(args.ckpt), pretrained=True, source=args.ckpt))
    if args.random_init:  # only the model's config is used (build_classifier with pretrained=False)
        arms.append(Arm("random-init", *encoder_shape(args.random_init), pretrained=False,
                        source=f"random-init {args.random_init}"))
    if not arms:
        raise ValueError("nothing to evaluate: pass --ckpt, --random-init or both (or --download DIR)")
    return arms


def download_command(args):
    """--download DIR: fetch the --tasks, check that they parse, report the counts."""
    try:
        task_names = parse_tasks(args.tasks)
    except ValueError as error:
        sys.exit(f"error: {error}")
    checked, failed = download_glue(args.download, task_names)
    for name, counts in checked.items():
        print(f"{name}: " + ", ".join(f"{file} {count:,} examples" for file, count in counts.items()))
    if failed:
        sys.exit("\n".join(f"error: {name}: {reason}" for name, reason in failed.items()))
    print(f"GLUE is in {args.download}: python glue_eval.py --ckpt CKPT --glue-dir {args.download}")
    return checked, None


def build_parser() -> argparse.ArgumentParser:
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(
        description="Fine-tune a cramlm checkpoint on GLUE and report dev scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The defaults are cramming's GPU protocol for a BERT-base-sized model. For the small CPU model,\n"
               "compare both arms under one protocol in which each picks its own learning rate (README.md):\n"
               "  --ckpt CKPT --random-init CKPT --lr-grid 1e-4,3e-4,1e-3 --seeds 5 --batch-size 32 --epochs 3\n"
               "  --epochs-small 10 --pooling mean --tasks cola,sst2,mrpc,stsb,rte --max-train-examples 20000")
    # --- what to evaluate ---
    parser.add_argument("--ckpt", help="cramlm checkpoint written by train.py: the pretrained arm")
    parser.add_argument("--random-init", metavar="PRESET_OR_CKPT", help="no pretraining: a fresh encoder of this "
                        "model.py preset (tiny, mini, ...; GPT-2 vocabulary) or of a checkpoint's exact shape and "
                        "tokenizer (its weights unused): the baseline pretraining must beat. With --ckpt too, both "
                        "arms run under the same protocol and the table adds pretrained - random-init ± its SE")
    parser.add_argument("--download", metavar="DIR", help="fetch the --tasks from GLUE's public location into DIR in "
                        "GLUE's TSV layout, check that they parse, and exit; then pass --glue-dir DIR")
    parser.add_argument("--glue-dir", default=str(DEFAULT_GLUE_DIR), help="folder holding CoLA/, SST-2/, ...")
    parser.add_argument("--tasks", default="all", help=f"comma-separated subset of {','.join(TASKS)}, or 'all'")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tuning runs per task, arm and lr; the table "
                        "gives mean ± sd over them, the JSON every seed and the median (cramming: median of 5)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--plot", metavar="PNG", help="with --train-sizes: draw score against labels (log x), one "
                        "line per arm with standard-error bars (needs matplotlib)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="score the tasks that can run when others' files are missing or damaged (the average is "
                             "then labelled partial); by default that is an error, found before any fine-tuning. "
                             "Offline here QNLI and MNLI have no train.tsv and QQP is absent, so --tasks all needs it")
    # --- the protocol ---
    parser.add_argument("--method", choices=("finetune", "probe", "lp-ft"), default=defaults.method,
                        help="finetune: train everything; probe: frozen encoder, a logistic (STS-B: ridge) regression "
                             "on its standardised sentence vectors, L2 chosen on 20%% of the training rows; lp-ft: "
                             "the head is trained first on the frozen encoder (--lp-lr), then everything is fine-tuned "
                             "(Kumar et al. 2022)")
    parser.add_argument("--lp-lr", type=float, default=defaults.lp_learning_rate,
                        help="lp-ft: peak learning rate of the head-only phase (the full phase uses --lr / --lr-grid)")
    parser.add_argument("--lr-grid", metavar="LR,LR,...", help="learning rates each arm tries on each task with all "
                        "seeds; the one with the best mean dev score is its choice (overrides --lr)")
    parser.add_argument("--layer-decay", type=float, default=defaults.layer_decay, help="layer-wise lr decay "
                        "(ELECTRA: 0.8): the head at lr, the top block at lr*d^2, ..., the embeddings at lr*d^(L+2)")
    parser.add_argument("--epochs-small", type=int, help=f"epochs for a task fine-tuned on fewer than "
                        f"{SMALL_TASK_ROWS:,} rows (default: --epochs)")
    parser.add_argument("--train-sizes", metavar="N,N,...,all", help="label efficiency: run everything once per "
                        "training-set size, each a fixed subsample (--subsample-seed), nested, the same for every arm")
    parser.add_argument("--subsample-seed", type=int, default=0, help="seed of the training-set subsamples")
    parser.add_argument("--report-drift", action="store_true", help="record, while fine-tuning, how far the token "
                        "embedding, each norm, each block and the head have moved and the pooled vector's norm, at "
                        "steps 0, 10, 50, 200 and the last (into the JSON)")
    add_hyperparameter_flags(parser, defaults)
    return parser


def add_hyperparameter_flags(parser: argparse.ArgumentParser, defaults: FinetuneConfig):
    """Fine-tuning hyper-parameters: one set for every task, as in cramming; deviations for quick CPU runs."""
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="peak learning rate")
    parser.add_argument("--beta1", type=float, default=defaults.beta1, help="AdamW beta1")
    parser.add_argument("--beta2", type=float, default=defaults.beta2, help="AdamW beta2")
    parser.add_argument("--eps", type=float, default=defaults.eps, help="AdamW epsilon")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per step")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training set")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_fraction, help="warmup fraction of steps")
    parser.add_argument("--schedule", choices=("linear", "cosine"), default=defaults.schedule,
                        help="learning-rate decay after warmup")
    parser.add_argument("--max-len", type=int, default=defaults.max_len, help="tokens per example")
    parser.add_argument("--dropout", type=float, default=defaults.dropout, help="dropout while fine-tuning "
                        "(cramming: 0.1; pretraining ran without, and the JSON records both)")
    parser.add_argument("--pooling", choices=("cls", "mean"), default=defaults.pooling,
                        help="sentence vector for the head: the [CLS] position (BERT) or the mean over tokens")
    parser.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                        help="autocast precision of fine-tuning and prediction (auto: as train.py decides for this device)")
    parser.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size, help="dev batch size")
    # --- deviations from the GLUE protocol, for quick CPU runs ---
    parser.add_argument("--max-train-examples", type=int, help="fine-tune on a fixed random subset of this size "
                        "(deviation from GLUE; default: the whole train set)")
    parser.add_argument("--max-eval-examples", type=int, help="score a fixed random subset of the dev set "
                        "(deviation from GLUE; default: the whole dev set)")


def protocol_from_args(args) -> tuple[FinetuneConfig, list, list]:
    """(config, learning-rate grid, training-set sizes) from the flags; ValueError on a bad combination."""
    if args.train_sizes and args.max_train_examples:
        raise ValueError("--train-sizes and --max-train-examples both set the training-set size: pass one")
    if args.seeds < 1 or (args.epochs_small is not None and args.epochs_small < 1):
        raise ValueError("--seeds and --epochs-small must be at least 1")
    if not 0 < args.layer_decay <= 1:
        raise ValueError(f"--layer-decay {args.layer_decay}: must be in (0, 1]")
    config = FinetuneConfig(
        learning_rate=args.lr, beta1=args.beta1, beta2=args.beta2, eps=args.eps, weight_decay=args.weight_decay,
        batch_size=args.batch_size, epochs=args.epochs, warmup_fraction=args.warmup, schedule=args.schedule,
        max_len=args.max_len, dropout=args.dropout, pooling=args.pooling, eval_batch_size=args.eval_batch_size,
        max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
        precision=args.precision, layer_decay=args.layer_decay, epochs_small=args.epochs_small, method=args.method,
        lp_learning_rate=args.lp_lr)
    lr_grid = parse_list(args.lr_grid, "--lr-grid", float) if args.lr_grid else [args.lr]
    sizes = parse_list(args.train_sizes, "--train-sizes", int, allow_all=True) if args.train_sizes \
        else [args.max_train_examples]
    return config, [None] if args.method == "probe" else lr_grid, sizes


def results_record(results: dict, skipped: dict, config: FinetuneConfig, lr_grid: list, sizes: list, arms: list,
                   args, device: str) -> dict:
    """The results file: every score, and every choice the protocol made or was given."""
    protocol = {**asdict(config), "precision_used": training_precision(torch.device(device), config.precision),
                "lr_grid": lr_grid, "lr_choice": "per arm and task: the best mean dev score over seeds",
                "seeds": args.seeds, "train_sizes": [size_label(size) for size in sizes],
                "subsample_seed": args.subsample_seed, "small_task_rows": SMALL_TASK_ROWS,
                "probe_l2_grid": PROBE_L2_GRID, "probe_held_out": PROBE_HELD_OUT, "device": device,
                "report_drift": args.report_drift}
    return {"results": results, "partial": bool(skipped), "skipped": skipped, "protocol": protocol,
            "arms": {arm.name: {"source": arm.source, "pretrained": arm.pretrained, "tokenizer": arm.tokenizer.name,
                                "pretraining_dropout": arm.mlm_model.config.dropout,
                                "model_config": asdict(arm.mlm_model.config)} for arm in arms}}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.download:
        if args.ckpt or args.random_init:
            sys.exit("error: --download runs alone; fine-tune in a second command with --glue-dir")
        return download_command(args)
    try:
        for path, flag in ((args.out, "--out"), (args.plot, "--plot")):  # now, not after an hour of fine-tuning
            if path:  # a missing folder is made; a file in its place or a read-only one is an error
                check_writable(path, flag, create=True)
        config, lr_grid, sizes = protocol_from_args(args)
        task_names = parse_tasks(args.tasks)
        arms = load_arms(args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    for arm in arms:
        if args.max_len > arm.mlm_model.config.max_seq_len:
            sys.exit(f"error: --max-len {args.max_len} exceeds the {arm.name} model's max_seq_len "
                     f"{arm.mlm_model.config.max_seq_len}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    keep_freed_memory(device)
    print(f"fine-tuning on {device}: {json.dumps(asdict(config))}, lr grid {lr_grid}")
    task_data, skipped = read_tasks(task_names, args.glue_dir, config.max_eval_examples)
    if skipped and not args.skip_missing:
        lines = [f"{name}: {reason}" for name, reason in skipped.items()]
        sys.exit("error: " + "\nerror: ".join(lines) + "\nerror: fix these files, leave the tasks out of --tasks, "
                 "or pass --skip-missing to score the others (the average is then partial)")
    for name, reason in skipped.items():
        print(f"{name}: skipped ({reason})", file=sys.stderr)
    if not task_data:  # --skip-missing skipped them all: nothing to score, which is no success
        sys.exit(f"error: no task could be scored (all {len(skipped)} skipped, reasons above)")
    results = run_protocol(arms, task_data, config, lr_grid, args.seeds, sizes, args.subsample_seed, device,
                           args.report_drift)
    arm_names = [arm.name for arm in arms]
    for size, block in results.items():
        print(f"\ntraining examples: {size}\n" + format_table(block, arm_names, skipped))
    if len(results) > 1:
        print("\nlabel efficiency (GLUE average of the tasks run):\n" + format_sizes_table(results, arm_names))
    payload = results_record(results, skipped, config, lr_grid, sizes, arms, args, device)
    if args.out:
        write_json(args.out, payload, indent=2)
    if args.plot:
        written = plot_label_efficiency(label_efficiency(results, arm_names), args.plot)
        print(f"plot written to {args.plot}" if written else "matplotlib is not installed: no plot "
              "(pip install matplotlib)")
    return payload


if __name__ == "__main__":
    main()
