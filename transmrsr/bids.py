"""BIDS in and out: find the anatomical images of a BIDS dataset, and name, describe and check
the derivatives dataset that ``transmrsr bids`` writes.

File names are parsed and built with the rules of the BIDS schema as the bids-validator uses
them (:mod:`bidsschematools`, the official schema package: a few hundred kilobytes, loaded in
well under a second), not with hand-written patterns and not through pybids, whose database
index and dependencies (pandas, SQLAlchemy, formulaic) are far more than finding a few
``anat`` files needs. Every derivative name is checked against the schema's derivative rules
before anything is restored, so a name the validator would reject never gets written.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bidsschematools import rules as schema_rules
from bidsschematools import schema as bids_schema

from transmrsr._version import __version__
from transmrsr.errors import TransMRSRError

log = logging.getLogger(__name__)

#: Suffixes restored by default: the structural contrasts a thick-slice protocol acquires.
DEFAULT_SUFFIXES: tuple[str, ...] = ("T1w", "T2w", "FLAIR", "PDw", "T2starw")
#: The ``desc-`` label of every restored image.
DESCRIPTION = "restored"
#: What GeneratedBy names.
PIPELINE = "transmrsr"


@functools.cache
def _schema() -> Any:
    return bids_schema.load_schema()


@functools.cache
def _raw_anat_rules() -> tuple[re.Pattern[str], ...]:
    schema = _schema()
    found = schema_rules.regexify_filename_rules(schema.rules.files.raw.anat, schema, level=1)
    return tuple(re.compile(rule["regex"]) for rule in found)


@functools.cache
def _derivative_rules() -> tuple[re.Pattern[str], ...]:
    schema = _schema()
    found = []
    for group in (schema.rules.files.common, schema.rules.files.deriv):
        found.extend(schema_rules.regexify_filename_rules(group, schema, level=2))
    return tuple(re.compile(rule["regex"]) for rule in found)


def anatomical_suffixes() -> tuple[str, ...]:
    """The non-parametric anatomical suffixes of the schema (``T1w``, ``T2w``, ``FLAIR``...)."""
    return tuple(_schema().rules.files.raw.anat.nonparametric.suffixes)


def bids_version() -> str:
    """The BIDS version of the schema the names are checked against."""
    return str(_schema().bids_version)


def _entity_keys() -> dict[str, str]:
    """Entity name to its key in file names, in the schema's order (``subject``: ``sub``)."""
    schema = _schema()
    return {name: schema.objects.entities[name]["name"] for name in schema.rules.entities}


@dataclass(frozen=True)
class BidsImage:
    """One anatomical image of a BIDS dataset.

    Attributes:
        path: the file.
        relative: its path inside the dataset, with ``/`` separators.
        entities: its entities by schema name (``subject``, ``session``, ``acquisition``...).
        suffix: ``T1w``, ``T2w``...
        extension: ``.nii.gz`` or ``.nii``.
    """

    path: Path
    relative: str
    entities: dict[str, str]
    suffix: str
    extension: str

    @property
    def subject(self) -> str:
        return self.entities["subject"]


def parse_anat_path(relative: str) -> BidsImage | None:
    """The entities of a raw anatomical image from its path inside the dataset, or ``None``
    when the schema's raw ``anat`` rules do not accept it."""
    for rule in _raw_anat_rules():
        match = rule.match(relative)
        if match:
            groups = match.groupdict()
            entities = {
                name: value
                for name, value in groups.items()
                if value is not None and name not in ("datatype", "suffix", "extension")
            }
            return BidsImage(
                Path(relative), relative, entities, groups["suffix"], groups["extension"]
            )
    return None


def _label(text: str) -> str:
    label = text[4:] if text.startswith("sub-") else text
    if not re.fullmatch(r"[0-9a-zA-Z+]+", label):
        raise TransMRSRError(f"--participant-label {text!r}: a BIDS label is letters and digits")
    return label


def find_anat_images(
    root: str | os.PathLike[str],
    *,
    participants: Sequence[str] | None = None,
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
) -> list[BidsImage]:
    """The anatomical NIfTI images of a BIDS dataset with one of ``suffixes``, of the
    ``participants`` given (labels with or without ``sub-``; default: everyone), sorted by path.

    Only ``sub-*/[ses-*/]anat/`` is searched, so ``derivatives/``, ``sourcedata/`` and
    ``code/`` are never read as raw data.

    Raises:
        TransMRSRError: for a folder that is not a BIDS dataset, an unknown suffix, or a
            participant label with no images.
    """
    root = Path(root)
    if not (root / "dataset_description.json").is_file():
        raise TransMRSRError(f"{root}: not a BIDS dataset (no dataset_description.json)")
    known = anatomical_suffixes()
    unknown = [s for s in suffixes if s not in known]
    if unknown:
        raise TransMRSRError(
            f"--suffix {' '.join(unknown)}: not an anatomical BIDS suffix ({', '.join(known)})"
        )
    wanted = None if not participants else {_label(p) for p in participants}
    images = []
    for path in sorted(root.glob("sub-*/anat/*")) + sorted(root.glob("sub-*/ses-*/anat/*")):
        relative = path.relative_to(root).as_posix()
        image = parse_anat_path(relative)
        if image is None or image.extension not in (".nii", ".nii.gz") or not path.is_file():
            continue
        if image.suffix not in suffixes or (wanted and image.subject not in wanted):
            continue
        images.append(BidsImage(path, relative, image.entities, image.suffix, image.extension))
    if wanted:
        missing = sorted(wanted - {image.subject for image in images})
        if missing:
            raise TransMRSRError(
                f"participant {', '.join(missing)}: no {'/'.join(suffixes)} images in {root}"
            )
    return sorted(images, key=lambda image: image.relative)


def derivative_path(image: BidsImage, extension: str = ".nii.gz") -> str:
    """The restored image's path inside the derivatives dataset: the input's entities in the
    schema's order plus ``desc-restored``, e.g.
    ``sub-01/ses-1/anat/sub-01_ses-1_acq-ax_desc-restored_T1w.nii.gz``.

    Raises:
        TransMRSRError: when the schema's derivative rules would not accept the name (an input
            with an entity derivatives of its suffix cannot carry).
    """
    entities = {**image.entities, "description": DESCRIPTION}
    keys = _entity_keys()
    parts = [f"{keys[name]}-{entities[name]}" for name in keys if name in entities]
    folder = f"sub-{image.subject}"
    if "session" in entities:
        folder += f"/ses-{entities['session']}"
    relative = f"{folder}/anat/{'_'.join(parts)}_{image.suffix}{extension}"
    if not is_valid_derivative(relative):
        raise TransMRSRError(
            f"{image.relative}: its derivative {relative} breaks the BIDS naming rules"
        )
    return relative


def is_valid_derivative(relative: str) -> bool:
    """Whether the schema's rules accept ``relative`` as a file of a derivatives dataset."""
    return any(rule.match(relative) for rule in _derivative_rules())


def inherited_metadata(image: BidsImage, root: str | os.PathLike[str]) -> dict[str, Any]:
    """The image's JSON metadata by the BIDS inheritance principle: every ``.json`` from the
    dataset root down to the image's folder whose entities are a subset of the image's and
    whose suffix is the image's, the deeper overriding the shallower (``T1w.json`` at the root
    gives ``SliceThickness`` to every T1w). A sidecar that is not readable JSON is skipped with
    a warning: metadata is optional, the image is not."""
    root = Path(root)
    folders = [root]
    parts = Path(image.relative).parent.parts
    for depth in range(1, len(parts) + 1):
        folders.append(root.joinpath(*parts[:depth]))
    keys = _entity_keys()
    own = {f"{keys[name]}-{value}" for name, value in image.entities.items()}
    merged: dict[str, Any] = {}
    for folder in folders:
        for candidate in sorted(folder.glob(f"*{image.suffix}.json")):
            stem = candidate.name[: -len(f"{image.suffix}.json")].rstrip("_")
            pairs = set(stem.split("_")) if stem else set()
            if not pairs <= own:
                continue
            try:
                content = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                log.warning("%s: not readable as JSON (%s); ignored", candidate, exc)
                continue
            if isinstance(content, dict):
                merged.update(content)
    return merged


def slice_thickness_of(image: BidsImage, root: str | os.PathLike[str]) -> float | None:
    """``SliceThickness`` (mm) of the image by the inheritance principle, or ``None``."""
    value = inherited_metadata(image, root).get("SliceThickness")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _raw_description(source: Path) -> dict[str, Any]:
    try:
        content = json.loads((source / "dataset_description.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def dataset_description(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> dict:
    """``dataset_description.json`` of the derivatives dataset: a derivative, generated by this
    version of transmrsr, from the raw dataset ``source`` (linked as ``raw``, so that the
    sidecars' ``Sources`` can name inputs as ``bids:raw:sub-01/anat/...``).

    ``BIDSVersion`` is the raw dataset's when it is a released version (the derivatives follow
    the specification their source does, so a validator that knows one knows the other), else
    that of the schema the names are checked against. ``Authors`` are the raw dataset's: the
    restored images are their data.
    """
    try:
        link = os.path.relpath(Path(source).resolve(), Path(output).resolve())
    except ValueError:  # another drive on Windows
        link = Path(source).resolve().as_uri()
    raw = _raw_description(Path(source))
    version = raw.get("BIDSVersion")
    if version not in set(_schema().meta.versions):
        version = bids_version()
    description: dict[str, Any] = {
        "Name": "transmrsr: thick-slice anatomical images restored to isotropic volumes",
        "BIDSVersion": version,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": PIPELINE, "Version": __version__}],
        "DatasetLinks": {"raw": link},
    }
    authors = raw.get("Authors")
    if isinstance(authors, list) and authors and all(isinstance(a, str) for a in authors):
        description["Authors"] = authors
    return description


#: Files of the derivatives dataset that are not BIDS (the validator skips what this lists).
BIDS_IGNORE = ("report.html",)


def readme(source: str | os.PathLike[str]) -> str:
    """``README.md`` of the derivatives dataset: what it holds and how it was made."""
    return (
        "# Thick-slice anatomical images restored to isotropic volumes\n\n"
        f"Made by {PIPELINE} {__version__} (`transmrsr bids`) from the BIDS dataset "
        f"`{Path(source).resolve().name}` (linked as `raw` in `dataset_description.json`).\n\n"
        "Each `*_desc-restored_<suffix>.nii.gz` is one thick-slice anatomical image of the raw "
        "dataset restored onto an isotropic grid with the TransMRSR method; its JSON sidecar "
        "says what it was restored from (`Sources`), with which model, factor, thick axis and "
        "slice thickness, and, for a guided restore, with which guide. `report.html`, when "
        "present, is the visual QC page of the run (listed in `.bidsignore`).\n"
    )


def check_output_dataset(output: Path, source: Path) -> None:
    """Refuse to write into the raw dataset itself, or into a folder that holds another
    dataset (one whose description names a different pipeline)."""
    if output.resolve() == source.resolve():
        raise TransMRSRError(
            f"{output}: is the raw dataset; write the derivatives elsewhere, e.g. "
            f"{source / 'derivatives' / PIPELINE}"
        )
    description = output / "dataset_description.json"
    if not description.exists():
        return
    try:
        content = json.loads(description.read_text(encoding="utf-8"))
        names = [g.get("Name") for g in content.get("GeneratedBy", [])]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
        names = []
    if PIPELINE not in names:
        raise TransMRSRError(
            f"{output}: holds another dataset ({description.name} names no {PIPELINE}); "
            "give an empty or transmrsr derivatives folder"
        )


def sidecar(
    image: BidsImage,
    *,
    model: str,
    factor: float,
    thick_axis: int,
    thick_axis_name: str,
    slice_spacing: float,
    slice_thickness: float,
    adaptation_steps: int,
    consistency: bool,
    precision: str,
    destriped: bool = True,
    guide: BidsImage | None = None,
    guide_similarity: float | None = None,
    guide_alignment: float | None = None,
    guide_gain_db: float | None = None,
    skull_stripped: bool = False,
) -> dict[str, Any]:
    """The JSON sidecar of a restored image: what was restored from what, with what. A
    guided restore lists its guide among the ``Sources``, with the guide's edge similarity
    to the scan once registered and how much of it a move of 2 mm loses
    (:func:`~transmrsr.registration.guide_alignment`), and the gain its fitted branch
    brought on the scan's own held-out in-plane pairs
    (:mod:`transmrsr.inference.guided`). ``SkullStripped`` (required of anatomical
    derivatives) is the input's: the restore keeps the head it is given."""
    sources = [f"bids:raw:{image.relative}"]
    if guide is not None:
        sources.append(f"bids:raw:{guide.relative}")
    content = {
        "Description": "Thick-slice image restored to an isotropic volume with TransMRSR",
        "Sources": sources,
        "InputPath": str(image.path.resolve()),
        "Model": model,
        "Factor": round(float(factor), 6),
        "ThickAxis": int(thick_axis),
        "ThickAxisName": thick_axis_name,
        "InputSliceSpacing": round(float(slice_spacing), 6),
        "InputSliceThicknessUsed": round(float(slice_thickness), 6),
        "AdaptationSteps": int(adaptation_steps),
        "DataConsistency": bool(consistency),
        "SlabPatternRemoved": bool(destriped),
        "Precision": precision,
        "SoftwareVersion": f"{PIPELINE} {__version__}",
    }
    content["SkullStripped"] = bool(skull_stripped)
    if guide is not None and guide_similarity is not None:
        content["GuideSimilarity"] = round(float(guide_similarity), 4)
    if guide is not None and guide_alignment is not None:
        content["GuideAlignment"] = round(float(guide_alignment), 4)
    if guide is not None and guide_gain_db is not None:
        content["GuideHeldOutGainDB"] = round(float(guide_gain_db), 3)
    return content


def session_guide(
    image: BidsImage, candidates: Iterable[BidsImage], is_isotropic: Callable[[Path], bool]
) -> BidsImage | None:
    """The guide of ``image`` for a guided restore: among ``candidates`` (images with the
    guide suffix), the first of the same subject and session that ``is_isotropic`` accepts,
    preferring one without an ``acq`` or ``rec`` entity (the plain protocol); ``None`` when
    there is none. A scan never guides itself."""
    same = [
        c
        for c in candidates
        if c.path != image.path
        and c.entities.get("subject") == image.entities.get("subject")
        and c.entities.get("session") == image.entities.get("session")
    ]
    same.sort(
        key=lambda c: ("acquisition" in c.entities or "reconstruction" in c.entities, c.relative)
    )
    return next((c for c in same if is_isotropic(c.path)), None)


def to_json(content: dict[str, Any]) -> str:
    """JSON as the sidecars are written: indented, keys in their given order."""
    return json.dumps(content, indent=2) + "\n"


def subjects(images: Iterable[BidsImage]) -> list[str]:
    """The distinct subject labels of ``images``, sorted."""
    return sorted({image.subject for image in images})
