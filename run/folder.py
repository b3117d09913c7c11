"""
The run folder (--out-dir) while a run owns it: its LOCK (one live run at a time writes there), its log, and
Ctrl-C. train.py enters one RunFolder and looks at `stop_requested` once per step:

    with RunFolder(out_dir, resume, overwrite) as folder:
        ...                        # Ctrl-C here (preparing, building): out at once, the folder as it was
        folder.training_started()  # from now on the first Ctrl-C asks for a checkpoint, the second exits at once
        while not folder.stop_requested: ...
"""
import glob
import os
import signal
import sys
import threading
from contextlib import suppress

from data.files import check_folder, release_lock, take_lock, write_error

EXIT_INTERRUPTED = 130  # exit status of a run stopped by Ctrl-C / SIGTERM (128 + SIGINT, as shells report); failure is 1


class StoppedBeforeTraining(KeyboardInterrupt):
    """Ctrl-C / SIGTERM before the first step: nothing to save, so out at once, out_dir as it was."""


class RunFolder:
    """A context manager that claims out_dir (claim_out_dir; on the main process only, is_main) and handles
    SIGINT and SIGTERM while the run is inside it; on leaving, the previous handlers come back and the lock goes.
    Before training_started(), the first signal raises StoppedBeforeTraining at once: there is nothing to save,
    and a checkpoint of step 0 would make the same command refuse to run again. After it, the first signal only
    sets stop_requested (the loop finishes its step, writes a checkpoint and returns) and says so at once; the
    second restores the previous handlers and raises KeyboardInterrupt: an immediate exit, the last checkpoint
    written stays (writes are atomic)."""

    def __init__(self, out_dir: str, resume: bool, overwrite: bool, is_main: bool = True):
        self.out_dir, self.resume, self.overwrite, self.is_main = out_dir, resume, overwrite, is_main
        self.lock, self.previous_handlers, self.training, self.signal = None, {}, False, None

    def __enter__(self):
        if self.is_main:
            self.lock = claim_out_dir(self.out_dir, self.resume, self.overwrite)
        if threading.current_thread() is threading.main_thread():  # Python only lets the main thread set handlers
            self.previous_handlers = {number: signal.signal(number, self.handle) for number in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exception):
        self.restore_handlers()
        if self.lock:
            release_out_dir(self.lock)

    def handle(self, number, frame):
        if not self.training:
            self.restore_handlers()
            raise StoppedBeforeTraining
        if self.signal is None:
            self.signal = number
            if self.is_main:
                sys.stderr.write("\nstopping after this step, writing checkpoint… (Ctrl-C again to exit at once)\n")
            return
        self.restore_handlers()
        raise KeyboardInterrupt

    def restore_handlers(self):
        for number, handler in self.previous_handlers.items():
            signal.signal(number, handler)
        self.previous_handlers = {}

    def training_started(self):
        self.training = True

    @property
    def stop_requested(self) -> bool:
        return self.signal is not None

    def open_log(self, log_bytes: int | None):
        """out_dir/log.jsonl for appending (main process; None elsewhere), the moment before training starts."""
        return open_run_log(self.out_dir, self.resume, self.overwrite, log_bytes) if self.is_main else None



def claim_out_dir(out_dir: str, resume: bool, overwrite: bool) -> str:
    """Make out_dir this run's own before anything is written; returns the lock file (release_out_dir).
    A live run holding out_dir/LOCK (its pid) is refused; a lock whose process is gone is stale and taken
    over, by one process only when several find it stale at once (data.files.take_lock). Another run's ckpt.pt
    is never replaced silently: --resume continues it, --overwrite replaces it, but only once the new run has
    passed every check (open_run_log). Temporary checkpoints left by a run killed mid-write are removed. A file
    or a read-only folder as out_dir is one clear error (WriteError, a ValueError)."""
    check_folder(out_dir, "--out-dir")
    lock = os.path.join(out_dir, "LOCK")
    try:
        holder = take_lock(lock)
    except OSError as error:
        raise (write_error(error, lock) or error) from None
    if holder is not None:
        raise ValueError(f"{out_dir} is in use by a live run (pid {holder}, see {lock}): wait for it, "
                         f"stop it, or pick another --out-dir (if no such run exists, delete {lock})")
    try:
        checkpoint = os.path.join(out_dir, "ckpt.pt")
        if os.path.exists(checkpoint) and not resume and not overwrite:
            raise ValueError(f"{checkpoint} holds another run: pass --resume to continue it, --overwrite to "
                             f"replace it (and its log.jsonl), or pick another --out-dir")
        for orphan in glob.glob(glob.escape(checkpoint) + ".tmp*"):  # a kill mid-write; we hold the lock
            os.remove(orphan)
    except BaseException:
        release_out_dir(lock)
        raise
    return lock


def open_run_log(out_dir: str, resume: bool, overwrite: bool, log_bytes: int | None):
    """Open out_dir/log.jsonl for appending, the moment before training starts: the previous run's files are
    changed only here, once every check has passed (a typo in a flag costs nothing). --resume cuts the log back
    to its length when the checkpoint was written (log_bytes), so steps a killed run logged after its last
    checkpoint are not logged twice. --overwrite deletes the old ckpt.pt, its kept copies and log. A fresh run moves aside the log
    of an earlier run that wrote no checkpoint (log.1.jsonl, ...) and says so: a log is never mixed."""
    path = os.path.join(out_dir, "log.jsonl")
    if resume and log_bytes is None:
        print(f"note: the checkpoint is older than its log length: {path} is kept whole (it may repeat the steps "
              f"logged after that checkpoint)")
    elif resume and os.path.exists(path) and os.path.getsize(path) > log_bytes:
        dropped = os.path.getsize(path) - log_bytes
        os.truncate(path, log_bytes)
        print(f"note: {path} cut back to the checkpoint ({dropped} bytes logged after it dropped)")
    elif overwrite:  # the old run's kept copies (--keep-minutes) go too: they would pass for this run's
        for old in ["ckpt.pt", "log.jsonl"] + [os.path.basename(p) for p in glob.glob(os.path.join(out_dir, "ckpt-*min.pt"))]:
            with suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, old))
    elif not resume and os.path.exists(path):
        number = 1
        while os.path.exists(os.path.join(out_dir, f"log.{number}.jsonl")):
            number += 1
        aside = os.path.join(out_dir, f"log.{number}.jsonl")
        os.rename(path, aside)
        print(f"note: {path} held the log of an earlier run that wrote no checkpoint: moved to {aside}; this "
              f"run starts a new log.jsonl")
    return open(path, "a")


def release_out_dir(lock: str):
    release_lock(lock)
