"""A full disk (ENOSPC) during preparation leaves no token file a later run would trust, and no .tmp filling
the disk. The disk is simulated: the token files' temporary files accept a few bytes and then fail the
way a full disk does, on write and again on the flush in close()."""
import errno

import pytest

import data.prepare
from conftest import synthetic_documents
from data.prepare import PrepareConfig, prepare


class FullDisk:
    """A binary file with `room` bytes left: past that, write raises ENOSPC, and close (which flushes) does too.
    fail_on_close=True: every write is accepted but close fails, as when the last buffer is flushed."""

    def __init__(self, real, room: int, fail_on_close: bool = False):
        self.real, self.room, self.full = real, room, fail_on_close

    def write(self, data):
        if len(data) > self.room:
            self.full = True
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def seek(self, *args):
        return self.real.seek(*args)

    def close(self):
        self.real.close()
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")


def fill_disk(monkeypatch, victim: str, room: int = 2_000, fail_on_close: bool = False):
    """Route prepare's open() of `victim` (e.g. "train.bin.tmp") through FullDisk; other files open normally."""
    def fake_open(path, mode="r", *args, **kwargs):
        real = open(path, mode, *args, **kwargs)
        return FullDisk(real, room, fail_on_close) if str(path).endswith(victim) else real
    monkeypatch.setattr(data.prepare, "open", fake_open, raising=False)


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "corpus.txt").write_text("\n\n".join(synthetic_documents(400)) + "\n")
    return PrepareConfig(corpus=str(tmp_path / "corpus.txt"), out_dir=str(tmp_path / "out"), val_fraction=0.1,
                         num_threads=1, docs_per_chunk=50)


def assert_nothing_to_trust(out_dir):
    names = sorted(path.name for path in out_dir.iterdir())
    assert "train.bin" not in names, names  # what train.py takes as "prepared"
    assert not [name for name in names if name.endswith(".tmp")], names  # no half-written file left filling the disk


def test_disk_full_while_writing_tokens(corpus, tmp_path, monkeypatch):
    fill_disk(monkeypatch, "train.bin.tmp")
    with pytest.raises(OSError) as error:
        prepare(corpus)
    assert error.value.errno == errno.ENOSPC
    assert_nothing_to_trust(tmp_path / "out")
    assert not (tmp_path / "out" / "val.bin").exists()


@pytest.mark.parametrize("victim", ["val.bin.tmp", "train.bin.tmp"])
def test_disk_full_when_the_last_buffer_is_flushed(corpus, tmp_path, monkeypatch, victim):
    fill_disk(monkeypatch, victim, room=10**9, fail_on_close=True)
    with pytest.raises(OSError, match="No space left"):
        prepare(corpus)
    assert_nothing_to_trust(tmp_path / "out")


def test_a_failed_re_preparation_does_not_leave_the_old_train_file(corpus, tmp_path, monkeypatch):
    """An old, complete train.bin beside a new val.bin would mix two preparations: it goes first."""
    prepare(corpus)
    assert (tmp_path / "out" / "train.bin").exists()
    fill_disk(monkeypatch, "train.bin.tmp", room=10**9, fail_on_close=True)
    with pytest.raises(OSError):
        prepare(corpus)
    assert_nothing_to_trust(tmp_path / "out")
    monkeypatch.undo()
    prepare(corpus)  # and the next run, with room again, prepares normally
    assert (tmp_path / "out" / "train.bin").exists()
