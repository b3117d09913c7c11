"""
Checkpoints: the unwrapped model's config and weights, its tokenizer, and (for train.py) the whole loop
state. Written atomically; read with torch.load(weights_only=True), so a crafted file cannot run code.
And the run folder that holds one: a LOCK so that one live run at a time writes there.
"""
import glob
import os
import pickle
import random
from contextlib import suppress
from dataclasses import asdict

import numpy as np
import torch

from common import atomic_path
from data.tokenizer import Tokenizer
from model import CramBERT, model_config_from_dict, preset_config

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "cramlm-checkpoint", 1


def save_checkpoint(path: str, checkpoint: dict):
    """Write atomically: a crash mid-write leaves the previous checkpoint intact, never half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint}, temporary)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load and validate a cramlm checkpoint; raise one clear error for anything else."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:  # weights_only: tensors and plain Python types only, so a crafted file cannot run code while loading
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} holds Python objects beyond tensors and plain types, which could run code when "
                         f"loaded, so it was not loaded (checkpoints of cramlm before weights-only loading hold "
                         f"numpy arrays; only trusted files should be converted): {str(error).splitlines()[0]}") from error
    except Exception as error:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a cramlm checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {checkpoint.get('version')}, this code reads {CHECKPOINT_VERSION}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> CramBERT:
    """Rebuild the model from the config stored beside its weights."""
    model = CramBERT(model_config_from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model


def tokenizer_from_checkpoint(checkpoint: dict) -> Tokenizer:
    """The vocabulary the model was trained with (checkpoints before this field used GPT-2's), checked against
    the model's embedding: every id the tokenizer can produce must have a row (else an IndexError deep inside
    the first forward pass)."""
    tokenizer = Tokenizer.from_state(checkpoint.get("tokenizer"))
    rows = checkpoint["model_config"]["vocab_size"]
    if rows < tokenizer.num_tokens:
        raise ValueError(f"the checkpoint's embedding has {rows} rows, fewer than the {tokenizer.num_tokens} ids of "
                         f"its tokenizer {tokenizer.name!r}: the file is inconsistent (a model and a tokenizer of "
                         f"different runs)")
    return tokenizer


def encoder_from_file(path: str) -> tuple[CramBERT, Tokenizer]:
    """A checkpoint file's MLM model and the tokenizer it was trained with (what glue_eval.py and blimp.py score);
    ValueError for a file that carries our marker but no usable model."""
    checkpoint = load_checkpoint(path)  # raises a clear error for a file that is not ours
    try:
        return model_from_checkpoint(checkpoint), tokenizer_from_checkpoint(checkpoint)
    except (KeyError, TypeError, RuntimeError) as error:
        raise ValueError(f"{path} has the cramlm marker but no usable model: {error!r}") from error


def encoder_shape(spec: str) -> tuple[CramBERT, Tokenizer]:
    """--random-init's argument: a checkpoint file (its exact config and tokenizer) or a preset name (GPT-2's ids).
    The caller draws fresh weights of the returned model's config."""
    if os.path.isfile(spec) or spec.endswith(".pt") or os.sep in spec:
        return encoder_from_file(spec)
    return CramBERT(preset_config(spec)), Tokenizer.gpt2()


def check_tokenizer(checkpoint: dict | None, tokenizer: Tokenizer, source: str, data_dir: str):
    """A model only fits data of its own vocabulary: same ids, same meanings."""
    if checkpoint is None:
        return
    stored = tokenizer_from_checkpoint(checkpoint).name
    if stored != tokenizer.name:
        raise ValueError(f"{source} was trained with tokenizer {stored!r} but {data_dir} holds {tokenizer.name!r} "
                         f"tokens: prepare the data with that checkpoint's tokenizer or start a new run")


def model_checkpoint(model: CramBERT, tokenizer: Tokenizer | None, **extra) -> dict:
    """The minimal checkpoint: config + weights of the unwrapped model (no `_orig_mod.`/`module.` prefixes),
    and the tokenizer (its .bpe text is embedded, so the checkpoint alone can read and write text)."""
    return {"model_config": asdict(model.config), "model": model.state_dict(),
            "tokenizer": tokenizer.state_dict() if tokenizer else None, **extra}


def rng_states() -> dict:
    """Every generator's state as tensors and plain types (weights-only loadable): numpy's key array becomes a tensor."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state = {"bit_generator": numpy_state["bit_generator"], "has_gauss": int(numpy_state["has_gauss"]),
                   "gauss": float(numpy_state["gauss"]), "pos": int(numpy_state["state"]["pos"]),
                   "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))}
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict):
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state({"bit_generator": numpy_state["bit_generator"], "has_gauss": numpy_state["has_gauss"],
                         "gauss": numpy_state["gauss"], "state": {"pos": numpy_state["pos"],
                                                                  "key": numpy_state["key"].numpy().astype(np.uint32)}})
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ----------------------------------------------------------------------------------------------------
# The run folder: one live run at a time, and another run's checkpoint is never replaced silently

def claim_out_dir(out_dir: str, resume: bool, overwrite: bool) -> str:
    """Make out_dir this run's own before anything is written; returns the lock file (release_out_dir).
    A live run holding out_dir/LOCK (its pid) is refused; a lock whose process is gone is stale and taken
    over. Another run's ckpt.pt is never replaced silently: --resume continues it, --overwrite replaces it, but
    only once the new run has passed every check (open_run_log). Temporary checkpoints left by a run killed
    mid-write are removed."""
    os.makedirs(out_dir, exist_ok=True)
    lock = os.path.join(out_dir, "LOCK")
    while not create_lock(lock):
        holder = lock_holder(lock)
        if holder is not None and holder != os.getpid() and process_alive(holder):
            raise ValueError(f"{out_dir} is in use by a live run (pid {holder}, see {lock}): wait for it, "
                             f"stop it, or pick another --out-dir (if no such run exists, delete {lock})")
        with suppress(FileNotFoundError):  # stale: its process is gone (or it is this process's own leftover)
            os.remove(lock)
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


def create_lock(lock: str) -> bool:
    """Create the lock holding this process's pid, or return False if it exists. The pid is written under a
    name of its own and then linked into place, so the lock is never seen empty: an empty lock reads as stale,
    and a run starting at the same instant would take it over too."""
    pid = os.getpid()
    temporary = f"{lock}.{pid}"
    with open(temporary, "w") as f:
        f.write(f"{pid}\n")
    try:
        os.link(temporary, lock)  # atomic, and fails if the lock exists
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(temporary)


def open_run_log(out_dir: str, resume: bool, overwrite: bool, log_bytes: int | None):
    """Open out_dir/log.jsonl for appending, the moment before training starts: the previous run's files are
    changed only here, once every check has passed (a typo in a flag costs nothing). --resume cuts the log back
    to its length when the checkpoint was written (log_bytes), so steps a killed run logged after its last
    checkpoint are not logged twice. --overwrite deletes the old ckpt.pt and log. A fresh run moves aside the log
    of an earlier run that wrote no checkpoint (log.1.jsonl, ...) and says so: a log is never mixed."""
    path = os.path.join(out_dir, "log.jsonl")
    if resume and log_bytes is None:
        print(f"note: the checkpoint is older than its log length: {path} is kept whole (it may repeat the steps "
              f"logged after that checkpoint)")
    elif resume and os.path.exists(path) and os.path.getsize(path) > log_bytes:
        dropped = os.path.getsize(path) - log_bytes
        os.truncate(path, log_bytes)
        print(f"note: {path} cut back to the checkpoint ({dropped} bytes logged after it dropped)")
    elif overwrite:
        for name in ("ckpt.pt", "log.jsonl"):
            with suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, name))
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
    with suppress(FileNotFoundError):
        os.remove(lock)


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
