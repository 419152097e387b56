"""Cohorts over machines: which share of a cohort this process restores.

``--shard I/N`` (I from 1 to N), or, when not given, a SLURM job array
(``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``) or torchrun (``RANK``/``WORLD_SIZE``),
picks every N-th input of the cohort sorted by output name. Every process computes the same
sorted list from the same command line, so the shards are disjoint and together cover the
cohort without talking to each other; with existing outputs skipped, a shard killed halfway and
started again finishes the rest.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from transmrsr.errors import TransMRSRError

log = logging.getLogger(__name__)

T = TypeVar("T")

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``, and where that came from (for the log)."""

    index: int
    count: int
    source: str = "--shard"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise TransMRSRError(
                f"shard {self.index + 1}/{self.count} (from {self.source}) does not exist; "
                "shards run from 1/N to N/N"
            )

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"

    def select(self, items: Sequence[T], key: Callable[[T], str]) -> list[T]:
        """This shard's items: every ``count``-th of ``items`` sorted by ``key``, from the
        ``index``-th. Round robin on the sorted list, not a hash, so that N shards of a cohort
        differ in size by one item at most."""
        ordered = sorted(items, key=key)
        if len({key(item) for item in ordered}) != len(ordered):
            raise TransMRSRError("two inputs have the same output name; shards would collide")
        return ordered[self.index :: self.count]


def parse_shard(text: str) -> Shard:
    """``I/N`` (I from 1 to N) as a :class:`Shard`."""
    match = _SHARD.match(text)
    if not match:
        raise TransMRSRError(f"--shard {text!r}: expected I/N, e.g. 1/4 (I from 1 to N)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise TransMRSRError(f"--shard {text!r}: I must run from 1 to N, and N be at least 1")
    return Shard(index - 1, count)


def _int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise TransMRSRError(f"{name}={value!r} is not a whole number") from None


def shard_from_environment(environ: Mapping[str, str] | None = None) -> Shard | None:
    """The shard a SLURM job array or torchrun gives this process, or ``None``.

    SLURM: the task's place in the array, ``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) /
    SLURM_ARRAY_TASK_STEP`` of ``SLURM_ARRAY_TASK_COUNT``, so ``--array=1-4`` and
    ``--array=0-3`` both work. torchrun: ``RANK`` of ``WORLD_SIZE`` when that is above 1.
    """
    env = os.environ if environ is None else environ
    task, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    if task is not None and count is not None:
        low = _int(env, "SLURM_ARRAY_TASK_MIN") or 0
        step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
        return Shard((task - low) // step, count, "SLURM_ARRAY_TASK_ID")
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    if rank is not None and world is not None and world > 1:
        return Shard(rank, world, "RANK/WORLD_SIZE")
    return None


def resolve_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard`` when given (``1/1``: the whole cohort, whatever the environment says),
    else the environment's (:func:`shard_from_environment`)."""
    shard = parse_shard(text) if text is not None else shard_from_environment(environ)
    if shard is not None and shard.count == 1:
        return None
    return shard
