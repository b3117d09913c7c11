"""
Pretrain a crammed BERT with masked language modelling inside a wall-clock budget.

    python train.py --hours 24 --corpus ../shared/data/wiki

(train.py is being written; this first part fixes the checkpoint format the other scripts read.)
"""
import os
from dataclasses import asdict

import torch

from model import CramBERT, ModelConfig

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "cramlm-checkpoint", 1


def save_checkpoint(path: str, checkpoint: dict):
    """Write atomically: a crash mid-write leaves the previous checkpoint intact, never half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint}, temporary)
    os.replace(temporary, path)  # atomic on POSIX and Windows


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load and validate a cramlm checkpoint; raise one clear error for anything else."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
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


def model_checkpoint(model: CramBERT, **extra) -> dict:
    """The minimal checkpoint: config + weights of the unwrapped model (no `_orig_mod.`/`module.` prefixes)."""
    return {"model_config": asdict(model.config), "model": model.state_dict(), **extra}
