"""io.atomic_path: the data reaches the disk before the rename, the rename before returning."""

from __future__ import annotations

import os
import signal

import pytest

from mirage_cli.io import atomic_path, write_json


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt during the test, however pytest was started: a runner started
    in the background (`pytest &`, nohup, some CI shells) inherits SIGINT ignored, and a Ctrl-C sent
    then is dropped (the code under test rightly hands it back to the handler that was set)."""
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN, SIG_DFL or not set from Python
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


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


def test_whole_writes_holds_ctrl_c_until_the_frame_is_written(sigint_raises):
    """A SIGINT arriving while a frame is piped to ffmpeg is delivered after the write, never in it
    (a partial frame makes ffmpeg print "Invalid buffer size" on the terminal)."""
    from mirage_cli.io import whole_writes

    done = []
    before = signal.getsignal(signal.SIGINT)  # Python's, or the CLI's recording one (mirage_cli.interrupts)
    with pytest.raises(KeyboardInterrupt):
        with whole_writes():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("rest of the frame")  # runs: the interrupt waits for the block's end
    assert done == ["rest of the frame"]
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


def test_videowriter_interrupted_mid_frame_writes_the_frame_whole(tmp_path, monkeypatch, sigint_raises):
    """VideoWriter.append: Ctrl-C during a frame's write surfaces only after the frame is complete."""
    import numpy as np

    from mirage_cli.io import VideoWriter

    class HalfwayInterrupted:
        def __init__(self):
            self.complete = 0

        def append_data(self, frame):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C halfway through the pipe write
            self.complete += 1

        def close(self):
            pass

    fake = HalfwayInterrupted()
    monkeypatch.setattr(VideoWriter, "_open", lambda self, h, w: fake)
    writer = VideoWriter(tmp_path / "v.mp4", 10)
    with pytest.raises(KeyboardInterrupt):
        writer.append(np.zeros((3, 4, 4, 3), np.uint8))
    assert fake.complete == 1 and writer.frames == 1  # the first frame finished, nothing after it started
    writer.abort()
    assert list(tmp_path.iterdir()) == []
