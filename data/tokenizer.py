"""
Byte-level BPE ids (through tiktoken) plus the four special tokens a BERT needs.

Two vocabularies:
  - "gpt2": GPT-2's 50 257 tokens, nothing to train (the GPU default, as in earlier cramlm runs);
  - our own BPE trained on the corpus by data/bpe.py (the CPU default, 8-32 k tokens), saved as a
    small .bpe file and encoded by tiktoken from its merge ranks so preparation stays fast.
Both are byte-level: any text (code, accents, emoji, control characters) round-trips exactly.
The special tokens take the ids right after the ordinary ones, and the embedding table is padded to a
multiple of 64 for fast matmuls (GPT-2: 50 257 + 4 -> 50 304 rows).

A tokenizer is identified by its `name` ("gpt2", or "bpe<N>-<hash of its tokens>"); token files,
checkpoints and glue_eval.py carry that name, so data and a model of different vocabularies never meet.
"""
import hashlib

import tiktoken

from data.bpe import GPT2_SPLIT_PATTERN, parse_bpe, read_bpe_text

SPECIAL_NAMES = ("[CLS]", "[SEP]", "[MASK]", "[PAD]")
# Our own BPE's sizes (specials included): every byte plus the specials at least; uint16 token files at most.
VOCAB_SIZE_RANGE = (256 + len(SPECIAL_NAMES), 2 ** 16)


def embedding_rows(num_tokens: int) -> int:
    """The model's embedding rows for a vocabulary of num_tokens ids: the next multiple of 64, for fast matmuls."""
    return (num_tokens + 63) // 64 * 64


class Tokenizer:
    def __init__(self, encoding: tiktoken.Encoding, name: str, bpe_text: str | None = None):
        self.bpe, self.name = encoding, name
        self.bpe_text = bpe_text  # the .bpe file's contents (None for gpt2): checkpoints embed it
        self.num_ordinary = encoding.n_vocab  # ids 0..num_ordinary-1 are text
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = range(self.num_ordinary, self.num_ordinary + 4)
        self.special_ids = (self.cls_id, self.sep_id, self.mask_id, self.pad_id)
        self.num_tokens = self.num_ordinary + len(SPECIAL_NAMES)  # ids that can occur in data
        self.vocab_size = embedding_rows(self.num_tokens)

    @classmethod
    def gpt2(cls) -> "Tokenizer":
        try:
            encoding = tiktoken.get_encoding("gpt2")
        except Exception as error:  # no network and no cache: say how to point tiktoken at local files
            raise RuntimeError(
                f"could not load tiktoken's 'gpt2' encoding ({error}). Offline, point TIKTOKEN_CACHE_DIR "
                "at a folder holding its files, e.g. TIKTOKEN_CACHE_DIR=../shared/data/tiktoken") from error
        return cls(encoding, "gpt2")

    @classmethod
    def from_bpe_text(cls, text: str, source: str = "tokenizer") -> "Tokenizer":
        tokens = parse_bpe(text, source)
        name = f"bpe{len(tokens)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
        encoding = tiktoken.Encoding(name, pat_str=GPT2_SPLIT_PATTERN,
                                     mergeable_ranks={token: rank for rank, token in enumerate(tokens)},
                                     special_tokens={})
        return cls(encoding, name, text)

    @classmethod
    def from_spec(cls, spec: str) -> "Tokenizer":
        """"gpt2" or the path of a .bpe file (the --tokenizer flag)."""
        if spec == "gpt2":
            return cls.gpt2()
        return cls.from_bpe_text(read_bpe_text(spec), spec)  # parse_bpe inside names a malformed file

    @classmethod
    def from_state(cls, state: dict | None) -> "Tokenizer":
        """Rebuild from `state_dict()` (stored in checkpoints); None means a checkpoint older than this
        field, which always used gpt2."""
        if state is None or state["name"] == "gpt2":
            return cls.gpt2()
        return cls.from_bpe_text(state["bpe_text"], f"the checkpoint's tokenizer {state['name']}")

    def state_dict(self) -> dict:
        return {"name": self.name, "bpe_text": self.bpe_text}

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode_ordinary(text)  # special-token strings in the text are plain text, never ids

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self.bpe.encode_ordinary_batch(texts, num_threads=num_threads)

    def encode_masked(self, text: str) -> list[int]:
        """Text in which the literal "[MASK]" stands for the mask token (probe sentences, fill_mask.py).
        A space before "[MASK]" belongs to the hidden word: byte-level BPE spells " Paris" as one token
        with its space, so "is [MASK]." must become "is" [MASK] ".", not "is" " " [MASK] "."."""
        pieces = text.split("[MASK]")
        ids = []
        for i, piece in enumerate(pieces):
            if i < len(pieces) - 1 and piece.endswith(" "):
                piece = piece[:-1]
            ids += ([self.mask_id] if i else []) + self.encode(piece)
        return ids

    def decode(self, ids) -> str:
        pieces, run = [], []
        for i in map(int, ids):
            if i in self.special_ids:
                pieces += [self.bpe.decode(run), SPECIAL_NAMES[i - self.num_ordinary]]
                run = []
            else:
                run.append(i)
        return "".join(pieces + [self.bpe.decode(run)])

    def token_bytes(self, token_id: int) -> bytes:
        """The text bytes one ordinary id stands for (used for bits per byte)."""
        return self.bpe.decode_single_token_bytes(token_id)

    def encode_pair(self, first: str, second: str | None = None, max_len: int = 128) -> list[int]:
        """[CLS] first [SEP] (second [SEP]), longest side truncated first as BERT does, for GLUE."""
        a = self.encode(first)
        b = self.encode(second) if second is not None else []
        budget = max_len - (3 if second is not None else 2)
        while len(a) + len(b) > budget:
            if len(a) >= len(b):
                a.pop()
            else:
                b.pop()
        ids = [self.cls_id] + a + [self.sep_id]
        return ids + b + [self.sep_id] if second is not None else ids
