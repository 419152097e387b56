"""Calibration of the same-head check of a guide (``transmrsr.registration.check_guide``).

For pairs of a thick scan and a guide whose truth is known (same head or another head), the
guide is registered from its headers (:func:`~transmrsr.registration.register_rigid`) and the
two measures of the check are taken: the edge similarity of the scan and the registered guide
(:func:`~transmrsr.registration.guide_similarity`) and how much of it a move of 2 mm loses
(:func:`~transmrsr.registration.guide_alignment`). The pairs:

- ``same``: ``stroke_t1``, ``stroke_t2`` and ``flair`` (one patient, ``../shared/data/mri``),
  each made thick x4 along SI, guided by the other contrasts moved by two known motions;
- ``same-noise``: the same at x4 and x8 with Rician noise of 5 % of the scan's 99th
  percentile (one motion);
- ``other`` and ``other-noise``: T1s of other subjects on those scans, and on a thick
  ``colin27_t1``;
- ``synsame`` and ``synother``: SynthSeg anatomies (``../shared/data/labels``) drawn in a
  random contrast (the scan, x4) and a T1-like one (the guide, moved up to 1 voxel and 1
  degree); ``synother`` guides each head with the next head's guide.

Each pair's measures are printed as a JSON line and appended to ``records.jsonl`` in
``--out`` (a pair already there is not measured again); a summary per group closes the run.
A registration that moved the guide beyond the check's limits (another head, usually) is
measured all the same, and marked ``refused: motion``.

    python benchmarks/guide_check.py --out /tmp/guide_check
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger("guide_check")

#: Two motions of the guide (degrees about x, y, z; mm), as two series of one session differ.
MOTIONS = (((3.0, -4.0, 5.0), (4.0, -3.0, 5.0)), ((-6.0, 2.0, 3.0), (-8.0, 6.0, -4.0)))
#: The patient scanned in three contrasts, and the scan-guide pairs among them.
SAME_HEAD = ("stroke_t1", "stroke_t2", "flair")
SAME_PAIRS = (
    ("stroke_t1", "stroke_t2"),
    ("stroke_t2", "stroke_t1"),
    ("stroke_t2", "flair"),
    ("flair", "stroke_t1"),
    ("flair", "stroke_t2"),
)
#: Other subjects' scans (``../shared/data/mri`` unless a ds002748 subject).
OTHER_HEADS = ("sub-10", "sub-20", "m2208_t2w", "coregqa_bet_t1", "antsxnet_brain_t1")
OTHER_ON_COLIN = ("otsu_t1", "ixi012_t1_2mm", "m2208_t2w", "seg3d_epilepsy_t1", "sub-20")
NOISY_OTHERS = ("antsxnet_brain_t1", "coregqa_bet_t1")
#: Seed of the synthetic heads' draws.
SYNTH_SEED = 90_210


def thick_of(volume, factor: float):
    """``volume`` made thick along SI with the SPEC's Gaussian slices."""
    from transmrsr.degradation import degrade
    from transmrsr.geometry import resolve_axis
    from transmrsr.volume import Volume

    axis = resolve_axis("SI", volume.affine)
    data, affine = degrade(volume.data.astype(np.float32), volume.affine, axis, factor)
    return Volume(data=data.astype(np.float32), affine=affine)


def with_noise(volume, fraction: float, rng: np.random.Generator):
    """Rician noise of ``fraction`` of the volume's 99th percentile."""
    from transmrsr.volume import Volume

    sigma = fraction * float(np.percentile(volume.data, 99))
    real = volume.data + rng.normal(0.0, sigma, volume.shape)
    noisy = np.hypot(real, rng.normal(0.0, sigma, volume.shape))
    return Volume(data=noisy.astype(np.float32), affine=volume.affine)


def moved(volume, motion):
    """The volume with its header moved by a rigid motion about its head's centre."""
    from transmrsr.registration import head_center, rigid_matrix
    from transmrsr.volume import Volume

    matrix = rigid_matrix(*motion, head_center(volume))
    return Volume(data=volume.data, affine=matrix @ volume.affine)


def measure(pair_id: str, group: str, target, guide) -> dict:
    """Register ``guide`` onto ``target`` and take the check's measures."""
    from transmrsr import registration as reg
    from transmrsr.errors import TransMRSRError

    start = time.perf_counter()
    record: dict = {"id": pair_id, "group": group}
    try:
        found = reg.register_rigid(guide, target)
    except TransMRSRError as exc:
        return {**record, "error": str(exc), "seconds": time.perf_counter() - start}
    record.update(shift_mm=found.shift_mm, rotation_deg=found.rotation_deg)
    if found.shift_mm > reg.MAX_SHIFT_MM or found.rotation_deg > reg.MAX_ROTATION_DEG:
        record["refused"] = "motion"
    similarity, alignment = reg.guide_alignment(guide, found, target)
    record.update(similarity=similarity, alignment=alignment)
    record["seconds"] = time.perf_counter() - start
    return record


def real_pairs(mri: Path) -> Iterator[tuple[str, str, object, object]]:
    from transmrsr.io import load_volume

    def scan(name: str):
        path = mri.parent / "ds002748" / f"{name}_T1w.nii.gz"
        if not name.startswith("sub-"):
            path = next(mri.glob(f"{name}.*"))
        return load_volume(path)

    heads = {name: scan(name) for name in SAME_HEAD}
    for name in SAME_HEAD:
        thick = thick_of(heads[name], 4.0)
        for target, guide in SAME_PAIRS:
            if target != name:
                continue
            for m, motion in enumerate(MOTIONS):
                yield f"same:{name}<-{guide}:m{m}", "same", thick, moved(heads[guide], motion)
        for other in OTHER_HEADS:
            yield f"other:{name}<-{other}", "other", thick, scan(other)
    colin = thick_of(scan("colin27_t1"), 4.0)
    for other in OTHER_ON_COLIN:
        yield f"other:colin27_t1<-{other}", "other", colin, scan(other)
    rng = np.random.default_rng(5)
    for name in SAME_HEAD:
        for factor in (4.0, 8.0):
            thick = with_noise(thick_of(heads[name], factor), 0.05, rng)
            for target, guide in SAME_PAIRS:
                if target == name:
                    pair = f"same-noise:{name}x{factor:g}<-{guide}"
                    yield pair, "same-noise", thick, moved(heads[guide], MOTIONS[0])
            for other in NOISY_OTHERS:
                pair = f"other-noise:{name}x{factor:g}<-{other}"
                yield pair, "other-noise", thick, scan(other)


def synthetic_pairs(labels: Path, count: int) -> Iterator[tuple[str, str, object, object]]:
    from transmrsr.training.synthetic import (
        HeadConfig,
        LabelTables,
        crop_to_head,
        discover_label_maps,
        load_label_map,
        synthesize_guided_head,
    )
    from transmrsr.volume import Volume

    tables = LabelTables.load(labels)
    contrast, guide_contrast = HeadConfig(contrast="random"), HeadConfig(contrast="t1")
    heads = []
    for i, entry in enumerate(discover_label_maps(labels)[:count]):
        anatomy, affine = crop_to_head(*load_label_map(entry.path))
        key = (SYNTH_SEED, 100 + i)
        image, guide = synthesize_guided_head(anatomy, tables, contrast, guide_contrast, key)
        thick = thick_of(Volume(data=image.astype(np.float32), affine=affine), 4.0)
        heads.append((thick, Volume(data=guide.astype(np.float32), affine=affine)))
    for i, (thick, guide) in enumerate(heads):
        yield f"synsame:{i}", "synsame", thick, guide
        j = (i + 1) % len(heads)
        yield f"synother:{i}<-{j}", "synother", thick, heads[j][1]


def summary(records: list[dict]) -> str:
    """One row per group: how many pairs, and the range of each measure."""
    from transmrsr import registration as reg

    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if "similarity" in record:
            groups[record["group"]].append(record)
    lines = [
        "| pairs | n | similarity | alignment | passed the check |",
        "|---|---|---|---|---|",
    ]
    for group, members in groups.items():
        sim = [r["similarity"] for r in members]
        ali = [r["alignment"] for r in members]
        passed = sum(
            s >= reg.MIN_SIMILARITY or a >= reg.MIN_ALIGNMENT for s, a in zip(sim, ali, strict=True)
        )
        lines.append(
            f"| {group} | {len(members)} | {min(sim):.3f} to {max(sim):.3f} | "
            f"{min(ali):.3f} to {max(ali):.3f} | {passed} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mri", type=Path, default=Path("../shared/data/mri"))
    parser.add_argument("--labels", type=Path, default=Path("../shared/data/labels"))
    parser.add_argument("--synthetic-heads", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "records.jsonl"
    records = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            records[record["id"]] = record
    sources = []
    if args.mri.is_dir():
        sources.append(real_pairs(args.mri))
    if args.labels.is_dir() and args.synthetic_heads > 1:
        sources.append(synthetic_pairs(args.labels, args.synthetic_heads))
    for source in sources:
        for pair_id, group, target, guide in source:
            if pair_id in records:
                continue
            record = measure(pair_id, group, target, guide)
            records[pair_id] = record
            print(json.dumps(record), flush=True)
            with path.open("a") as stream:
                stream.write(json.dumps(record) + "\n")
    print(summary(list(records.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
