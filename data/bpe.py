"""
Train our own byte-level BPE vocabulary (Sennrich et al. 2016; GPT-2's byte-level variant).

    python -m data.prepare --corpus ../shared/data/wiki --vocab-size 16384 --out-dir data/cache/wiki16k

Why: cramming trains its own 32 768-token WordPiece vocabulary. With GPT-2's 50 257 ids a small CPU
model is ~97% embedding table and most of each step is the vocabulary projection; a smaller vocabulary
fitted to the training text makes every step cheaper and the softmax easier to learn.

The algorithm, in three steps:
  1. Split the text into "words" with GPT-2's regex (letters, digits and punctuation runs, each with
     its leading space), so merges never cross a word boundary, and count each distinct word once.
  2. Start every word as its UTF-8 bytes (ids 0..255: any text can be written, nothing is unknown).
  3. Repeatedly merge the most frequent adjacent pair of ids into a new id. Only words containing
     that pair change, so we keep pair counts and a pair -> words index up to date incrementally
     instead of recounting the whole corpus for each of the thousands of merges.
The result is a list of byte strings in merge order (a token's rank is its id). Encoding is done by
tiktoken from these ranks (data/tokenizer.py), which applies the lowest-rank merge first: the same
greedy procedure, in compiled code.
"""
import heapq
import os
from collections import Counter, defaultdict

import regex

from data.files import atomic_path

# GPT-2's pre-tokenisation pattern (Radford et al. 2019): contractions, letter runs, digit runs and
# punctuation runs each keep one leading space, and whitespace runs stay separate.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
FILE_HEADER = "cramlm-bpe 1"


def count_words(texts, pattern: str = GPT2_SPLIT_PATTERN) -> Counter:
    """How often each pre-tokenised word (as UTF-8 bytes) occurs in an iterable of texts."""
    splitter = regex.compile(pattern)
    counts = Counter()
    for text in texts:
        counts.update(splitter.findall(text))
    return Counter({word.encode("utf-8"): n for word, n in counts.items()})


def train_bpe(word_counts: Counter, vocab_size: int, progress=None) -> list[bytes]:
    """Merge pairs until the vocabulary holds vocab_size byte strings (256 single bytes first).
    Ties between equally frequent pairs go to the pair of smaller ids, so training is deterministic.
    Returns the tokens in rank order: tokens[i] is the byte string of id i."""
    if vocab_size < 256:
        raise ValueError(f"a byte-level vocabulary needs at least 256 tokens, got {vocab_size}")
    tokens = [bytes([b]) for b in range(256)]
    id_of = {token: i for i, token in enumerate(tokens)}
    words = [list(word) for word in word_counts]  # each word as a list of ids (bytes at first)
    freqs = list(word_counts.values())
    pair_counts = Counter()
    words_with = defaultdict(set)  # pair -> indices of the words that contain it
    for w, ids in enumerate(words):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += freqs[w]
            words_with[pair].add(w)
    # A max-heap of (-count, pair). Counts change as we merge; stale entries are skipped when popped.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    while len(tokens) < vocab_size and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count:
            continue  # stale: this pair's count changed after the entry was pushed
        if -negative_count < 2:
            break  # nothing left that occurs twice: more merges would only memorise single words
        merged = tokens[pair[0]] + tokens[pair[1]]
        # Two different splits can spell the same bytes ("ab"+"c", "a"+"bc"): reuse the id, so every
        # token is a distinct byte string, which is what tiktoken's rank table needs.
        new_id = id_of.get(merged)
        if new_id is None:
            new_id = id_of[merged] = len(tokens)
            tokens.append(merged)
        changed = set()
        for w in words_with.pop(pair):
            ids, freq = words[w], freqs[w]
            for old in zip(ids, ids[1:]):  # take the word's pairs out, merge, put the new pairs back
                pair_counts[old] -= freq
                changed.add(old)  # its heap entry is stale now: push its new count, or the pair is lost
            merged_ids, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    merged_ids.append(new_id)
                    i += 2
                else:
                    merged_ids.append(ids[i])
                    i += 1
            words[w] = merged_ids
            for new in zip(merged_ids, merged_ids[1:]):
                pair_counts[new] += freq
                words_with[new].add(w)
                changed.add(new)
        pair_counts.pop(pair, None)
        for changed_pair in changed:
            if pair_counts[changed_pair] > 0:
                heapq.heappush(heap, (-pair_counts[changed_pair], changed_pair))
        if progress is not None:
            progress.update(1)
    return tokens


def save_bpe(tokens: list[bytes], path: str):
    """A small text file: a header line, then one token per line as hex bytes, in rank order."""
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        f.write(FILE_HEADER + "\n")
        f.writelines(token.hex() + "\n" for token in tokens)


def parse_bpe(text: str, source: str = "tokenizer") -> list[bytes]:
    lines = text.splitlines()
    if not lines or lines[0] != FILE_HEADER:
        raise ValueError(f"{source} is not a cramlm BPE file (first line should be {FILE_HEADER!r})")
    try:
        tokens = [bytes.fromhex(line) for line in lines[1:]]
    except ValueError as error:
        raise ValueError(f"{source}: a token line is not hex bytes ({error})") from error
    if tokens[:256] != [bytes([b]) for b in range(256)] or len(set(tokens)) != len(tokens):
        raise ValueError(f"{source}: expected the 256 single bytes first and no repeated token")
    return tokens


def read_bpe_text(path: str) -> str:
    """The text of a .bpe file, with a clear error when there is none (parse_bpe checks its contents)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    with open(path) as f:
        return f.read()

