"""The run folder both training stages share: config, split, checkpoints, logs.

Layout of ``OUT``::

    config.json      the full training config (network sizes included)
    split.json       subjects of train / val / test
    data.json        the volumes of each split (path, subject, contrast)
    last.pt          the newest checkpoint (resumable state)
    best.pt          stage 2: the checkpoint with the best validation PSNR
    metrics.jsonl    scalars per logged step; tensorboard/ the same for TensorBoard

``--resume`` reads ``last.pt`` and continues; starting a fresh run into a folder that already
holds a checkpoint is refused, so a run is never overwritten by accident.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transmrsr.errors import TransMRSRError
from transmrsr.io import atomic_path
from transmrsr.models.files import load_checkpoint
from transmrsr.training.config import config_from_dict
from transmrsr.training.data import Split, VolumeRecord, discover_volumes, split_subjects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    """The volumes of a run, by split."""

    split: Split
    train: tuple[VolumeRecord, ...]
    val: tuple[VolumeRecord, ...]
    test: tuple[VolumeRecord, ...]


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)


def select_data(
    sources: Sequence[str | os.PathLike[str]],
    *,
    contrast: str | None,
    split_file: str | os.PathLike[str] | None,
    val: int | float,
    test: int | float,
    seed: int,
    contrasts: Sequence[str] | None = None,
) -> RunData:
    """Discover volumes, split them by subject (or read a split file) and group them.

    ``contrasts`` keeps only those contrasts (e.g. T1 for a T1 model); ``None`` keeps all.
    Volumes of subjects missing from a given split file are left out, with a warning.
    """
    records = discover_volumes(sources, contrast=contrast)
    if contrasts:
        wanted = {c.upper() for c in contrasts}
        records = [r for r in records if r.contrast in wanted]
        if not records:
            raise TransMRSRError(f"no {'/'.join(sorted(wanted))} volumes in the data")
    if split_file is not None:
        path = Path(split_file)
        if not path.is_file():
            raise TransMRSRError(f"{path}: no such split file")
        try:
            split = Split.load(path)
        except (OSError, ValueError, KeyError) as exc:
            raise TransMRSRError(f"{path}: not a split file ({exc})") from None
    else:
        split = split_subjects(records, val=val, test=test, seed=seed)
    groups: dict[str, list[VolumeRecord]] = {"train": [], "val": [], "test": []}
    unassigned = []
    for record in records:
        for name in groups:
            if record.subject in split.of(name):
                groups[name].append(record)
                break
        else:
            unassigned.append(record.name)
    if unassigned:
        log.warning("not in the split file, left out: %s", ", ".join(unassigned))
    if not groups["train"]:
        raise TransMRSRError("the split leaves no training volumes")
    return RunData(split, *(tuple(groups[n]) for n in ("train", "val", "test")))


def prepare_out(out: Path, *, resume: bool) -> Path | None:
    """Create ``out``; return the checkpoint to resume from (or None for a fresh run)."""
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise TransMRSRError(f"{out}: nothing to resume (no last.pt); start without --resume")
        for stale in out.glob(".*.tmp*"):  # a file being written when the run was killed
            log.info("removing %s, left by an interrupted write", stale.name)
            stale.unlink(missing_ok=True)
        return last
    if last.exists():
        raise TransMRSRError(
            f"{out} already holds a run (last.pt); use --resume to continue it or choose "
            "another --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TransMRSRError(f"{out}: cannot create the run folder ({exc.strerror})") from None
    return None


def save_run_files(out: Path, config: Any, data: RunData) -> None:
    """config.json, split.json and data.json of a run."""
    write_json(out / "config.json", config.to_dict())
    data.split.save(out / "split.json")
    write_json(
        out / "data.json",
        {name: [asdict(r) for r in getattr(data, name)] for name in ("train", "val", "test")},
    )


def load_resume_state(path: Path, config: Any) -> tuple[dict[str, Any], Any]:
    """A run's checkpoint and the config it was trained with: a resumed run continues with its
    saved config, whatever the command line says, so that it ends as it would have."""
    state = load_checkpoint(path, map_location="cpu")
    saved = config_from_dict(state["config"])
    if saved != config:
        log.info("resuming with the run's saved config (command-line config ignored)")
    return state, saved
