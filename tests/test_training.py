"""Two-stage training: the tiny chain on real volumes, exact resume, torchrun, split hygiene."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import oriented_affine, phantom, shared_file

from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.models.files import load_checkpoint, load_model_file
from transmrsr.models.styleswin import StyleSwinGenerator
from transmrsr.models.transmrsr import CENTROIDS_KEY
from transmrsr.pairs import PairConfig
from transmrsr.training.centroids import prior_centroids
from transmrsr.training.checkpoint import load_prior, save_prior, split_prior
from transmrsr.training.config import (
    PRIOR_PRESETS,
    SR_PRESETS,
    SRTrainConfig,
    resolve_config,
    with_overrides,
)
from transmrsr.training.distributed import DistContext, ShardedBatchSampler, setup
from transmrsr.training.prior import train_prior
from transmrsr.training.runs import prepare_out, select_data
from transmrsr.training.sr import train_sr

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = DistContext()


def _tiny_sr(**overrides) -> SRTrainConfig:
    return with_overrides(SR_PRESETS["tiny"], **overrides)


@pytest.fixture
def phantom_data(tmp_path) -> Path:
    """Five small synthetic subjects (IXI names, T1 + T2 for two of them), PSR and LAS grids."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(5):
        affine = oriented_affine("PSR" if i % 2 else "LAS")
        data = phantom((36, 40, 30), seed=i)
        nib.save(nib.Nifti1Image(data, affine), folder / f"IXI00{i}-Guys-0000-T1.nii.gz")
        if i < 2:
            nib.save(
                nib.Nifti1Image(data[::-1].copy(), affine), folder / f"IXI00{i}-HH-1-T2.nii.gz"
            )
    return folder


def _prior_file(tmp_path: Path, with_centroids: bool = True) -> Path:
    """A tiny untrained prior (generator + centroids), enough to start stage 2 quickly."""
    config = PRIOR_PRESETS["tiny"].model
    torch.manual_seed(0)
    generator = StyleSwinGenerator(config)
    centroids = prior_centroids(generator, n_latents=256, k=8) if with_centroids else None
    return save_prior(
        tmp_path / "prior.safetensors", generator.state_dict(), config, centroids=centroids
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# ----------------------------------------------------------------------------- the whole chain


@pytest.mark.slow
def test_tiny_chain_on_real_volumes_prior_centroids_sr(tmp_path):
    """Stage 1 -> fit-centroids -> stage 2 on real scans; the SR loss falls."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("ixi012_t1_2mm.nii.gz", "ixi015_t1_2mm.nii.gz", "bet_t1.nii.gz"):
        os.symlink(shared_file(name), data / name)
    split = {"train": ["ixi012_t1_2mm", "bet_t1"], "val": ["ixi015_t1_2mm"], "test": [], "seed": 0}
    (tmp_path / "split.json").write_text(json.dumps(split))
    common = [
        str(data),
        "--split",
        str(tmp_path / "split.json"),
        "--config",
        "tiny",
        "--no-progress",
    ]
    assert main(["train-prior", *common, "--out", str(tmp_path / "prior"), "--steps", "12"]) == 0
    prior = tmp_path / "prior" / "prior.safetensors"
    samples = sorted((tmp_path / "prior" / "samples").glob("*.png"))
    assert samples and samples[-1].stat().st_size > 1000
    assert main(["fit-centroids", str(prior), "--n-latents", "500", "--k", "8"]) == 0
    state, _, _ = load_prior(prior)
    generator_state, disc_state = split_prior(state)
    assert generator_state[CENTROIDS_KEY].shape == (8, 32)
    assert disc_state is not None  # kept for the discriminator perceptual loss

    config = dataclasses.replace(
        SR_PRESETS["tiny"],
        pairs=PairConfig(factor_range=(4.0, 4.0), patch_size=32),
        samples_per_epoch=160,
        max_epochs=2,
        content_weight=0.1,
        style_weight=0.1,
        lr=1e-3,
    )
    config_file = tmp_path / "sr.json"
    config_file.write_text(json.dumps(config.to_dict()))
    args = [
        str(data),
        "--split",
        str(tmp_path / "split.json"),
        "--config",
        str(config_file),
        "--no-progress",
        "--prior",
        str(prior),
        "--out",
        str(tmp_path / "sr"),
    ]
    assert main(["train", *args]) == 0
    log = [
        json.loads(line)
        for line in (tmp_path / "sr" / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    losses = [r["train"]["l1"] for r in log if "train" in r]
    assert len(losses) == 80
    first, last = np.mean(losses[:15]), np.mean(losses[-15:])
    assert last < 0.8 * first, (first, last)
    assert all(r["train"]["content"] > 0 for r in log if "train" in r)
    vals = [r["val"] for r in log if "val" in r]
    assert len(vals) == 2 and all(np.isfinite(v["psnr"]) for v in vals)
    state, model_config, info = load_model_file(tmp_path / "sr" / "model_best.safetensors")
    assert model_config["arch"] == "transmrsr" and info["factor_range"] == [4.0, 4.0]
    saved = json.loads((tmp_path / "sr" / "config.json").read_text())
    assert saved["stage"] == "sr" and saved["content_weight"] == 0.1


# ----------------------------------------------------------------------------- exact resume


def _sr_run(data_dir: Path, prior: Path, out: Path, *, stop_after=None, resume=False, workers=0):
    config = _tiny_sr(samples_per_epoch=12, max_epochs=3, checkpoint_every=1)
    data = select_data(
        [data_dir], contrast=None, split_file=None, val=1, test=1, seed=0, contrasts=["T1"]
    )
    resume_from = prepare_out(out, resume=resume)
    return train_sr(
        data,
        config,
        out,
        CPU,
        prior_path=prior,
        resume_from=resume_from,
        stop_after=stop_after,
        progress=False,
        workers=workers,
    )


def test_sample_workers_do_not_change_the_run(phantom_data, tmp_path):
    # Items are seeded by (seed, epoch, index): made in two worker processes, the batches and
    # so the weights after four steps (across an epoch boundary) are those of the plain loop.
    prior = _prior_file(tmp_path)
    plain = _sr_run(phantom_data, prior, tmp_path / "plain", stop_after=4)
    pooled = _sr_run(phantom_data, prior, tmp_path / "pooled", stop_after=4, workers=2)
    assert plain.steps == pooled.steps == 4
    a, b = _weights(tmp_path / "plain" / "last.pt"), _weights(tmp_path / "pooled" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sr_resume_matches_an_uninterrupted_run(phantom_data, tmp_path):
    prior = _prior_file(tmp_path)
    whole = _sr_run(phantom_data, prior, tmp_path / "whole")
    assert whole.steps == 9 and whole.epochs == 3
    # Stop mid-epoch 1 (step 4 of 3-step epochs), then again mid-way, then finish.
    _sr_run(phantom_data, prior, tmp_path / "parts", stop_after=4)
    _sr_run(phantom_data, prior, tmp_path / "parts", stop_after=7, resume=True)
    parts = _sr_run(phantom_data, prior, tmp_path / "parts", resume=True)
    assert parts.steps == 9
    a, b = _weights(tmp_path / "whole" / "last.pt"), _weights(tmp_path / "parts" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ca, cb = (
        load_checkpoint(tmp_path / "whole" / "last.pt"),
        load_checkpoint(tmp_path / "parts" / "last.pt"),
    )
    assert ca["history"]["epochs"] == cb["history"]["epochs"]
    assert ca["optimizer"]["state"][0]["exp_avg"].equal(cb["optimizer"]["state"][0]["exp_avg"])


def test_prior_resume_matches_an_uninterrupted_run(phantom_data, tmp_path):
    config = with_overrides(PRIOR_PRESETS["tiny"], steps=6, r1_every=2, checkpoint_every=1)

    def run(out, stop_after=None, resume=False):
        data = select_data([phantom_data], contrast=None, split_file=None, val=1, test=1, seed=0)
        return train_prior(
            data,
            config,
            out,
            CPU,
            resume_from=prepare_out(out, resume=resume),
            stop_after=stop_after,
            progress=False,
        )

    run(tmp_path / "whole")
    run(tmp_path / "parts", stop_after=3)
    assert not (tmp_path / "parts" / "prior.safetensors").exists()
    run(tmp_path / "parts", resume=True)
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "parts" / "last.pt")
    for part in ("generator", "discriminator", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    pa, _, _ = load_prior(tmp_path / "whole" / "prior.safetensors")
    pb, _, _ = load_prior(tmp_path / "parts" / "prior.safetensors")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def _cli_sr_args(data: Path, prior: Path, out: Path, config: Path) -> list[str]:
    return [
        "train",
        str(data),
        "--prior",
        str(prior),
        "--config",
        str(config),
        "--out",
        str(out),
        "--contrasts",
        "T1",
        "--no-progress",
        "--device",
        "cpu",
    ]


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_weights(phantom_data, tmp_path):
    """SIGKILL a real training process after its first checkpoints, resume, compare."""
    prior = _prior_file(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(_tiny_sr(samples_per_epoch=12, max_epochs=6, checkpoint_every=1).to_dict())
    )
    assert main(_cli_sr_args(phantom_data, prior, tmp_path / "whole", config)) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "transmrsr",
        *_cli_sr_args(phantom_data, prior, tmp_path / "killed", config),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and load_checkpoint(last)["step"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last)["step"]
    assert killed_at < 18
    assert main([*_cli_sr_args(phantom_data, prior, tmp_path / "killed", config), "--resume"]) == 0
    a, b = _weights(tmp_path / "whole" / "last.pt"), _weights(last)
    assert load_checkpoint(last)["step"] == 18
    assert not list((tmp_path / "killed").glob(".*.tmp*"))  # leftovers of the kill cleaned
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- torchrun / DDP


def test_batches_are_disjoint_shards_of_the_global_batch():
    single = list(ShardedBatchSampler(40, 8, seed=3, samples_per_epoch=32))
    ranks = [
        list(ShardedBatchSampler(40, 8, seed=3, rank=r, world_size=2, samples_per_epoch=32))
        for r in (0, 1)
    ]
    assert len(single) == 4
    for b, batch in enumerate(single):
        assert ranks[0][b] + ranks[1][b] == batch
    resumed = ShardedBatchSampler(40, 8, seed=3, samples_per_epoch=32)
    resumed.set_position(0, 2)
    assert list(resumed) == single[2:]
    with pytest.raises(TransMRSRError, match="divisible"):
        ShardedBatchSampler(40, 6, seed=0, world_size=4)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_two_process_torchrun_agrees_with_one_process(phantom_data, tmp_path):
    prior = _prior_file(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_tiny_sr(samples_per_epoch=16, max_epochs=2).to_dict()))
    assert main(_cli_sr_args(phantom_data, prior, tmp_path / "single", config)) == 0
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        str(torchrun) if torchrun.exists() else "torchrun",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "transmrsr",
        *_cli_sr_args(phantom_data, prior, tmp_path / "ddp", config),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-12000:]
    assert "2 process(es)" in done.stderr
    a, b = _weights(tmp_path / "single" / "last.pt"), _weights(tmp_path / "ddp" / "last.pt")
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["step"] == 8
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    start, _, _ = load_prior(prior)
    decoder = {k.removeprefix("decoder."): v for k, v in a.items() if k.startswith("decoder.")}
    assert any(
        not torch.equal(v, start["synthesis." + k])
        for k, v in decoder.items()
        if "synthesis." + k in start
    )  # training moved the weights
    assert worst < 1e-5, worst


# ----------------------------------------------------------------------------- splits and config


def test_split_is_by_subject_and_never_leaks(phantom_data, tmp_path):
    data = select_data([phantom_data], contrast=None, split_file=None, val=1, test=2, seed=5)
    subjects = {n: {r.subject for r in getattr(data, n)} for n in ("train", "val", "test")}
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    assert len(subjects["test"]) == 2 and len(subjects["val"]) == 1
    # Both contrasts of a subject are in the same split.
    for name in ("train", "val", "test"):
        for record in getattr(data, name):
            assert record.subject in subjects[name]
    again = select_data([phantom_data], contrast=None, split_file=None, val=1, test=2, seed=5)
    assert again == data
    data.split.save(tmp_path / "split.json")
    from_file = select_data(
        [phantom_data], contrast=None, split_file=tmp_path / "split.json", val=0, test=0, seed=99
    )
    assert from_file.split == data.split


def test_stage2_trains_only_on_training_subjects(phantom_data, tmp_path):
    prior = _prior_file(tmp_path)
    result = _sr_run(phantom_data, prior, tmp_path / "run", stop_after=1)
    assert result.steps == 1
    written = json.loads((tmp_path / "run" / "data.json").read_text())
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    train_subjects = {r["subject"] for r in written["train"]}
    assert train_subjects == set(split["train"])
    assert not train_subjects & (set(split["val"]) | set(split["test"]))
    assert all(r["contrast"] == "T1" for r in written["train"])


def test_configs_round_trip_and_bad_values_are_refused(tmp_path):
    for stage, presets in (("prior", PRIOR_PRESETS), ("sr", SR_PRESETS)):
        for name, config in presets.items():
            path = tmp_path / f"{stage}-{name}.json"
            path.write_text(json.dumps(config.to_dict()))
            assert resolve_config(path, stage) == config
    with pytest.raises(TransMRSRError, match="unknown config"):
        resolve_config("huge", "sr")
    with pytest.raises(TransMRSRError, match="expected a 'prior'"):
        resolve_config(tmp_path / "sr-tiny.json", "prior")
    with pytest.raises(TransMRSRError, match="factor range"):
        with_overrides(SR_PRESETS["tiny"], pairs=PairConfig(factor_range=(0.5, 4.0)))
    (tmp_path / "bad.json").write_text('{"stage": "sr", "batch_size": 4, "colour": 1}')
    with pytest.raises(TransMRSRError, match="unknown config fields"):
        resolve_config(tmp_path / "bad.json", "sr")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --prior"),
        (["--resume"], "nothing to resume"),
        (["--perceptual", "vgg19", "--prior", "PRIOR"], "--vgg-weights"),
    ],
)
def test_train_command_errors_are_one_line(phantom_data, tmp_path, capsys, extra, message):
    prior = _prior_file(tmp_path)
    extra = [str(prior) if e == "PRIOR" else e for e in extra]
    config = tmp_path / "c.json"
    config.write_text(json.dumps(with_overrides(SR_PRESETS["tiny"], content_weight=0.5).to_dict()))
    code = main(
        [
            "train",
            str(phantom_data),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err


def test_a_prior_without_centroids_is_refused(phantom_data, tmp_path, capsys):
    prior = _prior_file(tmp_path, with_centroids=False)
    code = main(
        [
            "train",
            str(phantom_data),
            "--config",
            "tiny",
            "--prior",
            str(prior),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert code == 2 and "fit-centroids" in capsys.readouterr().err


def test_a_fresh_run_never_overwrites_an_existing_one(phantom_data, tmp_path):
    prior = _prior_file(tmp_path)
    _sr_run(phantom_data, prior, tmp_path / "run", stop_after=1)
    with pytest.raises(TransMRSRError, match="--resume"):
        prepare_out(tmp_path / "run", resume=False)


@pytest.mark.parametrize("arch", ["edsr", "swinir", "restormer"])
def test_baselines_train_through_the_same_pipeline(phantom_data, tmp_path, arch):
    out = tmp_path / arch
    args = ["train", str(phantom_data), "--arch", arch, "--config", "tiny", "--out", str(out)]
    args += ["--epochs", "2", "--samples-per-epoch", "8", "--no-progress"]
    assert main([*args, "--stop-after", "3"]) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 3
    # The checkpointed config rebuilds the baseline and the run resumes to its end.
    assert main([*args, "--resume"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["arch"] == arch and saved["content_weight"] == 0.0
    _, model_config, info = load_model_file(out / "model_best.safetensors")
    assert model_config["arch"] == arch and info["epochs"] >= 1
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["step"] == 4 and len(checkpoint["history"]["epochs"]) == 2
    assert np.isfinite(checkpoint["history"]["best_psnr"])


def test_factor_and_thickness_ranges_from_the_command_line_reach_the_saved_config(
    phantom_data, tmp_path
):
    out = tmp_path / "run"
    args = ["train", str(phantom_data), "--arch", "edsr", "--config", "tiny", "--out", str(out)]
    args += ["--factor-range", "3", "5", "--thickness-range", "0.6", "1", "--no-progress"]
    assert main([*args, "--epochs", "1", "--samples-per-epoch", "4", "--stop-after", "1"]) == 0
    pairs = json.loads((out / "config.json").read_text())["pairs"]
    assert pairs["factor_range"] == [3.0, 5.0] and pairs["thickness_range"] == [0.6, 1.0]


def test_time_limit_ends_the_session_with_a_checkpoint(phantom_data, tmp_path):
    data = select_data(
        [phantom_data], contrast=None, split_file=None, val=1, test=1, seed=0, contrasts=["T1"]
    )
    config = _tiny_sr(samples_per_epoch=12, max_epochs=3, content_weight=0.0, style_weight=0.0)
    out = tmp_path / "run"
    prepare_out(out, resume=False)
    result = train_sr(
        data, config, out, CPU, prior_path=_prior_file(tmp_path), max_seconds=0.0, progress=False
    )
    assert result.steps == 1
    assert load_checkpoint(out / "last.pt")["step"] == 1
    assert load_model_file(out / "model_last.safetensors")[2]["steps"] == 1


def test_early_stopping_counts_slow_steady_gains_as_progress():
    from transmrsr.training.sr import new_history, record_epoch, replay_history

    config = _tiny_sr(patience=3, min_delta=0.05)
    history = new_history()
    steady = [30.0 + 0.03 * i for i in range(12)]  # 0.03 dB per epoch: 0.06 dB every two
    assert not any(
        record_epoch(history, {"epoch": i, "psnr": p}, config) for i, p in enumerate(steady)
    )
    assert history["best_epoch"] == 11 and history["stale"] == 1  # 30.33 vs the 30.30 level
    # Then nothing rises 0.05 dB above 30.30: the third epoch without it stops the run.
    flat = [steady[-1] + 0.01, steady[-1] - 0.2]
    stops = [
        record_epoch(history, {"epoch": 12 + i, "psnr": p}, config) for i, p in enumerate(flat)
    ]
    assert stops == [False, True]
    assert history["best_epoch"] == 12  # the best is still the highest, however small the rise
    assert replay_history(history["epochs"], config) == history


def test_bf16_precision_on_cpu_trains_with_autocast(phantom_data, tmp_path):
    """``--precision bf16`` runs the forward passes in bf16 on a CPU too: the run trains to
    finite fp32 weights that differ from an exact fp32 run's; ``auto`` keeps CPUs exact."""
    assert not CPU.use_bf16 and DistContext(precision="bf16").use_bf16
    assert DistContext(device=torch.device("cuda"), precision="auto").use_bf16
    assert not DistContext(device=torch.device("cuda"), precision="fp32").use_bf16
    with pytest.raises(TransMRSRError, match="precision"):
        setup("cpu", "fp16")
    prior = _prior_file(tmp_path)
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["train", str(phantom_data), "--prior", str(prior), "--config", "tiny"]
        args += ["--out", str(out), "--contrasts", "T1", "--no-progress", "--device", "cpu"]
        assert main([*args, "--precision", precision, "--stop-after", "2"]) == 0
        runs[precision] = _weights(out / "last.pt")
    for name, fp32 in runs["fp32"].items():
        bf16 = runs["bf16"][name]
        assert bf16.dtype == fp32.dtype and torch.isfinite(bf16.float()).all()
    assert any(not torch.equal(runs["fp32"][k], runs["bf16"][k]) for k in runs["fp32"])


def test_init_fine_tunes_from_a_trained_model(phantom_data, tmp_path, capsys):
    """``--init`` starts a new run from a trained model's weights (fresh optimiser, the new
    run's own config), needs no prior for an L1-only loss, and refuses another network."""
    data = [str(phantom_data), "--contrasts", "T1", "--no-progress", "--stop-after"]
    first = tmp_path / "a"
    args = ["train", *data, "2", "--config", "tiny", "--prior", str(_prior_file(tmp_path))]
    assert main([*args, "--out", str(first)]) == 0
    trained_file = first / "model_last.safetensors"
    trained = load_model_file(trained_file)[0]
    config = json.loads((first / "config.json").read_text())
    config.update(content_weight=0.0, style_weight=0.0, lr=1e-6, batch_size=1)
    (tmp_path / "l1.json").write_text(json.dumps(config))
    tune = ["train", *data, "1", "--config", str(tmp_path / "l1.json")]
    assert main([*tune, "--out", str(tmp_path / "b"), "--init", str(trained_file)]) == 0
    # One step at lr 1e-6 moves the weights a little away from the trained model's.
    tuned = _weights(tmp_path / "b" / "last.pt")
    diffs = [float((tuned[k].float() - trained[k].float()).abs().max()) for k in trained]
    assert 0 < max(diffs) < 1e-4
    saved = load_checkpoint(tmp_path / "b" / "last.pt")
    assert saved["step"] == 1 and saved["config"]["batch_size"] == 1
    # A model of another architecture is refused in one line.
    edsr = tmp_path / "edsr"
    assert (
        main(["train", *data, "1", "--config", "tiny", "--arch", "edsr", "--out", str(edsr)]) == 0
    )
    capsys.readouterr()
    init = ["--init", str(edsr / "model_last.safetensors")]
    assert main([*tune, "--out", str(tmp_path / "c"), *init]) == 2
    err = capsys.readouterr().err.strip()
    assert "network differs" in err and len(err.splitlines()) == 1
