"""
GLUE's nine tasks as files: what each task's columns and labels are, reading its TSV files (errors name the
file and line), fixed random subsets, GLUE's official metrics (numpy only), and fetching the tasks from GLUE's
public location (`glue_eval.py --download DIR`). Fine-tuning lives in finetune.py, the protocol in glue_eval.py.
"""
import math
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.fetch import DownloadError, fetch

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
                score = float(raw)
            except ValueError:
                raise GlueDataError(f"{path}:{number}: score {raw!r} is not a number") from None
            if not math.isfinite(score):  # inf or nan would make every correlation, and the GLUE average, NaN
                raise GlueDataError(f"{path}:{number}: score {raw!r} is not a finite number: fix or remove that row")
            labels.append(score)
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


def read_tasks(task_names: list, glue_dir, max_eval_examples: int | None) -> tuple[dict, dict]:
    """({task: (train examples, [(metric suffix, dev examples)])}, {task: why its files cannot be used}), read
    before any fine-tuning. A capped dev set is a fixed subsample."""
    task_data, unusable = {}, {}
    for name in task_names:
        task = TASKS[name]
        try:
            train_path, dev_paths = task_files(task, glue_dir)
            train = load_examples(task, train_path)
            task_data[name] = (train, [(suffix, subsample(load_examples(task, path), max_eval_examples))
                                       for suffix, path in dev_paths])
        except (FileNotFoundError, GlueDataError) as error:
            unusable[name] = str(error)
    return task_data, unusable


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


def compute_metrics(task: GlueTask, predictions, labels, suffix: str = "") -> dict:
    functions = {"accuracy": accuracy, "f1": f1_score, "mcc": matthews_corrcoef,
                 "pearson": pearson, "spearman": spearman}
    return {name + suffix: functions[name](predictions, labels) for name in task.metrics}


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
