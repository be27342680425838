"""Desktop entry, AppStream metadata, icons, PyInstaller spec and `install-desktop`."""

from __future__ import annotations

import ast
import configparser
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from graftlab.app import desktop_install
from graftlab.app.desktop_install import APP_ID, command_for_exec, desktop_entry, install, uninstall
from graftlab.resources import as_file, resource

ROOT = Path(__file__).resolve().parents[2]
DESKTOP = ROOT / "resources" / "desktop" / "graftlab.desktop"
METAINFO = ROOT / "resources" / "desktop" / f"{APP_ID}.metainfo.xml"


def parse_desktop(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(text)
    assert parser.sections() == ["Desktop Entry"]
    return dict(parser["Desktop Entry"])


def test_desktop_entry_has_the_required_keys():
    entry = parse_desktop(DESKTOP.read_text(encoding="utf-8"))
    assert entry["Type"] == "Application" and entry["Name"] == "Graftlab"
    assert entry["Exec"].split()[0] == "graftlab" and entry["Icon"] == APP_ID
    assert entry["Terminal"] == "false"
    assert entry["Categories"].endswith(";") and entry["Keywords"].endswith(";")
    assert "LoRA" in entry["Keywords"]


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-utils not installed")
@pytest.mark.slow
def test_desktop_files_validate(tmp_path):
    installed = tmp_path / f"{APP_ID}.desktop"
    installed.write_text(desktop_entry(), encoding="utf-8")
    for path in (DESKTOP, installed):
        out = subprocess.run(["desktop-file-validate", str(path)], capture_output=True,
                             text=True)
        assert out.returncode == 0 and "error" not in out.stdout, out.stdout


def test_metainfo_structure():
    root = ET.parse(METAINFO).getroot()
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == APP_ID
    assert root.findtext("metadata_license") == "CC0-1.0"
    assert root.findtext("project_license") == "Apache-2.0"
    assert root.findtext("name") == "Graftlab"
    summary = root.findtext("summary")
    assert summary and len(summary) < 80 and not summary.endswith(".")
    assert root.find("description/p") is not None
    launchable = root.find("launchable")
    assert launchable.get("type") == "desktop-id" and launchable.text == f"{APP_ID}.desktop"
    assert root.find("content_rating").get("type") == "oars-1.1"
    release = root.find("releases/release")
    assert release.get("version") and release.get("date")
    assert root.findtext("provides/binary") == "graftlab"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("appstreamcli") is None, reason="appstreamcli not installed")
def test_metainfo_validates():
    out = subprocess.run(["appstreamcli", "validate", "--no-net", str(METAINFO)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_icons():
    with as_file(desktop_install.icon_resource("svg")) as svg_path:
        svg = ET.parse(svg_path).getroot()
    assert svg.tag.endswith("svg") and svg.get("viewBox") == "0 0 256 256"
    with as_file(desktop_install.icon_resource("png")) as png_path:
        assert png_size(png_path) == (256, 256)


def test_icon_svg_renders(qtbot):
    from PySide6.QtCore import QByteArray
    from PySide6.QtSvg import QSvgRenderer

    data = QByteArray(desktop_install.icon_resource("svg").read_bytes())
    assert QSvgRenderer(data).isValid()


def test_install_desktop_into_a_prefix(tmp_path):
    written = install(tmp_path)
    rel = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert rel == sorted([
        f"applications/{APP_ID}.desktop",
        f"icons/hicolor/scalable/apps/{APP_ID}.svg",
        f"icons/hicolor/256x256/apps/{APP_ID}.png",
        f"metainfo/{APP_ID}.metainfo.xml",
    ])
    entry = parse_desktop(written[0].read_text(encoding="utf-8"))
    argv = command_for_exec(entry["Exec"])
    assert argv == [sys.executable, "-m", "graftlab.app"] and entry["Exec"].endswith("%F")
    assert entry["Icon"] == APP_ID
    assert png_size(written[2]) == (256, 256)
    assert install(tmp_path) == written  # idempotent
    assert not list(tmp_path.rglob(".*.tmp"))
    assert sorted(uninstall(tmp_path)) == sorted(written)
    assert not any(p.exists() for p in written)


@pytest.mark.slow
def test_the_installed_command_starts_the_app_module():
    out = subprocess.run([sys.executable, "-c", "import graftlab.app.__main__ as m; print(m.main)"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_exec_quotes_paths_with_spaces(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/opt/my python/bin/python3")
    line = desktop_install.exec_line()
    assert line == '"/opt/my python/bin/python3" -m graftlab.app %F'
    assert command_for_exec(line)[0] == "/opt/my python/bin/python3"


def test_pyinstaller_spec_is_python_and_ships_the_resources():
    spec = (ROOT / "packaging" / "graftlab.spec").read_text(encoding="utf-8")
    ast.parse(spec)
    for needed in ("graftlab_launcher.py", "collect_data_files(\"graftlab.resources\"",
                   "collect_submodules(\"graftlab.app\")", "COLLECT("):
        assert needed in spec
    ast.parse((ROOT / "packaging" / "graftlab_launcher.py").read_text(encoding="utf-8"))


def test_uninstall_flag_removes_only_what_install_wrote(tmp_path, capsys):
    from graftlab.app.launcher import main

    own = tmp_path / "applications" / "someone-else.desktop"
    own.parent.mkdir(parents=True)
    own.write_text("[Desktop Entry]\n")
    assert main(["install-desktop", "--prefix", str(tmp_path)]) == 0
    assert main(["install-desktop", "--prefix", str(tmp_path), "--uninstall"]) == 0
    assert "removed" in capsys.readouterr().out
    assert own.read_text() == "[Desktop Entry]\n"
    assert not (tmp_path / "applications" / f"{APP_ID}.desktop").exists()
    assert main(["install-desktop", "--prefix", str(tmp_path), "--uninstall"]) == 0
    assert "nothing to remove" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["demo-llama.yaml", "demo-bert-classify.yaml"])
def test_example_run_files_are_valid_runs(name):
    from graftlab.core.config import RunConfig, validate

    text = resource("examples", name).read_text(encoding="utf-8")
    import yaml

    cfg = RunConfig.from_dict(yaml.safe_load(text), where=name)
    validate(cfg, where=name)
    assert cfg.model.source.startswith("demo:")


def test_a_frozen_build_opens_files_through_its_own_executable(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/opt/graftlab/graftlab")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert desktop_install.exec_line() == "/opt/graftlab/graftlab gui %F"


def test_gui_subcommand_opens_the_window_with_its_files(monkeypatch):
    import graftlab.app.__main__ as gui
    from graftlab.app.launcher import main

    seen = []
    monkeypatch.setattr(gui, "main", lambda argv: seen.append(argv) or 0)
    assert main(["gui", "a/run.yaml"]) == 0 and seen == [["a/run.yaml"]]
