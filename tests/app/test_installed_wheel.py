"""The installed form: a wheel built from this checkout, in a fresh virtual environment.

Catches what an editable checkout hides: modules or resources left out of the wheel, paths
relative to the source tree, and generic top-level package names.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, timeout: int = 900, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, venv bin folder, clean environment) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp / "dist"), str(ROOT)])
    wheel = next((tmp / "dist").glob("graftlab-*.whl"))
    venv.EnvBuilder(with_pip=True).create(tmp / "venv")
    bin_dir = tmp / "venv" / ("Scripts" if os.name == "nt" else "bin")
    py = str(bin_dir / "python")
    # The CPU torch wheel first, as the README says; an unpinned torch could pull a CUDA build.
    _run([py, "-m", "pip", "install", "-q", "torch==2.13.0"])
    _run([py, "-m", "pip", "install", "-q", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(QT_QPA_PLATFORM="offscreen", HOME=str(tmp / "home"),
               XDG_DATA_HOME=str(tmp / "home" / ".local" / "share"),
               GRAFTLAB_CACHE=str(tmp / "cache"), GRAFTLAB_PRESTART="0")
    (tmp / "home").mkdir()
    return wheel, bin_dir, env, tmp


def test_the_wheel_has_one_top_level_package(installed):
    wheel, *_ = installed
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert zf.read(top_level).decode().split() == ["graftlab"]
    roots = {n.split("/")[0] for n in names}
    assert roots == {"graftlab", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                     + ".dist-info"}
    for shipped in ("graftlab/resources/icons/graftlab.svg",
                    "graftlab/resources/icons/graftlab.png",
                    "graftlab/resources/desktop/graftlab.desktop",
                    "graftlab/resources/desktop/io.graftlab.Graftlab.metainfo.xml",
                    "graftlab/resources/examples/demo-llama.yaml",
                    "graftlab/core/process/child.py", "graftlab/app/windows/main_window.py"):
        assert shipped in names
    assert not any("/tests/" in n or "screenshots" in n for n in names)


def test_help_runs_from_the_installed_package(installed):
    _, bin_dir, env, tmp = installed
    out = _run([str(bin_dir / "graftlab"), "--help"], env=env, cwd=tmp)
    assert "train" in out.stdout
    where = _run([str(bin_dir / "python"), "-c",
                  "import graftlab.core.cli as m; print(m.__file__)"], env=env, cwd=tmp)
    assert str(tmp / "venv") in where.stdout and str(ROOT) not in where.stdout


def test_install_desktop_writes_a_valid_entry_and_icon(installed):
    _, bin_dir, env, tmp = installed
    _run([str(bin_dir / "graftlab"), "install-desktop"], env=env, cwd=tmp)
    share = Path(env["XDG_DATA_HOME"])
    entry_path = share / "applications" / "io.graftlab.Graftlab.desktop"
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(entry_path.read_text(encoding="utf-8"))
    entry = parser["Desktop Entry"]
    assert entry["Exec"].split()[0] == str(bin_dir / "python")
    assert entry["Exec"].split()[1:3] == ["-m", "graftlab.app"]
    icon = share / "icons" / "hicolor" / "256x256" / "apps" / f"{entry['Icon']}.png"
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _run([str(bin_dir / "graftlab"), "install-desktop", "--uninstall"], env=env, cwd=tmp)
    assert not entry_path.exists() and not icon.exists()


def test_the_window_opens_on_the_demo(installed):
    _, bin_dir, env, tmp = installed
    out = _run([str(bin_dir / "graftlab")], env={**env, "GRAFTLAB_QUIT_WHEN_SHOWN": "1"},
               cwd=tmp, timeout=600)
    assert "SHOWN" in out.stdout


def test_a_demo_run_trains_from_the_installed_package(installed):
    _, bin_dir, env, tmp = installed
    run = tmp / "run"
    out = _run([str(bin_dir / "python"), "-c",
                "from graftlab.resources import resource; "
                "print(resource('examples', 'demo-llama.yaml').read_text())"], env=env, cwd=tmp)
    (tmp / "demo.yaml").write_text(out.stdout, encoding="utf-8")
    _run([str(bin_dir / "graftlab"), "train", str(tmp / "demo.yaml"), "--output", str(run),
          "--max-steps", "3"], env=env, cwd=tmp, timeout=900)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "adapter" / "adapter_config.json").is_file()
