"""The example scripts of examples/ run (offline, CPU, a few seconds each) and say what they show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*_api.py"))

EXPECTED = {  # a line each example prints once it got to its end
    "memory_api.py": "saved and loaded memory.safetensors",
    "trajectories_api.py": "summary (as `mirage traj show --json`)",
    "engine_api.py": "final memory:",
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(script), "--out", str(out)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert EXPECTED[script.name] in r.stdout, r.stdout
    assert "Traceback" not in r.stderr
    assert any(out.rglob("*")), "the example wrote nothing into --out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing written beside it
