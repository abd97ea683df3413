"""requirements.lock, what make install installs: every requirement of pyproject.toml and
constraints.txt pinned in it with hashes, the lock in sync with them, pip able to install it here as
it is, and make upgrade's re-resolution giving a lock that keeps all of that (torch stays 2.13.0).

The real tools, as the Makefile runs them: make lock (uv pip compile, with pip's own sources) into a
temporary file, and pip's resolver on the result (--dry-run: nothing installed). They need PyPI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from harness import require

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
# The venv running the tests: make install made it from the lock, with the lock's uv and pip.
VENV = Path(sys.prefix)
TORCH = Version("2.13.0+cpu")


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: frozenset[str]


def parse_lock(text: str) -> dict[str, Pin]:
    """Each entry of a uv-compiled lock: `name==version \\` and its `--hash=sha256:...` lines.
    Anything else that is not a comment (a range, a URL, an -e line, an option) fails here."""
    pins: dict[str, Pin] = {}
    for entry in re.split(r"\n(?=\S)", text.strip()):
        first = entry.splitlines()[0]
        if first.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\", first)
        assert m, f"not an exact pin with hashes: {first!r}"
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
        assert hashes, f"{first} has no hash"
        pins[canonicalize_name(m[1])] = Pin(Version(m[2]), hashes)
    return pins


def requirements() -> list[Requirement]:
    """What make install must satisfy: the project's dependencies, its test, dev and ray extras, the
    build backend (the editable install uses .venv's own) and constraints.txt's pins."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    lines = [
        *project["project"]["dependencies"],
        *extras["test"],
        *extras["dev"],
        *extras["ray"],
        *project["build-system"]["requires"],
        *(
            line.split("#")[0].strip()
            for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.split("#")[0].strip()
        ),
    ]
    return [r for r in map(Requirement, lines) if r.marker is None or r.marker.evaluate()]


def assert_satisfies(pins: dict[str, Pin]) -> None:
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in the lock"
        pinned = pins[name].version
        assert req.specifier.contains(pinned, prereleases=True), f"lock has {name}=={pinned}, pyproject asks {req}"
    assert pins["torch"].version == TORCH, f"torch {pins['torch'].version}, not the CPU build of constraints.txt"


def make_lock(out: Path, *args: str) -> dict[str, Pin]:
    """make lock into `out` (a copy of the committed lock: its pins are uv's preferences)."""
    require(shutil.which("make") is not None, "make")
    require((VENV / "bin" / "uv").exists(), f"uv in {VENV} (make install puts it there)")
    shutil.copyfile(LOCK, out)
    # A make running these tests (make test) would hand its own flags and variables down.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "lock", f"VENV={VENV}", f"LOCK={out}", *args],
        env=env,
        check=True,
        timeout=120,
    )
    return parse_lock(out.read_text())


@dataclass(frozen=True)
class Pick:
    version: Version
    file: str
    sha256: str | None


def pip_picks(requirements: Path, tmp: Path, *args: str) -> dict[str, Pick]:
    """What pip, as configured here, would install for each package, and from which file:
    install --dry-run --report, the resolution of a real install without the installing."""
    report = tmp / "report.json"
    subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        + ["--report", str(report), "-r", str(requirements), *args],
        check=True,
        timeout=120,
    )
    return {
        canonicalize_name(item["metadata"]["name"]): Pick(
            Version(item["metadata"]["version"]),
            unquote(item["download_info"]["url"].rsplit("/", 1)[-1]),
            item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256"),
        )
        for item in json.loads(report.read_text())["install"]
    }


def assert_pip_takes(lock: Path, tmp: Path) -> dict[str, Pick]:
    """pip, given the lock's pins without their hashes, needs no other package and no other version
    (the lock is complete), and the file it takes for each is one whose hash the lock lists. Then
    --require-hashes (make install) takes the same files: a lock whose hashes came from a partial copy
    of PyPI made it install soundfile's wheel without libsndfile, and nothing else failed."""
    pins = parse_lock(lock.read_text())
    bare = tmp / "pins.txt"
    bare.write_text("".join(f"{name}=={pin.version}\n" for name, pin in pins.items()))
    picks = pip_picks(bare, tmp)
    assert set(picks) == set(pins), "pip resolves the pins to other packages than the lock's"
    for name, pick in picks.items():
        assert pick.version == pins[name].version, f"pip takes {name} {pick.version}"
        assert pick.sha256 in pins[name].hashes, f"the lock's hashes for {name} leave out {pick.file}, pip's pick"
    assert picks["torch"].file.startswith(f"torch-{TORCH}-"), picks["torch"]
    return picks


def test_lock_pins_every_requirement_with_hashes() -> None:
    assert_satisfies(parse_lock(LOCK.read_text()))


def test_lock_in_sync_with_pyproject_and_installable(tmp_path: Path) -> None:
    """make lock on a copy changes nothing: the lock was compiled from pyproject.toml and
    constraints.txt as they are. (Run make lock after editing either.)"""
    out = tmp_path / "requirements.lock"
    make_lock(out)
    assert out.read_text() == LOCK.read_text(), "requirements.lock is stale: run make lock"
    # make install itself runs pip --require-hashes on it.
    assert_pip_takes(LOCK, tmp_path)


def test_upgrade_keeps_pyproject_and_torch(tmp_path: Path) -> None:
    """make upgrade's re-resolution, every pin to the newest release allowed, into a copy."""
    out = tmp_path / "requirements.lock"
    upgraded = make_lock(out, "LOCK_UPGRADE=--upgrade")
    assert_satisfies(upgraded)
    picks = assert_pip_takes(out, tmp_path)
    # As make upgrade then installs it.
    assert pip_picks(out, tmp_path, "--require-hashes") == picks
