"""Cohorts over machines: shards from ``--shard I/N`` or the environment split a cohort with no
overlap and no miss, two shard processes running at once restore every input exactly once,
and a re-run (or a killed shard started again) writes only what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_thick_scans

from transmrsr.cli.main import main
from transmrsr.cohort import Shard, parse_shard, resolve_shard, shard_from_environment
from transmrsr.errors import TransMRSRError

ROOT = Path(__file__).resolve().parents[1]


def test_parse_shard():
    assert parse_shard("1/4") == Shard(0, 4)
    assert parse_shard(" 4 / 4 ") == Shard(3, 4)
    for bad in ("0/4", "5/4", "1/0", "a/b", "2", "-1/3"):
        with pytest.raises(TransMRSRError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3"}, Shard(0, 3)),
        # --array=1-3: the ids start at 1
        (
            {
                "SLURM_ARRAY_TASK_ID": "3",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            Shard(2, 3),
        ),
        # --array=0-8:4 -> ids 0, 4, 8
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_STEP": "4",
            },
            Shard(1, 3),
        ),
        ({"RANK": "1", "WORLD_SIZE": "2"}, Shard(1, 2)),
        ({"RANK": "0", "WORLD_SIZE": "1"}, None),
        ({"SLURM_JOB_ID": "77"}, None),  # a SLURM job that is not an array
    ],
)
def test_shards_from_the_environment(environ, expected):
    found = shard_from_environment(environ)
    if expected is None:
        assert found is None
    else:
        assert (found.index, found.count) == (expected.index, expected.count)


def test_the_command_line_wins_and_1_of_1_means_everything():
    slurm = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert resolve_shard("1/3", slurm) == Shard(0, 3)
    assert resolve_shard("1/1", slurm) is None
    assert resolve_shard(None, slurm).index == 1
    with pytest.raises(TransMRSRError, match="shard 3/2"):
        resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2"})
    with pytest.raises(TransMRSRError, match="RANK"):
        resolve_shard(None, {"RANK": "x", "WORLD_SIZE": "2"})


@pytest.mark.parametrize(("n_items", "n_shards"), [(6, 2), (7, 3), (2, 4), (100, 7)])
def test_shards_cover_the_cohort_once_and_evenly(n_items, n_shards):
    items = [f"scan{i:03d}" for i in range(n_items)][::-1]  # the order given does not matter
    parts = [Shard(i, n_shards).select(items, key=str) for i in range(n_shards)]
    flat = [item for part in parts for item in part]
    assert sorted(flat) == sorted(items)
    assert len(set(flat)) == len(flat)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.fixture
def cohort(tmp_path):
    folder = tmp_path / "cohort"
    write_thick_scans(folder, 6)
    return folder


def _restored(log: str) -> list[str]:
    return sorted(
        Path(line.split()[1].rstrip(":")).name
        for line in log.splitlines()
        if line.startswith("restored ")
    )


def test_two_shard_processes_restore_each_input_exactly_once(cohort, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "transmrsr", "restore", str(cohort), "--out-dir", str(out)]
    command += ["--model", str(tiny_model_file), "--adapt", "0", "--device", "cpu", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD"))}
    env["OMP_NUM_THREADS"] = "1"
    # One shard as a SLURM array task (--array=1-2, task 1), the other by --shard.
    slurm = {
        **env,
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_ARRAY_TASK_COUNT": "2",
        "SLURM_ARRAY_TASK_MIN": "1",
    }

    def start(extra, environ):
        return subprocess.Popen(
            [*command, *extra], env=environ, cwd=ROOT, stderr=subprocess.PIPE, text=True
        )

    first, second = start([], slurm), start(["--shard", "2/2"], env)
    logs = [p.communicate(timeout=300)[1] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], logs
    done = [_restored(log) for log in logs]
    assert done[0] and done[1] and not set(done[0]) & set(done[1])
    assert sorted(done[0] + done[1]) == [f"s{i}.nii.gz" for i in range(6)]
    assert "shard 1/2 (from SLURM_ARRAY_TASK_ID): 3 of 6 inputs" in logs[0]
    outputs = sorted(p.name for p in out.iterdir())
    assert outputs == [f"s{i}_restored.nii.gz" for i in range(6)]

    # A re-run of every shard writes nothing new.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([*command[3:], "--shard", "1/2"]) == 0
    assert main([*command[3:], "--shard", "2/2"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    # A shard killed before its last scan, started again, restores only what is missing.
    lost = out / f"{Path(done[1][-1]).name.split('.')[0]}_restored.nii.gz"
    lost.unlink()
    assert main([*command[3:], "--shard", "2/2"]) == 0
    assert lost.exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p != lost} == {
        k: v for k, v in stamps.items() if k != lost.name
    }


def test_shard_needs_a_cohort(cohort, tmp_path, capsys):
    code = main(
        ["restore", str(cohort / "s0.nii.gz"), str(tmp_path / "o.nii.gz"), "--shard", "1/2"]
    )
    assert code == 2
    assert "--shard splits a cohort" in capsys.readouterr().err
