"""blimp.py, data/blimp.py and ngram.py: pseudo-log-likelihood against single-mask forwards, the word-level
masks, the Kneser-Ney baseline against a plain-Python computation of its formula, the reader on fixtures in
BLiMP's real format, --download from a file:// mirror, and the real files when ../shared/data/blimp is present."""
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

import blimp
from blimp import blimp_accuracy, encode_sentence, masked_positions, sentence_scores, word_starts
from run.checkpoint import model_checkpoint, save_checkpoint
from conftest import SHARED_DATA
from data.blimp import PARADIGMS, BlimpDataError, download_blimp, read_blimp, read_references
from data.bpe import count_words, save_bpe, train_bpe
from data.prepare import TokenWriter
from data.tokenizer import Tokenizer
from model import CramBERT, preset_config
from evaluation.ngram import KneserNey

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = "the cat sat on the mat. the dog sat on the cat. the cats sit. the dog sits. "
# Two real paradigm names with pairs in the real line format (fields as the authors' files have them).
FIXTURE = {"anaphor_gender_agreement": ("anaphor_agreement", [("the cat sat.", "the cat sit."),
                                                              ("the dog sat on the mat.", "the dog sat the on mat."),
                                                              ("the cats sit.", "the cats sits.")]),
           "causative": ("argument_structure", [("the dog sits.", "the dog sit."), ("the cat sat on the mat.",
                                                                                    "cat the sat on the mat."),
                                                ("the dog sat.", "dog the sat.")])}


def paradigm_line(uid, term, pair_id, good, bad) -> str:
    return json.dumps({"sentence_good": good, "sentence_bad": bad, "field": "morphology", "linguistics_term": term,
                       "UID": uid, "simple_LM_method": True, "one_prefix_method": False, "two_prefix_method": False,
                       "lexically_identical": False, "pairID": str(pair_id)})


def write_fixture(folder):
    """The FIXTURE paradigms (pairID order reversed in the file: the reader sorts) and a summary file."""
    folder.mkdir(parents=True, exist_ok=True)
    for uid, (term, pairs) in FIXTURE.items():
        lines = [paradigm_line(uid, term, i, good, bad) for i, (good, bad) in enumerate(pairs)]
        (folder / f"{uid}.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    summary = [{"UID": uid, "linguistics_term": term, "ngram": 0.5, "lstm": 0.6, "txl": 0.7, "gpt2": 0.9 - 0.1 * i}
               for i, (uid, (term, _)) in enumerate(FIXTURE.items())]
    summary.append({"UID": "overall", "linguistics_term": "overall", "ngram": 0.1, "lstm": 0.1, "txl": 0.1, "gpt2": 0.1})
    (folder / "models_summary.jsonl").write_text("".join(json.dumps(row) + "\n" for row in summary))
    return folder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A byte-level BPE of 271 ids learned from CORPUS: "the", " cat", " sat" are single tokens, " zebra" is not."""
    path = tmp_path_factory.mktemp("blimp_bpe") / "toy.bpe"
    save_bpe(train_bpe(count_words([CORPUS * 20]), 300), str(path))
    return Tokenizer.from_spec(str(path))


@pytest.fixture(scope="module")
def model(tokenizer):
    """A one-layer encoder whose matrices are drawn wider than BERT's 0.02, so that what is masked changes the
    predictions enough to tell the PLL variants apart."""
    torch.manual_seed(0)
    model = CramBERT(preset_config("tiny", n_layer=1, vocab_size=tokenizer.vocab_size, max_seq_len=32))
    for parameter in model.parameters():
        if parameter.dim() == 2:
            torch.nn.init.normal_(parameter, std=0.3)
    return model


# ----------------------------------------------------------------------------------------------------
# Pseudo-log-likelihood

def test_word_masks_on_a_hand_made_example(tokenizer):
    # Words: "the" | " " "z" "e" "b" "r" "a" (" zebra", unseen in the BPE's corpus) | " sat" "." ("sat.")
    ids = tokenizer.encode("the zebra sat.")
    assert [tokenizer.token_bytes(i) for i in ids] == [b"the", b" ", b"z", b"e", b"b", b"r", b"a", b" sat", b"."]
    starts = word_starts(tokenizer, ids)
    assert starts == [True, True, False, False, False, False, False, True, False]
    assert masked_positions(starts, "word") == [[0], [1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6], [3, 4, 5, 6], [4, 5, 6],
                                                [5, 6], [6], [7, 8], [8]]
    assert masked_positions(starts, "plain") == [[i] for i in range(9)]


def reference_pll(model, tokenizer, ids, masks) -> float:
    """One forward per scored token, the dense logits everywhere: sum of log p(token i) with masks[i] hidden."""
    row = [tokenizer.cls_id, *ids, tokenizer.sep_id]
    total = 0.0
    for i, positions in enumerate(masks):
        masked = torch.tensor([row])
        masked[0, [p + 1 for p in positions]] = tokenizer.mask_id
        logits, _ = model(masked)  # (1, T, V)
        total += logits[0, i + 1, :tokenizer.num_ordinary].log_softmax(-1)[ids[i]].item()
    return total


@pytest.mark.parametrize("leading_space", [True, False])
def test_batched_pll_equals_a_loop_of_single_mask_forwards(model, tokenizer, leading_space):
    sentences = ["the cat sat on the mat.", "the zebra sat.", "the dog sits.", "the cat sat"]  # 7, 9, 4, 3 tokens
    model.train()
    with torch.no_grad():
        plain = sentence_scores(model, tokenizer, sentences, "cpu", pll="plain", batch_rows=5,  # several batches
                                leading_space=leading_space)
        word = sentence_scores(model, tokenizer, sentences, "cpu", pll="word", batch_rows=64,
                               leading_space=leading_space)
        assert model.training  # restored after scoring in eval mode
        model.eval()
        # the default scores " " + sentence: its first word as it stands in running text
        encoded = [tokenizer.encode(" " * leading_space + s) for s in sentences]
        expected_plain = [reference_pll(model, tokenizer, ids, [[i] for i in range(len(ids))]) for ids in encoded]
        expected_word = [reference_pll(model, tokenizer, ids, masked_positions(word_starts(tokenizer, ids), "word"))
                         for ids in encoded]
    np.testing.assert_allclose(plain, expected_plain, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(word, expected_word, rtol=1e-5, atol=1e-4)
    assert word[3] == pytest.approx(plain[3], abs=1e-5)  # one token a word: the two variants agree
    assert abs(word[1] - plain[1]) > 1e-3  # a split word: they differ
    assert all(score < 0 for score in plain)


def test_the_leading_space_makes_the_first_word_its_running_text_token(tokenizer):
    assert [tokenizer.token_bytes(i) for i in encode_sentence(tokenizer, "the cat sat.", 32)] == [b" the", b" cat",
                                                                                                   b" sat", b"."]
    assert [tokenizer.token_bytes(i) for i in encode_sentence(tokenizer, "the cat sat.", 32, leading_space=False)
            ] == [b"the", b" cat", b" sat", b"."]


def test_blimp_accuracy_compares_the_two_sentences(model, tokenizer, tmp_path):
    pairs, _ = read_blimp(write_fixture(tmp_path), paradigms=tuple(FIXTURE))
    scores = sentence_scores(model, tokenizer, [p.good for p in pairs] + [p.bad for p in pairs], "cpu")
    expected = np.mean(scores[:len(pairs)] > scores[len(pairs):])
    assert blimp_accuracy(model, tokenizer, pairs, "cpu") == pytest.approx(expected)


def test_a_sentence_the_tokenizer_cannot_encode_is_named(tokenizer):
    with pytest.raises(BlimpDataError, match="cannot encode 'a\\\\ud800b'"):  # a lone surrogate comes back as U+FFFD
        encode_sentence(tokenizer, "a\ud800b", 32)
    with pytest.raises(BlimpDataError, match="the cat sat.*max_seq_len 8"):
        encode_sentence(tokenizer, "the cat sat on the mat.", 8)


# ----------------------------------------------------------------------------------------------------
# The Kneser-Ney baseline

def reference_kneser_ney(stream, order, num_ids, context, token) -> float:
    """Interpolated Kneser-Ney written out with Python counters: raw counts at the top order, continuation
    counts (distinct left neighbours in the stream) below, D = n1 / (n1 + 2 n2), uniform at order 0."""
    def grams(k):
        return Counter(tuple(stream[i:i + k]) for i in range(len(stream) - k + 1))

    def counts(k):
        return grams(order) if k == order else Counter(gram[1:] for gram in grams(k + 1))

    def probability(k, history, w):
        if k == 0:
            return 1 / num_ids
        c = counts(k)
        total = sum(n for gram, n in c.items() if gram[:-1] == history)
        if total == 0:
            return probability(k - 1, history[1:], w)
        types = sum(1 for gram in c if gram[:-1] == history)
        n1, n2 = sum(n == 1 for n in c.values()), sum(n == 2 for n in c.values())
        d = n1 / (n1 + 2 * n2) if n1 else 0.5
        return max(c.get(history + (w,), 0) - d, 0) / total + d * types / total * probability(k - 1, history[1:], w)

    return probability(len(context) + 1, tuple(context), token)


def test_kneser_ney_matches_its_formula_computed_by_hand():
    # Ids 0..11, 0 the boundary, the others drawn unevenly (so every order has n-grams seen once and twice) and
    # 11 never. The stream starts with "0 1", which recurs: the continuation counts the numpy code takes from
    # the distinct n-grams above then equal those counted in the stream.
    rng = np.random.default_rng(0)
    weights = np.array([20, 12, 8, 6, 4, 3, 2, 1, 1, 1.0])
    stream = [0]
    for _ in range(60):
        stream += [1, 2] + list(rng.choice(np.arange(1, 11), size=rng.integers(1, 5), p=weights / weights.sum())) + [0]
    ngram = KneserNey([np.array(stream)], order=3, num_ids=12)
    assert all(0 < level.discount < 1 for level in ngram.levels)  # estimated, not the fallback
    queries = [([0, 1], 2), ([1, 2], 3), ([2, 5], 0), ([5, 5], 5), ([4], 1), ([], 3), ([3, 3], 1), ([1, 2], 11),
               ([11, 11], 4), ([9], 10)]
    for context, token in queries:
        padded = np.array([[0] * (2 - len(context)) + context])
        got = math.exp(ngram.log_probs(padded, np.array([len(context)]), np.array([token]))[0])
        assert got == pytest.approx(reference_kneser_ney(stream, 3, 12, context, token), rel=1e-9), (context, token)
    for context in ([1, 2], [5, 5], [11, 11], [0]):  # a proper distribution over the 12 ids, seen context or not
        padded = np.repeat([[0] * (2 - len(context)) + context], 12, axis=0)
        total = np.exp(ngram.log_probs(padded, np.full(12, len(context)), np.arange(12))).sum()
        assert total == pytest.approx(1.0, rel=1e-9)


def test_kneser_ney_ranks_a_pair_whose_answer_is_known():
    # "1 2" always, "2 1" never: the pair (1 2 3) vs (2 1 3) must go to the first, by a wide margin.
    stream = np.array([0, 1, 2, 3, 0, 1, 2, 4, 0, 3, 1, 2, 0] * 50)
    ngram = KneserNey([stream], order=3, num_ids=5)
    good, bad = ngram.sentence_log_probs([[1, 2, 3], [2, 1, 3]], boundary=0)
    assert good > bad + 3
    with pytest.raises(ValueError, match="int64"):
        KneserNey([stream], order=5, num_ids=50_261)


# ----------------------------------------------------------------------------------------------------
# The files

def test_reader_on_the_real_format(tmp_path):
    folder = write_fixture(tmp_path / "blimp")
    pairs, missing = read_blimp(folder, paradigms=tuple(FIXTURE))
    assert missing == [] and len(pairs) == 6
    assert [p.pair_id for p in pairs] == [0, 1, 2, 0, 1, 2]  # sorted by pairID, not file order
    assert pairs[0].good == "the cat sat." and pairs[0].term == "anaphor_agreement" and pairs[3].uid == "causative"
    assert [p.pair_id for p in read_blimp(folder, max_pairs=2, paradigms=tuple(FIXTURE))[0]] == [0, 1, 0, 1]
    references = read_references(folder)
    assert set(references) == set(FIXTURE) and references["causative"]["gpt2"] == pytest.approx(0.8)


def test_a_malformed_line_names_its_file_and_line(tmp_path):
    folder = write_fixture(tmp_path / "blimp")
    path = folder / "causative.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:-5], lines[2]]) + "\n")
    with pytest.raises(BlimpDataError, match=f"{path}:2: not a JSON line"):
        read_blimp(folder, paradigms=tuple(FIXTURE))
    path.write_text(lines[0] + "\n" + json.dumps({"UID": "causative", "pairID": "3"}) + "\n")
    with pytest.raises(BlimpDataError, match=f"{path}:2: no field sentence_good, sentence_bad, linguistics_term"):
        read_blimp(folder, paradigms=tuple(FIXTURE))


def test_a_missing_paradigm_is_an_error_unless_skipped(tmp_path):
    folder = write_fixture(tmp_path / "blimp")
    with pytest.raises(FileNotFoundError, match="65 of the 67 paradigm files are missing.*--skip-missing"):
        read_blimp(folder)
    pairs, missing = read_blimp(folder, skip_missing=True)
    assert len(pairs) == 6 and len(missing) == 65 and "causative" not in missing


def test_main_scores_a_checkpoint_beside_the_ngram_and_the_references(model, tokenizer, tmp_path):
    folder = write_fixture(tmp_path / "blimp")
    save_checkpoint(str(tmp_path / "ckpt.pt"), model_checkpoint(model, tokenizer))
    (tmp_path / "tokens").mkdir()
    writer = TokenWriter(str(tmp_path / "tokens" / "train.bin"), tokenizer)
    for document in CORPUS.split(". ") * 30:
        writer.write(np.array(tokenizer.encode(document + ".") + [tokenizer.sep_id]))
    writer.close()
    arguments = ["--ckpt", str(tmp_path / "ckpt.pt"), "--blimp-dir", str(folder), "--ngram-data",
                 str(tmp_path / "tokens"), "--ngram-order", "3", "--out", str(tmp_path / "blimp.json")]
    with pytest.raises(SystemExit, match="error: .*65 of the 67 paradigm files are missing"):
        blimp.main(arguments)
    # one-sentence documents: each sentence is seen as written, without the leading space the scorer adds by default
    blimp.main(arguments + ["--skip-missing", "--max-pairs", "2", "--no-leading-space"])
    result = json.loads((tmp_path / "blimp.json").read_text())
    assert result["partial"] and len(result["missing"]) == 65 and result["pairs"] == 4
    assert set(result["results"]) == {"model", "n-gram", "5-gram", "LSTM", "TXL", "GPT-2"}
    assert result["results"]["GPT-2"]["overall"] == pytest.approx(0.85)  # mean of the two paradigms' 0.9, 0.8
    assert result["results"]["GPT-2"]["terms"] == {"anaphor_agreement": pytest.approx(0.9),
                                                   "argument_structure": pytest.approx(0.8)}
    ngram = result["results"]["n-gram"]
    assert ngram["paradigms"]["causative"] == 1.0  # "the dog sits." / "dog the sat.": the counts know
    assert result["ngram"]["order"] == 3 and result["config"]["pll"] == "word"
    assert result["config"]["precision_used"] == "fp32" and result["config"]["max_pairs"] == 2
    random_init = blimp.main(["--random-init", str(tmp_path / "ckpt.pt"), "--blimp-dir", str(folder),
                              "--skip-missing", "--pll", "plain"])
    assert random_init["config"]["random_init"] == str(tmp_path / "ckpt.pt") and random_init["config"]["leading_space"]


def test_download_from_a_mirror_checks_every_file(tmp_path):
    source = write_fixture(tmp_path / "source")
    mirror = tmp_path / "mirror"
    (mirror / "data").mkdir(parents=True)
    (mirror / "raw_results" / "summary").mkdir(parents=True)
    for uid in FIXTURE:
        (mirror / "data" / f"{uid}.jsonl").write_text((source / f"{uid}.jsonl").read_text())
    (mirror / "raw_results" / "summary" / "models_summary.jsonl").write_text((source / "models_summary.jsonl").read_text())
    (mirror / "data" / "transitive.jsonl").write_text("{not json\n")
    target = tmp_path / "blimp"
    checked, failed = download_blimp(target, mirror.as_uri(), paradigms=(*FIXTURE, "transitive", "wh_island"),
                                     progress=False)
    assert checked == {"anaphor_gender_agreement.jsonl": 3, "causative.jsonl": 3, "models_summary.jsonl": 2}
    assert set(failed) == {"transitive.jsonl", "wh_island.jsonl"}
    assert "transitive.jsonl:1: not a JSON line" in failed["transitive.jsonl"] and "deleted" in failed["transitive.jsonl"]
    assert not (target / "transitive.jsonl").exists() and not list(target.glob("*.part"))
    assert (target / "causative.jsonl").read_text() == (source / "causative.jsonl").read_text()


def test_the_real_files_hold_67_paradigms_of_1000_pairs():
    folder = SHARED_DATA / "blimp"
    if not (folder / "adjunct_island.jsonl").is_file():
        pytest.skip(f"real data not present: {folder} (it lives in ../shared/data beside the repo)")
    pairs, missing = read_blimp(folder)
    assert missing == [] and len(pairs) == 67_000
    assert set(Counter(p.uid for p in pairs).values()) == {1000}
    assert len({p.term for p in pairs}) >= 12
    assert set(read_references(folder)) == set(PARADIGMS)


def test_a_mistyped_blimp_dir_is_an_error_not_a_note(tmp_path):
    with pytest.raises(FileNotFoundError, match="--blimp-dir .* is not a folder"):
        blimp.evaluation_pairs(str(tmp_path / "blmp"), 5)
    assert blimp.evaluation_pairs(str(tmp_path / "blmp"), 0) == []  # no pairs asked: nothing to check
