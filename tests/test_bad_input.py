"""Bad input files: each is refused with one clear message that names the file and what is wrong (the scripts print
it as one `error:` line), never a traceback from deep inside, a silent NaN or torch's advice to load unsafely."""
import json
import random
import re

import numpy as np
import pytest
import torch

import train as train_script
from data.glue import TASKS, load_examples
from data.loader import read_meta
from data.sources import iter_documents
from run.checkpoint import load_checkpoint, load_checkpoints, save_checkpoint
from run.config import TrainConfig


# ----------------------------------------------------------------------------------------------------
# C.3: an STS-B score of inf or nan

@pytest.mark.parametrize("score", ["inf", "nan", "-inf", "Infinity", "NaN"])
def test_a_non_finite_stsb_score_is_refused_naming_the_file_line_and_value(tmp_path, score):
    path = tmp_path / "train.tsv"
    path.write_text("sentence1\tsentence2\tscore\n"
                    "a cat sits.\ta cat is sitting.\t4.5\n"
                    f"a dog runs.\tthe sky is blue.\t{score}\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: score {score!r} is not a finite number")):
        load_examples(TASKS["stsb"], path)


def test_finite_stsb_scores_still_read(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence1\tsentence2\tscore\na\tb\t0.0\nc\td\t5.000\n")
    assert load_examples(TASKS["stsb"], path)[2] == [0.0, 5.0]


# ----------------------------------------------------------------------------------------------------
# C.4: --resume of a checkpoint that is ours but holds no training state (grow.py's output)

def grown_checkpoint(path):
    """What grow.py writes: the model and tokenizer, and "growth", but no train_config, optimizer or loop."""
    save_checkpoint(str(path), {"model_config": {"n_layer": 1}, "model": {}, "tokenizer": None,
                                "growth": {"method": "ligo", "to": "base"}})


def test_resuming_a_grown_checkpoint_says_to_use_init_from(tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    grown_checkpoint(out_dir / "ckpt.pt")
    config = TrainConfig(out_dir=str(out_dir), data_dir=str(tmp_path / "tokens"), resume=True)
    with pytest.raises(ValueError) as caught:
        load_checkpoints(config, "cpu")
    message = str(caught.value)
    assert message.startswith(f"cannot --resume {out_dir / 'ckpt.pt'}: it was written by grow.py")
    assert "lacks train_config" in message and f"--init-from {out_dir / 'ckpt.pt'}" in message


def test_resuming_a_checkpoint_without_training_state_names_what_it_lacks(tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    save_checkpoint(str(out_dir / "ckpt.pt"), {"model_config": {"n_layer": 1}, "model": {}, "tokenizer": None})
    config = TrainConfig(out_dir=str(out_dir), data_dir=str(tmp_path / "tokens"), resume=True)
    with pytest.raises(ValueError, match=re.escape(
            f"cannot --resume {out_dir / 'ckpt.pt'}: it lacks train_config, optimizer, loop, data, rng")):
        load_checkpoints(config, "cpu")


def test_train_resume_of_a_grown_checkpoint_is_one_error_line(tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    grown_checkpoint(out_dir / "ckpt.pt")
    with pytest.raises(SystemExit) as caught:
        train_script.main(["--resume", "--out-dir", str(out_dir), "--data-dir", str(tmp_path / "tokens"),
                           "--preset", "tiny", "--device", "cpu", "--no-progress-bar"])
    message = str(caught.value.code)
    assert message.startswith(f"error: cannot --resume {out_dir / 'ckpt.pt'}: it was written by grow.py")
    assert "\n" not in message and "KeyError" not in message


# ----------------------------------------------------------------------------------------------------
# C.7: JSONL corpus lines that are not {"text": "..."}

@pytest.mark.parametrize("line, problem", [
    ('{"text": 5}', '"text" must be a string, not a number'),
    ('{"text": null}', '"text" must be a string, not null'),
    ('{"text": ["a"]}', '"text" must be a string, not an array'),
    ("not json at all", "not JSON"),
    ('["a list"]', "not a JSON object but an array"),
    ('"a string"', "not a JSON object but a string"),
    ('{"body": "no text field"}', 'no "text" field (its fields: "body")'),
])
def test_a_bad_jsonl_line_is_refused_naming_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "a good first document"}\n\n' + line + "\n")
    documents = iter_documents(str(path))
    assert next(documents) == "a good first document"
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: {problem}")) as caught:
        next(documents)
    assert str(caught.value).endswith('one object {"text": "a document"} per line (blank lines are skipped)')


# ----------------------------------------------------------------------------------------------------
# C.8: a prepared folder's meta.json that cannot be read

@pytest.mark.parametrize("text, problem", [
    ("", "is not valid JSON"),
    ('{"config": {"tokenizer": "gp', "is not valid JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"complete": true, "parts": []}', 'has no "config"'),
    ('{"config": null}', 'has no "config"'),
])
def test_a_bad_meta_json_is_refused_naming_it_and_the_fix(tmp_path, text, problem):
    folder = tmp_path / "tokens"
    folder.mkdir()
    (folder / "meta.json").write_text(text)
    with pytest.raises(ValueError) as caught:
        read_meta(str(folder))
    message = str(caught.value)
    assert message.startswith(f"{folder / 'meta.json'} {problem}")
    assert "prepare the folder again" in message and "--data-dir" in message


def test_a_good_meta_json_and_a_missing_one_still_read(tmp_path):
    assert read_meta(str(tmp_path)) is None
    (tmp_path / "meta.json").write_text(json.dumps({"config": {"tokenizer": "gpt2"}, "complete": True}))
    assert read_meta(str(tmp_path))["config"] == {"tokenizer": "gpt2"}


def test_train_on_a_folder_with_a_broken_meta_json_is_one_error_line(tmp_path):
    folder = tmp_path / "tokens"
    folder.mkdir()
    (folder / "meta.json").write_text("")
    with pytest.raises(SystemExit) as caught:
        train_script.main(["--out-dir", str(tmp_path / "run"), "--data-dir", str(folder), "--preset", "tiny",
                           "--device", "cpu", "--no-progress-bar", "--max-steps", "1"])
    message = str(caught.value.code)
    assert message.startswith(f"error: {folder / 'meta.json'} is not valid JSON") and "\n" not in message


# ----------------------------------------------------------------------------------------------------
# C.9: files that are not checkpoints, described as what they are

def test_an_empty_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{path} is empty (0 bytes): not a checkpoint")):
        load_checkpoint(str(path))


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_are_not_a_checkpoint_and_get_no_unsafe_advice(tmp_path, seed):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(random.Random(seed).randbytes(4096))
    with pytest.raises(ValueError) as caught:
        load_checkpoint(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path} is not a PyTorch checkpoint (or is damaged)")
    assert "weights_only" not in message and "Python objects" not in message


def test_text_and_a_truncated_checkpoint_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    whole, cut = tmp_path / "whole.pt", tmp_path / "cut.pt"
    save_checkpoint(str(whole), {"model": {"weight": torch.zeros(4096)}})
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    for path in (text, cut):
        with pytest.raises(ValueError) as caught:
            load_checkpoint(str(path))
        message = str(caught.value)
        assert message.startswith(f"{path} is not a PyTorch checkpoint (or is damaged)")
        assert "weights_only" not in message
    assert load_checkpoint(str(whole))["model"]["weight"].shape == (4096,)  # the whole file still loads


def test_a_pickle_of_python_objects_is_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "cramlm-checkpoint", "version": 1, "rng": np.zeros(3)}, path)
    with pytest.raises(ValueError) as caught:
        load_checkpoint(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path} holds Python objects beyond tensors and plain types")
    assert "could run code" in message and "numpy" in message
    assert "weights_only" not in message and "add_safe_globals" not in message and "\033" not in message
