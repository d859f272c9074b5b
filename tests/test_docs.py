"""The documentation site: the configuration table is complete, and strict builds fail on what they must.

``mkdocs build --strict`` must fail on a broken reference and on a public name
without a docstring (the hook ``docs/hooks/public_docstrings.py``); both are
proven here on a tiny site built in a subprocess, and the hook on the package.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from korea_investment_stock import FileTokenStorage, KoreaInvestment, TokenStorage

from .docs_text import DOCS, REPO, page

HOOK = DOCS / "hooks" / "public_docstrings.py"
#: A variable name the code reads: a string literal ``"KOREA_INVESTMENT_..."``.
VARIABLE = re.compile(r"[\"'](KOREA_INVESTMENT_[A-Z]+(?:_[A-Z]+)*)[\"']")


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("public_docstrings", HOOK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_the_configuration_table_names_every_variable_the_code_reads() -> None:
    read = set()
    for path in (REPO / "korea_investment_stock").rglob("*.py"):
        read |= set(VARIABLE.findall(path.read_text(encoding="utf-8")))
    assert {"KOREA_INVESTMENT_BASE_URL", "KOREA_INVESTMENT_RATE_LIMIT", "KOREA_INVESTMENT_API_KEY"} <= read
    rows = "\n".join(_table_rows(page("configuration.md").split("## Misconfigurations")[0]))
    missing = sorted(name for name in read if f"`{name}`" not in rows)
    assert missing == [], f"docs/configuration.md's table lacks {missing}"


@pytest.mark.parametrize("cls", [KoreaInvestment, TokenStorage, FileTokenStorage])
def test_the_configuration_table_names_every_constructor_argument(cls: type) -> None:
    rows = "\n".join(_table_rows(page("configuration.md")))
    names = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    missing = [name for name in names if f"`{name}`" not in rows and f"({name})`" not in rows]
    assert missing == [], f"docs/configuration.md's table lacks {cls.__name__}'s {missing}"


def test_the_redis_store_arguments_are_in_the_table_too() -> None:
    pytest.importorskip("redis")
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    test_the_configuration_table_names_every_constructor_argument(LockingRedisTokenStorage)


def test_the_package_has_no_public_name_without_a_docstring() -> None:
    hook = _hook()
    names = hook.documented_names(DOCS)
    assert "korea_investment_stock.KoreaInvestment" in names
    assert hook.undocumented(["korea_investment_stock", *names], "korea_investment_stock") == []


def test_the_hook_finds_an_undocumented_method_and_function(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "probe_pkg").mkdir()
    (tmp_path / "probe_pkg" / "__init__.py").write_text(
        '"""A probe."""\n\n'
        "class Thing:\n"
        '    """Documented."""\n\n'
        "    def said(self):\n"
        '        """Documented."""\n\n'
        "    def silent(self):\n"
        "        pass\n\n\n"
        "def bare():\n"
        "    pass\n\n\n"
        "__all__ = ['Thing', 'bare']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _hook().undocumented(["probe_pkg"], "probe_pkg") == ["probe_pkg.Thing.silent", "probe_pkg.bare"]


def _tiny_site(tmp_path: Path, page_text: str, function_doc: str) -> subprocess.CompletedProcess[str]:
    """Build a two-page site over a one-function package with this repository's hook, strictly."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "probe_site_pkg.py").write_text(f'"""Probe."""\n\n\ndef answer():\n{function_doc}    return 42\n')
    (tmp_path / "docs" / "index.md").write_text(page_text + "\n\n::: probe_site_pkg.answer\n")
    (tmp_path / "docs" / "other.md").write_text("# Other\n")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: probe\n"
        "nav: [index.md, other.md]\n"
        "validation: {links: {not_found: warn, anchors: warn}}\n"
        f"hooks: [{HOOK}]\n"
        "extra: {docstring_package: probe_site_pkg}\n"
        "plugins:\n"
        "  - mkdocstrings:\n"
        "      handlers: {python: {paths: ['.']}}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


DOCUMENTED = '    """The answer."""\n'


def test_a_strict_build_of_a_clean_site_passes(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings")
    built = _tiny_site(tmp_path, "# Probe\n\nSee [the other page](other.md).", DOCUMENTED)
    assert built.returncode == 0, built.stderr


def test_a_strict_build_fails_on_an_undocumented_public_name(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings")
    built = _tiny_site(tmp_path, "# Probe", "")
    assert built.returncode != 0
    assert "public name without a docstring: probe_site_pkg.answer" in built.stderr


def test_a_strict_build_fails_on_a_broken_reference(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings")
    built = _tiny_site(tmp_path, "# Probe\n\nSee [a page that is not there](missing.md).", DOCUMENTED)
    assert built.returncode != 0
    assert "missing.md" in built.stderr


def test_the_testing_page_says_master_files_need_the_master_url() -> None:
    text = page("testing.md")
    assert "need `KOREA_INVESTMENT_MASTER_URL` pointed at the fake" in text
    assert "master_url=" in text


def test_every_logger_the_logging_page_names_is_a_module_that_logs() -> None:
    table = page("logging.md").split("## What each level says")[0]
    named = set(re.findall(r"`(korea_investment_stock(?:\.\w+)+)`", table))
    named |= {f"korea_investment_stock.limits.{tail}" for tail in re.findall(r"`\.(\w+)`", table)}
    assert len(named) >= 10
    for name in sorted(named):
        spec = importlib.util.find_spec(name)
        assert spec and spec.origin, name
        source = Path(spec.origin).read_text(encoding="utf-8")
        # The shared limiters' fallback warning is logged under the subclass's module (budget.py).
        by_subclass = name.startswith("korea_investment_stock.limits.") and "SharedRateLimiter" in source
        assert "getLogger(__name__)" in source or by_subclass, name
