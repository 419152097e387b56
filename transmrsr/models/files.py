"""Reading the files a restoration network comes in: model files and training checkpoints.

A *model file* (what ``train`` exports and what the package ships) is safetensors weights
whose metadata holds the network config as JSON; safetensors loads without unpickling, so a
model from elsewhere cannot run code. A *checkpoint* (``best.pt``/``last.pt``) is a
``torch.save`` file holding a whole training state, the network's weights and config among
it. Inference reads both, so the readers and the format markers live here, below training and
inference; writing them (:mod:`transmrsr.training.checkpoint`) is training's business.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from transmrsr.errors import TransMRSRError

#: ``format`` metadata of a model file.
MODEL_FORMAT = "transmrsr-model"
#: ``format`` and ``version`` entries of a checkpoint.
CHECKPOINT_FORMAT = "transmrsr-checkpoint"
CHECKPOINT_VERSION = 1


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`~transmrsr.training.checkpoint.save_checkpoint`;
    clear errors for anything else.

    Checkpoints hold optimiser and RNG states (NumPy arrays, tuples), so they are unpickled with
    ``weights_only=False``: load only checkpoints you made. Weights to share go in prior files
    or safetensors model files instead.
    """
    path = Path(path)
    if not path.is_file():
        raise TransMRSRError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch.load raises many types for a truncated or foreign file
        raise TransMRSRError(f"{path}: cannot read the checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TransMRSRError(f"{path}: not a transmrsr checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise TransMRSRError(
            f"{path}: checkpoint version {state.get('version')} is not supported "
            f"(this transmrsr reads version {CHECKPOINT_VERSION})"
        )
    return state


def read_safetensors(
    path: str | os.PathLike[str], file_format: str, what: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a transmrsr safetensors file of ``file_format`` (a ``what``
    file: model, prior), or a one-line error for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise TransMRSRError(f"{path}: no such {what} file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TransMRSRError(f"{path}: cannot read the {what} ({exc})") from None
    if metadata.get("format") != file_format or "config" not in metadata:
        raise TransMRSRError(f"{path}: not a transmrsr {what} file")
    return tensors, metadata


def load_model_file(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a model file: ``(float32 state_dict, network config dict, info)``."""
    tensors, metadata = read_safetensors(path, MODEL_FORMAT, "model")
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return state, json.loads(metadata["config"]), json.loads(metadata.get("info", "{}"))
