"""The wheel a user gets from `pip install .`: it carries every built-in device profile and the operator
console, and runs the demo.

Builds the wheel from a copy of the source (the repository is left untouched), installs it with
`--no-deps` into a fresh venv that sees this environment's dependencies through a .pth file (no
network), and runs the installed `sosbridge` from an unrelated directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.paths import ROOT

SKIP = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "var", "site", "tests", "bench"
)


# The first test also builds the wheel and installs it into a fresh venv (up to 300 s each, below).
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    dist = tmp / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."]
    subprocess.run(build, cwd=src, check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("sos_bridge-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # This environment's dependencies, but not its editable sos-bridge (a .pth path line adds the
    # directory only; the editable finder's own .pth inside it is not processed).
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "sosbridge-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return venv


def run_installed(venv: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_") and k != "PYTHONPATH"}
    env.update({"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")})
    return subprocess.run(
        [str(venv / "bin" / "sosbridge"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_wheel_ships_every_builtin_profile(installed: Path, tmp_path: Path) -> None:
    builtins = sorted(p.stem for p in (ROOT / "hardware" / "profiles").glob("*.yaml"))
    assert len(builtins) >= 17
    listed = run_installed(installed, tmp_path, "profiles", "list", "--ids")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == builtins
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import bridge.devices.profiles as p; print(p.BUILTIN_PROFILE_DIR)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(installed)), where  # from the installed wheel, not this checkout


def test_the_installed_demo_passes(installed: Path, tmp_path: Path) -> None:
    demo = run_installed(installed, tmp_path, "demo")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]


def test_the_wheel_ships_the_operator_console(installed: Path, tmp_path: Path) -> None:
    code = (
        "import simulator.platform.console as c, sys; print(c.__file__); "
        "sys.stdout.write(''.join(str(len(c.asset(n))) + ' ' for n in ('index.html', 'console.js', 'console.css')))"
    )
    out = subprocess.run(
        [str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0].startswith(str(installed)), out  # from the installed wheel, not this checkout
    assert all(int(n) > 1000 for n in out[1].split()), out
