"""
Named public corpora, and the downloads behind them: resumable, verified, streamed to disk.

    python -m data.prepare --corpus c4 --max-train-tokens 2_000_000_000 --out-dir data/cache/c4   # ~12 shards
    python -m data.prepare --corpus wikitext103 --out-dir data/cache/wikitext103

A named corpus is a list of shard URLs. data/prepare.py walks them in order with `local_files`, which
downloads the next shard in a background thread while the current one is tokenised into its own training
file (a part), and stops after the shard that brings the parts to --max-train-tokens: only the shards a
budget consumes are ever fetched. c4 is the default corpus of data/prepare.py and train.py.

How many tokens to prepare for a budget: train.py measures (or counts) how many tokens the run will
consume before it prepares C4; `train_tokens_to_prepare` turns that into a target with at most `max_passes`
passes (default 2: repeating data a couple of times costs little, Muennighoff et al. 2023, "Scaling
Data-Constrained Language Models"), `shards_needed` says roughly how many shards (and gigabytes) that is, and
`passes_warning` is the loud line to log when a prepared corpus, named or local, is too small for the budget.

Every download goes to PATH.part and is renamed to PATH only once complete and verified, so nothing
downstream ever reads a partial file as if it were whole. An interrupted download resumes from the .part
with an HTTP Range request (a server that ignores Range gets a clean restart from byte 0); the size is
checked against Content-Length, and the content against a sha256 when the caller has one (the registry
below carries none: Hugging Face and the WikiText host publish no checksum file we can fetch with the
standard library, so those downloads are checked by size only).
"""
import hashlib
import http.client
import math
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

CONNECT_TIMEOUT = 15  # seconds: an unreachable host fails this fast (socket timeout, also per read)
CHUNK_BYTES = 1 << 20  # streamed in 1 MiB pieces: a shard is never held in memory
OFFLINE_HINT = ("offline, prepare local text instead: --corpus PATH (a file, folder or glob of .txt/.jsonl[.gz] "
                "files; in this repo's workplace --corpus ../shared/data/wiki)")


@dataclass(frozen=True)
class Corpus:
    name: str  # what --corpus accepts
    url_pattern: str  # shard URL; "{index:05d}" is replaced by the shard number (single-file corpora have none)
    num_shards: int  # shards available
    tokens_per_shard: float  # ESTIMATE of GPT-2 training tokens per shard, for planning only (the real count is measured)
    download_bytes_per_shard: float  # ESTIMATE of the compressed download per shard
    licence: str  # the text's licence: read it before you publish a model trained on it
    description: str  # one line for logs and --help

    def shard_urls(self, count: int | None = None) -> list[str]:
        """The URLs of the first `count` shards (all of them when None), in the corpus's own order."""
        count = self.num_shards if count is None else min(count, self.num_shards)
        return [self.url_pattern.format(index=index) for index in range(count)]


CORPORA = {corpus.name: corpus for corpus in [
    # AllenAI's copy of Google's C4 (Raffel et al. 2020), English, cleaned: 1024 gzip'd JSON-lines shards with
    # a "text" field, ~305 GB (dataset card); 364.9 M documents, so ~356 k per shard, ~320 MB compressed each.
    # Tokens per shard: ~0.75 GB of text / ~4.4 characters per GPT-2 token ~= 0.17 B (our estimate, not measured).
    Corpus("c4", "https://huggingface.co/datasets/allenai/c4/resolve/main/en/c4-train.{index:05d}-of-01024.json.gz",
           num_shards=1024, tokens_per_shard=0.17e9, download_bytes_per_shard=320e6, licence="ODC-By 1.0",
           description="English C4 (allenai/c4 'en'), web text, 1024 shards"),
    # WikiText-103 raw (Merity et al. 2016): ~103 M words of Wikipedia's good and featured articles, one zip.
    Corpus("wikitext103", "https://wikitext.smerity.com/wikitext-103-raw-v1.zip", num_shards=1,
           tokens_per_shard=0.12e9, download_bytes_per_shard=190e6, licence="CC BY-SA 3.0",
           description="WikiText-103 raw, Wikipedia articles, one zip"),
]}


# ----------------------------------------------------------------------------------------------------
# How much of a corpus a budget needs

def train_tokens_to_prepare(tokens_needed: float, max_passes: float = 2) -> int:
    """The training tokens to prepare so that a run consuming `tokens_needed` makes at most `max_passes`
    passes: pass it as PrepareConfig.max_train_tokens (preparation then stops as soon as it has them)."""
    if tokens_needed <= 0 or max_passes <= 0:
        raise ValueError(f"tokens_needed ({tokens_needed}) and max_passes ({max_passes}) must be positive")
    return math.ceil(tokens_needed / max_passes)


def shards_needed(tokens_needed: float, tokens_per_shard: float, max_passes: float = 2,
                  num_shards: int | None = None) -> int:
    """The fewest shards whose (estimated) tokens cover `tokens_needed` in at most `max_passes` passes,
    capped at `num_shards`. An estimate for the log and the disk: preparation itself stops on the real count."""
    shards = max(1, math.ceil(train_tokens_to_prepare(tokens_needed, max_passes) / tokens_per_shard))
    return min(shards, num_shards) if num_shards else shards


def passes_warning(train_tokens: int, tokens_needed: float, max_passes: float = 2,
                   corpus: str = "the corpus") -> tuple[float, str | None]:
    """(passes the run will make over `train_tokens` prepared tokens, a loud warning or None). The warning
    is for any corpus, named or local, that the budget will repeat more than `max_passes` times."""
    passes = tokens_needed / max(train_tokens, 1)
    if passes <= max_passes:
        return passes, None
    return passes, (f"WARNING: this run will consume ~{tokens_needed:,.0f} tokens but {corpus} holds "
                    f"{train_tokens:,} training tokens: ~{passes:.1f} passes over the same data (more than "
                    f"{max_passes:g}). The model will see each document many times; use a bigger corpus (--corpus c4, "
                    f"the default, prepares as many C4 shards as the budget needs in an empty --data-dir) or a "
                    f"smaller budget.")


# ----------------------------------------------------------------------------------------------------
# Downloads

class DownloadError(RuntimeError):
    """A download that failed; the message names the URL, the error and what to do instead."""


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def local_name(url: str, download_dir: str) -> str:
    """Where a URL is saved: download_dir / the last component of its path (c4-train.00000-of-01024.json.gz)."""
    return os.path.join(download_dir, os.path.basename(urllib.parse.urlparse(url).path.rstrip("/")) or "download")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, path: str, sha256: str | None = None, timeout: float = CONNECT_TIMEOUT, progress: bool = True,
          stop: threading.Event | None = None, offline_hint: str = OFFLINE_HINT) -> str | None:
    """Download `url` to `path`, resuming PATH.part if an earlier attempt left one; returns `path`, or None
    when `stop` was set mid-way (the .part stays, to resume). PATH exists only once complete: its size
    matched Content-Length and, when `sha256` is given, its hash matched. Raises DownloadError otherwise."""
    if os.path.exists(path):
        return path  # renamed into place only after it was verified
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = path + ".part"
    for _ in range(2):  # a second round only after the server refused to resume: then from byte 0
        start = os.path.getsize(partial) if os.path.exists(partial) else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416 and start:  # our .part is no prefix the server knows (file changed?): start over
                os.remove(partial)
                continue
            raise DownloadError(f"could not download {url}: HTTP {error.code} {error.reason}; {offline_hint}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DownloadError(f"could not download {url}: {reason}; {offline_hint}") from None
        with response:
            # 206 + the range we asked for = the server resumes; anything else (200, file://) = whole file again
            resumed = start > 0 and response.status == 206 and \
                (response.headers.get("Content-Range") or "").startswith(f"bytes {start}-")
            if start and not resumed:
                print(f"{url}: the server does not resume downloads; starting {os.path.basename(path)} again")
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            received = start
            with open(partial, "ab" if resumed else "wb") as out, \
                    tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=os.path.basename(path),
                         disable=not progress) as bar:
                try:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        if stop is not None and stop.is_set():
                            return None
                except (OSError, http.client.HTTPException) as error:  # a dropped connection: keep what we have
                    raise DownloadError(f"download of {url} interrupted after {received:,} bytes ({error!r}); "
                                        f"run again to resume from {partial}") from None
        if total is not None and received != total:
            if received > total:  # more than announced: the .part cannot be trusted
                os.remove(partial)
            raise DownloadError(f"download of {url} incomplete: {received:,} of {total:,} bytes; "
                                f"run again to resume from {partial}")
        if sha256 is not None and sha256_of(partial) != sha256.lower():
            os.remove(partial)  # complete but wrong: resuming it would only reproduce the error
            raise DownloadError(f"download of {url} does not match its sha256 {sha256}: deleted, run again")
        os.replace(partial, path)
        return path
    raise DownloadError(f"could not download {url}: the server refused to resume and to restart; {offline_hint}")


def local_files(sources: list[str], download_dir: str, progress: bool = True):
    """Yield each source as a local path, in order. URLs are fetched into download_dir, and while the caller
    works on one file the next URL downloads in a background thread, so the network and the tokenizer are
    busy at the same time. Leaving the loop early (a token target reached, an error, Ctrl-C) stops the
    download in flight, keeping its .part for next time; shards never reached are never fetched."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)

    def start(index):
        if index >= len(sources) or not is_url(sources[index]):
            return None
        url = sources[index]
        return pool.submit(fetch, url, local_name(url, download_dir), progress=progress, stop=stop)

    try:
        pending = start(0)
        for index, source in enumerate(sources):
            current, pending = pending, start(index + 1)
            yield current.result() if current is not None else source
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
