"""What `python -m build` makes: an sdist whose unit tests pass once unpacked, and a
wheel that holds the package only, with the metadata pyproject.toml promises.

Built without build isolation (no network at test time): the test extras install
build and a setuptools new enough for the PEP 639 license fields.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from inosync import __version__

pytestmark = pytest.mark.slow  # runs the build backend and a whole pytest run

ROOT = Path(__file__).resolve().parent.parent
NAME = f"inosync-{__version__}"

# Everything a sysadmin or a packager needs from the source tarball.
EXPECTED = [
    "LICENSE", "README.rst", "inosync.conf.example", "pyproject.toml", "setup.py",
    "MANIFEST.in", "PKG-INFO", "inosync/__init__.py", "inosync/cli.py",
    "tests/run", "tests/run-pythons", "tests/constraints.txt", "tests/conftest.py",
    "tests/helpers.py", "tests/test_packaging.py",
    "tests/test_manpage.py", "contrib/inosync.service", "contrib/inosync.init",
    "demo/run", "demo/inosync.conf", "doc/inosync.8", "doc/inosync.8.rst",
    "doc/build_man.py", "doc/man_settings.py", "bench/bench.py", ".ci/run",
    "debian/control", "debian/rules", "debian/changelog", "debian/patches/series",
]
EXECUTABLE = ["tests/run", "tests/run-pythons", "demo/run", "contrib/inosync.init", ".ci/run",
              "debian/rules"]


def build(kind: str, srcdir: Path, outdir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "build", f"--{kind}", "--no-isolation",
                    "--outdir", str(outdir), str(srcdir)],
                   check=True, capture_output=True, timeout=300)
    (built,) = outdir.iterdir()
    return built


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("sdist", ROOT, tmp_path_factory.mktemp("dist"))


def unpack(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as tar:
        # The "data" filter (3.12+, backported to security releases) refuses
        # absolute names and links leaving `into`; we made this archive anyway.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)
    return into / NAME


def test_sdist_holds_tests_docs_and_service_files(sdist: Path, tmp_path: Path) -> None:
    assert sdist.name == f"{NAME}.tar.gz"
    tree = unpack(sdist, tmp_path)
    missing = [name for name in EXPECTED if not (tree / name).is_file()]
    assert missing == []
    not_executable = [name for name in EXECUTABLE if not os.access(tree / name, os.X_OK)]
    assert not_executable == []
    # Leftovers of a demo or benchmark run, or bytecode, are not shipped.
    assert not list(tree.rglob("__pycache__"))
    assert not (tree / "demo" / "src").exists() and not (tree / "bench" / "results").exists()
    assert not (tree / "demo" / "state").exists()


def test_unit_tests_pass_in_the_unpacked_sdist(sdist: Path, tmp_path: Path) -> None:
    tree = unpack(sdist, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # The unpacked package, not this checkout's editable install, is the one tested.
    where = subprocess.run([sys.executable, "-c", "import inosync; print(inosync.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()) == tree / "inosync" / "__init__.py"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow",
                          "-p", "no:cacheprovider"],
                         env=env, cwd=tree, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]


def test_wheel_holds_only_the_package_and_its_metadata(sdist: Path, tmp_path: Path) -> None:
    # As pip and build do: the wheel is built from the unpacked sdist.
    wheel = build("wheel", unpack(sdist, tmp_path / "src"), tmp_path / "dist")
    assert wheel.name == f"{NAME}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = Parser().parsestr(zf.read(f"{NAME}.dist-info/METADATA").decode())
    assert {name.split("/")[0] for name in names} == {"inosync", f"{NAME}.dist-info"}
    assert f"{NAME}.dist-info/licenses/LICENSE" in names
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata.get_all("License-File") == ["LICENSE"]
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert urls["Source"] == "https://github.com/inosync/inosync"
    classifiers = metadata.get_all("Classifier")
    assert "Intended Audience :: System Administrators" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression says it
    with zipfile.ZipFile(wheel) as zf:
        entry = zf.read(f"{NAME}.dist-info/entry_points.txt").decode()
    assert "inosync = inosync.cli:main" in entry


def test_setup_py_shim_prints_the_version() -> None:
    run = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.strip().splitlines()[-1] == __version__
