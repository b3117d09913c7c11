"""
Files on disk, safely: written whole or not at all (a crash mid-write leaves the previous file, never half of one),
an OS error said as one line with its path and fix (a full disk, a read-only folder), folders checked before any
work, and lock files held by one process at a time (a run's --out-dir, a data folder being prepared), a dead
holder's lock taken over by exactly one of the processes that find it.
"""
import errno
import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager, suppress


@contextmanager
def atomic_path(path: str, suffix: str = ""):
    """A temporary name beside `path` to write to; renamed onto `path` when the block ends without error
    (atomic on POSIX and Windows), so a crash mid-write leaves the previous file, never half a file.
    suffix: an extension for writers that read it (matplotlib's savefig wants ".png")."""
    temporary = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield temporary
        with open(temporary, "rb") as written:  # on disk before the rename makes it the file: a power cut after the
            os.fsync(written.fileno())  # rename must not leave a complete name over incomplete bytes
        os.replace(temporary, path)
    finally:
        with suppress(FileNotFoundError):
            os.remove(temporary)


def write_json(path: str, payload, indent: int = 1):
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        json.dump(payload, f, indent=indent)


# ----------------------------------------------------------------------------------------------------
# Errors of the operating system while writing, said in one line

# errno values that mean "this folder cannot take the file": the disk, the permissions, the filesystem
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTDIR,
                errno.EISDIR, errno.EEXIST}


class WriteError(OSError, ValueError):
    """An OSError while writing `path`, as one clear line naming the path, the cause and the fix. A ValueError too,
    so the scripts' `except (FileNotFoundError, ValueError)` print it as one `error:` line; errno stays the OS's."""

    def __init__(self, number: int | None, message: str, path: str):
        super().__init__(number, message)
        self.message, self.filename = message, path

    def __str__(self):
        return self.message


def write_error(error: BaseException, path: str) -> WriteError | None:
    """The WriteError for an OSError (or torch.save's RuntimeError from its C++ stream) met while writing `path`;
    None for anything else, which the caller re-raises as it is."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if isinstance(error, WriteError):
        return error
    if isinstance(error, RuntimeError):  # torch.save: "basic_ios::clear", "PytorchStreamWriter failed writing file"
        text = str(error)
        if not any(mark in text for mark in ("basic_ios", "iostream", "StreamWriter", "file write failed",
                                             "unexpected pos", "No space")):
            return None
        reason = text.strip().splitlines()[-1][:200] if text.strip() else type(error).__name__
        if disk_nearly_full(folder):
            return WriteError(errno.ENOSPC, f"No space left on device while writing {path}: free space or choose "
                                            f"another folder (torch.save: {reason})", path)
        return WriteError(None, f"could not write {path} (torch.save: {reason}): is {folder} full or not writable? "
                                f"Free space or choose another folder", path)
    if not isinstance(error, OSError) or error.errno not in WRITE_ERRNOS:
        return None
    number = error.errno
    if number in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        cause = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EFBIG: "file too large for this filesystem"}[number]
        return WriteError(number, f"{cause} while writing {path}: free space or choose another folder", path)
    if number in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "read-only filesystem" if number == errno.EROFS else "read-only: permission denied"
        return WriteError(number, f"cannot write in {folder} ({why}) while writing {path}: make it writable or "
                                  f"choose another folder", path)
    if number in (errno.ENOTDIR, errno.EEXIST):
        return WriteError(number, f"cannot write {path}: a file stands where a folder should ({error.filename or folder} "
                                  f"is a file, not a folder): choose another path", path)
    return WriteError(number, f"cannot write {path}: it is a folder, not a file: choose a file name", path)


def disk_nearly_full(folder: str, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def check_folder(folder: str, flag: str = "--out-dir", create: bool = True):
    """Make sure `folder` is a folder this process can write in (created when missing and create is set), before
    any work: raises WriteError ("X is a file, not a folder", "cannot write in X (read-only)") or
    FileNotFoundError (missing, create unset)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise WriteError(errno.ENOTDIR, f"{flag} {folder} is a file, not a folder: choose a folder", folder)
    if not os.path.isdir(folder):
        if not create:
            raise FileNotFoundError(f"{flag}: the folder {folder} does not exist: create it or choose another path")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise (write_error(error, os.path.join(folder, "")) or error) from None
    try:  # a real file, not os.access: root passes os.access everywhere, and a read-only mount fails only here
        descriptor, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    except OSError as error:
        converted = write_error(error, folder)
        if converted is None:
            raise
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            why = "read-only filesystem" if error.errno == errno.EROFS else "read-only: permission denied"
            raise WriteError(error.errno, f"cannot write in {folder} ({why}): make it writable or choose another "
                                          f"{flag}", folder) from None
        raise converted from None
    os.close(descriptor)
    os.remove(probe)


def check_writable(path: str, flag: str = "--out", create: bool = False):
    """Before any work: the file `path` can be written later, its folder exists (created when create is set) and
    is writable, and `path` is not a folder. One clear error (WriteError, a ValueError; or FileNotFoundError)."""
    if os.path.isdir(path):
        raise WriteError(errno.EISDIR, f"{flag} {path} is a folder, not a file: give a file name (e.g. "
                                       f"{os.path.join(path, 'results.json')})", path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) and not create:
        if os.path.exists(folder):
            raise WriteError(errno.ENOTDIR, f"{flag} {path}: {folder} is a file, not a folder: choose another path", path)
        raise FileNotFoundError(f"{flag} {path}: the folder {folder} does not exist: create it first or choose "
                                f"another path (checked before any work)")
    check_folder(folder, flag, create)


# ----------------------------------------------------------------------------------------------------
# Lock files: one live process at a time owns a folder (a run's --out-dir, a --data-dir being prepared)

try:
    import fcntl
except ImportError:  # Windows: the takeover guard falls back to an O_EXCL file
    fcntl = None


def take_lock(lock: str) -> int | None:
    """Hold the lock file `lock` (it holds this process's pid): created atomically, or taken over when the process
    named in it is gone (stale), safely when several processes find it stale at once. Returns None when this
    process holds it now, else the pid of the live process that does."""
    while True:
        if create_lock(lock):
            return None
        holder = lock_holder(lock)
        if holder is not None and holder != os.getpid() and process_alive(holder):
            return holder
        if take_over_stale(lock):
            return None
        # the lock changed between our look and the takeover (released, or taken by another): look again


def create_lock(lock: str) -> bool:
    """Create the lock holding this process's pid, or return False if it exists. The pid is written under a
    name of its own and then linked into place, so the lock is never seen empty: an empty lock reads as stale,
    and a process starting at the same instant would take it over too."""
    temporary = write_pid_file(lock)
    try:
        os.link(temporary, lock)  # atomic, and fails if the lock exists
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(temporary)


def write_pid_file(lock: str) -> str:
    pid = os.getpid()
    temporary = f"{lock}.{pid}.{threading.get_ident()}"
    with open(temporary, "w") as f:
        f.write(f"{pid}\n")
    return temporary


def take_over_stale(lock: str) -> bool:
    """Replace a stale lock by this process's own, under a guard that lets one process at a time look and
    replace: each looks again under the guard, so a lock the first one took over is seen live by the second.
    True when this process holds the lock now; False when the lock changed (gone, or live) and must be looked at
    again."""
    with TakeoverGuard(lock + ".takeover"):
        try:
            before = os.stat(lock)
        except FileNotFoundError:
            return False  # released meanwhile: create it
        holder = lock_holder(lock)
        if holder is not None and holder != os.getpid() and process_alive(holder):
            return False
        temporary = write_pid_file(lock)
        try:
            after = os.stat(lock)
        except FileNotFoundError:
            os.remove(temporary)
            return False
        if (after.st_ino, after.st_dev) != (before.st_ino, before.st_dev):
            os.remove(temporary)
            return False
        os.replace(temporary, lock)  # only takeovers replace a lock, and they hold the guard
        return lock_holder(lock) == os.getpid()


class TakeoverGuard:
    """An exclusive guard file beside the lock for the moment of a takeover: flock (released by the OS if the
    holder dies), the file deleted on leaving; where there is no flock, created with O_EXCL and retried."""

    def __init__(self, path: str):
        self.path, self.descriptor = path, None

    def __enter__(self):
        while True:
            if fcntl is None:
                try:
                    self.descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    return self
                except FileExistsError:
                    time.sleep(0.01)
                    continue
            descriptor = os.open(self.path, os.O_CREAT | os.O_WRONLY)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:  # the file we locked must still be the one at the path (a previous holder deletes it on leaving)
                same = os.path.samestat(os.fstat(descriptor), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.descriptor = descriptor
                return self
            os.close(descriptor)

    def __exit__(self, *exception):
        with suppress(FileNotFoundError):
            os.remove(self.path)  # while still holding it: the next one re-checks the path (above)
        os.close(self.descriptor)


def lock_holder(lock: str) -> int | None:
    try:
        with open(lock) as f:
            return int(f.read().strip())
    except (OSError, ValueError):  # unreadable or half-written: treat as stale
        return None


def process_alive(pid: int) -> bool:
    if os.name == "nt":  # no cheap check without extra packages: assume it is, the message says how to clear it
        return True
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only the existence check
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def release_lock(lock: str):
    """Delete the lock if this process holds it (never another's)."""
    if lock_holder(lock) == os.getpid():
        with suppress(FileNotFoundError):
            os.remove(lock)
