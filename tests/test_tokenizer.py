"""Our byte-level BPE: the trainer against merges worked by hand, its file format, and exact round trips."""
import random
from collections import Counter

import numpy as np
import pytest

from data.bpe import count_words, parse_bpe, read_bpe_text, save_bpe, train_bpe
from data.loader import TokenFile, data_tokenizer
from data.prepare import PrepareConfig, prepare
from data.tokenizer import Tokenizer


def test_bpe_merges_match_a_hand_worked_example():
    # Words (GPT-2 keeps the leading space) and counts: " low" x5, " lower" x2, " newest" x6, " widest" x3.
    # 1. Pair counts: (e,s) = 6+3 = 9 and (s,t) = 9 tie; ties go to the smaller ids, (101,115) < (115,116): "es".
    # 2. Now (es,t) = 9 is the largest: "est".
    # 3. Left at 7: (" ",l), (l,o), (o,w); (w,e) fell to 2 (only " lower"). Smallest ids (32,108): " l".
    # 4. At 7: (" l",o) = (258,111) and (o,w) = (111,119); the latter has the smaller ids: "ow".
    words = Counter({b" low": 5, b" lower": 2, b" newest": 6, b" widest": 3})
    assert train_bpe(words, 256 + 4)[256:] == [b"es", b"est", b" l", b"ow"]


def test_count_words_splits_like_gpt2():
    counts = count_words(["Hello world, hello world!", "it's 2024"])
    assert counts[b" world"] == 2 and counts[b"Hello"] == 1 and counts[b" hello"] == 1
    assert counts[b"'s"] == 1 and counts[b" 2024"] == 1 and counts[b","] == 1 and counts[b"!"] == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    text = ("The quick brown fox jumps over the lazy dog. " * 50 + "Zoë's café serves crème brûlée. " * 20
            + "Numbers 12345 and 67890. " * 20)
    path = tmp_path_factory.mktemp("bpe") / "toy.bpe"
    save_bpe(train_bpe(count_words([text]), 300), str(path))
    return Tokenizer.from_spec(str(path)), path


def test_round_trip_of_arbitrary_text(trained):
    tokenizer, _ = trained
    samples = ["plain text", "accents: Zoë, café, naïve, Ångström", "emoji: 🙂🚀 👩‍👩‍👧", "control:\x00\x07\t\r\n\x1b[0m",
               "CJK 日本語テキスト and Cyrillic текст", "  leading and trailing spaces  ", "\u200b zero width", ""]
    for text in samples:
        ids = tokenizer.encode(text)
        assert all(0 <= i < tokenizer.num_ordinary for i in ids)
        assert tokenizer.decode(ids) == text
    # the merges are used: a frequent word is far fewer tokens than bytes
    assert len(tokenizer.encode(" quick brown fox")) < len(" quick brown fox".encode()) / 2


def test_special_ids_follow_the_vocabulary_and_round_trip_the_file(trained):
    tokenizer, path = trained
    assert tokenizer.num_ordinary == 300 and tokenizer.cls_id == 300 and tokenizer.pad_id == 303
    assert tokenizer.vocab_size == 320 and tokenizer.name.startswith("bpe300-")
    assert parse_bpe(read_bpe_text(str(path)))[:256] == [bytes([b]) for b in range(256)]
    again = Tokenizer.from_state(tokenizer.state_dict())
    assert again.name == tokenizer.name and again.encode("crème brûlée") == tokenizer.encode("crème brûlée")
    # the space before a blank belongs to the hidden word (" Paris" is one token), so it is not encoded
    assert tokenizer.decode([tokenizer.cls_id] + tokenizer.encode_masked("a [MASK] b")) == "[CLS]a[MASK] b"
    assert tokenizer.encode_masked("a [MASK] b") == tokenizer.encode("a") + [tokenizer.mask_id] + tokenizer.encode(" b")
    path.with_name("bad.bpe").write_text("not a tokenizer\n")
    with pytest.raises(ValueError, match="not a cramlm BPE file"):
        Tokenizer.from_spec(str(path.with_name("bad.bpe")))


def test_prepare_trains_a_vocabulary_and_the_header_names_it(tmp_path):
    documents = [f"Article {i} is about the river {i % 7} and the town of Example{i % 5}.\nMore text here."
                 for i in range(200)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(documents) + "\n")
    stats = prepare(PrepareConfig(corpus=str(tmp_path / "corpus.txt"), out_dir=str(tmp_path / "out"),
                                  val_fraction=0.1, max_tokens_per_char=0, vocab_size=320))
    tokenizer = data_tokenizer(str(tmp_path / "out"))
    assert stats["tokenizer"] == tokenizer.name and tokenizer.vocab_size == 320 and tokenizer.num_ordinary == 316
    tokens = np.asarray(TokenFile(str(tmp_path / "out" / "train.bin"), tokenizer).tokens)
    first = tokens[:list(tokens).index(tokenizer.sep_id)]
    assert tokenizer.decode(first) in documents
    with pytest.raises(ValueError, match="re-run data/prepare.py"):  # a GPT-2 reader refuses these tokens
        TokenFile(str(tmp_path / "out" / "train.bin"), Tokenizer.gpt2())


def naive_bpe(word_counts: Counter, vocab_size: int) -> list[bytes]:
    """The textbook loop (Sennrich et al. 2016, Algorithm 1): recount every pair after every merge, merge the most
    frequent (ties: the pair of smaller ids), stop when none occurs twice. Slow; the reference for train_bpe."""
    tokens = [bytes([b]) for b in range(256)]
    id_of = {token: i for i, token in enumerate(tokens)}
    words = {tuple(word): n for word, n in word_counts.items()}
    while len(tokens) < vocab_size:
        pairs = Counter()
        for ids, n in words.items():
            for pair in zip(ids, ids[1:]):
                pairs[pair] += n
        if not pairs:
            break
        pair, count = min(pairs.items(), key=lambda item: (-item[1], item[0]))
        if count < 2:
            break
        merged = tokens[pair[0]] + tokens[pair[1]]
        if merged not in id_of:
            id_of[merged] = len(tokens)
            tokens.append(merged)
        new_words = {}
        for ids, n in words.items():
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    out.append(id_of[merged])
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            new_words[tuple(out)] = n
        words = new_words
    return tokens


def test_train_bpe_equals_the_textbook_loop():
    # A pair whose count drops in one word must keep its remaining count: here "ha" (Shabbat, harshly) is still
    # seen twice after "an" and "es" are merged, so it is merged third.
    stale = Counter({b"Shabbat": 1, b" Epiphanes": 1, b" misanthropes": 1, b" Granada": 1, b" harshly": 1})
    assert train_bpe(stale, 2044)[256:] == naive_bpe(stale, 2044)[256:] == [b"an", b"es", b"ha"]
    rng = random.Random(0)
    for _ in range(40):
        words = Counter({"".join(rng.choice("abcab ") for _ in range(rng.randint(2, 9))).encode(): rng.randint(1, 9)
                         for _ in range(rng.randint(5, 40))})
        assert train_bpe(words, 256 + 60) == naive_bpe(words, 256 + 60), dict(words)
