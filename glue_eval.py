"""
Fine-tune a pretrained cramlm checkpoint on each GLUE task and report the dev-set scores.

    python glue_eval.py --ckpt out/ckpt.pt --glue-dir ../shared/data/glue --tasks all --seeds 5 --out glue.json
    python glue_eval.py --random-init mini --glue-dir ../shared/data/glue   # the no-pretraining baseline
    python glue_eval.py --download data/glue                                # fetch the nine tasks first

The protocol is the one cramming uses for its crammed BERT (Geiping & Goldstein 2022, section
"Fine-tuning performance on GLUE"): one hyper-parameter set for every task (AdamW lr 4e-5, batch 16,
5 epochs, warmup then decay, dropout 0.1), a fresh classifier on the [CLS] token per task, scores on the
dev sets (GLUE's test labels are private), and the median over several fine-tuning seeds, because the
small tasks (RTE, MRPC, CoLA) vary a lot from seed to seed.
Scores are reported x100 and the GLUE average is the mean of task scores, a task with two metrics
(MRPC, QQP, STS-B, MNLI m/mm) scoring the mean of the two, as the GLUE paper (Wang et al. 2018) does.
"""
import argparse
import json
import math
import os
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.fetch import DownloadError, fetch
from checkpoint import load_checkpoint, model_from_checkpoint, tokenizer_from_checkpoint
from common import autocast, gradient_scaler, training_precision, write_json
from data.tokenizer import Tokenizer
from model import CramBERT, CramBERTForSequenceClassification, preset_config

DEFAULT_GLUE_DIR = (Path(__file__).resolve().parent / ".." / "shared" / "data" / "glue").resolve()


# ----------------------------------------------------------------------------------------------------
# Metrics, exactly as GLUE defines them, in numpy (no scipy / sklearn)

def accuracy(predictions, labels) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1_score(predictions, labels) -> float:
    """Binary F1 of the positive class 1 (MRPC: "is a paraphrase"); 0 when there is no true positive."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    true_pos = np.sum((predictions == 1) & (labels == 1))
    false_pos = np.sum((predictions == 1) & (labels != 1))
    false_neg = np.sum((predictions != 1) & (labels == 1))
    return float(2 * true_pos / (2 * true_pos + false_pos + false_neg)) if true_pos else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)), CoLA's metric: unlike accuracy it
    gives 0 to a classifier that always answers "acceptable" (70% of CoLA). An empty margin -> 0."""
    predictions, labels = np.asarray(predictions) == 1, np.asarray(labels) == 1
    tp, tn = np.sum(predictions & labels), np.sum(~predictions & ~labels)
    fp, fn = np.sum(predictions & ~labels), np.sum(~predictions & labels)
    denominator = math.sqrt(float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(x, y) -> float:
    """Linear correlation; 0 when either side is constant (undefined there, and worth nothing)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.sum(x * x) * np.sum(y * y)))
    return float(np.sum(x * y) / denominator) if denominator else 0.0


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of the ranks they span ([10, 20, 20, 30] -> [1, 2.5, 2.5, 4])."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Each run of equal values is one group; every member gets the average of the group's positions.
    group_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_ends = np.r_[group_starts[1:], len(values)]  # exclusive
    ranks = np.empty(len(values), dtype=np.float64)
    for start, end in zip(group_starts, group_ends):
        ranks[order[start:end]] = (start + 1 + end) / 2
    return ranks


def spearman(x, y) -> float:
    """Pearson correlation of the (tie-averaged) ranks."""
    return pearson(average_ranks(x), average_ranks(y))


# ----------------------------------------------------------------------------------------------------
# The nine tasks and their files

@dataclass(frozen=True)
class GlueTask:
    name: str  # short name used on the command line and in the results
    folder: str  # GLUE's folder name under --glue-dir
    text_a: str  # column holding the first sentence
    text_b: str | None  # column holding the second sentence of a pair task; None for single sentences
    label_column: str  # column holding the gold label
    labels: tuple | None  # label strings as written in the file, in class-id order; None = regression
    metrics: tuple  # metric names, computed by compute_metrics
    dev_files: tuple = (("", "dev.tsv"),)  # (metric suffix, file); MNLI scores two dev sets
    columns: tuple | None = None  # column names for a file without a header row (CoLA)

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


TASKS = {task.name: task for task in [
    GlueTask("cola", "CoLA", "sentence", None, "label", ("0", "1"), ("mcc",),
             columns=("source", "label", "original_label", "sentence")),
    GlueTask("sst2", "SST-2", "sentence", None, "label", ("0", "1"), ("accuracy",)),
    GlueTask("mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("0", "1"), ("f1", "accuracy")),
    GlueTask("stsb", "STS-B", "sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    GlueTask("qqp", "QQP", "question1", "question2", "is_duplicate", ("0", "1"), ("f1", "accuracy")),
    GlueTask("mnli", "MNLI", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"),
             ("accuracy",), dev_files=(("_m", "dev_matched.tsv"), ("_mm", "dev_mismatched.tsv"))),
    GlueTask("qnli", "QNLI", "question", "sentence", "label", ("entailment", "not_entailment"), ("accuracy",)),
    GlueTask("rte", "RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("accuracy",)),
    GlueTask("wnli", "WNLI", "sentence1", "sentence2", "label", ("0", "1"), ("accuracy",)),
]}


def compute_metrics(task: GlueTask, predictions, labels, suffix: str = "") -> dict:
    functions = {"accuracy": accuracy, "f1": f1_score, "mcc": matthews_corrcoef,
                 "pearson": pearson, "spearman": spearman}
    return {name + suffix: functions[name](predictions, labels) for name in task.metrics}


class GlueDataError(ValueError):
    """A GLUE file that cannot be read; the message names the file (and line)."""


def read_tsv(path, columns: tuple | None = None) -> list[tuple[int, dict]]:
    """(line number, row as a dict keyed by column name) for each row of a tab-separated file. The names
    come from the header row, or from `columns` for a file without one. GLUE's sentences contain stray
    quote characters, so we split on tabs only (csv's default quoting would swallow lines);
    utf-8-sig drops MRPC's byte-order mark."""
    with open(path, encoding="utf-8-sig") as file:
        lines = [line.rstrip("\r\n") for line in file]
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line]  # skip blank lines
    if columns is None:
        if not numbered:
            raise GlueDataError(f"{path} is empty (expected a header row)")
        columns, numbered = tuple(numbered[0][1].split("\t")), numbered[1:]
    rows = []
    for number, line in numbered:
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise GlueDataError(f"{path}:{number}: {len(fields)} tab-separated fields, expected {len(columns)}")
        rows.append((number, dict(zip(columns, fields))))
    return rows


def load_examples(task: GlueTask, path) -> tuple[list, list, list]:
    """(texts_a, texts_b, labels) of one labelled split: labels are class ids, or float scores for STS-B;
    texts_b is a list of None for single-sentence tasks. Errors name the file and line."""
    rows = read_tsv(path, task.columns)
    if not rows:
        raise GlueDataError(f"{path} has no examples")
    needed = [task.text_a, task.label_column] + ([task.text_b] if task.text_b else [])
    missing = [name for name in needed if name not in rows[0][1]]
    if missing:
        raise GlueDataError(f"{path}: no column {missing} (columns are {list(rows[0][1])})")
    texts_a, texts_b, labels = [], [], []
    for number, row in rows:
        raw = row[task.label_column].strip()
        if task.labels is None:
            try:
                labels.append(float(raw))
            except ValueError:
                raise GlueDataError(f"{path}:{number}: score {raw!r} is not a number") from None
        elif raw in task.labels:
            labels.append(task.labels.index(raw))
        else:
            raise GlueDataError(f"{path}:{number}: unknown label {raw!r}; expected one of {task.labels}")
        texts_a.append(row[task.text_a])
        texts_b.append(row[task.text_b] if task.text_b else None)
    return texts_a, texts_b, labels


def subsample(examples: tuple, max_examples: int | None, seed: int = 0) -> tuple:
    """A fixed random subset (the same for every fine-tuning seed), so a capped run is still representative
    (CoLA's dev file, for one, is sorted by source)."""
    n = len(examples[0])
    if max_examples is None or n <= max_examples:
        return examples
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:max_examples])
    return tuple([column[i] for i in keep] for column in examples)


# ----------------------------------------------------------------------------------------------------
# Fine-tuning

@dataclass
class FinetuneConfig:
    learning_rate: float = 4e-5  # peak AdamW learning rate (cramming's single GLUE setting)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay (cramming uses 0.98 in pretraining and fine-tuning)
    eps: float = 1e-6  # AdamW epsilon
    weight_decay: float = 0.0  # no weight decay in fine-tuning
    batch_size: int = 16  # examples per optimizer step
    epochs: int = 5  # passes over the training set
    warmup_fraction: float = 0.1  # first 10% of steps ramp the lr up linearly from 0
    schedule: str = "linear"  # decay after warmup: "linear" or "cosine", both to 0
    max_len: int = 128  # tokens per example including [CLS]/[SEP]; the longer sentence is truncated first
    dropout: float = 0.1  # dropout during fine-tuning (pretraining runs without)
    pooling: str = "cls"  # sentence vector: the [CLS] position (BERT) or the mean of all tokens (model.py says why)
    eval_batch_size: int = 64  # examples per forward pass when scoring the dev set
    max_train_examples: int | None = None  # deviation from GLUE: subsample train for quick CPU runs
    max_eval_examples: int | None = None  # deviation from GLUE: subsample dev for quick CPU runs


def learning_rate(step: int, total_steps: int, config: FinetuneConfig) -> float:
    """Linear warmup over the first warmup_fraction of steps, then linear or cosine decay to 0."""
    warmup_steps = max(1, math.ceil(config.warmup_fraction * total_steps))
    if step < warmup_steps:
        return config.learning_rate * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if config.schedule == "cosine":
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
    return config.learning_rate * (1 - progress)


def encode(tokenizer: Tokenizer, texts_a: list, texts_b: list, max_len: int) -> list[list[int]]:
    return [tokenizer.encode_pair(a, b, max_len=max_len) for a, b in zip(texts_a, texts_b)]


def collate(sequences: list[list[int]], device, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of this batch (not to max_len): short tasks like SST-2 then cost a
    fraction of the compute. The attention mask keeps the [PAD] positions out of attention."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids)
    return input_ids.to(device), (input_ids != pad_id).long().to(device)  # (B, T), (B, T)


def build_classifier(mlm_model: CramBERT, num_labels: int, dropout: float, pretrained: bool = True,
                     pooling: str = "cls"):
    """A classifier on the checkpoint's encoder; pretrained=False keeps the fresh init_weights encoder of the
    same architecture instead: the no-pretraining baseline, which cramming puts at about 45 GLUE."""
    if pretrained:
        return CramBERTForSequenceClassification.from_pretrained(mlm_model, num_labels, dropout, pooling)
    return CramBERTForSequenceClassification(replace(mlm_model.config, dropout=dropout), num_labels, pooling)


def finetune_task(mlm_model: CramBERT, task: GlueTask, train_examples: tuple, config: FinetuneConfig,
                  seed: int = 0, device="cpu", pretrained: bool = True, tokenizer: Tokenizer | None = None,
                  progress: bool = True) -> CramBERTForSequenceClassification:
    """Fine-tune a fresh classifier on (texts_a, texts_b, labels); the seed fixes the head's init, dropout
    and the shuffling. Returns the model in eval mode."""
    tokenizer = tokenizer or Tokenizer.gpt2()
    texts_a, texts_b, labels = train_examples
    sequences = encode(tokenizer, texts_a, texts_b, config.max_len)
    label_dtype = torch.float32 if task.labels is None else torch.long
    targets = torch.tensor(labels, dtype=label_dtype)
    torch.manual_seed(seed)  # the classifier head (and a random-init encoder) draw from the global RNG
    model = build_classifier(mlm_model, task.num_labels, config.dropout, pretrained, config.pooling).to(device)
    # fused=True: one kernel for the whole update, ~1.7x faster steps on CPU for small models
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(config.beta1, config.beta2),
                                  eps=config.eps, weight_decay=config.weight_decay, fused=True)
    steps_per_epoch = math.ceil(len(sequences) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    shuffle = torch.Generator().manual_seed(seed)
    scaler = gradient_scaler(torch.device(device), training_precision(torch.device(device)))  # fp16 GPUs: loss scaling
    model.train()
    bar = tqdm(total=total_steps, desc=f"{task.name} seed {seed}", disable=not progress, leave=False)
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(sequences), generator=shuffle).tolist()
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            input_ids, attention_mask = collate([sequences[i] for i in batch], device, tokenizer.pad_id)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, config)
            with autocast(torch.device(device)):
                _, loss = model(input_ids, attention_mask, labels=targets[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            bar.update()
            if step % 10 == 0:  # .item() waits for the GPU, so only now and then
                bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


@torch.no_grad()
def predict(model: CramBERTForSequenceClassification, texts_a: list, texts_b: list, config: FinetuneConfig,
            device="cpu", tokenizer: Tokenizer | None = None) -> np.ndarray:
    """Class ids (argmax) for classification, scores for regression."""
    tokenizer = tokenizer or Tokenizer.gpt2()
    sequences = encode(tokenizer, texts_a, texts_b, config.max_len)
    model.eval()
    outputs = []
    for start in range(0, len(sequences), config.eval_batch_size):
        input_ids, attention_mask = collate(sequences[start:start + config.eval_batch_size], device, tokenizer.pad_id)
        with autocast(torch.device(device)):
            logits, _ = model(input_ids, attention_mask)  # (B, num_labels)
        logits = logits.float().cpu()
        outputs.append(logits[:, 0] if model.num_labels == 1 else logits.argmax(dim=-1))
    return torch.cat(outputs).numpy()


def evaluate(model: CramBERTForSequenceClassification, task: GlueTask, examples: tuple, config: FinetuneConfig,
             device="cpu", tokenizer: Tokenizer | None = None, suffix: str = "") -> dict:
    """The task's GLUE metrics (as fractions, not x100) on labelled examples (texts_a, texts_b, labels)."""
    texts_a, texts_b, labels = examples
    return compute_metrics(task, predict(model, texts_a, texts_b, config, device, tokenizer), labels, suffix)


# ----------------------------------------------------------------------------------------------------
# The benchmark: every task, several seeds, median, average

def task_files(task: GlueTask, glue_dir) -> tuple[Path, list]:
    """train.tsv and the dev files that exist; raises FileNotFoundError naming what is missing."""
    folder = Path(glue_dir) / task.folder
    train_path = folder / "train.tsv"
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    if not train_path.is_file():
        raise FileNotFoundError(f"no {train_path}: cannot fine-tune")
    dev = [(suffix, folder / name) for suffix, name in task.dev_files if (folder / name).is_file()]
    if not dev:
        raise FileNotFoundError(f"no dev file ({', '.join(name for _, name in task.dev_files)}) in {folder}")
    return train_path, dev


def run_task(mlm_model: CramBERT, task: GlueTask, glue_dir, config: FinetuneConfig, seeds: int = 1,
             device="cpu", pretrained: bool = True, tokenizer: Tokenizer | None = None) -> tuple[dict, dict]:
    """Fine-tune `seeds` times; returns (median of each metric x100, every seed's values x100)."""
    train_path, dev_paths = task_files(task, glue_dir)
    train = subsample(load_examples(task, train_path), config.max_train_examples)
    dev = [(suffix, subsample(load_examples(task, path), config.max_eval_examples)) for suffix, path in dev_paths]
    per_seed = {}
    for seed in range(seeds):
        model = finetune_task(mlm_model, task, train, config, seed, device, pretrained, tokenizer)
        for suffix, examples in dev:
            for name, value in evaluate(model, task, examples, config, device, tokenizer, suffix).items():
                per_seed.setdefault(name, []).append(100 * value)
    return {name: float(np.median(values)) for name, values in per_seed.items()}, per_seed


def glue_average(results: dict) -> float:
    """Mean over tasks of each task's score, a task's score being the mean of its metrics (GLUE's rule)."""
    return float(np.mean([np.mean(list(metrics.values())) for metrics in results.values()]))


def format_table(results: dict, skipped: dict, average: float | None) -> str:
    lines = [f"{'task':<6} {'metric':<12} {'score':>7}"]
    for name, metrics in results.items():
        lines += [f"{name:<6} {metric:<12} {value:7.2f}" for metric, value in metrics.items()]
    lines += [f"{name:<6} skipped: {reason}" for name, reason in skipped.items()]
    if average is None:
        lines.append("GLUE average: no task ran")
    elif skipped:  # the mean of the tasks that ran is not the GLUE average: say so, and which are missing
        lines.append(f"{'GLUE average':<19} {average:7.2f}  (partial: {len(results)} of {len(results) + len(skipped)} "
                     f"tasks; missing {', '.join(skipped)})")
    else:
        lines.append(f"{'GLUE average':<19} {average:7.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Downloading GLUE (glue_eval.py --download DIR)

# Where GLUE's own download script (W4ngatang's download_glue_data.py, also used by fairseq and jiant)
# fetches the tasks today: one zip per task, each holding a folder with train.tsv and the dev files.
GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"
GLUE_ZIPS = {"cola": "CoLA.zip", "sst2": "SST-2.zip", "qqp": "QQP-clean.zip", "stsb": "STS-B.zip", "mnli": "MNLI.zip",
             "qnli": "QNLIv2.zip", "rte": "RTE.zip", "wnli": "WNLI.zip"}
# MRPC is not redistributed by GLUE (Microsoft's licence): its script takes the MSR Paraphrase Corpus text
# files from SentEval's mirror and splits the training file into train/dev with GLUE's list of dev pairs.
SENTEVAL_BASE_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"
MRPC_FILES = ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt")
MRPC_DEV_IDS = "mrpc_dev_ids.tsv"  # under GLUE_BASE_URL
GLUE_OFFLINE_HINT = "offline, copy GLUE's task folders (CoLA/train.tsv, ...) into a folder by hand and pass --glue-dir"


def extract_task_zip(zip_path, task: GlueTask, glue_dir) -> Path:
    """Unpack one task's zip into glue_dir/<task folder>/ whatever the zip's own top folder is called
    (QNLIv2.zip holds QNLI/, QQP-clean.zip holds QQP/): members keep their path below that folder.
    Written to a .part folder and renamed, so an interrupted extraction never looks complete."""
    target = Path(glue_dir) / task.folder
    partial = target.with_name(task.folder + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    if not zipfile.is_zipfile(zip_path):
        os.remove(zip_path)  # an error page saved as a zip, say: deleted, so the next run fetches it again
        raise GlueDataError(f"{zip_path} is not a zip file: deleted, run --download again")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.infolist():
                parts = Path(member.filename).parts
                if member.is_dir() or len(parts) < 2 or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
                    continue  # folders, stray top-level files and macOS resource forks
                if member.filename.startswith("/") or ".." in parts:
                    raise GlueDataError(f"{zip_path}: refusing member {member.filename!r} outside its folder")
                destination = partial.joinpath(*parts[1:])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)  # streamed: MNLI's and QQP's files are tens of MB
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not (partial / "train.tsv").is_file():
        shutil.rmtree(partial)
        raise GlueDataError(f"{zip_path}: no <folder>/train.tsv inside; is it GLUE's {task.folder} zip?")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def format_mrpc(train_txt, test_txt, dev_ids_tsv, glue_dir) -> Path:
    """GLUE's MRPC layout from the MSR Paraphrase Corpus files, as GLUE's script makes it: the pairs listed
    in dev_ids go to dev.tsv, the other training pairs to train.tsv (same header), the test pairs to an
    unlabelled test.tsv with an index column."""
    target = Path(glue_dir) / "MRPC"
    partial = target.with_name("MRPC.part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with open(dev_ids_tsv, encoding="utf-8-sig") as f:
        dev_ids = {tuple(line.strip().split("\t")) for line in f if line.strip()}
    with open(train_txt, encoding="utf-8-sig") as source, open(partial / "train.tsv", "w", encoding="utf-8") as train, \
            open(partial / "dev.tsv", "w", encoding="utf-8") as dev:
        header = source.readline()
        train.write(header)
        dev.write(header)
        for number, line in enumerate(source, start=2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 5:
                raise GlueDataError(f"{train_txt}:{number}: {len(fields)} tab-separated fields, expected 5")
            (dev if (fields[1], fields[2]) in dev_ids else train).write("\t".join(fields) + "\n")
    with open(test_txt, encoding="utf-8-sig") as source, open(partial / "test.tsv", "w", encoding="utf-8") as test:
        source.readline()
        test.write("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        for index, line in enumerate(line for line in source if line.strip()):
            test.write("\t".join([str(index)] + line.rstrip("\r\n").split("\t")[1:]) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def check_task(task: GlueTask, glue_dir) -> dict:
    """Examples per labelled file, read with the same readers fine-tuning uses; raises on anything unusable."""
    train_path, dev_paths = task_files(task, glue_dir)
    missing = [name for _, name in task.dev_files if not (Path(glue_dir) / task.folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"no {', '.join(missing)} in {Path(glue_dir) / task.folder}")
    return {path.name: len(load_examples(task, path)[2]) for path in [train_path, *(p for _, p in dev_paths)]}


def download_glue(glue_dir, task_names=None, base_url: str | None = None, senteval_url: str | None = None,
                  progress: bool = True) -> tuple[dict, dict]:
    """Fetch GLUE tasks into glue_dir in GLUE's TSV layout and check every train/dev file parses.
    Returns ({task: {file: examples}}, {task: error}): one failed task does not stop the others.
    The zips are kept in glue_dir/downloads (an interrupted download resumes there); the base URLs can point
    at a mirror (tests use file://)."""
    base_url, senteval_url = base_url or GLUE_BASE_URL, senteval_url or SENTEVAL_BASE_URL
    downloads = Path(glue_dir) / "downloads"
    checked, failed = {}, {}
    for name in task_names or list(TASKS):
        task = TASKS[name]
        try:
            if name == "mrpc":
                paths = [fetch(f"{senteval_url}/{file}", str(downloads / file), progress=progress,
                               offline_hint=GLUE_OFFLINE_HINT) for file in MRPC_FILES]
                dev_ids = fetch(f"{base_url}/{MRPC_DEV_IDS}", str(downloads / MRPC_DEV_IDS), progress=progress,
                                offline_hint=GLUE_OFFLINE_HINT)
                format_mrpc(*paths, dev_ids, glue_dir)
            else:
                zip_path = fetch(f"{base_url}/{GLUE_ZIPS[name]}", str(downloads / GLUE_ZIPS[name]), progress=progress,
                                 offline_hint=GLUE_OFFLINE_HINT)
                extract_task_zip(zip_path, task, glue_dir)
            checked[name] = check_task(task, glue_dir)
        except (DownloadError, GlueDataError, FileNotFoundError, OSError) as error:
            failed[name] = str(error)
    return checked, failed


def parse_tasks(text: str) -> list[str]:
    names = list(TASKS) if text == "all" else [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or text!r}; choose from {', '.join(TASKS)} or 'all'")
    return names


def main(argv=None):
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(
        description="Fine-tune a cramlm checkpoint on GLUE and report dev scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The defaults are cramming's GPU protocol for a BERT-base-sized model. A small CPU model (the\n"
               "`laptop` preset of train.py's CPU recipe) needs a larger learning rate and bigger batches; the CPU\n"
               "protocol chosen on the random-init model's dev scores (BENCHMARKS.md, 'GLUE after an hour of CPU') is\n"
               "  --tasks cola,sst2,mrpc,stsb,rte --lr 1e-3 --batch-size 32 --epochs 3 --max-train-examples 20000 --seeds 3\n"
               "(SST-2 is then subsampled to 20 000 of its 67 349 training sentences; the other four are whole).")
    # --- what to evaluate ---
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="cramlm checkpoint written by train.py")
    source.add_argument("--random-init", metavar="PRESET_OR_CKPT", help="no pretraining: a fresh encoder of this "
                        "model.py preset (tiny, mini, ...; GPT-2 vocabulary) or of a checkpoint's exact shape and "
                        "tokenizer (its weights unused): the baseline pretraining must beat")
    source.add_argument("--download", metavar="DIR", help="fetch the --tasks from GLUE's public location into DIR in "
                        "GLUE's TSV layout, check that they parse, and exit; then pass --glue-dir DIR")
    parser.add_argument("--glue-dir", default=str(DEFAULT_GLUE_DIR), help="folder holding CoLA/, SST-2/, ...")
    parser.add_argument("--tasks", default="all", help=f"comma-separated subset of {','.join(TASKS)}, or 'all'")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tuning runs per task; the median is reported "
                        "(cramming reports the median of 5)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--skip-missing", action="store_true",
                        help="score the tasks that can run when others' files are missing or damaged (the average is "
                             "then labelled partial); by default that is an error, found before any fine-tuning. "
                             "Offline here QNLI and MNLI have no train.tsv and QQP is absent, so --tasks all needs it")
    # --- fine-tuning hyper-parameters (one set for every task, as in cramming) ---
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
    parser.add_argument("--dropout", type=float, default=defaults.dropout, help="dropout while fine-tuning")
    parser.add_argument("--pooling", choices=("cls", "mean"), default=defaults.pooling,
                        help="sentence vector for the head: the [CLS] position (BERT) or the mean over tokens")
    parser.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size, help="dev batch size")
    # --- deviations from the GLUE protocol, for quick CPU runs ---
    parser.add_argument("--max-train-examples", type=int, help="fine-tune on a fixed random subset of this size "
                        "(deviation from GLUE; default: the whole train set)")
    parser.add_argument("--max-eval-examples", type=int, help="score a fixed random subset of the dev set "
                        "(deviation from GLUE; default: the whole dev set)")
    args = parser.parse_args(argv)
    if args.download:
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

    config = FinetuneConfig(args.lr, args.beta1, args.beta2, args.eps, args.weight_decay, args.batch_size,
                            args.epochs, args.warmup, args.schedule, args.max_len, args.dropout,
                            args.pooling, args.eval_batch_size, args.max_train_examples, args.max_eval_examples)
    try:
        task_names = parse_tasks(args.tasks)
        checkpoint_path = args.ckpt or (args.random_init if os.path.isfile(args.random_init or "") else None)
        if checkpoint_path:
            checkpoint = load_checkpoint(checkpoint_path)  # raises a clear error for a file that is not ours
            try:
                mlm_model = model_from_checkpoint(checkpoint)
                tokenizer = tokenizer_from_checkpoint(checkpoint)  # the vocabulary the encoder was trained on
            except (KeyError, TypeError, RuntimeError) as error:
                raise ValueError(f"{checkpoint_path} has the cramlm marker but no usable model: {error!r}") from error
        else:
            mlm_model = CramBERT(preset_config(args.random_init))  # only its config is used (pretrained=False)
            tokenizer = Tokenizer.gpt2()
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    if args.max_len > mlm_model.config.max_seq_len:
        sys.exit(f"error: --max-len {args.max_len} exceeds the model's max_seq_len {mlm_model.config.max_seq_len}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"fine-tuning on {device}: {json.dumps(asdict(config))}")

    unusable = {}  # task -> why its files cannot be used, found before any fine-tuning
    for name in task_names:
        try:
            train_path, dev_paths = task_files(TASKS[name], args.glue_dir)
            for path in [train_path, *(path for _, path in dev_paths)]:
                load_examples(TASKS[name], path)
        except (FileNotFoundError, GlueDataError) as error:
            unusable[name] = str(error)
    if unusable and not args.skip_missing:
        lines = [f"{name}: {reason}" for name, reason in unusable.items()]
        sys.exit("error: " + "\nerror: ".join(lines) + "\nerror: fix these files, leave the tasks out of --tasks, "
                 "or pass --skip-missing to score the others (the average is then partial)")

    results, per_seed, skipped = {}, {}, {}
    for name in task_names:
        if name in unusable:
            skipped[name] = unusable[name]
            print(f"{name}: skipped ({unusable[name]})", file=sys.stderr)
            continue
        try:
            results[name], per_seed[name] = run_task(mlm_model, TASKS[name], args.glue_dir, config, args.seeds,
                                                     device, pretrained=args.ckpt is not None, tokenizer=tokenizer)
        except (FileNotFoundError, GlueDataError) as error:
            skipped[name] = str(error)  # one broken or missing task must not cost the others
            print(f"{name}: skipped ({error})", file=sys.stderr)
    average = glue_average(results) if results else None
    print(format_table(results, skipped, average))
    if args.out:
        write_json(args.out, {**results, "average": average, "partial": bool(skipped), "skipped": skipped, "per_seed": per_seed,
                              "config": asdict(config), "source": args.ckpt or f"random-init {args.random_init}"}, indent=2)
    if not results:  # --skip-missing skipped them all: nothing was scored, which is no success
        sys.exit(f"error: no task could be scored (all {len(skipped)} skipped, reasons above)")
    return results, average


if __name__ == "__main__":
    main()
