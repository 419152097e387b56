"""What a run reports: TensorBoard scalars and images, a JSON-lines log, progress bars.

Only rank 0 reports. TensorBoard event files go to ``OUT/tensorboard`` (``tensorboard --logdir
OUT``); the same scalars are appended to ``OUT/metrics.jsonl`` so runs can be compared without
TensorBoard. Both survive a resume: TensorBoard shows the continued curve, and the JSON log
gets the replayed steps again with a ``resumed`` marker line.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


class RunMonitor:
    """Scalars and images of a run (no-op on ranks other than 0)."""

    def __init__(self, out: Path, *, enabled: bool = True, resumed_at: int | None = None) -> None:
        self.enabled = enabled
        self.writer: SummaryWriter | None = None
        self.jsonl = out / "metrics.jsonl"
        if enabled:
            self.writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=resumed_at)
            if resumed_at is not None:
                self._append({"event": "resumed", "step": resumed_at})

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled or self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self._append({"step": step, prefix: values})

    def image(self, step: int, name: str, grid: np.ndarray) -> None:
        """A grey image in [0, 1], shape [H, W]."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(name, np.clip(grid, 0, 1)[None], step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
