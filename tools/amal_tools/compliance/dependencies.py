"""The repository's Python files a checked file depends on: the closure of its imports.

A report records, for every obligation, the SHA-256 of each file its verdict depends on, so that
``amal report --check`` can name the verdicts a later change invalidates.  The files an obligation
declares are the ones its claim is about; the code that runs when its checks run is more: every
module their files import, transitively.  :func:`import_closure` finds it statically (``ast``, no
code runs):

- ``import a.b`` and ``from a.b import c`` name ``a``, ``a.b`` and, where it is a module, ``a.b.c``
  (packages' ``__init__.py`` run on import); relative imports are resolved against the file's
  package; a bare ``import name`` is looked up beside the importing file first (``properties/``'
  helpers are imported so);
- ``importlib.import_module("a.b")`` with a literal name counts as an import;
- a package whose ``__init__.py`` maps names to modules in a module-level dict literal
  ``_EXPORTS`` (imported lazily on first access) contributes the modules of the names an importer
  uses: ``from pkg import name``, or ``pkg.name`` / ``alias.name`` after ``import pkg [as alias]``.

Only files under the repository root (or its ``tools/`` directory, where ``amal_tools`` lives)
count; anything else (torch, the standard library) is outside.  Imports inside functions count like
any other: what a check runs may call them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

__all__ = ["import_closure"]

_SOURCE_ROOTS = (".", "tools")


def _module_file(name: str, root: Path, beside: Path | None) -> Path | None:
    parts = name.split(".")
    bases = [root / r for r in _SOURCE_ROOTS]
    if beside is not None:
        bases.insert(0, beside)
    for base in bases:
        for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def _package_of(path: Path, root: Path) -> list[str]:
    """The dotted package a file belongs to (its directory, relative to the source root holding it)."""
    directory = path.parent
    for source in _SOURCE_ROOTS:
        base = (root / source).resolve()
        try:
            relative = directory.resolve().relative_to(base)
        except ValueError:
            continue
        if source == "." and relative.parts[:1] == ("tools",):
            continue
        return list(relative.parts)
    return []


def _exports(init: Path) -> dict[str, str]:
    """The ``_EXPORTS`` name → module mapping of a package's ``__init__.py`` (empty if none)."""
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in targets) and isinstance(
                node.value, ast.Dict
            ):
                return {
                    k.value: v.value
                    for k, v in zip(node.value.keys, node.value.values, strict=True)
                    if isinstance(k, ast.Constant)
                    and isinstance(k.value, str)
                    and isinstance(v, ast.Constant)
                    and isinstance(v.value, str)
                }
    return {}


def _imported(path: Path, root: Path) -> set[str]:
    """Dotted names of the modules ``path`` imports (some may lie outside the repository)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return set()
    package = _package_of(path, root)
    names: set[str] = set()
    aliases: dict[str, str] = {}  # local name -> module it is bound to (import pkg [as alias])
    used: dict[str, set[str]] = {}  # module -> names taken from it
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
                if alias.asname:  # import a.b as x: x is a.b
                    aliases[alias.asname] = alias.name
                else:  # import a.b: a is a
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if not module:
                continue
            names.add(module)
            for alias in node.names:
                names.add(f"{module}.{alias.name}")
                used.setdefault(module, set()).add(alias.name)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            used.setdefault(aliases[node.value.id], set()).add(node.attr)
    for module, attributes in used.items():
        init = _module_file(module, root, None)
        if init is None or init.name != "__init__.py":
            continue
        exports = _exports(init)
        names.update(exports[a] for a in attributes if a in exports)
    return names


def _with_packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(paths: Iterable[str], root: Path) -> set[str]:
    """Repository-relative paths of ``paths`` and of every repository file they import, transitively."""
    root = root.resolve()
    found: set[Path] = set()
    stack = [root / p for p in paths if p.endswith(".py") and (root / p).is_file()]
    while stack:
        path = stack.pop().resolve()
        if path in found:
            continue
        found.add(path)
        for name in _imported(path, root):
            for module in _with_packages(name):
                resolved = _module_file(module, root, path.parent)
                if resolved is not None and resolved.resolve() not in found:
                    try:
                        resolved.resolve().relative_to(root)
                    except ValueError:
                        continue
                    stack.append(resolved)
    return {p.relative_to(root).as_posix() for p in found}
