"""
Turn a text corpus into the token files train.py reads: OUT_DIR/val.bin and the training tokens, OUT_DIR/train.bin
or, for a named multi-shard corpus, one file per shard, OUT_DIR/train-00000.bin, train-00001.bin, ...

    python -m data.prepare --corpus c4 --max-train-tokens 1e9 --out-dir data/cache/c4  # C4 shards until 1 B tokens
    python -m data.prepare --corpus ../shared/data/wiki --out-dir data/cache/wiki   # local files, offline
    python -m data.prepare --corpus wikitext103 --out-dir data/cache/wikitext103    # downloads WikiText-103
    python -m data.prepare --corpus ../shared/data/wiki --vocab-size 16384 --out-dir data/cache/wiki16k  # own BPE

The corpus is the name of a public corpus in data/fetch.py (c4, the default, or wikitext103), a file, a folder
(searched recursively), a glob, or a URL (http(s):// or file://); data/sources.py finds its files and reads their
documents (text with blank lines between documents, or C4's JSON lines). A multi-shard corpus is fetched and
tokenised shard by shard, the next shard downloading while this one is tokenised, into one training file ("part")
per shard, and only until --max-train-tokens is reached; a preparation interrupted part-way resumes at the
first missing part, which is how train.py writes the parts after the first in a background process while it
trains (prepare_parts). Documents are tokenised in chunks with tiktoken's multi-threaded batch encoder and
streamed to disk, so memory stays bounded whatever the corpus size; each document is followed by [SEP], which is
how cramming packs documents into fixed-length rows.

The tokenizer is GPT-2's (--tokenizer gpt2, the default), a .bpe file (--tokenizer PATH), or our own
byte-level BPE trained first on the training documents (--vocab-size N, data/bpe.py); a trained or given
vocabulary is saved as OUT_DIR/tokenizer.bpe, and the token files' headers carry its name.
"""
import argparse
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager, redirect_stderr, redirect_stdout, suppress
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tqdm import tqdm

from data.bpe import count_words, save_bpe, train_bpe
from data.fetch import CORPORA, local_files
from data.files import atomic_path, release_lock, take_lock, write_error, write_json
from data.loader import (BPE_FILE, HEADER, META_FILE, TOKEN_DTYPE, TokenFile, data_tokenizer, final_parts, pack_header,
                         part_path, parts_present, read_meta)
from data.sources import is_validation, iter_documents, resolve_inputs, training_documents
from data.tokenizer import SPECIAL_NAMES, VOCAB_SIZE_RANGE, Tokenizer

# The default corpus: English C4 (data/fetch.py's registry: 1024 shards, ODC-By 1.0), big enough for any budget
# here, fetched shard by shard, only as many shards as asked for. WikiText-103 stays available by name
# (--corpus wikitext103). Override with --corpus or $CRAMLM_CORPUS (offline: a local folder of text).
DEFAULT_CORPUS = "c4"


def default_corpus() -> str:
    return os.environ.get("CRAMLM_CORPUS", DEFAULT_CORPUS)


@dataclass
class PrepareConfig:
    corpus: str = field(default_factory=default_corpus)  # a named corpus (c4, wikitext103), file, folder, glob or URL
    out_dir: str = "data/cache/default"  # where the token files (train.bin or train-NNNNN.bin, val.bin) are written
    val_fraction: float = 0.005  # share of documents held out for validation, chosen by a hash of their text
    max_tokens_per_char: float = 0.3  # cramming's filter: drop documents that compress badly under the tokenizer; 0 = off
    max_train_tokens: int = 0  # stop once the training file holds this many tokens (0 = the whole corpus)
    shards: int = 0  # a named multi-shard corpus (c4): at most this many shards; 0 = all if max_train_tokens is set (preparation stops on the count), else 1
    tokenizer: str = "gpt2"  # "gpt2" or a .bpe file; ignored when vocab_size trains a new one
    vocab_size: int = 0  # > 0: train our own BPE with this many ids (4 special tokens included) first
    bpe_train_chars: int = 50_000_000  # characters of training documents the BPE is learned from (~1 wiki shard)
    download_dir: str = "data/cache/downloads"  # where a URL corpus is saved (and unzipped)
    docs_per_chunk: int = 512  # documents tokenised together: bounds memory, keeps every core busy
    num_threads: int = os.cpu_count() or 1  # tiktoken encoder threads
    progress: bool = True  # tqdm bars (off in the background preparer, whose output is a log file)


# ----------------------------------------------------------------------------------------------------
# Writing token files

def temporary_name(path: str) -> str:
    """The name a file is written under before it is renamed to `path`: this process's own (its pid first), so
    two processes never write into, rename or delete each other's half-written file. It ends in the final name
    + ".tmp" (readers wait for final names only)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f"{os.getpid()}-{name}.tmp")


def writing(path: str, error: BaseException):
    """The one-line WriteError for an OSError of the disk or the folder while writing `path` (else the error)."""
    return write_error(error, path) or error


class TokenWriter:
    """Appends tokens to a temporary file of this process's own (temporary_name) and, on close, writes the final
    header and renames it to PATH: a crash, Ctrl-C or a full disk leaves no file that looks complete (and no .tmp
    to fill the disk). A full disk is one clear WriteError naming PATH (an OSError and a ValueError)."""

    def __init__(self, path: str, tokenizer: Tokenizer):
        self.path, self.temporary, self.num_tokens, self.tokenizer = path, temporary_name(path), 0, tokenizer
        try:
            self.file = open(self.temporary, "wb")
            self.file.write(b"\0" * HEADER.size)  # placeholder until the count is known
        except OSError as error:
            self.file = None
            self.abort()
            raise writing(path, error) from None

    def write(self, tokens: np.ndarray):
        try:
            self.file.write(tokens.astype(TOKEN_DTYPE).tobytes())
        except OSError as error:
            raise writing(self.path, error) from None
        self.num_tokens += len(tokens)

    def close(self):
        try:
            self.file.seek(0)
            self.file.write(pack_header(self.num_tokens, self.tokenizer))
            self.file.close()  # flushes the buffer: on a full disk this is where ENOSPC surfaces
            os.replace(self.temporary, self.path)
        except OSError as error:
            self.abort()
            raise writing(self.path, error) from None
        except BaseException:
            self.abort()
            raise

    def abort(self):
        """Delete the temporary file. Closing flushes the buffer, which fails again on a full disk: ignore
        that, the file is being thrown away."""
        try:
            if self.file is not None:
                self.file.close()
        except OSError:
            pass
        with suppress(FileNotFoundError):
            os.remove(self.temporary)


def chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def check_vocab_size(vocab_size: int):
    low, high = VOCAB_SIZE_RANGE
    if not low <= vocab_size <= high:
        raise ValueError(f"--vocab-size {vocab_size}: must be in [{low}, {high}] (every byte + 4 special tokens; "
                         "uint16 token files), e.g. 16384")


def make_tokenizer(config: PrepareConfig, paths: list[str]) -> Tokenizer:
    """GPT-2's, a given .bpe file, or a new BPE learned from the training documents (saved as out_dir/tokenizer.bpe)."""
    bpe_path = os.path.join(config.out_dir, BPE_FILE)
    if config.vocab_size:
        check_vocab_size(config.vocab_size)
        print(f"training a {config.vocab_size}-token BPE on up to {config.bpe_train_chars:,} characters of {config.corpus}")
        word_counts = count_words(training_documents(paths, config.val_fraction, config.bpe_train_chars, config.download_dir))
        with tqdm(total=config.vocab_size - len(SPECIAL_NAMES) - 256, desc="BPE merges") as bar:
            save_bpe(train_bpe(word_counts, config.vocab_size - len(SPECIAL_NAMES), bar), bpe_path)
        return Tokenizer.from_spec(bpe_path)
    if config.tokenizer == "gpt2":
        if os.path.exists(bpe_path):
            os.remove(bpe_path)  # a folder re-prepared with GPT-2 must not keep an old vocabulary
        return Tokenizer.gpt2()
    tokenizer = Tokenizer.from_spec(config.tokenizer)
    if os.path.abspath(config.tokenizer) != os.path.abspath(bpe_path):
        with atomic_path(bpe_path) as temporary, open(temporary, "w") as f:
            f.write(tokenizer.bpe_text)
    return tokenizer


def write_tokens(documents, tokenizer: Tokenizer, writers: dict, stats: dict, config: PrepareConfig, stop_at: int = 0):
    """Tokenise documents in chunks (tiktoken's batch encoder on all threads), drop those cramming's filter
    rejects, and append each, followed by [SEP], to writers[its split]; a split without a writer is left out
    (the later parts of a sharded corpus write no validation). Counts into stats; stops once
    stats["train_tokens"] reaches stop_at (0 = never)."""
    bar = tqdm(desc="prepare", unit=" docs", disable=not config.progress)
    try:
        for chunk in chunks(documents, config.docs_per_chunk):
            for document, ids in zip(chunk, tokenizer.encode_batch(chunk, num_threads=config.num_threads)):
                stats["documents"] += 1
                if config.max_tokens_per_char and len(ids) > config.max_tokens_per_char * len(document):
                    stats["dropped_documents"] += 1
                    continue
                split = "val" if is_validation(document, config.val_fraction) else "train"
                # the target is checked per document (a chunk holds 512 of them); the rest of the chunk's held-out
                # documents still go to val.bin, so a small target keeps a validation set
                reached = split == "train" and stop_at and stats["train_tokens"] >= stop_at
                if split in writers and not reached:
                    writers[split].write(np.array(ids + [tokenizer.sep_id]))
                    stats[f"{split}_tokens"] += len(ids) + 1
            bar.update(len(chunk))
            bar.set_postfix(train_tokens=f"{stats['train_tokens']:,}")
            if stop_at and stats["train_tokens"] >= stop_at:
                return
    finally:
        bar.close()


def check_splits(stats: dict, config: PrepareConfig, inputs: list[str]):
    """Both splits must hold tokens; if one is empty, say why (no text, the filter, too few documents)."""
    if stats["val_tokens"] and stats["train_tokens"]:
        return
    if stats["documents"] == 0:
        raise ValueError(f"{config.corpus}: no text in {', '.join(inputs)} (empty, or blank lines only): "
                         f"point --corpus at the text")
    if stats["dropped_documents"] == stats["documents"]:
        raise ValueError(f"{config.corpus}: the --max-tokens-per-char {config.max_tokens_per_char} filter dropped all "
                         f"{stats['documents']} documents: raise it, or 0 turns it off")
    raise ValueError(f"{config.corpus}: {stats} leaves an empty split; use more text or change --val-fraction")


def is_sharded(corpus: str) -> bool:
    """A named corpus of many shards (c4): prepared into one training file per shard (prepare_parts)."""
    return corpus in CORPORA and CORPORA[corpus].num_shards > 1


# ----------------------------------------------------------------------------------------------------
# One process at a time prepares a folder

PREPARE_LOCK = "prepare.lock"  # in the folder being prepared, holding the preparing process's pid
_held: dict[str, int] = {}  # folders this process holds the lock of, and how deep (preparation_lock nests)


class PreparationBusy(ValueError):
    """Another live process is preparing the folder (its pid in out_dir/prepare.lock)."""

    def __init__(self, out_dir: str, holder: int):
        self.holder = holder
        lock = os.path.join(out_dir, PREPARE_LOCK)
        super().__init__(f"{out_dir} is being prepared by another process (pid {holder}, see {lock}): wait for it "
                         f"to finish and run again, or choose another folder (if no such process exists, delete "
                         f"{lock})")


@contextmanager
def preparation_lock(out_dir: str, wait: bool = False, poll_seconds: float = 0.2):
    """Hold out_dir/prepare.lock while preparing out_dir: created atomically with this process's pid, a stale one
    (its process gone) taken over (data.files.take_lock). Held already by another live process: wait (printing
    so once) when `wait`, else PreparationBusy. Nests within one process. Temporary token files of processes
    gone (a kill mid-write) are deleted once the lock is ours."""
    key = f"{os.getpid()}:{os.path.realpath(out_dir)}"  # a forked child does not hold its parent's lock
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    lock = os.path.join(out_dir, PREPARE_LOCK)
    try:
        os.makedirs(out_dir, exist_ok=True)
        holder, said = take_lock(lock), False
        while holder is not None:
            if not wait:
                raise PreparationBusy(out_dir, holder)
            if not said:
                print(f"{out_dir} is being prepared by another process (pid {holder}): waiting for it to finish",
                      flush=True)
                said = True
            time.sleep(poll_seconds)
            holder = take_lock(lock)
    except OSError as error:
        raise writing(lock, error) from None
    _held[key] = 1
    try:
        remove_orphans(out_dir)
        yield
    finally:
        del _held[key]
        release_lock(lock)


def remove_orphans(out_dir: str):
    """Temporary token files (temporary_name) of processes that are gone: only the lock's holder writes them."""
    for name in os.listdir(out_dir):
        pid, dash, rest = name.partition("-")
        if dash and pid.isdigit() and rest.endswith(".bin.tmp") and int(pid) != os.getpid():
            with suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, name))


def prepare(config: PrepareConfig, max_parts: int = 0) -> dict:
    """Tokenise the corpus into out_dir/{train,val}.bin; returns counts (also written to out_dir/meta.json).
    A named multi-shard corpus is written as parts instead, one per shard (prepare_parts; max_parts goes there).
    out_dir is locked meanwhile (preparation_lock: PreparationBusy if another process is preparing it); a full
    disk or a folder that cannot be written is one WriteError (an OSError and a ValueError) naming the file."""
    paths = resolve_inputs(config.corpus, config.download_dir, config.shards, config.max_train_tokens)
    try:
        with preparation_lock(config.out_dir):
            if is_sharded(config.corpus):
                return prepare_parts(config, paths, max_parts)
            return prepare_whole(config, paths)
    except OSError as error:
        raise writing(error.filename or config.out_dir, error) from None


def prepare_whole(config: PrepareConfig, paths: list[str]) -> dict:
    """prepare() of a local corpus (or a single-file named one): train.bin and val.bin, out_dir locked."""
    # train.bin is what train.py takes as "prepared": remove an old one now and write the new one last, so a
    # failure part-way (a full disk, Ctrl-C) never leaves it beside a val.bin or meta.json of another preparation.
    if os.path.exists(os.path.join(config.out_dir, "train.bin")):
        os.remove(os.path.join(config.out_dir, "train.bin"))
    tokenizer = make_tokenizer(config, paths)
    writers = {split: TokenWriter(os.path.join(config.out_dir, f"{split}.bin"), tokenizer) for split in ("train", "val")}
    stats = {"tokenizer": tokenizer.name, "documents": 0, "dropped_documents": 0, "train_tokens": 0, "val_tokens": 0}
    # shard by shard: a URL is downloaded (the next one in the background) when the documents reach it
    files, used = local_files(paths, config.download_dir, config.progress), []

    def documents_of_each_file():
        for path in files:
            used.append(path)  # meta.json lists the files read, not every shard a target might have reached
            yield from iter_documents(path)
    try:
        write_tokens(documents_of_each_file(), tokenizer, writers, stats, config, stop_at=config.max_train_tokens)
        check_splits(stats, config, used)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        files.close()  # stops a next-shard download in flight once the target is reached (its .part is kept)
    meta_path = os.path.join(config.out_dir, META_FILE)
    try:
        writers["val"].close()
        write_json(meta_path, {**stats, "config": asdict(config), "inputs": used})  # temp + rename: never half-written
    except BaseException:
        writers["train"].abort()
        raise
    writers["train"].close()  # last: its presence means the whole preparation finished
    return stats


# ----------------------------------------------------------------------------------------------------
# A multi-shard corpus: one training file per shard, the later ones written while training runs

# what a folder's tokens depend on: a preparation resumed in a folder must use the same values
TOKEN_SETTINGS = ("corpus", "val_fraction", "max_tokens_per_char", "tokenizer", "vocab_size", "bpe_train_chars")


def parts_tokenizer(config: PrepareConfig, shard_urls: list[str]) -> Tokenizer:
    """The tokenizer of out_dir's parts. With part 0 present it is the folder's own, once its meta.json shows the
    parts were prepared with the same TOKEN_SETTINGS; else a new one (our own BPE learns from shard 0)."""
    if os.path.isfile(part_path(config.out_dir, 0)):
        previous = (read_meta(config.out_dir) or {}).get("config", {})
        differ = [f"{name}={previous[name]!r}" for name in TOKEN_SETTINGS if previous.get(name, getattr(config, name))
                  != getattr(config, name)]
        if differ:
            raise ValueError(f"{config.out_dir} holds parts prepared with {', '.join(differ)}: prepare into another "
                             f"--out-dir, or delete its train-*.bin to start again")
        return data_tokenizer(config.out_dir)
    if os.path.exists(os.path.join(config.out_dir, "train.bin")):  # another preparation's: it would win (is_prepared)
        os.remove(os.path.join(config.out_dir, "train.bin"))
    return make_tokenizer(config, shard_urls[:1])


def write_part(config: PrepareConfig, index: int, path: str, tokenizer: Tokenizer, stats: dict):
    """Tokenise one downloaded shard into part `index`; part 0 also writes val.bin, and both its splits must hold
    tokens. On any failure every file of this part is deleted (TokenWriter.abort)."""
    writers = {"train": TokenWriter(part_path(config.out_dir, index), tokenizer)}
    if index == 0:
        writers["val"] = TokenWriter(os.path.join(config.out_dir, "val.bin"), tokenizer)
    tokens_before = stats["train_tokens"]
    try:
        write_tokens(iter_documents(path), tokenizer, writers, stats, config)
        if index == 0:
            check_splits(stats, config, [path])
        for split in ("val", "train"):  # the part last: its name is what readers wait for
            if split in writers:
                writers[split].close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    print(f"part {index}: {stats['train_tokens'] - tokens_before:,} training tokens from {os.path.basename(path)}",
          flush=True)


def prepare_parts(config: PrepareConfig, shard_urls: list[str], max_parts: int = 0) -> dict:
    """One training file per shard: part 0 (out_dir/train-00000.bin) from shard 0, with val.bin and the tokenizer
    (our own BPE is learned from shard 0's documents), then part 1 from shard 1, ..., whole shards, until the parts
    hold config.max_train_tokens. Later shards write no validation: their held-out documents (the same hash) are
    dropped, so val.bin stays shard 0's and no held-out document is ever trained on.

    Parts already present are kept (an interrupted preparation resumes at the first missing part, with the
    folder's tokenizer); max_parts > 0 stops once parts 0 .. max_parts-1 exist (train.py writes part 0 itself and
    the rest in the background). Each part is written as .tmp and renamed when whole, so a reader never sees half
    a part. meta.json says "complete": false until the end, when it lists the final parts. Returns counts:
    documents of this call, train_tokens of all the parts."""
    try:
        with preparation_lock(config.out_dir):
            return write_parts(config, shard_urls, max_parts)
    except OSError as error:
        raise writing(error.filename or config.out_dir, error) from None


def write_parts(config: PrepareConfig, shard_urls: list[str], max_parts: int) -> dict:
    """prepare_parts's work, out_dir locked."""
    meta_path = os.path.join(config.out_dir, META_FILE)
    tokenizer = parts_tokenizer(config, shard_urls)
    write_json(meta_path, {"complete": False, "parts": None, "config": asdict(config)})
    stats = {"tokenizer": tokenizer.name, "documents": 0, "dropped_documents": 0, "train_tokens": 0, "val_tokens": 0}

    def target_reached() -> bool:
        return bool(config.max_train_tokens) and stats["train_tokens"] >= config.max_train_tokens
    count = 0  # parts present, or written
    while count < len(shard_urls) and os.path.isfile(part_path(config.out_dir, count)) and not target_reached():
        stats["train_tokens"] += TokenFile(part_path(config.out_dir, count), tokenizer).num_tokens
        count += 1
    end = min(len(shard_urls), max_parts) if max_parts else len(shard_urls)
    files = local_files(shard_urls[count:end] if not target_reached() else [], config.download_dir, config.progress)
    try:
        for path in files:
            write_part(config, count, path, tokenizer, stats)
            count += 1
            if target_reached():
                break
    finally:
        files.close()
    stats["val_tokens"] = TokenFile(os.path.join(config.out_dir, "val.bin"), tokenizer).num_tokens
    if target_reached() or count == len(shard_urls):
        parts = [os.path.basename(part_path(config.out_dir, index)) for index in range(count)]
        write_json(meta_path, {**stats, "complete": True, "parts": parts, "config": asdict(config),
                               "inputs": shard_urls[:count]})
    return stats


def prepare_in_background(config: PrepareConfig, shard_urls: list[str], log_path: str):
    """The body of the background preparer (BackgroundPreparation), its output going to log_path. Ctrl-C is for
    the training process, which then stops us, so SIGINT is ignored here; SIGTERM becomes SystemExit, so the part
    being written is deleted (TokenWriter.abort) and the shard's download keeps its .part to resume."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    with open(log_path, "a") as log, redirect_stdout(log), redirect_stderr(log):
        try:
            with preparation_lock(config.out_dir, wait=True):  # the parent's part 0, or another run's parts
                prepare_parts(config, shard_urls)
        except Exception:
            traceback.print_exc()
            sys.exit(1)


class BackgroundPreparation:
    """prepare_parts of the parts still missing, in a process of its own started with "spawn" (a fresh
    interpreter: no copy of the training process's CUDA state or threads), with its output in OUT_DIR/prepare.log.
    train.py starts it on rank 0 once part 0 exists, and stops it when training ends, fails or is interrupted.

    A watcher thread waits for the process to exit. If it exits without completing the folder (an error, a kill),
    the watcher lists the parts present as final in meta.json, so that readers on every process stop waiting
    for more, and says so loudly: training goes on with the parts there are, repeating them sooner."""

    def __init__(self, config: PrepareConfig):
        self.config, self.log_path, self.stopping = config, os.path.join(config.out_dir, "prepare.log"), False
        self.shard_urls = resolve_inputs(config.corpus, config.download_dir, config.shards, config.max_train_tokens)
        self.process = multiprocessing.get_context("spawn").Process(
            target=prepare_in_background, args=(replace(config, progress=False), self.shard_urls, self.log_path),
            name="cramlm-prepare", daemon=True)  # daemon: never outlives the training process
        self.process.start()
        self.watcher = threading.Thread(target=self.watch, daemon=True)
        self.watcher.start()

    def watch(self):
        self.process.join()
        meta = read_meta(self.config.out_dir) or {}
        if self.stopping or meta.get("complete"):
            return
        parts = [os.path.basename(part_path(self.config.out_dir, index)) for index in range(parts_present(self.config.out_dir))]
        error = f"the background preparer exited with code {self.process.exitcode} (its output: {self.log_path})"
        write_json(os.path.join(self.config.out_dir, META_FILE), {**meta, "parts": parts, "error": error})
        print(f"WARNING: {error} before {self.config.out_dir} held its {self.config.max_train_tokens:,} training "
              f"tokens: training goes on with the {len(parts)} part(s) prepared, so it repeats them sooner. The next "
              f"run in this folder resumes the preparation.", file=sys.stderr, flush=True)

    def stop(self):
        """Terminate the process (the part in progress is deleted, see prepare_in_background), wait for it, and
        settle meta.json from the parts on disk."""
        self.stopping = True
        if self.process.is_alive():
            self.process.terminate()
        self.watcher.join(timeout=60)  # the watcher alone joins the process: one waiter per child
        if self.watcher.is_alive():  # stuck in a system call: kill it (.tmp names are never read anyway)
            self.process.kill()
            self.watcher.join()
        if final_parts(self.config.out_dir) is None:
            # The stop can land after the last part's rename and before meta.json says "complete" (a busy machine
            # makes that window wide). prepare_parts over the parts present downloads nothing and marks the folder
            # complete exactly when they already reach the target, so the next run does not resume for nothing.
            try:
                prepare_parts(replace(self.config, progress=False), self.shard_urls,
                              max_parts=parts_present(self.config.out_dir))
            except PreparationBusy:  # another run's preparer writes the parts now, and settles meta.json itself
                pass


def token_count(text: str) -> int:
    """--max-train-tokens's type: a whole number >= 0, written 2000000 or 2e6."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of tokens >= 0 (e.g. 2e9; 0 = all)")
    return int(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = PrepareConfig()
    parser.add_argument("--corpus", default=defaults.corpus,
                        help=f"a named public corpus ({', '.join(CORPORA)}), or a file, folder, glob or URL of the "
                             f"text (default: $CRAMLM_CORPUS or c4)")
    parser.add_argument("--out-dir", default=defaults.out_dir,
                        help="where the token files go: train.bin (or one train-NNNNN.bin per shard of c4) and val.bin")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="share of documents held out")
    parser.add_argument("--max-tokens-per-char", type=float, default=defaults.max_tokens_per_char,
                        help="drop documents with more tokens per character than this (cramming's filter); 0 = keep all")
    parser.add_argument("--max-train-tokens", type=token_count, default=0,
                        help="stop after this many training tokens (0 = all); e.g. 2e9. With a named multi-shard corpus "
                             "only the shards this needs are downloaded")
    parser.add_argument("--shards", type=int, default=0, help="named multi-shard corpus: at most this many shards "
                        "(default: as many as --max-train-tokens needs, or 1 without it)")
    parser.add_argument("--download-dir", default=defaults.download_dir, help="cache for downloaded corpora")
    parser.add_argument("--tokenizer", default=defaults.tokenizer, help="gpt2, or the path of a .bpe file")
    parser.add_argument("--vocab-size", type=int, default=0,
                        help="train our own byte-level BPE with this many ids (4 specials included; e.g. 16384) "
                             "on the training documents first, and use it instead of --tokenizer")
    parser.add_argument("--bpe-train-chars", type=int, default=defaults.bpe_train_chars,
                        help="characters of training text the BPE is learned from")
    parser.add_argument("--num-threads", type=int, default=defaults.num_threads, help="tokenizer threads")
    args = parser.parse_args(argv)
    stats = prepare(PrepareConfig(corpus=args.corpus, out_dir=args.out_dir, val_fraction=args.val_fraction,
                                  max_tokens_per_char=args.max_tokens_per_char, max_train_tokens=args.max_train_tokens,
                                  shards=args.shards,
                                  download_dir=args.download_dir, num_threads=args.num_threads,
                                  tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                                  bpe_train_chars=args.bpe_train_chars))
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # bad input: one clear message, no traceback
        sys.exit(f"error: {error}")
