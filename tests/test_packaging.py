"""What a user installs: the pytest plugin loads every documented way, and the built sdist and
wheel carry the license, the version, the URLs and nothing half-shipped.

The plugin tests run pytest in a subprocess in an empty directory, so the project's own
conftest and configuration play no part: only the installed package and its entry point do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

import pytest

import korea_investment_stock

PLUGIN = "korea_investment_stock.testing.pytest_plugin"
REPO = Path(__file__).resolve().parents[1]

# A test that needs the plugin's fixtures and checks it is registered once, under its module name.
USES_FIXTURE = f"""
def test_fake_kis_fixture(fake_kis, fake_kis_factory, request):
    assert fake_kis.url.startswith("http://127.0.0.1:")
    assert fake_kis_factory().url != fake_kis.url
    manager = request.config.pluginmanager
    plugin = manager.get_plugin({PLUGIN!r})
    assert plugin is not None
    assert [name for name, p in manager.list_name_plugin() if p is plugin] == [{PLUGIN!r}]
"""
CONFTEST = f"pytest_plugins = [{PLUGIN!r}]\n"


def run_pytest(where: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest ARGS`` in WHERE with the user's pytest settings cleared."""
    (where / "pytest.ini").write_text("[pytest]\n")  # WHERE is the rootdir; no outside config
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=where,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_passed(result: subprocess.CompletedProcess[str], count: int = 1) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"{count} passed" in result.stdout, output


def test_the_entry_point_is_named_after_the_module() -> None:
    """pytest skips a module already registered under its name; any other name registers it twice."""
    (entry,) = [ep for ep in metadata.entry_points(group="pytest11") if ep.value == PLUGIN]
    assert entry.name == PLUGIN
    assert entry.dist is not None and entry.dist.name == "korea-investment-stock"


def test_entry_point_autoload(tmp_path: Path) -> None:
    (tmp_path / "test_it.py").write_text(USES_FIXTURE)
    assert_passed(run_pytest(tmp_path))


def test_pytest_plugins_in_a_conftest(tmp_path: Path) -> None:
    """The README's way; with the entry point named otherwise, pytest aborted with
    ``ValueError: Plugin already registered under a different name``."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text(USES_FIXTURE)
    assert_passed(run_pytest(tmp_path))


def test_dash_p_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "test_it.py").write_text(USES_FIXTURE)
    assert_passed(run_pytest(tmp_path, "-p", PLUGIN))


def test_dash_p_together_with_a_conftest(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text(USES_FIXTURE)
    assert_passed(run_pytest(tmp_path, "-p", PLUGIN))


def test_autoload_off_and_the_conftest_opts_in(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text(USES_FIXTURE)
    assert_passed(run_pytest(tmp_path, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))


def test_dash_p_no_disables_it_even_with_a_conftest(tmp_path: Path) -> None:
    """``-p no:NAME`` blocks a plugin by name, so the conftest's request is skipped, quietly:
    pytest runs, the other tests pass, and only a test that needs the fixture errors."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text(
        f"def test_plain(request):\n    assert request.config.pluginmanager.get_plugin({PLUGIN!r}) is None\n"
        "def test_needs_it(fake_kis):\n    pass\n"
    )
    result = run_pytest(tmp_path, "-p", f"no:{PLUGIN}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 passed, 1 error" in result.stdout, output
    assert "fixture 'fake_kis' not found" in result.stdout, output
    assert "already registered" not in output


# --- the built distributions -----------------------------------------------------------------

_NOT_SOURCE = (".git", ".venv*", ".tox", "*.egg-info", "build", "dist", "__pycache__", ".*_cache", ".hypothesis")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``python -m build`` on a copy of the checkout: the sdist, then the wheel built from that sdist.

    Isolated, as pip builds it for a user: the build environment gets setuptools from
    ``[build-system] requires``.  The copy carries tests/ and friends, so leaving them out is
    MANIFEST.in's doing.
    """
    base = tmp_path_factory.mktemp("dist")
    source, out = base / "src", base / "out"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_sdist_ships_the_package_and_its_documents_but_no_test_tree(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
        pkg_info = archive.extractfile(next(m for m in archive.getmembers() if m.name.endswith("/PKG-INFO")))
        assert pkg_info is not None
        headers = HeaderParser().parsestr(pkg_info.read().decode("utf-8"))
    top = {name.split("/", 1)[0] for name in names}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "PKG-INFO", "korea_investment_stock"} <= top
    # A test tree without its conftest, helpers and tox.ini cannot run: ship all of it or none.
    assert not top & {"tests", "stress", "bench", "testsupport", "docs", ".ci", "run", "tox.ini"}, sorted(top)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "korea_investment_stock/testing/pytest_plugin.py" in names
    assert headers["Version"] == korea_investment_stock.__version__


@pytest.mark.slow
def test_wheel_metadata_is_honest(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = HeaderParser().parsestr(archive.read(meta).decode("utf-8"))
        entry_points = archive.read(meta.replace("METADATA", "entry_points.txt")).decode("utf-8")
    # One version, read from korea_investment_stock.__version__ at build time.
    assert headers["Version"] == korea_investment_stock.__version__
    assert headers["Name"] == "korea-investment-stock"
    assert headers["Requires-Python"] == ">=3.11"
    # PEP 639: an SPDX expression and the license file, and no License classifier beside them.
    assert headers["License-Expression"] == "MIT"
    assert headers.get_all("License-File") == ["LICENSE"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    classifiers = headers.get_all("Classifier") or []
    assert not [c for c in classifiers if c.startswith("License ::")]
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert {"Operating System :: POSIX :: Linux", "Operating System :: MacOS", "Typing :: Typed"} <= set(classifiers)
    urls = dict(u.split(", ", 1) for u in headers.get_all("Project-URL") or [])
    assert {"Homepage", "Repository", "Issues"} <= set(urls)
    assert all(u.startswith("https://github.com/") for u in urls.values())
    # The typed package, with the fake server and its pytest plugin; nothing else at top level.
    assert "korea_investment_stock/py.typed" in names
    for module in ("__init__", "server", "pytest_plugin", "__main__"):
        assert f"korea_investment_stock/testing/{module}.py" in names
    assert {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")} == {
        "korea_investment_stock"
    }
    assert f"{PLUGIN} = {PLUGIN}" in entry_points
    assert "kis-token = korea_investment_stock.cli:main" in entry_points


# ------------------------------------------------------------------ the install story
INDEX_NAME_INSTALL = re.compile(
    r"pip install\s+(-U\s+|--upgrade\s+)?[\"']?korea-investment-stock(\[[a-z,]+\])?[\"']?(\s|$)"
)


def test_the_version_cannot_be_mistaken_for_a_release_of_that_name_on_the_index() -> None:
    """The package index's korea-investment-stock is another code base, 0.1.10 to 0.19.0 (0.7.0 included)."""
    from packaging.version import Version

    version = Version(korea_investment_stock.__version__)
    assert version.major >= 2000, "calendar versions: never one of the index's 0.x releases, never below them"
    assert version.local == "fleet", "a local label: the index refuses it, and it names this code base"
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## \[([^\]]+)\]", changelog, re.M)
    assert first and first.group(1) == korea_investment_stock.__version__


def test_no_text_tells_to_install_this_package_by_name_from_the_index() -> None:
    """`pip install korea-investment-stock` installs the index's latest release, another code base."""
    texts = {"README.md": (REPO / "README.md").read_text(encoding="utf-8")}
    for path in (REPO / "korea_investment_stock").rglob("*.py"):
        texts[str(path.relative_to(REPO))] = path.read_text(encoding="utf-8")
    offenders = [name for name, text in texts.items() if INDEX_NAME_INSTALL.search(text)]
    assert offenders == []
    installation = (REPO / "README.md").read_text(encoding="utf-8").split("## Installation", 1)[1].split("\n## ")[0]
    assert "git clone" in installation and "pip install ." in installation and ".whl" in installation
