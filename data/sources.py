"""
A corpus's files and documents: which files a --corpus names (a named corpus from data/fetch.py, a file, a folder
searched recursively, a glob, or a URL, downloaded and unzipped), how each file is read as documents, and which
documents are held out for validation. data/prepare.py tokenises what this reads; data/plant.py rewrites it.

Text files (.txt, .raw, optionally .gz) hold documents separated by a blank line; .jsonl and .json.gz files
(C4's shards) hold one {"text": ...} document per line. Files are streamed: a document is held in memory, never
the file. A file that cannot be read as UTF-8 text raises CorpusError naming the file, the line and the byte.
"""
import glob
import gzip
import json
import os
import zipfile
import zlib

from data.fetch import CORPORA, fetch, is_url, local_files, local_name

TEXT_SUFFIXES = (".txt", ".raw", ".txt.gz", ".raw.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")  # .json.gz: C4's shards are JSON lines despite the name


def download(url: str, download_dir: str) -> str:
    """Fetch `url` once into download_dir (data/fetch.py: resumable, verified, renamed into place only when
    complete) and unzip it if it is a zip. Returns the local file or folder."""
    local = fetch(url, local_name(url, download_dir))
    if zipfile.is_zipfile(local):
        folder = local[:-len(".zip")] if local.endswith(".zip") else local + ".d"
        if not os.path.isdir(folder):
            with zipfile.ZipFile(local) as archive:
                archive.extractall(folder + ".part")
            os.replace(folder + ".part", folder)
        return folder
    return local


def resolve_inputs(corpus: str, download_dir: str, shards: int = 0, max_train_tokens: int = 0) -> list[str]:
    """The sorted list of text/jsonl files a corpus names. A named multi-shard corpus gives its shard URLs
    instead, fetched one by one while preparing (`local_files`): `shards` of them, or all when
    max_train_tokens will stop preparation early, else 1 (never 300 GB by accident)."""
    if corpus in CORPORA:
        named = CORPORA[corpus]
        if named.num_shards > 1:
            return named.shard_urls(shards or (None if max_train_tokens else 1))
        corpus = named.url_pattern
    if is_url(corpus):
        corpus = download(corpus, download_dir)
    if os.path.isdir(corpus):
        paths = [os.path.join(root, name) for root, _, names in os.walk(corpus) for name in names]
    elif os.path.isfile(corpus):
        paths = [corpus]
    else:
        paths = glob.glob(corpus, recursive=True)
    paths = sorted(p for p in paths if p.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES))
    if not paths:
        raise FileNotFoundError(f"no {', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} files found at {corpus!r} "
                                f"(named corpora: {', '.join(CORPORA)})")
    return paths


class CorpusError(ValueError):
    """A corpus file that cannot be read as text; the message names the file (and the line and byte)."""


def open_text(path: str):
    """Raw bytes (gunzipped for .gz): iter_lines decodes them itself so that an error can name its line."""
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def iter_lines(path: str):
    """Yield (line number, text) of one UTF-8 text file, streaming; a .gz that is not gzip and text that is
    not UTF-8 raise CorpusError naming the file, the line and the byte offset."""
    offset = 0  # bytes before this line (of the uncompressed text for .gz)
    try:
        with open_text(path) as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    where = " of the uncompressed text" if path.endswith(".gz") else ""
                    raise CorpusError(f"{path}:{number}: not UTF-8 text at byte {offset + error.start}{where} "
                                      f"({error.reason}): convert the file to UTF-8 or leave it out of --corpus") from None
                yield number, line.replace("\r\n", "\n")
                offset += len(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise CorpusError(f"{path}: not a readable gzip file ({error}): re-download it, or drop the .gz suffix "
                          f"if it is plain text") from None


def jsonl_text(path: str, line_number: int, line: str) -> str:
    """The document of one JSON line, {"text": "..."}; anything else raises CorpusError naming the file and line."""
    expected = 'a JSON lines corpus holds one object {"text": "a document"} per line (blank lines are skipped)'
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise CorpusError(f"{path}:{line_number}: not JSON ({error}): {expected}") from None
    if not isinstance(record, dict):
        raise CorpusError(f"{path}:{line_number}: not a JSON object but {json_kind(record)}: {expected}")
    if "text" not in record:
        fields = ", ".join(f'"{name}"' for name in list(record)[:8]) + (", ..." if len(record) > 8 else "")
        raise CorpusError(f"{path}:{line_number}: no \"text\" field (its fields: {fields or 'none'}): {expected}")
    text = record["text"]
    if not isinstance(text, str):
        raise CorpusError(f"{path}:{line_number}: \"text\" must be a string, not {json_kind(text)}: {expected}")
    return text


def json_kind(value) -> str:
    """A JSON value's type as JSON names it ("an array", "a number", "null"), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    kinds = {list: "an array", str: "a string", int: "a number", float: "a number", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def iter_documents(path: str):
    """Yield the documents of one file, streaming (a document is held in memory, never the file)."""
    if path.endswith(JSONL_SUFFIXES):
        for line_number, line in iter_lines(path):
            if not line.strip():
                continue
            text = jsonl_text(path, line_number, line)
            if text.strip():
                yield text
        return
    lines = []
    for _, line in iter_lines(path):
        if line.strip():
            lines.append(line.rstrip("\n"))
        elif lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


def is_validation(document: str, val_fraction: float) -> bool:
    """Split by document with a hash of its text: stable across runs, file orders and re-preparations."""
    return zlib.crc32(document.encode("utf-8")) % 100_000 < val_fraction * 100_000


def training_documents(paths: list[str], val_fraction: float, max_chars: int, download_dir: str = "."):
    """The first documents of the training split, up to max_chars characters (what the BPE learns from)."""
    seen = 0
    for document in (doc for path in local_files(paths, download_dir) for doc in iter_documents(path)):
        if seen >= max_chars:
            return
        if not is_validation(document, val_fraction):
            seen += len(document)
            yield document
