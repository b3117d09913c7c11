"""
Writing files whole or not at all: a crash mid-write leaves the previous file, never half of one.
"""
import json
import os
from contextlib import contextmanager, suppress


@contextmanager
def atomic_path(path: str, suffix: str = ""):
    """A temporary name beside `path` to write to; renamed onto `path` when the block ends without error
    (atomic on POSIX and Windows), so a crash mid-write leaves the previous file, never half a file.
    suffix: an extension for writers that read it (matplotlib's savefig wants ".png")."""
    temporary = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with suppress(FileNotFoundError):
            os.remove(temporary)


def write_json(path: str, payload, indent: int = 1):
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        json.dump(payload, f, indent=indent)
