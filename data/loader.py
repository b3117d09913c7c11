"""
Token files and masked-language-model batches.

A token file is a small header followed by the token stream as uint16 (llm.c's .bin idea): the loader
checks the header before trusting the bytes, so a truncated file, a file of another vocabulary or a
random file fails loudly instead of training on garbage.

    offset  size  field
    0       8     magic b"CRAMTOK\\0"
    8       4     version (uint32)
    12      4     vocab_size (uint32): ids are < vocab_size
    16      8     token count (uint64)
    24      40    tokenizer name, ASCII, zero padded ("gpt2", or "bpe16384-1a2b3c4d" for our own BPE)
    64      2*n   tokens, uint16 little-endian

A prepared folder holds val.bin and either one training file, train.bin (a local corpus, prepared whole), or
one per shard of a named multi-shard corpus (C4), train-00000.bin, train-00001.bin, ..., written while
training already runs (data/prepare.py, prepare_parts). meta.json says when the last part is written.
"""
import hashlib
import json
import os
import struct
import time

import numpy as np
import torch

from data.tokenizer import Tokenizer

MAGIC, VERSION = b"CRAMTOK\0", 1
HEADER = struct.Struct("<8sIIQ40s")  # 64 bytes; see the table above
TOKEN_DTYPE = np.dtype("<u2")
BPE_FILE = "tokenizer.bpe"  # beside train.bin / val.bin when the folder was prepared with our own BPE
META_FILE = "meta.json"  # what a preparation made; for parts, "complete" and the final list of "parts" come last


def pack_header(num_tokens: int, tokenizer: Tokenizer) -> bytes:
    return HEADER.pack(MAGIC, VERSION, tokenizer.vocab_size, num_tokens, tokenizer.name.encode("ascii"))


def part_path(data_dir: str, index: int) -> str:
    return os.path.join(data_dir, f"train-{index:05d}.bin")


def read_meta(data_dir: str) -> dict | None:
    """data_dir's meta.json (what its preparation made, with the settings under "config"), None when there is
    none; a meta.json that cannot be used raises ValueError naming it and the fix."""
    path = os.path.join(data_dir, META_FILE)
    if not os.path.isfile(path):
        return None
    fix = (f"prepare the folder again (delete {data_dir} and rerun the command, which prepares it, or use another "
           f"--data-dir)")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): the file is damaged or was edited; {fix}") from None
    if not isinstance(meta, dict):
        kinds = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false"}
        kind = kinds.get(type(meta), "null")
        raise ValueError(f"{path} is not a JSON object (it holds {kind}); {fix}")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path} has no \"config\" (the settings the folder was prepared with); {fix}")
    return meta


def is_prepared(data_dir: str) -> bool:
    """Whether training can start on data_dir: train.bin, or part 0 (which is written after val.bin)."""
    return os.path.isfile(os.path.join(data_dir, "train.bin")) or os.path.isfile(part_path(data_dir, 0))


def parts_present(data_dir: str) -> int:
    """How many parts 0, 1, 2, ... are written (under their final names) now."""
    count = 0
    while os.path.isfile(part_path(data_dir, count)):
        count += 1
    return count


def parts_missing(data_dir: str) -> bool:
    """Whether data_dir is prepared in parts whose preparation has not completed (meta.json says so)."""
    meta = read_meta(data_dir)
    return meta is not None and meta.get("complete") is False


def final_parts(data_dir: str) -> list[str] | None:
    """The names of all the parts a run will ever see, once the preparation has ended (completed, or stopped
    early and listed what it made); None while parts may still come. Not for a train.bin folder."""
    meta = read_meta(data_dir)
    return meta.get("parts") if meta else None


def data_tokenizer(data_dir: str) -> Tokenizer:
    """The tokenizer a prepared folder was made with: its tokenizer.bpe, or GPT-2's when there is none."""
    path = os.path.join(data_dir, BPE_FILE)
    return Tokenizer.from_spec(path) if os.path.isfile(path) else Tokenizer.gpt2()


def data_identity(data_dir: str) -> str:
    """A fingerprint of the data a run trains on, stored in its checkpoint so --resume can tell a folder
    re-prepared from other text (same tokenizer, same name) from the one it started on: a hash of val.bin's and
    the first training file's headers and first 64 KiB of tokens. Later parts are left out: they are still being
    written while a run trains, and the first part fixes the corpus and its order."""
    digest = hashlib.sha256()
    first_train = os.path.join(data_dir, "train.bin")
    for path in (os.path.join(data_dir, "val.bin"), first_train if os.path.isfile(first_train) else part_path(data_dir, 0)):
        with open(path, "rb") as f:
            digest.update(f.read(HEADER.size + (1 << 16)))
    return digest.hexdigest()[:16]


class TokenFile:
    """A validated, read-only memmap of a token file's stream, with the tokenizer that made it."""

    def __init__(self, path: str, tokenizer: Tokenizer):
        vocab_size, encoding = tokenizer.vocab_size, tokenizer.name
        if not os.path.isfile(path):
            raise FileNotFoundError(f"token file {path} does not exist")
        with open(path, "rb") as f:
            raw = f.read(HEADER.size)
        if len(raw) < HEADER.size:
            raise ValueError(f"{path}: {len(raw)} bytes is too short for a token file header ({HEADER.size} bytes)")
        magic, version, file_vocab, num_tokens, file_encoding = HEADER.unpack(raw)
        file_encoding = file_encoding.rstrip(b"\0").decode("ascii", "replace")
        if magic != MAGIC:
            raise ValueError(f"{path} is not a cramlm token file (bad magic {magic!r})")
        if version != VERSION:
            raise ValueError(f"{path} has token-file version {version}; this code reads version {VERSION}")
        if (file_vocab, file_encoding) != (vocab_size, encoding):
            raise ValueError(f"{path} was tokenised with {file_encoding!r} (vocab {file_vocab}); "
                             f"expected {encoding!r} (vocab {vocab_size}): re-run data/prepare.py")
        expected_bytes = HEADER.size + num_tokens * TOKEN_DTYPE.itemsize
        if os.path.getsize(path) != expected_bytes:
            raise ValueError(f"{path} is {os.path.getsize(path)} bytes but its header promises {num_tokens} "
                             f"tokens ({expected_bytes} bytes): truncated or corrupt, re-run data/prepare.py")
        self.path, self.num_tokens, self.tokenizer = path, num_tokens, tokenizer
        self.tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER.size, shape=(num_tokens,))
        # every id must be one the tokenizer has: a cheap max, 32 MB at a time. Not vocab_size, the embedding's rows:
        # they are padded to a multiple of 64, and ids past num_tokens (GPT-2's 50 261-50 303) mean no text.
        for start in range(0, num_tokens, 1 << 24):
            chunk = self.tokens[start:start + (1 << 24)]
            if chunk.max() >= tokenizer.num_tokens:
                position = start + int(np.argmax(chunk >= tokenizer.num_tokens))
                raise ValueError(f"{path}: token {position} has id {int(self.tokens[position])}, past the "
                                 f"{tokenizer.num_tokens} ids of {encoding!r}: the file is corrupt, re-run data/prepare.py")


def mask_tokens(input_ids: torch.Tensor, mask_rate: float, generator: torch.Generator, tokenizer: Tokenizer):
    """BERT's masking (Devlin et al. 2019, Sec. 3.1) on (B, T) ids: pick round(mask_rate * n) of each row's
    n ordinary tokens; of those 80% become [MASK], 10% a random token, 10% stay. Returns (ids, labels) with
    labels = original id at picked positions and -100 elsewhere. Special tokens are never picked.
    An exact count per row (not a coin flip per token) bounds the labelled positions by mask_rate * B * T,
    which is what lets the sparse head use a static count without dropping any."""
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for token_id in tokenizer.special_ids:
        special |= input_ids == token_id
    # round(rate * n), capped at floor(rate * T) so that B rows never exceed the sparse head's ceil(rate * B * T)
    n_pick = ((~special).sum(dim=1) * mask_rate).round().long().clamp(max=int(mask_rate * input_ids.size(1)))  # (B,)
    scores = torch.rand(input_ids.shape, generator=generator)
    scores[special] = 2.0  # sorts after every ordinary token: never picked
    rank = scores.argsort(dim=1).argsort(dim=1)  # rank of each position's score within its row
    picked = rank < n_pick[:, None]
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(0, tokenizer.num_ordinary, input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[picked & (action < 0.8)] = tokenizer.mask_id
    replace_random = picked & (action >= 0.8) & (action < 0.9)
    masked[replace_random] = random_ids[replace_random]
    return masked, labels


def passes_read(state: dict) -> int:
    """The pass a loader's saved state is in; older checkpoints call it "epoch", which still resume."""
    return state["pass"] if "pass" in state else state["epoch"]


class MLMBatches:
    """Fixed-length rows cut from the token stream, visited in a fresh random order every pass.

    Row r is [CLS] + stream[r*(T-1) : (r+1)*(T-1)]: documents are packed back to back with [SEP] between
    them (written by prepare.py), as cramming does, so no position is wasted on padding. Everything random
    about a batch (row order, masking) is derived from (seed, pass, row cursor), so the state needed to
    resume exactly is two integers, and any process can build any slice of a global batch on its own.
    """

    def __init__(self, token_file: TokenFile, seq_len: int, mask_rate: float, seed: int = 0):
        self.tokens, self.seq_len, self.mask_rate, self.seed = token_file.tokens, seq_len, mask_rate, seed
        self.tokenizer = token_file.tokenizer
        self.num_rows = token_file.num_tokens // (seq_len - 1)
        if self.num_rows == 0:
            raise ValueError(f"{token_file.path} holds {token_file.num_tokens} tokens, fewer than one row of {seq_len}")
        self.data_pass, self.cursor = 0, 0  # position of the next unread row in this pass's order
        self._order_pass, self._order = None, None

    def _pass_order(self, data_pass: int) -> np.ndarray:
        if self._order_pass != data_pass:
            self._order = np.random.default_rng([self.seed, data_pass]).permutation(self.num_rows)
            self._order_pass = data_pass
        return self._order

    def rows(self, row_ids) -> torch.Tensor:  # -> (len(row_ids), T) int64
        stride = self.seq_len - 1
        body = np.stack([self.tokens[r * stride:(r + 1) * stride] for r in row_ids]).astype(np.int64)
        cls_column = np.full((len(row_ids), 1), self.tokenizer.cls_id, dtype=np.int64)
        return torch.from_numpy(np.concatenate([cls_column, body], axis=1))

    def batch_at(self, data_pass: int, start: int, size: int):
        """The `size` rows starting at `start` of pass `data_pass`'s order, masked. Returns (input_ids, labels)."""
        if start >= self.num_rows:  # a micro-batch that begins past this pass's end
            data_pass, start = data_pass + start // self.num_rows, start % self.num_rows
        order = self._pass_order(data_pass)
        row_ids = order[start:start + size]
        if len(row_ids) < size:  # the pass ran out: wrap into the next pass's order
            row_ids = np.concatenate([row_ids, self._pass_order(data_pass + 1)[:size - len(row_ids)]])
        generator = torch.Generator().manual_seed(seed_from(self.seed, data_pass, start))
        return mask_tokens(self.rows(row_ids), self.mask_rate, generator, self.tokenizer)

    def batch_after(self, offset: int, size: int):
        """The `size` rows `offset` rows past the current position, masked: what a training step reads."""
        return self.batch_at(self.data_pass, self.cursor + offset, size)

    def advance(self, size: int):
        """Move the cursor past one global batch of `size` rows, starting a new pass when needed."""
        self.cursor += size
        if self.cursor >= self.num_rows:
            self.data_pass, self.cursor = self.data_pass + 1, self.cursor - self.num_rows

    def state_dict(self) -> dict:
        return {"pass": self.data_pass, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict):
        if state["seed"] != self.seed:
            raise ValueError(f"checkpoint data seed {state['seed']} != configured seed {self.seed}")
        self.data_pass, self.cursor = passes_read(state), state["cursor"]


def train_token_files(data_dir: str, tokenizer: Tokenizer) -> list[TokenFile]:
    """The training token files present now: [train.bin], or the parts 0, 1, ... written so far."""
    if os.path.isfile(os.path.join(data_dir, "train.bin")):
        return [TokenFile(os.path.join(data_dir, "train.bin"), tokenizer)]
    return [TokenFile(part_path(data_dir, index), tokenizer) for index in range(parts_present(data_dir))]


def validation_batches(token_file: TokenFile, seq_len: int, mask_rate: float, batch_size: int, max_rows: int):
    """A fixed validation set: the first rows of the file in order, each masked with a seed of its own row
    number, so every evaluation of every run sees exactly the same inputs whatever its batch size, and a
    run with fewer --eval-rows scores a prefix of a longer run's set: losses are comparable."""
    data = MLMBatches(token_file, seq_len, mask_rate, seed=1234)
    n_rows = min(max_rows, data.num_rows)
    if n_rows < max_rows:
        print(f"note: {token_file.path} holds {data.num_rows} rows of {seq_len} tokens: the validation set is those "
              f"{n_rows}, not the {max_rows} asked for (--eval-rows)")
    masked_rows = [mask_tokens(data.rows([row]), mask_rate, torch.Generator().manual_seed(row), data.tokenizer)
                   for row in range(n_rows)]
    return [tuple(torch.cat(part) for part in zip(*masked_rows[start:start + batch_size]))
            for start in range(0, n_rows, batch_size)]


def unigram_log_probs(tokens: np.ndarray, vocab_size: int) -> torch.Tensor:
    """log p(id) from token counts on the training split, add-one smoothed so no id has probability 0.
    A model that predicts every masked token from these frequencies alone, ignoring the context, scores
    the "unigram line": an MLM loss above it means the model has learned nothing beyond word counts."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(tokens), 1 << 24):  # in chunks: the memmap is never read into memory whole
        counts += np.bincount(tokens[start:start + (1 << 24)], minlength=vocab_size)
    counts += 1
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def byte_lengths(tokenizer: Tokenizer, vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes of text each id stands for (0 for special and padding ids), for bits per byte."""
    lengths = torch.zeros(vocab_size)
    lengths[:tokenizer.num_ordinary] = torch.tensor([len(tokenizer.token_bytes(i)) for i in range(tokenizer.num_ordinary)])
    return lengths


def reference_metrics(batches, unigram: torch.Tensor, lengths: torch.Tensor) -> dict:
    """The unigram line on exactly the validation set's masked positions, and the bytes they cover."""
    labels = torch.cat([labels[labels != -100] for _, labels in batches])
    return {"unigram_loss": -unigram[labels].mean().item(), "masked_bytes": lengths[labels].sum().item(),
            "masked_tokens": len(labels)}


def seed_from(*numbers: int) -> int:
    """A well-mixed 63-bit seed from a few integers (numpy's SeedSequence hashing), stable across runs."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, dtype=np.uint64)[0] >> 1)


WAIT_SECONDS = 1.0  # how often a reader waiting for the next part looks for it


def training_batches(data_dir: str, tokenizer: Tokenizer, seq_len: int, mask_rate: float, seed: int = 0):
    """The training rows of a prepared folder: an MLMBatches over train.bin, or a PartedBatches over its parts."""
    train_path = os.path.join(data_dir, "train.bin")
    if os.path.isfile(train_path):
        return MLMBatches(TokenFile(train_path, tokenizer), seq_len, mask_rate, seed=seed)
    return PartedBatches(data_dir, tokenizer, seq_len, mask_rate, seed=seed)


class PartedBatches:
    """MLM rows of a folder prepared in parts (train-00000.bin, train-00001.bin, ...: one per source shard), the
    later ones possibly still being written by the background preparer.

    Pass p reads part 0, then 1, 2, ... in order; part k is an MLMBatches seeded with seed_from(seed, k), so its
    rows come in an order derived from (seed, p, k) and are masked from (seed, p, k, cursor). The state to resume
    exactly is three integers (pass, part, cursor). A part is read only under its final name: a part being
    written has a temporary name (.tmp) and is renamed only when complete. When the next part is not there yet,
    the reader waits for it; once meta.json lists the final parts, the pass after the last one starts again at
    part 0. Waiting stays on the budget clock, and should be rare. Preparing a part (a C4 shard, ~0.17 B tokens)
    costs ~850 core-seconds: one CPU core tokenised Wikipedia text in C4's format at ~0.2 M tokens/s here, so
    ~1 minute on a GPU machine's 16 cores if the tokenizer's threads scale (not measured), the download overlapped.
    The crammed model (0.64 GFLOP a token) at 40% MFU reads ~0.2 M tokens/s on an A100 and ~0.6 M on an H100,
    i.e. ~15 and ~5 minutes a part: the preparer, started as soon as part 0 exists, stays ahead (with 4 cores,
    ~3.5 minutes a part, barely so on an H100).
    """

    def __init__(self, data_dir: str, tokenizer: Tokenizer, seq_len: int, mask_rate: float, seed: int = 0):
        self.data_dir, self.tokenizer, self.seq_len, self.mask_rate, self.seed = data_dir, tokenizer, seq_len, mask_rate, seed
        self.data_pass, self.part, self.cursor = 0, 0, 0  # the next unread row: pass, part, row in that part's order
        self._parts = {}  # part index -> its MLMBatches, opened when read (two at most)

    def _rows(self, part: int) -> MLMBatches:
        if part not in self._parts:
            if len(self._parts) == 2:  # keep the part being read and the next: a C4 part's row order alone is ~10 MB
                del self._parts[next(iter(self._parts))]  # the one opened first
            self._parts[part] = MLMBatches(TokenFile(part_path(self.data_dir, part), self.tokenizer), self.seq_len,
                                           self.mask_rate, seed=seed_from(self.seed, part))
        return self._parts[part]

    def _following(self, data_pass: int, part: int) -> tuple[int, int]:
        """(pass, part) read after `part` of pass `data_pass`: the next part, once it exists, or part 0 of the next
        pass after the last part of a finished preparation."""
        announced = False
        while True:
            final = final_parts(self.data_dir)
            if final is not None:
                return (data_pass, part + 1) if part + 1 < len(final) else (data_pass + 1, 0)
            if os.path.isfile(part_path(self.data_dir, part + 1)):
                return data_pass, part + 1
            if not announced:
                print(f"waiting for part {part + 1} of {self.data_dir} (the background preparer is writing it)")
                announced = True
            time.sleep(WAIT_SECONDS)

    def _locate(self, offset: int) -> tuple[int, int, int]:
        """(pass, part, cursor) of the row `offset` rows past the current position."""
        data_pass, part, cursor = self.data_pass, self.part, self.cursor + offset
        while cursor >= self._rows(part).num_rows:
            cursor -= self._rows(part).num_rows
            data_pass, part = self._following(data_pass, part)
        return data_pass, part, cursor

    def batch_after(self, offset: int, size: int):
        """The `size` rows `offset` rows past the current position, masked; a batch that reaches the end of a
        part continues in the next one (each piece masked with its own part's seed)."""
        data_pass, part, cursor = self._locate(offset)
        pieces = []
        while size > 0:
            rows = self._rows(part)
            take = min(size, rows.num_rows - cursor)
            pieces.append(rows.batch_at(data_pass, cursor, take))
            size -= take
            if size:
                (data_pass, part), cursor = self._following(data_pass, part), 0
        return tuple(torch.cat(tensors) for tensors in zip(*pieces))

    def advance(self, size: int):
        self.data_pass, self.part, self.cursor = self._locate(size)

    def state_dict(self) -> dict:
        return {"pass": self.data_pass, "part": self.part, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict):
        if state["seed"] != self.seed:
            raise ValueError(f"checkpoint data seed {state['seed']} != configured seed {self.seed}")
        self.data_pass, self.part, self.cursor = passes_read(state), state.get("part", 0), state["cursor"]
