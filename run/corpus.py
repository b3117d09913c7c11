"""
The corpus a run trains on: prepared on first use, sized to the budget, and read in parts while the rest is
still being written.

A local corpus is prepared whole before training. A named multi-shard corpus (C4) is prepared only as far as the
budget needs: train.py measures the run's tokens/s first (machine.py), so the tokens it will consume over
--max-passes are known; part 0 (with val.bin and the tokenizer) is written before the clock starts and the other
parts by a background process while training runs, so a day's run does not spend its first hour downloading.
PartedBatches reads such a folder part by part, waiting for a part that is not written yet.
"""
import os
import sys
from contextlib import suppress

import torch.distributed as dist

from data.fetch import CORPORA, passes_warning, shards_needed, train_tokens_to_prepare
from data.loader import data_tokenizer, is_prepared, parts_missing, read_meta, train_token_files
from data.prepare import BackgroundPreparation, PrepareConfig, PreparationBusy, is_sharded, prepare, preparation_lock
from data.tokenizer import Tokenizer, embedding_rows
from run.config import TrainConfig, describe_budget


def prepared_tokenizer_settings(meta: dict | None) -> dict:
    """The --tokenizer and --vocab-size a folder was prepared with (its meta.json: data.loader.read_meta), as
    TrainConfig fields; {} for a folder not prepared yet. Code that builds a TrainConfig for a prepared folder
    passes these: with train.py's defaults instead, every run on a folder with a BPE of its own would get
    check_prepared_folder's warning that "--tokenizer gpt2 only applies to preparing a folder"."""
    prepared = (meta or {}).get("config")
    if not prepared:
        return {}
    return {"tokenizer": prepared.get("tokenizer", "gpt2"), "vocab_size": prepared.get("vocab_size", 0)}


def check_prepared_folder(config: TrainConfig, meta: dict | None):
    """Settings that only matter for preparing --data-dir, against a folder already prepared: another filter is
    refused (it is part of the recipe); another tokenizer cannot be applied, so it gets a warning, not silence
    (a refusal would stop the cpu recipe's default --vocab-size on any folder prepared otherwise)."""
    if not meta:
        return
    prepared = meta["config"]
    if prepared["max_tokens_per_char"] != config.max_tokens_per_char:
        raise ValueError(f"{config.data_dir} was prepared with max_tokens_per_char={prepared['max_tokens_per_char']}, "
                         f"not {config.max_tokens_per_char}: pass that value or prepare another folder")
    made_with = prepared_tokenizer_settings(meta)
    if config.vocab_size:
        asked, same = f"--vocab-size {config.vocab_size}", config.vocab_size == made_with["vocab_size"]
    else:
        asked, same = f"--tokenizer {config.tokenizer}", not made_with["vocab_size"] and \
            os.path.realpath(config.tokenizer) == os.path.realpath(made_with["tokenizer"])
    if not same:
        print(f"warning: {config.data_dir} is already prepared, with tokenizer {meta.get('tokenizer', 'gpt2')!r}: "
              f"{asked} only applies to preparing a folder, so it is ignored (prepare another --data-dir for it)",
              file=sys.stderr)


def planned_vocab_size(config: TrainConfig) -> int:
    """The embedding rows the run's model will have: its prepared folder's tokenizer, or the one that preparing
    it will make (--vocab-size counts the special tokens, so it is the BPE's num_tokens)."""
    if is_prepared(config.data_dir):
        return data_tokenizer(config.data_dir).vocab_size
    if config.vocab_size:
        return embedding_rows(config.vocab_size)
    return Tokenizer.from_spec(config.tokenizer).vocab_size


def ensure_prepared(config: TrainConfig, rank: int, budget_tokens: float) -> BackgroundPreparation | None:
    """Prepare --data-dir on first use (rank 0, while the other processes wait at the barriers): a local corpus
    whole, a named multi-shard one up to the tokens the budget consumes (budget_tokens) over --max-passes, part 0
    now and the rest in the background. Returns that background process (rank 0, while parts are missing)."""
    meta = read_meta(config.data_dir)
    check_prepared_folder(config, meta)  # on every process: one refusing alone would leave the others at the barrier
    needed = not is_prepared(config.data_dir)
    if dist.is_initialized():
        dist.barrier()  # every process has looked before rank 0 writes
    preparer = None
    if rank == 0 and (needed or parts_missing(config.data_dir)):
        preparer = prepare_for_run(config, meta, needed, budget_tokens)
    if dist.is_initialized():
        dist.barrier()  # and none reads the folder before rank 0 has written it
    return preparer


def same_text(prepared: str, asked: str) -> bool:
    """Whether a folder's meta.json corpus and --corpus name the same text (a name, or the same path)."""
    if prepared == asked:
        return True
    return os.path.exists(prepared) and os.path.exists(asked) and os.path.realpath(prepared) == os.path.realpath(asked)


def prepare_for_run(config: TrainConfig, meta: dict | None, needed: bool, budget_tokens: float):
    """ensure_prepared's work on rank 0: part 0 (or all of a local corpus) now, the background preparer for the rest.
    The folder is locked meanwhile (data.prepare.preparation_lock): a run that finds another preparing it waits,
    and then trains on it only if it was prepared from this run's --corpus; the background preparer starts once
    the lock is released (it takes the lock itself)."""
    existed = os.path.isdir(config.data_dir)
    try:
        with preparation_lock(config.data_dir, wait=needed):  # not needed: parts only, another may be writing them
            if needed and is_prepared(config.data_dir):  # another run prepared it while this one looked or waited
                meta = read_meta(config.data_dir)
                prepared_from = (meta or {}).get("config", {}).get("corpus")
                if prepared_from is None or not same_text(prepared_from, config.corpus):
                    raise ValueError(f"{config.data_dir} was just prepared by another run from {prepared_from}, not "
                                     f"from this run's --corpus {config.corpus}: pick another --data-dir for this "
                                     f"corpus (two runs preparing one folder at once get one preparation)")
                check_prepared_folder(config, meta)
                print(f"{config.data_dir} was prepared by another run meanwhile, from the same corpus: using it")
                needed = False
                if not parts_missing(config.data_dir):
                    return None
            prepare_config = prepare_now(config, meta, needed, budget_tokens)
    except PreparationBusy as busy:  # the folder is prepared; another process is writing its other parts
        print(f"the other parts of {config.data_dir} are being prepared by another process (pid {busy.holder}): "
              f"this run reads them as they are written")
        return None
    except BaseException:
        if not existed:  # a failure before anything was written (no such corpus) leaves no empty folder behind
            with suppress(OSError):
                os.rmdir(config.data_dir)
        raise
    if not parts_missing(config.data_dir):
        return None
    preparer = BackgroundPreparation(prepare_config)
    print(f"preparing the other parts of {config.data_dir} in the background (pid {preparer.process.pid}, "
          f"output in {preparer.log_path})")
    return preparer


def prepare_now(config: TrainConfig, meta: dict | None, needed: bool, budget_tokens: float) -> PrepareConfig:
    """prepare_for_run's part under the lock: all of a local corpus, part 0 of a sharded one; returns the
    settings the background preparer continues with."""
    prepare_config = PrepareConfig(corpus=config.corpus, out_dir=config.data_dir, tokenizer=config.tokenizer,
                                   max_tokens_per_char=config.max_tokens_per_char, vocab_size=config.vocab_size)
    if not needed:  # parts an earlier run left unwritten: resume its preparation, with its settings and token target
        prepare_config = PrepareConfig(**meta["config"])
    elif is_sharded(config.corpus):
        prepare_config.max_train_tokens = announce_target(config, budget_tokens)
    if needed:
        print(f"no token files in {config.data_dir}: preparing them from {config.corpus}")
    try:
        prepare(prepare_config, max_parts=1)  # all of a local corpus; part 0 of a sharded one
    except (FileNotFoundError, RuntimeError) as error:
        raise FileNotFoundError(
            f"{error}\nfix: python -m data.prepare --corpus PATH_OR_URL --out-dir {config.data_dir}  "
            f"(offline in this repo's workplace: --corpus ../shared/data/wiki)") from error
    return prepare_config


def announce_target(config: TrainConfig, budget_tokens: float) -> int:
    """Training tokens to prepare of a named multi-shard corpus, said in one log line."""
    target = train_tokens_to_prepare(budget_tokens, config.max_passes)
    named = CORPORA[config.corpus]
    shards = shards_needed(budget_tokens, named.tokens_per_shard, config.max_passes, named.num_shards)
    print(f"budget ~{budget_tokens:,.0f} tokens ({describe_budget(config)}): preparing {target:,} tokens of "
          f"{named.name} (~{shards} shards, ~{shards * named.download_bytes_per_shard / 1e9:.1f} GB) for ≤ "
          f"{config.max_passes:g} passes")
    return target


def corpus_outlook(config: TrainConfig, tokens: float) -> dict:
    """The corpus against the tokens the budget consumes: counted when --data-dir is prepared (while parts are
    still being written, the preparation's target stands in for them: the parts end at or just past it),
    estimated from data/fetch.py's registry for a named corpus, unknown for local text not tokenised yet."""
    def rows_of(stream_tokens: float) -> int:  # whole rows of seq_len - 1 tokens, as MLMBatches cuts them
        return int(stream_tokens // (config.seq_len - 1))

    if is_prepared(config.data_dir):
        files = train_token_files(config.data_dir, data_tokenizer(config.data_dir))
        rows, prepared = sum(rows_of(file.num_tokens) for file in files), True
        corpus = config.data_dir if len(files) == 1 and files[0].path.endswith("train.bin") else \
            f"{config.data_dir} ({len(files)} part(s))"
        if parts_missing(config.data_dir):
            target = read_meta(config.data_dir)["config"]["max_train_tokens"]
            rows = max(rows, rows_of(target))
            corpus = (f"{config.data_dir} ({len(files)} part(s) prepared so far, the rest in the background"
                      f"{f' up to {target:,} training tokens' if target else ''})")
    elif config.corpus in CORPORA:
        named = CORPORA[config.corpus]
        shards, stream_tokens = 1, named.tokens_per_shard  # a single-file corpus is prepared whole
        if named.num_shards > 1:  # as many whole shards as the budget needs (ensure_prepared)
            shards = shards_needed(tokens, named.tokens_per_shard, config.max_passes, named.num_shards)
            stream_tokens = min(train_tokens_to_prepare(tokens, config.max_passes), named.num_shards * named.tokens_per_shard)
        rows, prepared = rows_of(stream_tokens), False
        corpus = (f"{named.name}, not prepared yet: ~{shards} of its {named.num_shards} shard(s), ~"
                  f"{shards * named.download_bytes_per_shard / 1e9:.1f} GB to download (estimates)"
                  f"{'; part 0 before training, the rest in the background' if shards > 1 else ''}")
    else:
        return {"prepared": False, "corpus_tokens": None, "passes": None, "warning": None,
                "corpus": f"{config.corpus}, not prepared in {config.data_dir} yet: counted once tokenised, when the "
                          f"run logs its passes (and warns above --max-passes {config.max_passes:g})"}
    passes, warning = passes_warning(rows * config.seq_len, tokens, config.max_passes, corpus)
    return {"prepared": prepared, "corpus_tokens": rows * config.seq_len, "passes": passes, "warning": warning,
            "corpus": f"{corpus}: {rows * config.seq_len:,} tokens a pass"}


