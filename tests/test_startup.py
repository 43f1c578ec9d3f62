"""Issue 22, items 1 and 8: the compiled splat's build is keyed by its environment and never silent;
`mirage traj list` and option errors answer without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "room.png")


# ------------------------------------------------------------------------------ 8: startup without torch
def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m mirage_cli ARGS`` in a fresh interpreter that, at exit, prints whether torch was imported."""
    code = ("import atexit, sys, runpy\n"
            "atexit.register(lambda: print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr))\n"
            f"sys.argv = ['mirage', *{list(args)!r}]\n"
            "runpy.run_module('mirage_cli', run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_traj_list_imports_no_torch():
    proc = _run_cli("traj", "list")
    assert proc.returncode == 0, proc.stderr
    assert "orbit_left" in proc.stdout and "look_at_depth=1" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "NO-TORCH"


@pytest.mark.parametrize("args, needle", [
    (["--frames", "abc"], "--frames"),  # click's type check
    (["--traj", "orbit_left", "--frames", "0"], "--frames"),  # check_config
    (["--frames", "5"], "--traj"),  # a missing --traj
    (["--traj", "orbit_lefft"], "did you mean preset 'orbit_left'"),  # not a file, not a preset
    (["--traj", "orbit_left", "--write-policy", "bogus"], "--write-policy"),
    (["--traj", "orbit_left", "--splat", "disc"], "--splat"),
    (["--traj", "orbit_left", "--intrinsics", "squash"], "--intrinsics"),
])
def test_generate_option_errors_are_one_line_without_torch(tmp_path, args, needle):
    proc = _run_cli("generate", EXAMPLE, *args, "--out", str(tmp_path / "run"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1] == "NO-TORCH", proc.stderr
    assert len(lines) == 2 and lines[0].startswith("error:") and needle in lines[0]
    assert not (tmp_path / "run").exists()


def test_catalog_and_presets_agree():
    # traj list reads the torch-free catalog; the builders are paired with it by name, in order
    from mirage_cli.trajectories import PRESETS
    from mirage_cli.trajectories.catalog import CATALOG

    assert list(PRESETS) == list(CATALOG)
    assert all(PRESETS[n].defaults() == CATALOG[n].defaults() for n in CATALOG)


# ------------------------------------------------------------------------------ 1: the compiled splat's build
def test_build_names_differ_per_environment(monkeypatch, tmp_path):
    """Two environments (another sys.prefix, another torch) never share a build folder."""
    from torch.utils.cpp_extension import _get_build_directory

    from mirage_cli.memory import compiled

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    names = {}
    for prefix in ("/envs/a", "/envs/b"):
        monkeypatch.setattr(sys, "prefix", prefix)
        names[prefix] = {k: compiled.build_name(k, "src")[0] for k in (compiled.NATIVE, compiled.PORTABLE)}
    for kind in (compiled.NATIVE, compiled.PORTABLE):
        a, b = names["/envs/a"][kind], names["/envs/b"][kind]
        assert a != b and _get_build_directory(a, False) != _get_build_directory(b, False)
    base = compiled.build_name(compiled.PORTABLE, "src")[0]
    monkeypatch.setattr(compiled.torch, "__version__", "0.0.0-other")
    assert compiled.build_name(compiled.PORTABLE, "src")[0] != base
    sig = compiled.environment_signature()
    assert "cxx11_abi=" in sig and "torch=0.0.0-other" in sig and "prefix=" in sig and "ext=" in sig


def _fake_compiler(monkeypatch, tmp_path, compiled):
    """``compiled._compile`` replaced by one that writes an empty ``.so`` (no compiler runs)."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "1")
    monkeypatch.setattr(compiled, "_state", {})
    calls = []

    def fake(name, source, flags, build_dir):
        so = build_dir / f"{name}.so"
        if not so.exists():
            so.write_text("")
        calls.append(name)
        return SimpleNamespace(__name__=name, __file__=str(so))

    monkeypatch.setattr(compiled, "_compile", fake)
    return calls


def test_every_build_says_so_and_how_long_it_took_and_a_load_is_silent(monkeypatch, tmp_path, capsys):
    from mirage_cli.memory import compiled

    calls = _fake_compiler(monkeypatch, tmp_path, compiled)
    monkeypatch.setattr(sys, "prefix", "/envs/a")
    assert compiled.extension() is not None
    err = capsys.readouterr().err
    assert "building the compiled splat for this environment (native build, once per environment" in err
    assert "built the compiled splat in" in err and str(tmp_path) in err
    # another process of the same environment: loads, prints nothing
    monkeypatch.setattr(compiled, "_state", {})
    assert compiled.extension() is not None and capsys.readouterr().err == ""
    # another environment on the same machine and the same extensions folder: its own build, announced,
    # and the first environment's build is left as it was
    first = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(compiled, "_state", {})
    monkeypatch.setattr(sys, "prefix", "/envs/b")
    assert compiled.extension() is not None
    assert "building the compiled splat for this environment" in capsys.readouterr().err
    assert len(set(calls)) == 2 and set(first) < {p.name for p in tmp_path.iterdir()}


def test_a_partial_build_is_announced(monkeypatch, tmp_path, capsys):
    """A build folder with files but no finished build (killed, or no .so): the rebuild is announced."""
    from torch.utils.cpp_extension import _get_build_directory

    from mirage_cli.memory import compiled

    _fake_compiler(monkeypatch, tmp_path, compiled)
    name = compiled.build_name(compiled.NATIVE, compiled._SOURCE.read_text())[0]
    build_dir = Path(_get_build_directory(name, verbose=False))
    (build_dir / "main.o").write_text("")
    (build_dir / f"{name}.so").write_text("")  # a .so without the stamp: not known to have finished
    assert compiled.extension() is not None
    err = capsys.readouterr().err
    assert "an earlier build did not finish" in err and "built the compiled splat in" in err


def test_a_build_another_process_holds_is_announced(monkeypatch, tmp_path, capsys):
    from torch.utils.cpp_extension import _get_build_directory

    from mirage_cli.memory import compiled

    _fake_compiler(monkeypatch, tmp_path, compiled)
    name = compiled.build_name(compiled.NATIVE, compiled._SOURCE.read_text())[0]
    (Path(_get_build_directory(name, verbose=False)) / "lock").write_text("")  # fresh: a live build
    monkeypatch.setattr(compiled, "_compile", lambda *a: SimpleNamespace(__name__=name, __file__="x"))
    assert compiled.extension() is not None
    assert "another process is building it" in capsys.readouterr().err


def test_compiled_splat_0_and_portable_still_choose(monkeypatch, tmp_path):
    from mirage_cli.memory import compiled

    calls = _fake_compiler(monkeypatch, tmp_path, compiled)
    monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "0")
    assert compiled.for_device("cpu") is None and compiled.describe() == "pure torch" and calls == []
    monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "portable")
    assert compiled.describe() == "compiled C++ (portable build)"
    assert calls and all(n.startswith("mirage_splat_portable_") for n in calls)
