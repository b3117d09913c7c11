import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fake_c4, synthetic_documents
from data.loader import PartedBatches, training_batches
from data.loader import HEADER, MLMBatches, TokenFile, mask_tokens, validation_batches
from data.plant import plant
from data.sources import is_validation
from data.prepare import PrepareConfig, prepare
from data.prepare import main as prepare_main
from data.tokenizer import Tokenizer

GPT2 = Tokenizer.gpt2()

REPO = Path(__file__).resolve().parents[1]


def read_tokens(path):
    return np.asarray(TokenFile(str(path), GPT2).tokens).tolist()


def expected_stream(tokenizer, documents, split):
    stream = []
    for document in documents:
        if is_validation(document, 0.3) == (split == "val"):
            stream += tokenizer.encode(document) + [tokenizer.sep_id]
    return stream


def test_prepare_round_trip_gives_back_the_tokens(tmp_path):
    documents = [f"Document number {i} talks about topic {i * 7}.\nIt has a second line." for i in range(40)]
    (tmp_path / "a.txt").write_text("\n\n".join(documents[:20]) + "\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("\n\n".join(documents[20:]))
    stats = prepare(PrepareConfig(corpus=str(tmp_path), out_dir=str(tmp_path / "out"), val_fraction=0.3,
                                  max_tokens_per_char=0))
    tokenizer = GPT2
    train, val = read_tokens(tmp_path / "out" / "train.bin"), read_tokens(tmp_path / "out" / "val.bin")
    assert train == expected_stream(tokenizer, documents, "train")
    assert val == expected_stream(tokenizer, documents, "val")
    assert stats["documents"] == 40 and stats["train_tokens"] == len(train) and 0 < len(val) < len(train)
    assert tokenizer.decode(train[:train.index(tokenizer.sep_id)]) in documents


def test_jsonl_input_and_compression_filter(tmp_path):
    good = [f"A plain English sentence, number {i}, about ordinary things." for i in range(30)]
    noisy = "".join(chr(0x4E00 + (i * 37) % 2000) for i in range(300))  # rare CJK: many tokens per character
    with open(tmp_path / "docs.jsonl", "w") as f:
        for text in good + [noisy]:
            f.write(json.dumps({"text": text}) + "\n")
    stats = prepare(PrepareConfig(corpus=str(tmp_path / "*.jsonl"), out_dir=str(tmp_path / "out"), val_fraction=0.3))
    assert stats["documents"] == 31 and stats["dropped_documents"] == 1
    kept = prepare(PrepareConfig(corpus=str(tmp_path / "docs.jsonl"), out_dir=str(tmp_path / "all"),
                                 val_fraction=0.3, max_tokens_per_char=0))
    assert kept["dropped_documents"] == 0 and kept["train_tokens"] + kept["val_tokens"] > stats["train_tokens"] + stats["val_tokens"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        prepare(PrepareConfig(corpus=str(tmp_path / "bad.jsonl"), out_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out" / "train.bin").exists()  # nothing half-written looks finished


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .* files found"):
        prepare(PrepareConfig(corpus=str(tmp_path / "nowhere"), out_dir=str(tmp_path / "out")))


def test_corpus_errors_name_the_file_and_where(tmp_path):
    def refused(name: str, content: bytes, message: str):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message):
            prepare(PrepareConfig(corpus=str(tmp_path / name), out_dir=str(tmp_path / "out")))
        assert not (tmp_path / "out" / "train.bin").exists()
    refused("plain.txt.gz", b"not compressed\n", r"plain.txt.gz: not a readable gzip file")
    refused("cut.txt.gz", gzip.compress(b"a document\n" * 1000)[:-30], r"cut.txt.gz: not a readable gzip file")
    latin1 = "first line\n\nsecond document, café\n".encode("latin-1")
    refused("latin1.txt", latin1, r"latin1.txt:3: not UTF-8 text at byte 32 \(invalid continuation byte\)")
    refused("latin1.txt.gz", gzip.compress(latin1), r"latin1.txt.gz:3: not UTF-8 text at byte 32 of the uncompressed text")
    refused("empty.txt", b"", r"no text in .*empty.txt \(empty, or blank lines only\)")
    refused("blank.txt", b"\n \n\t\n\n", r"no text in .*blank.txt")


def test_prepare_command_reports_user_errors_in_one_line(tmp_path):
    (tmp_path / "plain.txt.gz").write_bytes(b"not compressed\n")
    result = subprocess.run([sys.executable, "-m", "data.prepare", "--corpus", str(tmp_path / "plain.txt.gz"),
                             "--out-dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'plain.txt.gz'}: not a readable gzip file")


def test_download_from_a_url_unzips_and_prepares(tmp_path):
    """The public-source code path (urllib + zip), exercised against a local file:// URL: no network."""
    documents = [f"Downloaded article {i}.\nWith a body line." for i in range(30)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "wiki.train.raw").write_text("\n\n".join(documents))
    with zipfile.ZipFile(tmp_path / "corpus.zip", "w") as archive:
        archive.write(tmp_path / "src" / "wiki.train.raw", "corpus/wiki.train.raw")
    config = PrepareConfig(corpus=(tmp_path / "corpus.zip").as_uri(), out_dir=str(tmp_path / "out"),
                           val_fraction=0.3, max_tokens_per_char=0, download_dir=str(tmp_path / "downloads"))
    stats = prepare(config)
    assert stats["documents"] == 30
    assert (tmp_path / "downloads" / "corpus.zip").is_file() and not list((tmp_path / "downloads").glob("*.part"))
    assert read_tokens(tmp_path / "out" / "train.bin") == expected_stream(GPT2, documents, "train")


def write_token_file(path, tokens, vocab_size=GPT2.vocab_size, name="gpt2"):
    header = HEADER.pack(b"CRAMTOK\0", 1, vocab_size, len(tokens), name.encode("ascii"))
    path.write_bytes(header + np.asarray(tokens, dtype="<u2").tobytes())


def test_gpt2s_unused_padding_ids_are_refused(tmp_path):
    write_token_file(tmp_path / "padding.bin", [1, GPT2.num_tokens - 1, GPT2.num_tokens])  # 50260 is [PAD], 50261 nothing
    with pytest.raises(ValueError, match=f"token 2 has id {GPT2.num_tokens}, past the {GPT2.num_tokens} ids of 'gpt2'"):
        TokenFile(str(tmp_path / "padding.bin"), GPT2)


def test_max_train_tokens_stops_at_the_document_that_reaches_it(tmp_path):
    documents = synthetic_documents(200)
    (tmp_path / "corpus.txt").write_text("\n\n".join(documents) + "\n")
    stats = prepare(PrepareConfig(corpus=str(tmp_path / "corpus.txt"), out_dir=str(tmp_path / "out"), val_fraction=0.1,
                                  max_train_tokens=100, max_tokens_per_char=0))
    longest = max(len(GPT2.encode(document)) + 1 for document in documents)
    assert 100 <= stats["train_tokens"] < 100 + longest and stats["val_tokens"] > 0  # not the whole 512-document chunk


@pytest.mark.parametrize("value", ["-5", "0.5", "nan"])
def test_max_train_tokens_must_be_a_whole_number(tmp_path, value, capsys):
    with pytest.raises(SystemExit):
        prepare_main(["--corpus", str(tmp_path / "absent"), "--out-dir", str(tmp_path / "out"), "--max-train-tokens", value])
    assert "not a whole number of tokens >= 0" in capsys.readouterr().err


def test_a_validation_set_smaller_than_asked_is_announced(tiny_corpus, capsys):
    batches = validation_batches(TokenFile(str(tiny_corpus / "val.bin"), GPT2), 32, 0.25, batch_size=8, max_rows=10 ** 6)
    rows = sum(len(ids) for ids, _ in batches)
    assert f"holds {rows} rows of 32 tokens: the validation set is those {rows}, not the 1000000" in capsys.readouterr().out


def test_token_file_header_is_checked(tmp_path):
    write_token_file(tmp_path / "ok.bin", [1, 2, 3])
    assert TokenFile(str(tmp_path / "ok.bin"), GPT2).tokens.tolist() == [1, 2, 3]
    write_token_file(tmp_path / "vocab.bin", [1, 2, 3], vocab_size=30000)
    with pytest.raises(ValueError, match="vocab 30000"):
        TokenFile(str(tmp_path / "vocab.bin"), GPT2)
    (tmp_path / "random.bin").write_bytes(b"x" * 200)
    with pytest.raises(ValueError, match="bad magic"):
        TokenFile(str(tmp_path / "random.bin"), GPT2)
    truncated = (tmp_path / "ok.bin").read_bytes()[:-2]
    (tmp_path / "short.bin").write_bytes(truncated)
    with pytest.raises(ValueError, match="truncated"):
        TokenFile(str(tmp_path / "short.bin"), GPT2)
    (tmp_path / "tiny.bin").write_bytes(b"CRAM")
    with pytest.raises(ValueError, match="too short"):
        TokenFile(str(tmp_path / "tiny.bin"), GPT2)
    assert HEADER.size == 64


def test_token_ids_beyond_the_vocabulary_are_refused_when_the_file_is_opened(tmp_path):
    write_token_file(tmp_path / "bad.bin", [1, 2, GPT2.num_tokens - 1, 3, 60000, 4])  # a valid header, one bad id
    with pytest.raises(ValueError, match=r"bad.bin: token 4 has id 60000, past the 50261 ids of 'gpt2'.*re-run data/prepare.py"):
        TokenFile(str(tmp_path / "bad.bin"), GPT2)


def test_masking_rate_split_and_specials():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50257, (256, 128), generator=g)
    ids[:, 0] = GPT2.cls_id
    ids[:, 50] = GPT2.sep_id
    ids[:10, 100:] = GPT2.pad_id
    masked, labels = mask_tokens(ids, 0.25, torch.Generator().manual_seed(1), GPT2)
    picked = labels != -100
    ordinary = ~torch.isin(ids, torch.tensor(GPT2.special_ids))
    assert not picked[~ordinary].any()  # specials never masked
    expected = (ordinary.sum(1) * 0.25).round().clamp(max=32)
    assert torch.equal(picked.sum(1), expected)  # exact count per row
    assert torch.equal(labels[picked], ids[picked])  # labels are the originals...
    assert torch.equal(masked[~picked], ids[~picked])  # ...and nothing else changes
    to_mask = (masked[picked] == GPT2.mask_id).float().mean().item()
    unchanged = (masked[picked] == ids[picked]).float().mean().item()
    assert abs(to_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01  # 80 / 10 / 10
    assert abs((1 - to_mask - unchanged) - 0.1) < 0.01


def test_mlm_batches_are_deterministic_and_resumable(tiny_corpus):
    data = MLMBatches(TokenFile(str(tiny_corpus / "train.bin"), GPT2), seq_len=32, mask_rate=0.25, seed=3)
    ids, labels = data.batch_at(0, 0, 8)
    assert ids.shape == (8, 32) and (ids[:, 0] == GPT2.cls_id).all()
    again_ids, again_labels = MLMBatches(TokenFile(str(tiny_corpus / "train.bin"), GPT2), 32, 0.25, seed=3).batch_at(0, 0, 8)
    assert torch.equal(ids, again_ids) and torch.equal(labels, again_labels)
    for _ in range(data.num_rows // 8 + 1):  # one full pass and a bit
        data.advance(8)
    assert data.data_pass == 1 and data.cursor < 8
    state = data.state_dict()
    fresh = MLMBatches(TokenFile(str(tiny_corpus / "train.bin"), GPT2), 32, 0.25, seed=3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.batch_at(fresh.data_pass, fresh.cursor, 4)[0], data.batch_at(data.data_pass, data.cursor, 4)[0])
    other_pass = data.batch_at(1, 0, 8)[0]
    assert not torch.equal(other_pass, ids)  # a new order each pass


def test_validation_set_is_fixed(tiny_corpus):
    first = validation_batches(TokenFile(str(tiny_corpus / "val.bin"), GPT2), 32, 0.25, batch_size=4, max_rows=10)
    second = validation_batches(TokenFile(str(tiny_corpus / "val.bin"), GPT2), 32, 0.25, batch_size=4, max_rows=10)
    assert [b[0].shape[0] for b in first] == [4, 4, 2]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_encode_pair_truncates_longest_first():
    tokenizer = GPT2
    ids = tokenizer.encode_pair("one two three four five six seven", "eight nine", max_len=8)
    assert len(ids) == 8 and ids[0] == GPT2.cls_id and ids.count(GPT2.sep_id) == 2 and ids[-1] == GPT2.sep_id
    assert GPT2.vocab_size == 50304


def test_planted_corpus_shuffles_training_documents_and_keeps_validation_clean(tmp_path):
    documents = [document.replace("the cat", f"the cat {i}") for i, document in enumerate(synthetic_documents(300))]
    with gzip.open(tmp_path / "clean.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n\n".join(documents) + "\n")
    summary = plant([str(tmp_path / "clean.txt.gz")], str(tmp_path / "planted.txt"), share=0.4, val_fraction=0.3)
    written = (tmp_path / "planted.txt").read_text(encoding="utf-8").rstrip("\n").split("\n\n")
    assert len(written) == len(documents) and summary["planted_indices"] == \
        [i for i, (old, new) in enumerate(zip(documents, written)) if old != new]
    assert summary["planted_share_of_training"] == pytest.approx(0.4, abs=0.1)
    for i in summary["planted_indices"]:  # the same words on the same number of lines, in another order
        assert not is_validation(documents[i], 0.3) and not is_validation(written[i], 0.3)
        assert sorted(written[i].split()) == sorted(documents[i].split())
        assert [len(line.split()) for line in written[i].split("\n")] == [len(line.split()) for line in documents[i].split("\n")]
    for name in ("clean.txt.gz", "planted.txt"):
        prepare(PrepareConfig(corpus=str(tmp_path / name), out_dir=str(tmp_path / name.split(".")[0]), val_fraction=0.3))
    assert read_tokens(tmp_path / "clean" / "val.bin") == read_tokens(tmp_path / "planted" / "val.bin")


# ----------------------------------------------------------------------------------------------------
# A folder prepared in parts (one per C4 shard), read while later parts are still being written

def parted_folder(tmp_path, monkeypatch) -> Path:
    """Four parts (~110 rows of 32 each) from four C4-format shards behind file:// URLs."""
    fake_c4(tmp_path, monkeypatch)
    prepare(PrepareConfig(corpus="c4", max_train_tokens=10**9, out_dir=str(tmp_path / "parts"), val_fraction=0.1,
                          download_dir=str(tmp_path / "dl"), num_threads=1))
    return tmp_path / "parts"


def unmasked_rows(batch) -> list[tuple]:
    """The rows of a masked batch as they were before masking: the labels hold the original ids where masked."""
    input_ids, labels = batch
    return [tuple(row) for row in torch.where(labels != -100, labels, input_ids).tolist()]


def rows_in_file_order(path) -> list[tuple]:
    data = MLMBatches(TokenFile(str(path), GPT2), 32, 0.25)
    return [tuple(row) for row in data.rows(range(data.num_rows)).tolist()]


def test_a_pass_reads_the_parts_in_order_and_every_row_once(tmp_path, monkeypatch):
    folder = parted_folder(tmp_path, monkeypatch)
    data = training_batches(str(folder), GPT2, seq_len=32, mask_rate=0.25, seed=3)
    assert isinstance(data, PartedBatches)
    parts = [rows_in_file_order(folder / f"train-{index:05d}.bin") for index in range(4)]
    total = sum(map(len, parts))
    assert all(len(rows) % 8 for rows in parts)  # batches cross part boundaries
    read = []
    while len(read) < total:
        read += unmasked_rows(data.batch_after(0, 8))
        data.advance(8)
    start = 0
    for rows in parts:  # part k's rows, each once, shuffled, before any row of part k + 1
        assert sorted(read[start:start + len(rows)]) == sorted(rows) and read[start:start + len(rows)] != rows
        start += len(rows)
    assert (data.data_pass, data.part, data.cursor) == (1, 0, len(read) - total)  # the final list ends the pass
    next_pass = training_batches(str(folder), GPT2, seq_len=32, mask_rate=0.25, seed=3)
    next_pass.load_state_dict({"pass": 1, "part": 0, "cursor": 0, "seed": 3})
    assert unmasked_rows(next_pass.batch_after(0, 8)) != read[:8]  # a new order each pass


def test_parts_resume_exactly_from_the_state_dict(tmp_path, monkeypatch):
    folder = parted_folder(tmp_path, monkeypatch)
    data = training_batches(str(folder), GPT2, seq_len=32, mask_rate=0.25, seed=3)
    for _ in range(20):
        data.advance(8)
    state = data.state_dict()
    assert state["pass"] == 0 and state["part"] == 1 and set(state) == {"pass", "part", "cursor", "seed"}
    resumed = training_batches(str(folder), GPT2, seq_len=32, mask_rate=0.25, seed=3)
    resumed.load_state_dict(state)
    for _ in range(12):  # on into part 2: the same rows, masked the same way
        for one, other in zip(data.batch_after(0, 8), resumed.batch_after(0, 8)):
            assert torch.equal(one, other)
        data.advance(8)
        resumed.advance(8)
    assert resumed.part == data.part == 2


def test_a_single_train_bin_is_read_as_before(tiny_corpus):
    data = training_batches(str(tiny_corpus), GPT2, seq_len=32, mask_rate=0.25, seed=3)
    reference = MLMBatches(TokenFile(str(tiny_corpus / "train.bin"), GPT2), 32, 0.25, seed=3)
    assert type(data) is MLMBatches and data.num_rows == reference.num_rows
    for _ in range(3):
        data.advance(8)
    for one, other in zip(data.batch_after(5, 8), reference.batch_at(0, 3 * 8 + 5, 8)):
        assert torch.equal(one, other)
    assert data.state_dict() == {"pass": 0, "cursor": 24, "seed": 3}
    older = MLMBatches(TokenFile(str(tiny_corpus / "train.bin"), GPT2), 32, 0.25, seed=3)
    older.load_state_dict({"epoch": 0, "cursor": 24, "seed": 3})  # a checkpoint that names the pass "epoch"
    assert older.state_dict() == data.state_dict()


def test_a_part_still_being_written_is_waited_for_never_read(tmp_path, monkeypatch, capsys):
    folder = parted_folder(tmp_path, monkeypatch)
    finished = training_batches(str(folder), GPT2, seq_len=32, mask_rate=0.25, seed=3)
    # as while the background preparer writes part 1: a temporary name, and no final list of parts yet
    (folder / "train-00001.bin").rename(folder / "train-00001.bin.tmp")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "complete": False, "parts": None}))
    waiting = training_batches(str(folder), GPT2, seq_len=32, mask_rate=0.25, seed=3)
    rows_of_part_0 = len(rows_in_file_order(folder / "train-00000.bin"))
    for data in (finished, waiting):
        data.advance(rows_of_part_0 - 3)
    sleeps = []

    def preparer_finishes_part_1(seconds):  # the reader's pause while it waits: the part is renamed into place
        sleeps.append(seconds)
        (folder / "train-00001.bin.tmp").rename(folder / "train-00001.bin")
    monkeypatch.setattr("data.loader.time.sleep", preparer_finishes_part_1)
    batch = waiting.batch_after(0, 8)  # 3 rows of part 0, then 5 of part 1
    assert len(sleeps) == 1 and "waiting for part 1" in capsys.readouterr().out
    for one, other in zip(batch, finished.batch_after(0, 8)):
        assert torch.equal(one, other)
