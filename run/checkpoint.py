"""
Checkpoints: the unwrapped model's config and weights, its tokenizer, and (for train.py) the whole loop
state. Written atomically; read with torch.load(weights_only=True), so a crafted file cannot run code.
"""
import os
import pickle
import random
import re
import zipfile
from dataclasses import asdict

import numpy as np
import torch

from data.files import atomic_path, write_error
from data.loader import data_tokenizer, is_prepared
from data.tokenizer import Tokenizer
from model import CramBERT, model_config_from_dict, preset_config
from run.config import check_resume_settings

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "cramlm-checkpoint", 1


def save_checkpoint(path: str, checkpoint: dict):
    """Write atomically: a crash mid-write leaves the previous checkpoint intact, never half a file. A full disk
    or a folder that cannot be written (torch.save's OSError, or its C++ stream's RuntimeError "basic_ios::clear")
    is one clear WriteError (a ValueError) naming the path and the fix; the temporary file is deleted."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_path(path) as temporary:
            torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint}, temporary)
    except (OSError, RuntimeError) as error:
        converted = write_error(error, path)
        if converted is None:
            raise
        raise converted from error


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load and validate a cramlm checkpoint; raise one clear error for anything else."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    not_torch = torch_file_problem(path)
    if not_torch:
        raise ValueError(not_torch)
    try:  # weights_only: tensors and plain Python types only, so a crafted file cannot run code while loading
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        objects = python_objects(str(error))
        if objects is None:  # the weights-only unpickler met bytes that are no pickle at all
            raise ValueError(f"{path} is not a PyTorch checkpoint (or is damaged): its contents cannot be "
                             f"unpickled") from None
        # torch's own message advises loading with weights_only=False: never for a file we cannot vouch for
        raise ValueError(f"{path} holds Python objects beyond tensors and plain types{objects}, which could run code "
                         f"when loaded, so it was not loaded: cramlm checkpoints hold only tensors and plain types "
                         f"(checkpoints of cramlm before weights-only loading hold numpy arrays; only a file you "
                         f"wrote yourself should ever be converted)") from None
    except Exception as error:  # a zip with damaged members, a cut-off legacy file, ...
        reason = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a PyTorch checkpoint (or is damaged): {reason}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a cramlm checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {checkpoint.get('version')}, this code reads {CHECKPOINT_VERSION}")
    return checkpoint


def torch_file_problem(path: str) -> str | None:
    """Why `path` cannot be a file of torch.save, from its bytes alone (None when it may be one): torch.save writes
    a zip archive (since torch 1.6), before that a pickle; an empty file, a zip without its end (a copy or a save
    cut short) or anything else would otherwise reach the unpickler and be misdescribed."""
    size = os.path.getsize(path)
    if size == 0:
        return f"{path} is empty (0 bytes): not a checkpoint (a save or a copy that never wrote it?)"
    with open(path, "rb") as f:
        start = f.read(4)
    if zipfile.is_zipfile(path):
        return None
    if start == b"PK\x03\x04":
        return (f"{path} is not a PyTorch checkpoint (or is damaged): a zip archive whose end is missing ({size:,} "
                f"bytes), so a save or a copy was cut short; copy or write it again")
    if start[:1] != b"\x80":  # a pickle (the legacy format) starts with its protocol opcode
        return f"{path} is not a PyTorch checkpoint (or is damaged): neither a zip archive nor a pickle"
    return None


# What torch's weights-only unpickler says of an object it refuses (rather than of bytes it cannot parse).
OBJECT_PATTERNS = (r"GLOBAL (\S+) was not an allowed global", r"unsupported GLOBAL (\S+)",
                   r"reduce for unrecognized function", r"Can only (?:build|create|append|extend)", r"must be \S+ to load")


def python_objects(message: str) -> str | None:
    """From the weights-only unpickler's error: " (such as NAME)" (or "") when the file holds objects it refuses,
    None when it is not a pickle it could parse."""
    for pattern in OBJECT_PATTERNS:
        found = re.search(pattern, message)
        if found:
            return f" (such as {found.group(1)})" if found.groups() else ""
    return None


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


def load_checkpoints(config, device) -> tuple[dict | None, dict | None]:
    """--resume's checkpoint and --init-from's, checked against the flags and the prepared tokenizer before anything
    is built (the data fingerprint waits for the data: launch.attach_data)."""
    path = os.path.join(config.out_dir, "ckpt.pt")
    checkpoint = load_checkpoint(path, map_location=device) if config.resume else None
    init_checkpoint = load_checkpoint(config.init_from, map_location=device) if config.init_from else None
    if checkpoint:
        check_resumable(checkpoint, path)
        check_resume_settings(config, checkpoint, path)
    if init_checkpoint:
        check_has_model(init_checkpoint, config.init_from)
    if (checkpoint or init_checkpoint) and is_prepared(config.data_dir):
        check_run_tokenizers(config, checkpoint, init_checkpoint, data_tokenizer(config.data_dir))
    return checkpoint, init_checkpoint


# What --resume reads of a checkpoint (train.py's save writes them all; run/build.py's restore reads them).
MODEL_FIELDS = ("model_config", "model")
RESUME_FIELDS = MODEL_FIELDS + ("train_config", "optimizer", "loop", "data", "rng")


def check_resumable(checkpoint: dict, path: str):
    """A checkpoint of ours that holds a model but no run to continue (grow.py's output, a model saved by a study)
    is refused by name, before its missing fields would end in a KeyError."""
    missing = [name for name in RESUME_FIELDS if name not in checkpoint]
    if not missing:
        return
    lacks = ", ".join(missing)
    if any(name in MODEL_FIELDS for name in missing):
        raise ValueError(f"cannot --resume {path}: it lacks {lacks}, so it holds no model to continue: resume a "
                         f"checkpoint written by train.py, or start a new run without --resume in another --out-dir")
    start_from = (f"start a new run from its weights instead, in another folder: python train.py --init-from {path} "
                  f"--out-dir ANOTHER_DIR ...")
    if "growth" in checkpoint:
        raise ValueError(f"cannot --resume {path}: it was written by grow.py and lacks {lacks} (a grown model holds "
                         f"weights, not a run's training state): {start_from} (grow.py printed the full command)")
    raise ValueError(f"cannot --resume {path}: it lacks {lacks} (it holds a model, not a run's training state): "
                     f"{start_from}")


def check_has_model(checkpoint: dict, path: str):
    """--init-from needs only the model and its config."""
    missing = [name for name in MODEL_FIELDS if name not in checkpoint]
    if missing:
        raise ValueError(f"cannot --init-from {path}: it has the cramlm marker but lacks {', '.join(missing)}, so it "
                         f"holds no model to start from")


def check_run_tokenizers(config, checkpoint: dict | None, init_checkpoint: dict | None, tokenizer: Tokenizer):
    """check_tokenizer for a run's --resume and --init-from checkpoints against its prepared folder's tokenizer."""
    for source, loaded in ((os.path.join(config.out_dir, "ckpt.pt"), checkpoint), (config.init_from, init_checkpoint)):
        check_tokenizer(loaded, tokenizer, source, config.data_dir)
