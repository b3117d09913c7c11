"""Assignment 1: byte-level BPE, trained from word counts (course/01-tokenizer.md)."""
import gzip
import random
from collections import Counter

from course.kit import Assignment, shared_data
from data.bpe import FILE_HEADER, count_words, train_bpe
from data.tokenizer import Tokenizer

ASSIGNMENT = Assignment(
    number=1, slug="tokenizer", title="Byte-level BPE from word counts",
    functions=("data/bpe.py:count_words", "data/bpe.py:train_bpe"),
    metric="bytes_per_token", paper="Sennrich et al. 2016, Sec. 3.1 (Algorithm 1); Radford et al. 2019, Sec. 2.2")

# Sennrich et al.'s example vocabulary; the merges our reference learns from it, in rank order (a frozen snapshot).
SENNRICH = Counter({b"low": 5, b"lower": 2, b"newest": 6, b"widest": 3})
SENNRICH_MERGES = [b"es", b"est", b"lo", b"low", b"ew", b"new", b"newest", b"dest", b"idest", b"widest"]


def check_count_words_splits_like_gpt2():
    """count_words splits on GPT-2's pattern and counts UTF-8 words"""
    counts = count_words(["the cat's hat, the  cat", "naïve"])
    expected = {b"the": 1, b" cat": 2, b"'s": 1, b" hat": 1, b",": 1, b" the": 1, b" ": 1, "naïve".encode(): 1}
    assert counts == Counter(expected), f"got {dict(counts)}"


def check_bytes_come_first():
    """ids 0..255 are the single bytes, in byte order"""
    tokens = train_bpe(Counter({b"ab": 3}), 256)
    assert tokens == [bytes([b]) for b in range(256)], "the first 256 tokens must be the bytes 0..255"


def check_sennrich_merges():
    """the merges on Sennrich et al.'s example equal the reference's, in order"""
    got = train_bpe(SENNRICH, 256 + len(SENNRICH_MERGES))[256:]
    assert got == SENNRICH_MERGES, f"merges {got} != {SENNRICH_MERGES}"


def check_ties_and_stopping():
    """ties go to the pair of smaller ids; merging stops when no pair occurs twice"""
    assert train_bpe(Counter({b"ab": 2, b"cd": 2}), 257)[256:] == [b"ab"], "a tie must go to the smaller ids (a, b)"
    assert train_bpe(Counter({b"xyz": 1}), 300)[256:] == [], "a pair seen once must not be merged"


def check_counts_stay_current():
    """a pair whose count drops when a word is merged keeps the count it still has: "ha" is merged third here"""
    words = Counter({b"Shabbat": 1, b" Epiphanes": 1, b" misanthropes": 1, b" Granada": 1, b" harshly": 1})
    got = train_bpe(words, 2044)[256:]
    assert got == [b"an", b"es", b"ha"], f"merges {got} != [b'an', b'es', b'ha']: after merging 'an' and 'es', " \
        f"'ha' still occurs twice (Shabbat, harshly)"


def check_rejects_a_vocabulary_under_256():
    """a vocabulary under 256 tokens is refused with ValueError"""
    try:
        train_bpe(Counter({b"a": 1}), 100)
    except ValueError:
        return
    raise AssertionError("train_bpe(..., 100) must raise ValueError")


def check_round_trip():
    """a tokenizer built from the trained tokens decodes what it encodes, and compresses"""
    text = "the lowest of the newest widest lower lows " * 20
    tokens = train_bpe(count_words([text]), 300)
    tokenizer = Tokenizer.from_bpe_text(bpe_text(tokens))
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text, "decode(encode(text)) != text"
    assert len(ids) < len(text.encode()) / 2, f"{len(ids)} tokens for {len(text.encode())} bytes: too few merges"


def bpe_text(tokens: list[bytes]) -> str:
    """The text form data/bpe.py saves, built in memory (save_bpe writes this to a file)."""
    return "\n".join([FILE_HEADER] + [token.hex() for token in tokens]) + "\n"


def generated(seed: int) -> dict:
    """Merges on random words over a 5-letter alphabet: inputs the student never saw."""
    rng = random.Random(seed)
    words = Counter({"".join(rng.choice("abcde") for _ in range(rng.randint(2, 8))).encode(): rng.randint(1, 20)
                     for _ in range(60)})
    texts = [" ".join(rng.choice(["a", "bb", "c'd", "éé", "12", "  "]) for _ in range(30)) for _ in range(3)]
    counts = count_words(texts)
    return {"merges": [list(token) for token in train_bpe(words, 256 + 40)[256:]],
            "counts": sorted([list(word), n] for word, n in counts.items())}


def wiki_text(shard: int, start_line: int, lines: int) -> list[str]:
    path = shared_data() / "wiki" / f"enwiki-2015-{shard:02d}.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line for i, line in zip(range(start_line + lines), f) if i >= start_line and line.strip()]


def experiment(seed: int) -> dict:
    """Train a 2,048-token BPE on 2,000 lines of Wikipedia (where they start depends on the seed) and measure how
    many bytes a token covers on 1,000 held-out lines of another shard: compression is what a BPE is for."""
    train_lines = wiki_text(0, 2000 * seed, 2000)
    held_out = "".join(wiki_text(6, 0, 1000))
    tokenizer = Tokenizer.from_bpe_text(bpe_text(train_bpe(count_words(train_lines), 2048)))
    ids = tokenizer.encode(held_out)
    return {"bytes_per_token": len(held_out.encode()) / len(ids), "tokens": len(ids)}
