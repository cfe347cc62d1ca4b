"""The package's architecture, checked: layers import only downward, no private name crosses a module, sizes stay
small."""

import ast
from pathlib import Path

import pas

PKG = Path(pas.__file__).parent
# lower never imports higher; new capabilities (rooms of their own) sit above the layers they use
LAYERS = ("core", "steer", "score", "fit", "space", "export", "population", "eval", "serve", "cli")
MAX_MODULE_LINES = 400


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _imports(tree):
    """``(module, names)`` of every ``from pas... import ...`` and ``import pas...`` anywhere in the file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pas":
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "pas":
                    yield a.name, []


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_lower_layers_never_import_higher():
    bad = []
    for path, tree in _modules():
        here = _layer("pas." + ".".join(path.relative_to(PKG).with_suffix("").parts))
        if here is None:
            continue
        for module, _ in _imports(tree):
            there = _layer(module)
            if there is not None and LAYERS.index(there) > LAYERS.index(here):
                bad.append(f"{path.relative_to(PKG)} ({here}) imports {module} ({there})")
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path, tree in _modules():
        for module, names in _imports(tree):
            bad += [f"{path.relative_to(PKG)}: from {module} import {n}" for n in names
                    if n.startswith("_") and not n.endswith("__")]
    assert not bad, "\n".join(bad)


def test_every_folder_says_what_it_owns_and_modules_stay_small():
    for folder in LAYERS:
        init = PKG / folder / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring saying what it owns"
    long = [f"{p.relative_to(PKG)}: {n}" for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_the_vector_class_is_small():
    tree = ast.parse((PKG / "steer" / "vector.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SteeringVector"]
    assert cls.end_lineno - cls.lineno + 1 < 200
