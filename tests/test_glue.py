"""Tests for glue_eval.py and data/glue.py: metrics against hand-computed values, the TSV readers on fixture files,
fine-tuning end to end on small learnable synthetic tasks, the CLI, and the real GLUE files when present."""
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import glue_eval  # noqa: E402
from glue_eval import compare_arms, difference  # noqa: E402
import evaluation.finetune as finetune  # noqa: E402
from evaluation.finetune import (FinetuneConfig, build_classifier, finetune_task, learning_rate, parameter_groups, predict)
from evaluation.transfer import PROBE_L2_GRID, DriftMonitor, fit_linear, fit_probe  # noqa: E402
from data.glue import (TASKS, GlueDataError, accuracy, average_ranks, compute_metrics, f1_score,  # noqa: E402
                       load_examples, matthews_corrcoef, pearson, read_tsv, spearman, subsample, task_files)
from data.tokenizer import Tokenizer  # noqa: E402
from model import CramBERT, preset_config  # noqa: E402
from run.checkpoint import model_checkpoint, save_checkpoint  # noqa: E402

REAL_GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.gpt2()


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------------
# Metrics

def test_accuracy_and_f1_by_hand():
    predictions, labels = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)
    # TP=2, FP=1, FN=1 -> precision 2/3, recall 2/3, F1 2/3
    assert f1_score(predictions, labels) == pytest.approx(2 / 3)
    assert f1_score([0, 0, 0], [1, 0, 1]) == 0.0  # never predicts the positive class
    assert f1_score([1, 1, 1, 1], [1, 1, 0, 0]) == pytest.approx(2 * 2 / (2 * 2 + 2 + 0))


def test_matthews_by_hand_and_edge_cases():
    predictions, labels = [1, 1, 1, 0, 0, 1, 0, 1], [1, 1, 0, 0, 0, 0, 1, 1]
    tp, tn, fp, fn = 3, 2, 2, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(predictions, labels) == pytest.approx(expected)  # 4 / sqrt(600)
    assert matthews_corrcoef(labels, labels) == pytest.approx(1.0)
    assert matthews_corrcoef([1 - y for y in labels], labels) == pytest.approx(-1.0)
    assert matthews_corrcoef([1] * 8, labels) == 0.0  # constant predictions: CoLA's majority baseline
    assert matthews_corrcoef([0] * 8, labels) == 0.0


def test_pearson_and_spearman_by_hand():
    x, y = [1, 2, 3, 4], [2, 4, 5, 9]
    # centred: x (-1.5,-.5,.5,1.5), y (-3,-1,0,4): cov 11, |x|^2 5, |y|^2 26
    assert pearson(x, y) == pytest.approx(11 / math.sqrt(5 * 26))
    assert pearson(x, [-v for v in y]) == pytest.approx(-11 / math.sqrt(5 * 26))
    assert pearson([3, 3, 3, 3], y) == 0.0  # a constant regressor is worth nothing
    assert spearman(x, [v ** 3 for v in x]) == pytest.approx(1.0)  # monotone -> 1 whatever the shape


def test_spearman_averages_tied_ranks():
    assert average_ranks([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    assert average_ranks([5, 1, 5, 5, 0]).tolist() == [4, 2, 4, 4, 1]
    # x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 4, 3): centred (-1.5, 0, 0, 1.5) and (-1.5, -.5, 1.5, .5)
    expected = (2.25 + 0.75) / math.sqrt(4.5 * 5)
    assert spearman([10, 20, 20, 30], [1, 2, 9, 4]) == pytest.approx(expected)


def test_glue_average_means_metrics_within_a_task_first():
    tasks = {"cola": {"arm": {"per_seed": {"mcc": [40.0]}}},
             "mrpc": {"arm": {"per_seed": {"f1": [90.0], "accuracy": [80.0]}}}}
    assert compare_arms(tasks, ["arm"])["average"]["arm"]["mean"] == pytest.approx((40 + 85) / 2)


def test_learning_rate_schedule():
    config = FinetuneConfig(learning_rate=1.0, warmup_fraction=0.1)
    rates = [learning_rate(step, 100, config) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)  # 10 warmup steps
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))  # then decays monotonically
    assert rates[-1] < 0.02
    cosine = FinetuneConfig(learning_rate=1.0, warmup_fraction=0.1, schedule="cosine")
    assert learning_rate(10 + 45, 100, cosine) == pytest.approx(0.5)  # halfway through the decay
    assert learning_rate(10 + 45, 100, config) == pytest.approx(0.5)
    assert learning_rate(10 + 20, 100, cosine) > learning_rate(10 + 20, 100, config)  # cosine decays later


# ----------------------------------------------------------------------------------------------------
# Reading GLUE's TSV files

def write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_header_bom_and_stray_quotes(tmp_path):
    mrpc = write(tmp_path / "train.tsv", 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n'
                 '1\t11\t12\tHe said "hi.\tShe said hi.\n0\t13\t14\tA "quoted" one\tAnother\n', bom=True)
    texts_a, texts_b, labels = load_examples(TASKS["mrpc"], mrpc)
    assert texts_a == ['He said "hi.', 'A "quoted" one'] and texts_b == ["She said hi.", "Another"]
    assert labels == [1, 0]
    assert list(read_tsv(mrpc)[0][1]) == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]  # no BOM


def test_headerless_cola_and_int_labels(tmp_path):
    cola = write(tmp_path / "train.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n\n")
    assert load_examples(TASKS["cola"], cola) == (["The cat sat.", "Cat the sat."], [None, None], [1, 0])


def test_string_and_float_labels_by_column_name(tmp_path):
    rte = write(tmp_path / "rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA b.\tA.\tentailment\n"
                "1\tC d.\tE.\tnot_entailment\n")
    assert load_examples(TASKS["rte"], rte)[2] == [0, 1]
    stsb = write(tmp_path / "stsb.tsv", "index\tgenre\tsentence1\tsentence2\tscore\n0\tx\tA.\tB.\t3.800\n"
                 "1\tx\tC.\tD.\t0\n")  # columns found by name, not by GLUE's position
    assert load_examples(TASKS["stsb"], stsb) == (["A.", "C."], ["B.", "D."], [3.8, 0.0])


@pytest.mark.parametrize("content, message", [
    ("sentence\tlabel\ngood\t1\nbad\t0\textra\n", ":3: 3 tab-separated fields"),
    ("sentence\tlabel\ngood\t1\nbad\tpositive\n", ":3: unknown label 'positive'"),
    ("sentence\tlabel\n", "has no examples"),
    ("", "is empty"),
    ("text\tlabel\ngood\t1\n", "no column ['sentence']"),
])
def test_bad_files_name_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "train.tsv", content)
    with pytest.raises(GlueDataError) as error:
        load_examples(TASKS["sst2"], path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_bad_score_names_the_line(tmp_path):
    path = write(tmp_path / "dev.tsv", "sentence1\tsentence2\tscore\na\tb\t1.5\nc\td\thigh\n")
    with pytest.raises(GlueDataError, match=r"dev\.tsv:3: score 'high' is not a number"):
        load_examples(TASKS["stsb"], path)


def test_subsample_is_fixed_and_keeps_columns_aligned():
    examples = ([f"s{i}" for i in range(50)], [None] * 50, list(range(50)))
    first, second = subsample(examples, 10), subsample(examples, 10)
    assert first == second and len(first[0]) == 10
    assert all(text == f"s{label}" for text, label in zip(first[0], first[2]))
    assert subsample(examples, None) is examples


# ----------------------------------------------------------------------------------------------------
# Fine-tuning end to end on CPU (tiny model, learnable synthetic tasks)

WORDS = "the a cat dog house tree river blue green small large walks runs sees near under over".split()


def synthetic(n: int, rng: random.Random, regression: bool = False):
    """Sentences of filler words; the label is whether (classification) or how often, 0-3 (regression),
    the word "zebra" occurs: learnable from token identity alone."""
    texts, labels = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 8))]
        count = rng.randint(0, 3) if regression else rng.randint(0, 1)
        for _ in range(count):
            words.insert(rng.randint(0, len(words)), "zebra")
        texts.append(" ".join(words))
        labels.append(float(count) if regression else count)
    return texts, [None] * n, labels


# A higher learning rate than GLUE's 4e-5: a random tiny encoder must learn the task in 60 steps.
FAST = FinetuneConfig(learning_rate=2e-3, epochs=4)


def test_finetune_learns_a_classification_task(tokenizer):
    rng = random.Random(0)
    train, dev = synthetic(240, rng), synthetic(200, rng)
    mlm_model = CramBERT(preset_config("tiny"))
    model = finetune_task(mlm_model, TASKS["sst2"], train, FAST, seed=0, pretrained=False,
                          tokenizer=tokenizer, progress=False)
    assert not model.training
    majority = max(np.mean(dev[2]), 1 - np.mean(dev[2]))
    metrics = compute_metrics(TASKS["sst2"], predict(model, dev[0], dev[1], FAST, tokenizer=tokenizer), dev[2])
    assert metrics["accuracy"] >= 0.9 > majority + 0.2


def test_finetune_learns_a_regression_task(tokenizer):
    rng = random.Random(1)
    train, dev = synthetic(240, rng, regression=True), synthetic(200, rng, regression=True)
    mlm_model = CramBERT(preset_config("tiny"))
    model = finetune_task(mlm_model, TASKS["stsb"], train, FAST, seed=0, pretrained=False,
                          tokenizer=tokenizer, progress=False)
    metrics = compute_metrics(TASKS["stsb"], predict(model, dev[0], dev[1], FAST, tokenizer=tokenizer), dev[2])
    assert metrics["pearson"] > 0.7 and metrics["spearman"] > 0.7


def test_classifier_starts_from_the_pretrained_encoder():
    torch.manual_seed(0)
    mlm_model = CramBERT(preset_config("tiny"))
    pretrained = build_classifier(mlm_model, 2, dropout=0.1)
    fresh = build_classifier(mlm_model, 2, dropout=0.1, pretrained=False)
    assert pretrained.config.dropout == 0.1 and mlm_model.config.dropout == 0.0
    for name, tensor in mlm_model.encoder.state_dict().items():
        assert torch.equal(pretrained.encoder.state_dict()[name], tensor), name
    assert not torch.equal(fresh.encoder.embedding.tok.weight, mlm_model.encoder.embedding.tok.weight)


# ----------------------------------------------------------------------------------------------------
# The command line: checkpoint loading, skipped tasks, results file

def fixture_glue(root: Path) -> Path:
    """A GLUE folder with a synthetic SST-2, a headerless CoLA, a malformed MRPC and no RTE at all."""
    rng = random.Random(0)
    for split, n in (("train", 64), ("dev", 32)):
        texts, _, labels = synthetic(n, rng)
        sst2_rows = "".join(f"{text}\t{label}\n" for text, label in zip(texts, labels))
        write(root / "SST-2" / f"{split}.tsv", "sentence\tlabel\n" + sst2_rows)
        cola_rows = "".join(f"src\t{label}\t\t{text}\n" for text, label in zip(texts, labels))  # no header
        write(root / "CoLA" / f"{split}.tsv", cola_rows)
    mrpc_header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write(root / "MRPC" / "train.tsv", mrpc_header + "1\t1\t2\ta\tb\n3\t3\t4\tc\td\n", bom=True)  # label 3 on line 3
    write(root / "MRPC" / "dev.tsv", mrpc_header + "1\t1\t2\ta\tb\n", bom=True)
    return root


def test_main_end_to_end_with_a_checkpoint(tmp_path, capsys):
    glue_dir = fixture_glue(tmp_path / "glue")
    torch.manual_seed(0)
    save_checkpoint(str(tmp_path / "ckpt.pt"), model_checkpoint(CramBERT(preset_config("tiny")), Tokenizer.gpt2()))
    out = tmp_path / "results.json"
    payload = glue_eval.main(["--ckpt", str(tmp_path / "ckpt.pt"), "--glue-dir", str(glue_dir),
                              "--tasks", "sst2,cola,mrpc,rte", "--epochs", "1", "--seeds", "3",
                              "--out", str(out), "--skip-missing"])
    saved = json.loads(out.read_text())
    block = saved["results"]["all"]
    sst2, cola = block["tasks"]["sst2"]["pretrained"], block["tasks"]["cola"]["pretrained"]
    assert set(block["tasks"]) == {"sst2", "cola"} and saved == json.loads(json.dumps(payload))
    assert sst2["median"]["accuracy"] == pytest.approx(np.median(sst2["per_seed"]["accuracy"]))
    assert sst2["mean"]["accuracy"] == pytest.approx(np.mean(sst2["per_seed"]["accuracy"]))
    assert sst2["sd"]["accuracy"] == pytest.approx(np.std(sst2["per_seed"]["accuracy"], ddof=1))
    assert len(cola["per_seed"]["mcc"]) == 3 and sst2["chosen_lr"] == 4e-5
    average = block["average"]["pretrained"]
    assert average["mean"] == pytest.approx((sst2["mean"]["accuracy"] + cola["mean"]["mcc"]) / 2)
    assert "train.tsv:3: unknown label '3'" in saved["skipped"]["mrpc"]
    assert "no folder" in saved["skipped"]["rte"]
    assert saved["protocol"]["dropout"] == 0.1 and saved["arms"]["pretrained"]["pretraining_dropout"] == 0.0
    assert saved["protocol"]["precision_used"] == "fp32" and saved["protocol"]["lr_grid"] == [4e-5]
    table = capsys.readouterr().out
    assert "GLUE average" in table and "rte    skipped" in table
    assert "(partial: 2 of 4 tasks; missing mrpc, rte)" in table and saved["partial"] is True
    assert not list(tmp_path.glob("results.json.tmp*"))


def test_damaged_or_missing_task_files_are_an_error_before_any_fine_tuning(tmp_path, monkeypatch):
    glue_dir = fixture_glue(tmp_path / "glue")
    monkeypatch.setattr(glue_eval, "run_task", lambda *args, **kwargs: pytest.fail("fine-tuned before checking files"))
    with pytest.raises(SystemExit) as exit_info:
        glue_eval.main(["--random-init", "tiny", "--glue-dir", str(glue_dir), "--tasks", "sst2,mrpc,rte"])
    message = str(exit_info.value.code)  # sys.exit(str): exit status 1
    assert message.startswith("error: mrpc: ") and "train.tsv:3: unknown label '3'" in message
    assert "\nerror: rte: no folder" in message and "--skip-missing" in message and "sst2" not in message


def test_skip_missing_with_every_task_skipped_is_a_failure(tmp_path, monkeypatch):
    glue_dir = fixture_glue(tmp_path / "glue")
    monkeypatch.setattr(glue_eval, "run_task", lambda *args, **kwargs: pytest.fail("no task should be fine-tuned"))
    with pytest.raises(SystemExit, match=r"error: no task could be scored \(all 2 skipped"):
        glue_eval.main(["--random-init", "tiny", "--glue-dir", str(glue_dir), "--tasks", "mrpc,rte", "--skip-missing"])


def test_main_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, bogus)
    with pytest.raises(SystemExit, match="not a cramlm checkpoint"):
        glue_eval.main(["--ckpt", str(bogus), "--glue-dir", str(tmp_path)])
    save_checkpoint(str(tmp_path / "wrong.pt"), {"model_config": {"n_layers": 2}, "model": {}})
    with pytest.raises(SystemExit, match="has the cramlm marker but no usable model"):
        glue_eval.main(["--ckpt", str(tmp_path / "wrong.pt"), "--glue-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="does not exist"):
        glue_eval.main(["--ckpt", str(tmp_path / "missing.pt"), "--glue-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown task"):
        glue_eval.main(["--random-init", "tiny", "--tasks", "cola,squad"])


def test_a_crash_leaves_no_results_file(tmp_path, monkeypatch):
    out = tmp_path / "results.json"

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(glue_eval, "run_task", crash)
    with pytest.raises(RuntimeError):
        glue_eval.main(["--random-init", "tiny", "--glue-dir", str(fixture_glue(tmp_path / "glue")), "--tasks", "sst2",
                        "--out", str(out)])
    assert not out.exists()
    # and a crash while writing leaves neither a partial file nor a temporary one
    monkeypatch.setattr(glue_eval.json, "dump", lambda payload, file, **kw: (file.write("{\"half"), crash()))
    with pytest.raises(RuntimeError):
        glue_eval.write_json(str(out), {"average": 1.0})
    assert [path.name for path in tmp_path.iterdir()] == ["glue"]


# ----------------------------------------------------------------------------------------------------
# The real GLUE files

@pytest.mark.skipif(not REAL_GLUE.is_dir(), reason=f"real GLUE data not found at {REAL_GLUE}")
def test_real_glue_row_counts():
    expected = {("cola", "train.tsv"): 8551, ("cola", "dev.tsv"): 1043, ("sst2", "train.tsv"): 67349,
                ("sst2", "dev.tsv"): 872, ("mrpc", "train.tsv"): 3668, ("mrpc", "dev.tsv"): 408,
                ("stsb", "train.tsv"): 5749, ("stsb", "dev.tsv"): 1500, ("rte", "train.tsv"): 2490,
                ("rte", "dev.tsv"): 277, ("wnli", "train.tsv"): 635, ("wnli", "dev.tsv"): 71,
                ("qnli", "dev.tsv"): 5463, ("mnli", "dev_matched.tsv"): 9815}
    for (name, file), count in expected.items():
        texts_a, texts_b, labels = load_examples(TASKS[name], REAL_GLUE / TASKS[name].folder / file)
        assert len(texts_a) == len(texts_b) == len(labels) == count, (name, file)
    # QNLI and MNLI have no training set here, so they are skipped rather than crashing
    for name in ("qnli", "mnli", "qqp"):
        with pytest.raises(FileNotFoundError):
            task_files(TASKS[name], REAL_GLUE)
    scores = load_examples(TASKS["stsb"], REAL_GLUE / "STS-B" / "dev.tsv")[2]
    assert min(scores) == 0.0 and max(scores) == 5.0


# ----------------------------------------------------------------------------------------------------
# The fair protocol: lr grid, statistics, layer decay, probe, LP-FT, drift, training-set sizes

def test_lr_grid_chooses_the_best_mean_dev_score_per_arm(monkeypatch):
    # lr 1e-3 has the best single seed (100) and lr 1e-4 the best median (90): the mean picks 3e-4 (70)
    scores = {1e-4: [90, 90, 20], 3e-4: [70, 70, 70], 1e-3: [100, 55, 40]}

    def fake_score_seed(arm, task, train, dev_sets, config, seed, device="cpu", report_drift=False):
        bonus = 0 if arm.pretrained else (30 if config.learning_rate == 1e-3 else 0)  # the other arm prefers 1e-3
        return {"accuracy": (scores[config.learning_rate][seed] + bonus) / 100}, {}
    monkeypatch.setattr(glue_eval, "score_seed", fake_score_seed)
    train = (["a"] * 5, [None] * 5, [0, 1, 0, 1, 0])
    for pretrained, expected in ((True, 3e-4), (False, 1e-3)):
        arm = glue_eval.Arm("x", None, None, pretrained, "x")
        record = glue_eval.run_task(arm, TASKS["sst2"], train, [], FinetuneConfig(), [1e-4, 3e-4, 1e-3], seeds=3)
        assert record["chosen_lr"] == expected
        assert record["per_lr"]["0.0001"]["accuracy"] == pytest.approx([90, 90, 20])
        assert record["mean"]["accuracy"] == pytest.approx(np.mean(record["per_lr"][str(expected)]["accuracy"]))


def test_difference_and_its_standard_error_by_hand():
    # means 4 and 2; sample variances 1 (n = 3) and 4 (n = 2): se = sqrt(1/3 + 4/2)
    result = difference([3.0, 4.0, 5.0], [2 - math.sqrt(2), 2 + math.sqrt(2)])
    assert result["difference"] == pytest.approx(2.0) and result["se"] == pytest.approx(math.sqrt(1 / 3 + 4 / 2))
    assert difference([1.0], [0.0, 2.0])["se"] is None  # one seed has no spread


def test_compare_arms_averages_per_seed_and_takes_the_difference():
    tasks = {"sst2": {"p": {"per_seed": {"accuracy": [80.0, 90.0]}}, "r": {"per_seed": {"accuracy": [70.0, 70.0]}}},
             "mrpc": {"p": {"per_seed": {"f1": [60.0, 80.0], "accuracy": [40.0, 60.0]}},
                      "r": {"per_seed": {"f1": [50.0, 50.0], "accuracy": [50.0, 50.0]}}}}
    block = compare_arms(tasks, ["p", "r"])
    assert block["average"]["p"]["per_seed"] == pytest.approx([65.0, 80.0])  # (80 + 50) / 2, (90 + 70) / 2
    assert block["average"]["r"]["per_seed"] == pytest.approx([60.0, 60.0])
    assert block["difference"]["average"]["difference"] == pytest.approx(12.5)
    assert block["difference"]["average"]["se"] == pytest.approx(math.sqrt(np.var([65, 80], ddof=1) / 2))
    assert block["difference"]["mrpc"]["difference"] == pytest.approx(10.0)


def test_layer_decay_gives_each_parameter_electras_learning_rate():
    model = build_classifier(CramBERT(preset_config("tiny")), 2, dropout=0.1)  # 2 blocks: L + 2 = 4
    groups = parameter_groups(model, FinetuneConfig(layer_decay=0.5))
    scale = {id(p): group["lr_scale"] for group in groups for p in group["params"]}
    expected = {"encoder.embedding.tok.weight": 0.5 ** 4, "encoder.embedding.norm.weight": 0.5 ** 4,
                "encoder.blocks.0.attn.qkv.weight": 0.5 ** 3, "encoder.blocks.0.norm1.weight": 0.5 ** 3,
                "encoder.blocks.1.ffn.fc_out.weight": 0.5 ** 2, "encoder.final_norm.weight": 0.5,
                "pooler.weight": 1.0, "classifier.bias": 1.0}
    parameters = dict(model.named_parameters())
    for name, factor in expected.items():
        assert scale[id(parameters[name])] == pytest.approx(factor), name
    assert len(scale) == len(parameters)  # every parameter in exactly one group
    assert {group["lr_scale"] for group in parameter_groups(model, FinetuneConfig())} == {1.0}


def test_probe_logistic_regression_matches_the_closed_form_optimum():
    # x = ±1 with labels 1/0: by symmetry W = [-w, w], b equal, and the objective is
    # log(1 + exp(-2w)) + l2 w², whose optimum solves l2 w (1 + exp(2w)) = 1 (bisection below)
    features, targets, l2 = torch.tensor([[1.0], [-1.0]] * 4), torch.tensor([1, 0] * 4), 0.1
    weight, bias, objective = fit_linear(features, targets, 2, l2)
    low, high = 0.0, 10.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if l2 * middle * (1 + math.exp(2 * middle)) < 1 else (low, middle)
    w = (low + high) / 2
    assert weight[1, 0] - weight[0, 0] == pytest.approx(2 * w, rel=1e-5)
    assert objective == pytest.approx(math.log1p(math.exp(-2 * w)) + l2 * w * w, rel=1e-6)
    reference = torch.nn.functional.cross_entropy(features.double() @ weight.T + bias, targets) \
        + 0.5 * l2 * weight.pow(2).sum()
    assert objective == pytest.approx(float(reference), rel=1e-9)


def test_probe_separates_separable_data_and_chooses_l2_on_held_out_rows():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 5, generator=generator) * torch.tensor([100.0, 1, 1, 1, 0.01]) + 3
    targets = (features[:, 4] > 3).long()  # separable along the smallest-scale feature: standardising matters
    weight, bias, l2 = fit_probe(features, targets, 2, seed=0)
    assert l2 in PROBE_L2_GRID
    assert torch.equal((features @ weight.T + bias).argmax(-1), targets)


def test_lp_ft_starts_the_full_fine_tuning_from_the_head_it_trained(tokenizer, monkeypatch):
    calls, original = [], finetune.train_classifier

    def recording(model, *args, **kwargs):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        original(model, *args, **kwargs)
        calls.append((before, {name: p.detach().clone() for name, p in model.named_parameters()}))
    monkeypatch.setattr(finetune, "train_classifier", recording)
    train = synthetic(32, random.Random(0))
    config = FinetuneConfig(learning_rate=1e-3, epochs=1, method="lp-ft", batch_size=8)
    finetune_task(CramBERT(preset_config("tiny")), TASKS["sst2"], train, config, tokenizer=tokenizer, progress=False)
    (probe_start, probe_end), (full_start, full_end) = calls
    for name in probe_start:
        assert torch.equal(probe_end[name], full_start[name]), name  # the full phase starts where the head ended
        head = name.startswith(("pooler.", "classifier."))
        assert torch.equal(probe_start[name], probe_end[name]) != head, name  # only the head moved in phase one
    assert not torch.equal(full_start["encoder.blocks.0.attn.qkv.weight"], full_end["encoder.blocks.0.attn.qkv.weight"])


def test_drift_is_zero_at_step_zero_and_positive_after_a_step(tokenizer):
    train = synthetic(48, random.Random(0))
    sequences = glue_eval.encode(tokenizer, train[0], train[1], 128)
    monitor = DriftMonitor(glue_eval.collate(sequences[:8], "cpu", tokenizer.pad_id),
                           torch.tensor(sorted({t for ids in sequences for t in ids})))
    config = FinetuneConfig(learning_rate=1e-3, epochs=1, batch_size=16)  # 3 steps: records at 0 and 3
    finetune_task(CramBERT(preset_config("tiny")), TASKS["sst2"], train, config, tokenizer=tokenizer,
                  progress=False, monitor=monitor)
    first, last = monitor.records
    assert (first["step"], last["step"]) == (0, 3)
    parts = [key for key in first if key not in ("step", "summary_norm", "pooled_norm")]
    assert "token_embedding" in parts and "block1.norm2" in parts and "final_norm" in parts
    assert all(first[key] == 0.0 for key in parts) and all(last[key] > 0.0 for key in parts)
    assert last["token_embedding_seen_rows"] > last["token_embedding"]  # unseen rows get no gradient
    assert first["summary_norm"] > 0 and first["pooled_norm"] > 0


def test_train_sizes_are_nested_and_identical_across_arms(monkeypatch):
    seen = []

    def fake_run_task(arm, task, train, dev_sets, *args, **kwargs):
        seen.append((arm.name, train))
        return {"per_seed": {"accuracy": [50.0]}, "train_examples": len(train[2])}
    monkeypatch.setattr(glue_eval, "run_task", fake_run_task)
    examples = ([f"s{i}" for i in range(100)], [None] * 100, [i % 2 for i in range(100)])
    arms = [glue_eval.Arm(name, None, None, name == "pretrained", name) for name in ("pretrained", "random-init")]
    results = glue_eval.run_protocol(arms, {"sst2": (examples, [])}, FinetuneConfig(), [1e-3], 1, [10, 30, None])
    assert list(results) == ["10", "30", "all"]
    subsets = [train for _, train in seen]
    assert [name for name, _ in seen] == ["pretrained", "random-init"] * 3
    assert subsets[0] == subsets[1] and subsets[2] == subsets[3] and subsets[4] == subsets[5] == examples
    assert set(subsets[0][0]) < set(subsets[2][0]) and len(subsets[2][0]) == 30


def test_two_arms_and_flags_end_to_end(tmp_path, capsys):
    glue_dir = fixture_glue(tmp_path / "glue")
    torch.manual_seed(0)
    save_checkpoint(str(tmp_path / "ckpt.pt"), model_checkpoint(CramBERT(preset_config("tiny")), Tokenizer.gpt2()))
    payload = glue_eval.main(["--ckpt", str(tmp_path / "ckpt.pt"), "--random-init", str(tmp_path / "ckpt.pt"),
                              "--glue-dir", str(glue_dir), "--tasks", "sst2", "--method", "probe", "--seeds", "2",
                              "--train-sizes", "20,all", "--pooling", "mean", "--out", str(tmp_path / "r.json")])
    assert list(payload["results"]) == ["20", "all"] and payload["protocol"]["train_sizes"] == ["20", "all"]
    record = payload["results"]["all"]["tasks"]["sst2"]["pretrained"]
    assert record["chosen_lr"] is None and record["train_examples"] == 64
    assert [note["probe_l2"] in PROBE_L2_GRID for note in record["notes"]["None"]] == [True, True]
    assert set(payload["results"]["20"]["difference"]) == {"sst2", "average"}
    output = capsys.readouterr().out
    assert "difference ± SE" in output and "label efficiency" in output
    for bad, message in ((["--train-sizes", "10,x"], "'x' is not a positive number"),
                         (["--train-sizes", "10", "--max-train-examples", "5"], "pass one"),
                         (["--lr-grid", "1e-3,-1"], "'-1' is not a positive number"),
                         (["--layer-decay", "1.5"], "must be in"), (["--seeds", "0"], "at least 1"),
                         ([], "nothing to evaluate")):
        with pytest.raises(SystemExit, match=message):
            glue_eval.main(bad + (["--random-init", "tiny"] if bad else []))
