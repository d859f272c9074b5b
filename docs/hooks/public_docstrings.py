"""MkDocs hook: every public name the site documents must have a docstring.

mkdocstrings renders an undocumented function or class as a bare signature
and says nothing, so a strict build alone would not catch one.  This hook
imports what the reference pages name (``::: dotted.name``) and the package's
``__all__``, walks their public members, and logs a warning for each one
without a docstring (inherited docstrings count): ``mkdocs build --strict``
turns the warnings into a failed build.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.public_docstrings")

#: A mkdocstrings block in a page: ``::: package.module.Name`` at the start of a line.
_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)", re.M)


def resolve(dotted: str) -> Any:
    """Import the longest importable module prefix of ``dotted``, then follow attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ImportError(f"cannot import any part of {dotted!r}")


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public functions and properties a class defines itself (inherited ones are checked at their base)."""
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if inspect.isfunction(member) or isinstance(member, property):
            yield name, getattr(cls, name) if not isinstance(member, property) else member


def _documented(obj: Any) -> bool:
    return bool((inspect.getdoc(obj) or "").strip())


def undocumented(dotted_names: Iterable[str], package: str) -> list[str]:
    """The public names under ``dotted_names`` (defined in ``package``) that have no docstring."""
    missing: list[str] = []
    seen: set[int] = set()

    def visit(obj: Any, where: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if inspect.ismodule(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(where)
            for name in getattr(obj, "__all__", ()):
                visit(getattr(obj, name), f"{where}.{name}")
            return
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            return  # constants and type aliases carry no docstring of their own
        if not str(getattr(obj, "__module__", "")).startswith(package):
            return  # re-exported from elsewhere
        if not _documented(obj):
            missing.append(where)
        if inspect.isclass(obj):
            for name, member in _members(obj):
                if not _documented(member):
                    missing.append(f"{where}.{name}")

    for dotted in dotted_names:
        visit(resolve(dotted), dotted)
    return missing


def documented_names(docs_dir: Path) -> list[str]:
    """Every ``::: name`` in the pages under ``docs_dir``."""
    names: list[str] = []
    for page in sorted(docs_dir.rglob("*.md")):
        names += _DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    return names


def on_config(config: Any) -> Any:
    """Warn (a failure under ``--strict``) for each public name without a docstring."""
    docs_dir = Path(config["docs_dir"])
    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:  # check the clone being built, not some installed copy
        sys.path.insert(0, root)
    package = str(config.get("extra", {}).get("docstring_package") or "korea_investment_stock")
    for name in undocumented([package, *documented_names(docs_dir)], package):
        log.warning("public name without a docstring: %s (say what it is for, and why)", name)
    return config
