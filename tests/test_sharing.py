"""Folders shared between processes, and the operating system's errors while writing them.

C.1 two runs preparing one --data-dir at once; C.2 a stale LOCK taken over by two runs at once; C.5 a full disk, a
read-only folder or a file where a folder should be, as one clear error; C.6 blimp.py's and glue_eval.py's --out
checked before any work."""
import errno
import json
import multiprocessing
import os
import time
import traceback

import numpy as np
import pytest
import torch

import blimp
import data.files
import data.prepare
import glue_eval
import run.checkpoint
from conftest import synthetic_documents
from data.loader import TokenFile, data_tokenizer
from data.prepare import PREPARE_LOCK, PreparationBusy, PrepareConfig, TokenWriter, prepare, preparation_lock
from data.tokenizer import Tokenizer
from run.checkpoint import save_checkpoint
from run.config import TrainConfig
from run.corpus import ensure_prepared
from run.folder import claim_out_dir

FORK = multiprocessing.get_context("fork")


def write_corpus(path, seed: int, documents: int = 300):
    path.write_text("\n\n".join(synthetic_documents(documents, seed=seed)) + "\n")
    return str(path)


# ----------------------------------------------------------------------------------------------------
# C.1: two first runs sharing one --data-dir

def prepare_as_a_run(barrier, results, data_dir: str, corpus: str):
    """One run's preparation of --data-dir (run.corpus.ensure_prepared, rank 0), released with the other's."""
    try:
        config = TrainConfig(data_dir=data_dir, out_dir=data_dir + "-run", corpus=corpus, vocab_size=0, preset="tiny",
                             seq_len=32, micro_batch_size=8, batch_tokens=512, max_tokens_per_char=0)
        barrier.wait()
        ensure_prepared(config, 0, 1e5)
        meta = json.load(open(os.path.join(data_dir, "meta.json")))
        train_tokens = TokenFile(os.path.join(data_dir, "train.bin"), data_tokenizer(data_dir)).num_tokens
        results.put((corpus, "ok", meta["config"]["corpus"], meta["train_tokens"] == train_tokens))
    except Exception as error:  # noqa: BLE001 (reported to the parent, which judges it)
        results.put((corpus, "error", f"{type(error).__name__}: {error}", traceback.format_exc()))


def race(target, arguments_of_each: list, timeout: float = 60):
    barrier, results = FORK.Barrier(len(arguments_of_each)), FORK.Queue()
    processes = [FORK.Process(target=target, args=(barrier, results, *arguments)) for arguments in arguments_of_each]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=timeout) for _ in processes]
    for process in processes:
        process.join(timeout=timeout)
    return outcomes


@pytest.mark.parametrize("trial", range(4))
def test_two_first_runs_on_one_data_dir_never_train_on_each_others_corpus(tmp_path, trial):
    corpora = [write_corpus(tmp_path / "a.txt", seed=1), write_corpus(tmp_path / "b.txt", seed=2)]
    data_dir = str(tmp_path / "dd")
    outcomes = race(prepare_as_a_run, [(data_dir, corpus) for corpus in corpora])
    succeeded = [outcome for outcome in outcomes if outcome[1] == "ok"]
    assert succeeded, outcomes
    final = json.load(open(os.path.join(data_dir, "meta.json")))["config"]["corpus"]  # what a run then trains on
    for corpus, _, prepared_from, consistent in succeeded:  # a run that succeeds trains on the text it was given
        assert prepared_from == corpus == final and consistent, outcomes
    for corpus, _, message, trace in (outcome for outcome in outcomes if outcome[1] == "error"):
        assert message.startswith("ValueError: ") and "prepared by another run" in message, (message, trace)
    assert sorted(os.listdir(data_dir)) == ["meta.json", "train.bin", "val.bin"]  # no lock, no temporary left


def test_two_first_runs_with_the_same_corpus_get_one_preparation_and_both_train(tmp_path):
    corpus = write_corpus(tmp_path / "a.txt", seed=1)
    data_dir = str(tmp_path / "dd")
    outcomes = race(prepare_as_a_run, [(data_dir, corpus), (data_dir, corpus)])
    assert [outcome[1:] for outcome in outcomes] == [("ok", corpus, True)] * 2, outcomes


def test_a_data_dir_being_prepared_is_refused_to_a_second_preparation_by_name(tmp_path):
    config = PrepareConfig(corpus=write_corpus(tmp_path / "a.txt", seed=1), out_dir=str(tmp_path / "dd"),
                           num_threads=1, progress=False, val_fraction=0.1, max_tokens_per_char=0)
    started, stop = FORK.Event(), FORK.Event()
    other = FORK.Process(target=hold_preparation_lock, args=(config.out_dir, started, stop))
    other.start()
    try:
        assert started.wait(20)
        with pytest.raises(PreparationBusy, match=rf"{config.out_dir} is being prepared by another process \(pid "
                                                  rf"{other.pid}\b.*: wait for it to finish and run again"):
            prepare(config)
    finally:
        stop.set()
        other.join(20)
    assert prepare(config)["train_tokens"] > 0  # its lock went with it


def hold_preparation_lock(out_dir, started, stop):
    with preparation_lock(out_dir):
        started.set()
        stop.wait(20)


def test_a_dead_preparers_lock_and_temporary_files_are_cleared(tmp_path):
    out = tmp_path / "dd"
    out.mkdir()
    (out / PREPARE_LOCK).write_text("999999\n")  # a process killed mid-preparation
    (out / "999999-train.bin.tmp").write_bytes(b"half")
    config = PrepareConfig(corpus=write_corpus(tmp_path / "a.txt", seed=1), out_dir=str(out), num_threads=1,
                           progress=False, val_fraction=0.1, max_tokens_per_char=0)
    prepare(config)
    assert sorted(os.listdir(out)) == ["meta.json", "train.bin", "val.bin"]


def test_token_files_are_written_under_names_of_this_process_own(tmp_path):
    writer = TokenWriter(str(tmp_path / "train.bin"), Tokenizer.gpt2())
    assert os.path.basename(writer.temporary) == f"{os.getpid()}-train.bin.tmp"
    writer.write(np.arange(10))
    writer.close()
    assert os.listdir(tmp_path) == ["train.bin"]


# ----------------------------------------------------------------------------------------------------
# C.2: a stale LOCK found by two runs at once

def claim_stale(barrier, results, out_dir: str, slow: bool):
    """claim_out_dir after the other's release; `slow`: the liveness check takes 50 ms (a loaded machine), so both
    find the lock stale before either acts on it (the window in which both runs once took it over)."""
    import run.folder
    for module in (run.folder, data.files):
        real = getattr(module, "process_alive", None)
        if slow and real is not None:
            setattr(module, "process_alive", lambda pid, real=real: time.sleep(0.05) or real(pid))
    barrier.wait()
    try:
        claim_out_dir(out_dir, False, False)
        results.put("won")
    except ValueError as error:
        results.put(f"refused: {error}")
    barrier.wait()  # the winner stays alive (its lock live) until both have answered


def test_a_stale_lock_is_taken_over_by_exactly_one_of_two_runs(tmp_path):
    for trial in range(20):
        out = tmp_path / f"x{trial}"
        out.mkdir()
        (out / "LOCK").write_text("999999\n")
        outcomes = race(claim_stale, [(str(out), trial % 2 == 0)] * 2, timeout=30)
        assert sorted(outcome == "won" for outcome in outcomes) == [False, True], (trial, outcomes)
        assert "in use by a live run" in next(outcome for outcome in outcomes if outcome != "won")
        assert sorted(os.listdir(out)) == ["LOCK"]  # no guard or pid file left beside it


# ----------------------------------------------------------------------------------------------------
# C.5: the operating system's errors, as one clear line

def test_a_full_disk_while_preparing_is_one_clear_error(tmp_path, monkeypatch):
    real_open = open

    class FullFile:
        def __init__(self, real):
            self.real = real

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def seek(self, *args):
            return self.real.seek(*args)

        def close(self):
            self.real.close()

    def full_open(path, mode="r", *args, **kwargs):
        real = real_open(path, mode, *args, **kwargs)
        return FullFile(real) if str(path).endswith("train.bin.tmp") else real
    monkeypatch.setattr(data.prepare, "open", full_open, raising=False)
    out = tmp_path / "dd"
    config = PrepareConfig(corpus=write_corpus(tmp_path / "a.txt", seed=1), out_dir=str(out), num_threads=1,
                           progress=False, val_fraction=0.1, max_tokens_per_char=0)
    with pytest.raises(ValueError) as error:
        prepare(config)
    assert str(error.value) == (f"No space left on device while writing {out / 'train.bin'}: free space or choose "
                                f"another folder")
    assert isinstance(error.value, OSError) and error.value.errno == errno.ENOSPC
    assert not [name for name in os.listdir(out) if name.endswith(".tmp") or name == PREPARE_LOCK]


@pytest.mark.parametrize("failure", [RuntimeError("basic_ios::clear: iostream error"),
                                     OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_while_checkpointing_is_one_clear_error(tmp_path, monkeypatch, failure):
    def full_disk_save(payload, path):
        with open(path, "wb") as f:
            f.write(b"part of a checkpoint")
        raise failure
    monkeypatch.setattr(run.checkpoint.torch, "save", full_disk_save)
    monkeypatch.setattr(data.files, "disk_nearly_full", lambda folder: True)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(ValueError, match=rf"^No space left on device while writing {path}: free space or choose "
                                         rf"another folder"):
        save_checkpoint(str(path), {"model": torch.zeros(2)})
    assert os.listdir(tmp_path) == []  # no temporary left filling the disk


def test_another_runtime_error_of_torch_save_is_not_mistaken_for_the_disk(tmp_path, monkeypatch):
    def failing_save(payload, path):
        raise RuntimeError("something else")
    monkeypatch.setattr(run.checkpoint.torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="^something else$"):
        save_checkpoint(str(tmp_path / "ckpt.pt"), {})


def test_a_file_as_out_dir_is_one_clear_error(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(ValueError, match=rf"^--out-dir {tmp_path / 'out'} is a file, not a folder: choose a folder$"):
        claim_out_dir(str(tmp_path / "out"), False, False)


def test_a_file_as_out_dir_is_one_error_line_from_train_py(tmp_path, capsys):
    import train
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data-dir", str(tmp_path / "dd"), "--corpus", write_corpus(tmp_path / "a.txt", seed=1),
                    "--out-dir", str(tmp_path / "out"), "--preset", "tiny", "--seq-len", "32", "--micro-batch-size",
                    "8", "--batch-tokens", "512", "--max-steps", "1", "--no-progress-bar"])
    assert exit_info.value.code == f"error: --out-dir {tmp_path / 'out'} is a file, not a folder: choose a folder"


def test_a_read_only_out_dir_is_one_clear_error(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("this user (root?) can write in a 0o555 folder")
        with pytest.raises(ValueError, match=rf"cannot write in {out} \(read-only"):
            claim_out_dir(str(out), False, False)
    finally:
        out.chmod(0o755)


def deny_writing(monkeypatch, number=errno.EROFS):
    """A folder that cannot be written, as a read-only mount is (root included): creating any file there fails."""
    def refuse(*args, **kwargs):
        raise OSError(number, os.strerror(number))
    monkeypatch.setattr(data.files.tempfile, "mkstemp", refuse)


@pytest.mark.parametrize("number, why", [(errno.EROFS, "read-only filesystem"),
                                         (errno.EACCES, "read-only: permission denied")])
def test_an_out_dir_that_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch, number, why):
    deny_writing(monkeypatch, number)
    with pytest.raises(ValueError, match=rf"^cannot write in {tmp_path} \({why}\): make it writable or choose "
                                         rf"another --out-dir$"):
        claim_out_dir(str(tmp_path), False, False)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------------
# C.6: --out checked before any work

def no_work(*args, **kwargs):
    pytest.fail("the work started before --out was checked")


def test_blimp_checks_a_missing_out_folder_before_scoring(tmp_path, monkeypatch):
    monkeypatch.setattr(blimp, "load_encoder", no_work)
    monkeypatch.setattr(blimp, "read_blimp", no_work)
    out = tmp_path / "nope" / "x.json"
    with pytest.raises(SystemExit) as exit_info:
        blimp.main(["--random-init", "tiny", "--out", str(out)])
    assert exit_info.value.code == (f"error: --out {out}: the folder {tmp_path / 'nope'} does not exist: create it "
                                    f"first or choose another path (checked before any work)")


def test_blimp_checks_a_read_only_out_folder_before_scoring(tmp_path, monkeypatch):
    monkeypatch.setattr(blimp, "load_encoder", no_work)
    monkeypatch.setattr(blimp, "read_blimp", no_work)
    deny_writing(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        blimp.main(["--random-init", "tiny", "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == (f"error: cannot write in {tmp_path} (read-only filesystem): make it writable or "
                                    f"choose another --out")


def test_glue_checks_a_read_only_out_folder_before_fine_tuning(tmp_path, monkeypatch):
    monkeypatch.setattr(glue_eval, "load_arms", no_work)
    monkeypatch.setattr(glue_eval, "read_tasks", no_work)
    deny_writing(monkeypatch, errno.EACCES)
    with pytest.raises(SystemExit) as exit_info:
        glue_eval.main(["--random-init", "tiny", "--tasks", "sst2", "--out", str(tmp_path / "r.json")])
    assert exit_info.value.code == (f"error: cannot write in {tmp_path} (read-only: permission denied): make it "
                                    f"writable or choose another --out")


def test_glue_checks_an_out_under_a_file_before_fine_tuning(tmp_path, monkeypatch):
    monkeypatch.setattr(glue_eval, "load_arms", no_work)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        glue_eval.main(["--random-init", "tiny", "--tasks", "sst2", "--out", str(tmp_path / "file" / "r.json")])
    assert exit_info.value.code.startswith("error: ") and "is a file, not a folder" in exit_info.value.code
    assert "\n" not in exit_info.value.code


def test_glue_still_makes_a_missing_out_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(glue_eval, "load_arms", lambda args: (_ for _ in ()).throw(ValueError("stop here")))
    with pytest.raises(SystemExit, match="error: stop here"):
        glue_eval.main(["--random-init", "tiny", "--tasks", "sst2", "--out", str(tmp_path / "new" / "r.json")])
    assert (tmp_path / "new").is_dir()
