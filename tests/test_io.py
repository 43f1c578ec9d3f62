"""io.atomic_path: the data reaches the disk before the rename, the rename before returning."""

from __future__ import annotations

import os

from mirage_cli.io import atomic_path, write_json


def test_atomic_path_fsyncs_file_then_renames_then_fsyncs_dir(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "dir" if _is_dir_fd(fd) else "file"
        events.append(("fsync", kind))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "run.json"
    write_json(target, {"a": 1})
    assert events == [("fsync", "file"), ("replace", "run.json"), ("fsync", "dir")]
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left behind


def test_atomic_path_failure_keeps_old_file(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def _is_dir_fd(fd: int) -> bool:
    import stat

    return stat.S_ISDIR(os.fstat(fd).st_mode)
