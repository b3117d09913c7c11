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

from common import atomic_path
from data.tokenizer import Tokenizer
from model import CramBERT, ModelConfig

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
    model = CramBERT(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model


def tokenizer_from_checkpoint(checkpoint: dict) -> Tokenizer:
    """The vocabulary the model was trained with (checkpoints before this field used GPT-2's)."""
    return Tokenizer.from_state(checkpoint.get("tokenizer"))


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
