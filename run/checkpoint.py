"""
Checkpoints: the unwrapped model's config and weights, its tokenizer, and (for train.py) the whole loop
state. Written atomically; read with torch.load(weights_only=True), so a crafted file cannot run code.
"""
import os
import pickle
import random
from dataclasses import asdict

import numpy as np
import torch

from data.files import atomic_path
from data.loader import data_tokenizer, is_prepared
from data.tokenizer import Tokenizer
from model import CramBERT, model_config_from_dict, preset_config
from run.config import check_resume_settings

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


def load_checkpoints(config, device) -> tuple[dict | None, dict | None]:
    """--resume's checkpoint and --init-from's, checked against the flags and the prepared tokenizer before anything
    is built (the data fingerprint waits for the data: launch.attach_data)."""
    path = os.path.join(config.out_dir, "ckpt.pt")
    checkpoint = load_checkpoint(path, map_location=device) if config.resume else None
    init_checkpoint = load_checkpoint(config.init_from, map_location=device) if config.init_from else None
    if checkpoint:
        check_resume_settings(config, checkpoint, path)
    if (checkpoint or init_checkpoint) and is_prepared(config.data_dir):
        check_run_tokenizers(config, checkpoint, init_checkpoint, data_tokenizer(config.data_dir))
    return checkpoint, init_checkpoint


def check_run_tokenizers(config, checkpoint: dict | None, init_checkpoint: dict | None, tokenizer: Tokenizer):
    """check_tokenizer for a run's --resume and --init-from checkpoints against its prepared folder's tokenizer."""
    for source, loaded in ((os.path.join(config.out_dir, "ckpt.pt"), checkpoint), (config.init_from, init_checkpoint)):
        check_tokenizer(loaded, tokenizer, source, config.data_dir)
