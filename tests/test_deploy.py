"""Deployment: the units in deploy/systemd/ verify, and settings come from one place."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies(unit, tmp_path):
    # As installed: the virtualenv's python where the unit expects it.
    text = unit.read_text().replace("/opt/console-portal/.venv/bin/python", sys.executable)
    copy = tmp_path / unit.name
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if unit.name.split("@")[0] in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_settings_are_read_from_the_environment_in_one_place():
    """Every deployment setting comes from portal/settings.py (django.conf.settings): no other
    module reads the environment, so the README's table is the whole list."""
    readers = []
    for path in sorted([*ROOT.glob("console/**/*.py"), *ROOT.glob("portal/*.py"), *ROOT.glob("api/*.py")]):
        if path.name == "settings.py" and path.parent.name == "portal":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bos\.environ\b(?!\.setdefault\(\"DJANGO_SETTINGS_MODULE\")|\bgetenv\(", line):
                readers.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert readers == []
