"""The layering docs/architecture.md draws, enforced: every import inside dreamsr points down the stack, and no
module imports another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "dreamsr"

# top to bottom, as docs/architecture.md's table
LAYERS = {"face": 6, "jobs": 5, "model": 4, "families": 3, "parts": 2, "base": 1}
PARTS = {"samplers", "losses", "first_stages", "options", "metrics", "data"}
# the released-weight converters (dreamsr/converters/) are the `weights convert` job: they write checkpoints, so
# they sit at the jobs level, above dreamsr.checkpoint
CONVERTERS = "converters"


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top in ("cli", "launch", "__main__"):
        return LAYERS["face"]
    if top in ("jobs", CONVERTERS):
        return LAYERS["jobs"]
    if top == "checkpoint":
        return LAYERS["model"]
    if top in ("families", "processes"):
        return LAYERS["families"]
    if top in PARTS:
        return LAYERS["parts"]
    return LAYERS["base"]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def imports(path: Path) -> list[tuple[str, str]]:
    """(imported module, name) of every ``from dreamsr... import name`` in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dreamsr"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (ROOT.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (ROOT.parent / Path(*sub.split("."))).is_dir()
                out.append((sub if is_module else node.module, alias.name))
    return out


def test_every_import_points_down_the_stack() -> None:
    upward = []
    for path in ROOT.rglob("*.py"):
        me = module_name(path)
        for target, _ in imports(path):
            if layer(target) > layer(me) and not target.startswith(me) and not me.startswith(target):
                upward.append(f"{me} -> {target}")
    assert upward == []


def test_no_private_name_crosses_modules() -> None:
    crossing = [f"{module_name(p)}: {t}.{n}" for p in ROOT.rglob("*.py") for t, n in imports(p)
                if n.startswith("_") and n != "__version__"]
    assert crossing == []


def test_the_layering_sees_real_imports() -> None:
    """The check above reads real edges (it would pass vacuously on a parser that found none)."""
    edges = {(module_name(p), t) for p in ROOT.rglob("*.py") for t, _ in imports(p)}
    assert ("dreamsr.jobs.pipeline", "dreamsr.checkpoint") in edges
    assert ("dreamsr.checkpoint", "dreamsr.families") in edges
    assert layer("dreamsr.jobs.pipeline") > layer("dreamsr.checkpoint") > layer("dreamsr.families.idm")


def test_converters_import_at_module_level() -> None:
    """The converters import what they use at the top of the module (no function-level import hides a circle:
    ``checkpoint`` imports ``families``, so a converter inside a family would need one)."""
    hidden = []
    for path in (ROOT / CONVERTERS).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        hidden += [f"{module_name(path)}:{n.lineno}" for n in ast.walk(tree)
                   if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("dreamsr") and id(n) not in top]
    assert hidden == []
    edges = {(module_name(p), t) for p in (ROOT / CONVERTERS).rglob("*.py") for t, _ in imports(p)}
    assert ("dreamsr.converters.resshift", "dreamsr.checkpoint") in edges
    assert layer("dreamsr.converters.idm") > layer("dreamsr.checkpoint")
    assert not any(t.startswith("dreamsr.converters") for p in (ROOT / "families").rglob("*.py")
                   for t, _ in imports(p))
