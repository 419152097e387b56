"""Imports run downward only: cli -> api -> evaluation/training -> inference -> the rest.

Inference must run without training code (a restore should not break because a training module
changed, or need its dependencies), and nothing but the command line may depend on the command
line. Every module's imports are read with ``ast`` (function-level and ``TYPE_CHECKING`` ones
included), so an upward import fails here with the module, line and import named, before it
ever becomes a cycle or a surprise dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "transmrsr"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Layers from the bottom up: a module may import its own layer and the layers below it.
#: Modules under none of these prefixes (models, io, geometry, devices, pairs, degradation,
#: interpolation, ...) are the base layer. ``transmrsr`` itself is the package's public face:
#: it serves :mod:`transmrsr.api`, so it sits with it (lower modules import
#: ``transmrsr._version``, not the package, for the version).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ()),
    ("inference", ("transmrsr.inference",)),
    ("evaluation/training", ("transmrsr.evaluation", "transmrsr.training")),
    ("api", ("transmrsr.api", "transmrsr")),
    ("cli", ("transmrsr.cli", "transmrsr.__main__")),
)
ORDER = " > ".join(name for name, _ in reversed(LAYERS))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of a ``transmrsr`` module (longest prefix; the bare package
    name matches only itself)."""
    best, best_len = 0, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != PACKAGE and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # the transmrsr module imported
    text: str  # the import as written


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every ``transmrsr`` module that ``source`` (the code of ``module``) imports."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.append(Import(node.lineno, alias.name, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != PACKAGE:
                continue
            dots = "." * node.level
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in known else base
                text = f"from {dots}{node.module or ''} import {alias.name}"
                found.append(Import(node.lineno, target, text))
    return found


def upward_imports(
    modules: dict[str, Path], *, root: Path = ROOT, known: set[str] | None = None
) -> list[str]:
    """One message per import of a higher layer, naming the file, line, module and import.

    ``known``: the package's module names (default ``modules``'), to tell ``from transmrsr
    import pairs`` (a module) from ``from transmrsr import restore`` (a name of the package).
    """
    known = set(modules) if known is None else known
    problems = []
    for module, path in modules.items():
        own = layer_of(module)
        source = path.read_text(encoding="utf-8")
        for imp in imports_of(source, module, path.name == "__init__.py", known):
            theirs = layer_of(imp.target)
            if theirs > own:
                problems.append(
                    f"{path.relative_to(root.parent)}:{imp.line}: {module} ({LAYERS[own][0]}) "
                    f"imports {imp.target} ({LAYERS[theirs][0]}): `{imp.text}`"
                )
    return problems


def test_no_module_imports_a_higher_layer():
    problems = upward_imports(all_modules())
    if problems:
        pytest.fail(
            f"upward imports (layers from the top: {ORDER}; a module may import only its own "
            "layer and those below; move what both need to a lower module):\n"
            + "\n".join(problems),
            pytrace=False,
        )


def test_the_layers_are_the_ones_the_package_has():
    """A renamed or new top-level part must be placed on purpose, not fall into ``base``."""
    modules = all_modules()
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            assert prefix in modules, f"{prefix} is in LAYERS but not in the package"
    assert layer_of("transmrsr.inference.restore") == 1
    assert layer_of("transmrsr.training.data") == layer_of("transmrsr.evaluation.benchmark") == 2
    assert layer_of("transmrsr.cli.main") == 4 and layer_of("transmrsr.api") == 3
    for base in ("transmrsr.models.files", "transmrsr.pairs", "transmrsr.devices", "transmrsr.io"):
        assert layer_of(base) == 0, base


def test_the_checker_names_an_upward_import(tmp_path):
    source = textwrap.dedent(
        """
        from transmrsr.errors import TransMRSRError
        from transmrsr import pairs, restore

        def late():
            from ..training.data import PairDataset
            import transmrsr.cli.main
        """
    )
    known = {"transmrsr", "transmrsr.pairs", "transmrsr.training.data", "transmrsr.cli.main"}
    found = imports_of(source, "transmrsr.inference.fake", False, known)
    assert [(i.target, i.line) for i in found] == [
        ("transmrsr.errors", 2),
        ("transmrsr.pairs", 3),
        ("transmrsr", 3),  # an API name served by the package: the api layer
        ("transmrsr.training.data", 6),
        ("transmrsr.cli.main", 7),
    ]
    (tmp_path / "fake.py").write_text(source)
    fake = {"transmrsr.inference.fake": tmp_path / "fake.py"}
    problems = upward_imports(fake, root=tmp_path, known=known)
    assert len(problems) == 3, problems
    assert "fake.py:3:" in problems[0] and "`from transmrsr import restore`" in problems[0]
    assert "transmrsr.inference.fake (inference) imports transmrsr.training.data" in problems[1]
    assert "`from ..training.data import PairDataset`" in problems[1]
    assert "fake.py:7:" in problems[2] and "(cli)" in problems[2]


def test_inference_runs_without_training_evaluation_or_cli_code():
    """What the ast check promises, at run time: lazy and dynamic imports included."""
    code = (
        "import sys\n"
        "import transmrsr.inference.restore, transmrsr.inference.adapt, transmrsr.pairs\n"
        "import transmrsr.models.files, transmrsr.devices, transmrsr.io, transmrsr.geometry\n"
        "print(' '.join(m for m in sys.modules if m.startswith('transmrsr')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    loaded = out.stdout.split()
    assert "transmrsr.inference.restore" in loaded
    higher = [
        m
        for m in loaded
        if m.startswith(("transmrsr.training", "transmrsr.evaluation", "transmrsr.cli"))
        or m == "transmrsr.api"
    ]
    assert not higher, f"importing inference loaded {higher}"


def test_no_two_modules_import_each_other():
    """A cycle is an upward import inside a layer: ``io`` reads DICOM folders through
    ``dicom``, which builds its volume from ``volume``, never from ``io``."""
    modules = all_modules()
    graph = {
        name: {
            i.target
            for i in imports_of(path.read_text(), name, path.name == "__init__.py", set(modules))
        }
        for name, path in modules.items()
    }
    pairs = sorted(
        f"{a} <-> {b}"
        for a, targets in graph.items()
        for b in targets
        if a < b and a in graph.get(b, ())
    )
    assert not pairs, "modules that import each other:\n" + "\n".join(pairs)
