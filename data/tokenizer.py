"""
GPT-2's byte-level BPE (through tiktoken, 50257 ids) plus the four special tokens a BERT needs.

Cramming trains its own WordPiece vocabulary; we reuse GPT-2's so there is nothing to train and any
text (code, accents, emoji) round-trips exactly. The special tokens get the ids right after GPT-2's,
and the embedding table is padded to a multiple of 64 (vocab_size 50304) for fast matmuls.
"""
import tiktoken

ENCODING_NAME = "gpt2"
GPT2_VOCAB = 50257
CLS_ID, SEP_ID, MASK_ID, PAD_ID = GPT2_VOCAB, GPT2_VOCAB + 1, GPT2_VOCAB + 2, GPT2_VOCAB + 3
SPECIAL_IDS = (CLS_ID, SEP_ID, MASK_ID, PAD_ID)
NUM_TOKENS = GPT2_VOCAB + len(SPECIAL_IDS)  # ids that can occur in data
VOCAB_SIZE = (NUM_TOKENS + 63) // 64 * 64  # 50304: the model's embedding rows


class Tokenizer:
    def __init__(self):
        try:
            self.bpe = tiktoken.get_encoding(ENCODING_NAME)
        except Exception as error:  # no network and no cache: say how to point tiktoken at local files
            raise RuntimeError(
                f"could not load tiktoken's {ENCODING_NAME!r} encoding ({error}). Offline, point "
                "TIKTOKEN_CACHE_DIR at a folder holding its files, e.g. TIKTOKEN_CACHE_DIR=../shared/data/tiktoken"
            ) from error

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode_ordinary(text)  # special-token strings in the text are plain text, never ids

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self.bpe.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids) -> str:
        names = {CLS_ID: "[CLS]", SEP_ID: "[SEP]", MASK_ID: "[MASK]", PAD_ID: "[PAD]"}
        pieces, run = [], []
        for i in map(int, ids):
            if i in names:
                pieces += [self.bpe.decode(run), names[i]]
                run = []
            else:
                run.append(i)
        return "".join(pieces + [self.bpe.decode(run)])

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
        ids = [CLS_ID] + a + [SEP_ID]
        return ids + b + [SEP_ID] if second is not None else ids
