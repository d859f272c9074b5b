"""The documentation's text, for tests that run or check what it says (one copy: what users read)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"


def page(name: str) -> str:
    """The text of ``docs/<name>`` (or of the README for ``README.md``)."""
    return (README if name == "README.md" else DOCS / name).read_text(encoding="utf-8")


def every_page() -> dict[str, str]:
    """The README and every page under ``docs/``, by name."""
    texts = {"README.md": README.read_text(encoding="utf-8")}
    for path in sorted(DOCS.rglob("*.md")):
        texts[str(path.relative_to(REPO))] = path.read_text(encoding="utf-8")
    return texts


def section(name: str, heading: str) -> str:
    """The text of page ``name`` from ``heading`` on."""
    text = page(name)
    return text[text.index(heading) :]


def python_examples(name: str, heading: str) -> list[str]:
    """The ```` ```python ```` blocks of page ``name`` from ``heading`` on, in order."""
    return re.findall(r"```python\n(.*?)```", section(name, heading), re.S)


def example_after(name: str, heading: str) -> str:
    """The first python block of page ``name`` after ``heading``."""
    examples = python_examples(name, heading)
    assert examples, f"no python example under {heading!r} in {name}"
    return examples[0]
