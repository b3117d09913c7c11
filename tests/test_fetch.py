"""data/fetch.py and the named corpora in data/prepare.py, with no network: file:// URLs and a tiny HTTP
server on 127.0.0.1 (loopback only) that can honour or ignore Range requests and cut a download short."""
import dataclasses
import hashlib
import http.server
import json
import socket
import threading
import time
import zipfile

import pytest

import train as train_module
from conftest import synthetic_documents
from data.fetch import (CORPORA, DownloadError, fetch, local_files, passes_warning, shards_needed,
                        train_tokens_to_prepare)
from data.loader import PartedBatches
from data.loader import TokenFile
from data.sources import resolve_inputs
from data.prepare import BackgroundPreparation, PrepareConfig, main, prepare
from data.tokenizer import Tokenizer


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.payload at any path; honours Range if server.honour_range; sends only the first
    server.cut_at bytes of the file (while announcing them all) when cut_at is set."""

    def do_GET(self):
        server, payload = self.server, self.server.payload
        requested = self.headers.get("Range")
        server.ranges.append(requested)
        start = 0
        if requested and server.honour_range:
            start = int(requested.split("=")[1].split("-")[0])
            if start >= len(payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(payload) - start))
        self.end_headers()
        end = len(payload) if server.cut_at is None else max(server.cut_at, start)
        self.wfile.write(payload[start:end])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.payload, httpd.honour_range, httpd.cut_at, httpd.ranges = b"", True, None, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/shard.json.gz"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MiB read


def test_file_url_is_fetched_whole_and_renamed(tmp_path):
    (tmp_path / "src.bin").write_bytes(PAYLOAD)
    path = fetch((tmp_path / "src.bin").as_uri(), str(tmp_path / "dl" / "src.bin"), progress=False)
    assert open(path, "rb").read() == PAYLOAD and not (tmp_path / "dl" / "src.bin.part").exists()


def test_interrupted_download_keeps_its_part_and_resumes_with_range(tmp_path, server):
    server.payload, server.cut_at = PAYLOAD, 300_000
    target = tmp_path / "shard.json.gz"
    with pytest.raises(DownloadError, match="300,000.*run again to resume"):
        fetch(server.url, str(target), progress=False)
    assert not target.exists() and (tmp_path / "shard.json.gz.part").stat().st_size == 300_000  # kept for resuming
    server.cut_at = None
    fetch(server.url, str(target), progress=False)
    assert server.ranges == [None, "bytes=300000-"]  # the second request asked only for the rest
    assert target.read_bytes() == PAYLOAD and not (tmp_path / "shard.json.gz.part").exists()


def test_server_that_ignores_range_gets_a_clean_restart(tmp_path, server):
    server.payload, server.honour_range = PAYLOAD, False
    (tmp_path / "shard.json.gz.part").write_bytes(b"stale bytes of another version")
    fetch(server.url, str(tmp_path / "shard.json.gz"), progress=False)
    assert (tmp_path / "shard.json.gz").read_bytes() == PAYLOAD  # not the stale prefix + the whole file


def test_file_url_with_a_stale_part_restarts_too(tmp_path):
    (tmp_path / "src.bin").write_bytes(PAYLOAD)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "src.bin.part").write_bytes(b"x" * 1000)  # file:// ignores Range, like some servers
    path = fetch((tmp_path / "src.bin").as_uri(), str(tmp_path / "dl" / "src.bin"), progress=False)
    assert open(path, "rb").read() == PAYLOAD


def test_a_part_longer_than_the_file_is_restarted(tmp_path, server):
    server.payload = PAYLOAD
    (tmp_path / "shard.json.gz.part").write_bytes(b"y" * (len(PAYLOAD) + 10))  # the server answers 416
    fetch(server.url, str(tmp_path / "shard.json.gz"), progress=False)
    assert (tmp_path / "shard.json.gz").read_bytes() == PAYLOAD


def test_sha256_is_checked_when_known(tmp_path, server):
    server.payload = PAYLOAD
    with pytest.raises(DownloadError, match="does not match its sha256"):
        fetch(server.url, str(tmp_path / "bad.json.gz"), sha256="0" * 64, progress=False)
    assert not list(tmp_path.iterdir())  # a wrong file is neither kept nor resumable
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch(server.url, str(tmp_path / "good.json.gz"), sha256=good, progress=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_fails_in_seconds_naming_url_error_and_offline_alternative(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/c4-train.00000-of-01024.json.gz"
    began = time.monotonic()
    with pytest.raises(DownloadError) as error:
        fetch(url, str(tmp_path / "x.json.gz"), progress=False)
    assert time.monotonic() - began < 5
    assert url in str(error.value) and "refused" in str(error.value).lower() and "--corpus PATH" in str(error.value)


def test_prepare_command_stops_on_an_unreachable_corpus_with_one_message(tmp_path):
    """In-process (a subprocess would time out on a loaded machine): DownloadError is a RuntimeError, which
    `python -m data.prepare` prints as one `error:` line; nothing is left in the output folder."""
    url = f"http://127.0.0.1:{closed_port()}/c4-train.00000-of-01024.json.gz"
    with pytest.raises(RuntimeError, match=f"^could not download {url}: .*--corpus PATH") as error:
        main(["--corpus", url, "--out-dir", str(tmp_path / "out"), "--download-dir", str(tmp_path / "dl")])
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# Named corpora, shard by shard

def test_named_corpus_takes_one_shard_unless_told_or_given_a_token_target(tiny_c4, tmp_path):
    assert len(resolve_inputs("c4", str(tmp_path))) == 1
    assert len(resolve_inputs("c4", str(tmp_path), shards=3)) == 3
    assert len(resolve_inputs("c4", str(tmp_path), max_train_tokens=10**9)) == 4  # walked lazily, stops on the count
    assert not (tmp_path / "dl").exists()  # listing fetches nothing


def test_c4_shards_are_prepared_one_by_one_until_the_token_target(tiny_c4, tmp_path):
    one_shard = prepare(PrepareConfig(corpus="c4", shards=1, out_dir=str(tmp_path / "one"), val_fraction=0.1,
                                      download_dir=str(tmp_path / "dl"), num_threads=1))
    assert one_shard["documents"] == 200
    target = one_shard["train_tokens"] + 10  # a little more than one shard holds: two shards needed
    stats = prepare(PrepareConfig(corpus="c4", max_train_tokens=target, out_dir=str(tmp_path / "two"), val_fraction=0.1,
                                  download_dir=str(tmp_path / "dl"), num_threads=1, docs_per_chunk=50))
    assert stats["documents"] == 400 and stats["train_tokens"] >= target  # whole shards: one part each
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta["complete"] and meta["parts"] == ["train-00000.bin", "train-00001.bin"]
    assert [url.rsplit("/", 1)[-1] for url in meta["inputs"]] == ["c4-train.00000-of-00004.json.gz",
                                                                 "c4-train.00001-of-00004.json.gz"]
    assert sorted(p.name for p in (tmp_path / "two").glob("train*")) == meta["parts"]  # no third part, no train.bin
    assert sum(len(TokenFile(str(tmp_path / "two" / name), Tokenizer.gpt2()).tokens) for name in meta["parts"]) == \
        stats["train_tokens"]
    # part 0 is shard 0 whatever the target: the same tokens as the one-shard preparation
    assert (tmp_path / "two" / "train-00000.bin").read_bytes() == (tmp_path / "one" / "train-00000.bin").read_bytes()
    downloaded = sorted(p.name for p in (tmp_path / "dl").iterdir())
    assert "c4-train.00003-of-00004.json.gz" not in downloaded  # never reached, never fetched
    assert not [name for name in downloaded if name.endswith(".part") and "00001" in name]


def test_parts_resume_at_the_first_missing_one_with_the_same_settings(tiny_c4, tmp_path):
    config = PrepareConfig(corpus="c4", max_train_tokens=10**9, out_dir=str(tmp_path / "out"), val_fraction=0.1,
                           download_dir=str(tmp_path / "dl"), num_threads=1)
    first = prepare(config, max_parts=1)  # what train.py does in the foreground
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert first["documents"] == 200 and not meta["complete"] and meta["parts"] is None
    assert sorted(p.name for p in (tmp_path / "out").glob("train*")) == ["train-00000.bin"]
    part_0 = (tmp_path / "out" / "train-00000.bin").read_bytes()
    rest = prepare(config)  # what the background preparer does: part 0 is kept, shards 1-3 are read
    assert rest["documents"] == 600 and (tmp_path / "out" / "train-00000.bin").read_bytes() == part_0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["complete"] and meta["parts"] == [f"train-{index:05d}.bin" for index in range(4)]
    with pytest.raises(ValueError, match="holds parts prepared with max_tokens_per_char=0.3"):
        prepare(dataclasses.replace(config, max_tokens_per_char=0.5))


def test_a_failed_background_preparer_is_loud_and_ends_the_list_of_parts(tiny_c4, tmp_path, capsys):
    (tmp_path / "hub" / "c4-train.00001-of-00004.json.gz").unlink()  # shard 1 cannot be downloaded
    config = PrepareConfig(corpus="c4", max_train_tokens=10**9, out_dir=str(tmp_path / "out"), val_fraction=0.1,
                           download_dir=str(tmp_path / "dl"), num_threads=1)
    prepare(config, max_parts=1)
    preparer = BackgroundPreparation(config)
    preparer.watcher.join(timeout=120)
    assert preparer.process.exitcode == 1 and "could not download" in (tmp_path / "out" / "prepare.log").read_text()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["parts"] == ["train-00000.bin"] and not meta["complete"] and "exited with code 1" in meta["error"]
    assert "WARNING: the background preparer exited with code 1" in capsys.readouterr().err
    reader = PartedBatches(str(tmp_path / "out"), Tokenizer.gpt2(), seq_len=32, mask_rate=0.25)
    assert reader._following(0, 0) == (1, 0)  # no waiting for part 1: the next pass starts at part 0


def test_stopping_the_background_preparer_leaves_no_half_part(tiny_c4, tmp_path):
    config = PrepareConfig(corpus="c4", max_train_tokens=10**9, out_dir=str(tmp_path / "out"), val_fraction=0.1,
                           download_dir=str(tmp_path / "dl"), num_threads=1)
    prepare(config, max_parts=1)
    preparer = BackgroundPreparation(config)
    preparer.stop()  # as when training ends first
    assert not preparer.process.is_alive() and preparer.process.exitcode != 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["parts"] is None and not meta["complete"]  # not marked final: the next run resumes the preparation
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_a_preparer_stopped_after_its_last_part_leaves_the_folder_complete(tiny_c4, tmp_path):
    """The stop can land between the last part's rename and meta.json's "complete": stop() settles it."""
    config = PrepareConfig(corpus="c4", shards=2, out_dir=str(tmp_path / "out"), val_fraction=0.1,
                           download_dir=str(tmp_path / "dl"), num_threads=1)
    prepare(config)
    meta_path = tmp_path / "out" / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["complete"] and meta["parts"] == ["train-00000.bin", "train-00001.bin"]
    meta_path.write_text(json.dumps({**meta, "complete": False, "parts": None}))  # what such a stop leaves
    preparer = BackgroundPreparation(config)
    preparer.stop()  # at once: the process has not even imported its modules yet
    meta = json.loads(meta_path.read_text())
    assert meta["complete"] and meta["parts"] == ["train-00000.bin", "train-00001.bin"]


def test_a_partial_shard_is_never_tokenised(tiny_c4, tmp_path, server, monkeypatch):
    """A shard cut short stops preparation with an error: no training part, and the .part is kept to resume."""
    server.payload = (tmp_path / "hub" / "c4-train.00000-of-00004.json.gz").read_bytes()
    server.cut_at = len(server.payload) // 2
    monkeypatch.setitem(CORPORA, "c4", dataclasses.replace(CORPORA["c4"], url_pattern=server.url.replace(
        "shard.json.gz", "c4-train.{index:05d}-of-00004.json.gz")))
    config = PrepareConfig(corpus="c4", shards=1, out_dir=str(tmp_path / "out"), val_fraction=0.1,
                           download_dir=str(tmp_path / "dl"), num_threads=1)
    with pytest.raises(DownloadError, match="incomplete"):
        prepare(config)
    assert not list((tmp_path / "out").glob("train*.bin")) and not list((tmp_path / "out").glob("*.tmp"))
    assert (tmp_path / "dl" / "c4-train.00000-of-00004.json.gz.part").exists()
    server.cut_at = None
    assert prepare(config)["documents"] == 200  # resumed, then tokenised whole


def test_local_files_prefetches_one_ahead_and_stops_when_left(tmp_path):
    for i in range(3):
        (tmp_path / f"s{i}.txt").write_text(f"doc {i}\n")
    urls = [(tmp_path / f"s{i}.txt").as_uri() for i in range(3)]
    files = local_files(urls, str(tmp_path / "dl"), progress=False)
    assert open(next(files)).read() == "doc 0\n"
    files.close()
    assert not (tmp_path / "dl" / "s2.txt").exists()  # two ahead: never started
    assert list(local_files(["plain.txt"], str(tmp_path / "dl"))) == ["plain.txt"]  # local paths pass through


# ----------------------------------------------------------------------------------------------------
# Sizing a corpus to a budget

def test_tokens_and_shards_for_a_budget():
    assert train_tokens_to_prepare(10e9, max_passes=2) == 5_000_000_000
    assert shards_needed(10e9, tokens_per_shard=0.17e9, max_passes=2) == 30  # ceil(5e9 / 0.17e9)
    assert shards_needed(10e9, tokens_per_shard=0.17e9, max_passes=1) == 59
    assert shards_needed(1e3, tokens_per_shard=0.17e9) == 1
    assert shards_needed(1e13, tokens_per_shard=0.17e9, num_shards=1024) == 1024
    with pytest.raises(ValueError):
        train_tokens_to_prepare(0)


def test_passes_warning_is_loud_only_beyond_max_passes():
    assert passes_warning(train_tokens=5_000, tokens_needed=10_000, max_passes=2) == (2.0, None)
    passes, warning = passes_warning(train_tokens=120_000_000, tokens_needed=1e10, corpus="data/cache/wikitext103")
    assert passes == pytest.approx(83.33, abs=0.01)
    assert warning.startswith("WARNING") and "~83.3 passes" in warning and "data/cache/wikitext103" in warning


def test_the_default_corpus_is_c4_and_wikitext103_stays_available_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv("CRAMLM_CORPUS", raising=False)
    assert PrepareConfig().corpus == "c4" and train_module.parse_args(["--recipe", "gpu"]).corpus == "c4"
    assert train_module.parse_args(["--corpus", "wikitext103"]).corpus == "wikitext103"
    monkeypatch.setenv("CRAMLM_CORPUS", "../shared/data/wiki")  # the offline override still wins
    assert PrepareConfig().corpus == "../shared/data/wiki"
    # WikiText-103 by name: its one zip in the real layout (a file:// copy here), prepared whole into train.bin
    with zipfile.ZipFile(tmp_path / "wikitext-103-raw-v1.zip", "w") as archive:
        archive.writestr("wikitext-103-raw/wiki.train.raw", "\n\n".join(synthetic_documents(100)) + "\n")
    monkeypatch.setitem(CORPORA, "wikitext103", dataclasses.replace(
        CORPORA["wikitext103"], url_pattern=(tmp_path / "wikitext-103-raw-v1.zip").as_uri()))
    stats = prepare(PrepareConfig(corpus="wikitext103", out_dir=str(tmp_path / "out"), download_dir=str(tmp_path / "dl"),
                                  val_fraction=0.1, num_threads=1))
    assert stats["documents"] == 100
    assert sorted(p.name for p in (tmp_path / "out").glob("*.bin")) == ["train.bin", "val.bin"]
