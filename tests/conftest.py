"""Shared fixtures: a tiny synthetic corpus the tests build themselves, and the path to the real data."""
import dataclasses
import gzip
import json
import os
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
# tiktoken needs its GPT-2 files; offline they come from the shared folder. CI sets the variable to a relative
# path, which some tests would break by changing directory (a spawned background preparer would then look for
# the files elsewhere and fail offline): made absolute here, once, before any test runs.
if "TIKTOKEN_CACHE_DIR" in os.environ:
    os.environ["TIKTOKEN_CACHE_DIR"] = os.path.abspath(os.environ["TIKTOKEN_CACHE_DIR"])
elif (SHARED_DATA / "tiktoken").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_DATA / "tiktoken")

import torch  # noqa: E402
from data.fetch import CORPORA  # noqa: E402  (after the path and cache are set)
from data.prepare import PrepareConfig, prepare  # noqa: E402


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared machine OpenMP threads waiting for a
    busy core spin: one thread made the tiny-model test files 5-20x faster under load. Restored afterwards.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fp32_on_every_cpu(monkeypatch):
    """--precision auto picks bf16 on a CPU whose bf16 matmuls measure faster than fp32 (run/device.py): the
    suite's numbers must not depend on which CPU runs it, so in tests that measurement answers "no speed-up"
    (auto = fp32) unless a test patches it otherwise, as the precision tests do."""
    import run.device as run_device
    monkeypatch.setattr(run_device, "cpu_bf16_matmul_speedup", lambda: 1.0)


@pytest.fixture(autouse=True)
def threads_as_given(monkeypatch):
    """A run with a CPU budget of 5 minutes or more times one thread against all of them and keeps the faster
    (run/machine.py choose_cpu_threads), unless OMP_NUM_THREADS says how many. In tests it does: a choice made on
    a busy machine would otherwise carry over to every later test of the process. The test of that choice
    removes the variable."""
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads())))


LARGE_FILE_BYTES = 1 << 20


@pytest.fixture(autouse=True)
def remove_large_temp_files(request):
    """Even the tiny model's checkpoint is ~40 MB (the 50k-row embedding and its two Adam moments), and pytest
    keeps its last temp folders: delete every file above 1 MiB under a test's tmp_path when the test ends, so a
    full run does not leave gigabytes behind. Small files (logs, JSON, token files of tiny corpora) stay."""
    yield
    tmp_path = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if tmp_path is not None and tmp_path.is_dir():
        for path in tmp_path.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size > LARGE_FILE_BYTES:
                path.unlink()


def synthetic_documents(n_documents: int, seed: int = 0) -> list[str]:
    """Short documents from a small grammar: learnable structure, so a tiny model's loss falls fast."""
    rng = random.Random(seed)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the bird"], ["sees", "likes", "chases"], ["the ball", "a tree", "the house"]
    return ["\n".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(rng.randint(3, 8)))
            for _ in range(n_documents)]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A prepared token folder (train.bin, val.bin) from a synthetic text file."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    (root / "corpus.txt").write_text("\n\n".join(synthetic_documents(1500)) + "\n")
    prepare(PrepareConfig(corpus=str(root / "corpus.txt"), out_dir=str(root / "tokens"), val_fraction=0.1))
    return root / "tokens"


@pytest.fixture(scope="session")
def wiki_shard() -> Path:
    shard = SHARED_DATA / "wiki" / "enwiki-2015-00.txt.gz"
    if not shard.is_file():
        pytest.skip(f"real data not present: {shard} (it lives in ../shared/data beside the repo)")
    return shard


def c4_shard(path, documents):
    """A shard in C4's real format: gzip'd JSON lines with text, timestamp and url."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(documents):
            f.write(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.com/{i}"}) + "\n")
    return path


def fake_c4(folder: Path, monkeypatch, documents_per_shard: int = 200, num_shards: int = 4) -> list[list[str]]:
    """num_shards C4-format shards named like C4's behind file:// URLs, registered as the "c4" corpus for the
    test (nothing touches the network); returns each shard's documents."""
    (folder / "hub").mkdir()
    shards = [synthetic_documents(documents_per_shard, seed=shard) for shard in range(num_shards)]
    for index, documents in enumerate(shards):
        c4_shard(folder / "hub" / f"c4-train.{index:05d}-of-{num_shards:05d}.json.gz", documents)
    pattern = (folder / "hub").as_uri() + "/c4-train.{index:05d}-of-" + f"{num_shards:05d}.json.gz"
    corpus = dataclasses.replace(CORPORA["c4"], url_pattern=pattern, num_shards=num_shards,
                                 tokens_per_shard=40 * documents_per_shard, download_bytes_per_shard=15 * documents_per_shard)
    monkeypatch.setitem(CORPORA, "c4", corpus)
    return shards


@pytest.fixture
def tiny_c4(tmp_path, monkeypatch):
    """Four C4-format shards of 200 documents behind file:// URLs, registered as the "c4" corpus for the test."""
    return fake_c4(tmp_path, monkeypatch)
