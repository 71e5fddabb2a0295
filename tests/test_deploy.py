"""The deployment units in deploy/systemd/ are valid systemd units (systemd-analyze verify)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).resolve().parents[1] / "deploy" / "systemd").glob("*.service"))


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
