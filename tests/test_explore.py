"""mirage explore without a browser: the session (a run grown chunk by chunk), undo, replay, resume,
and the page's handlers for bad input (the real viser server, no browser)."""

from __future__ import annotations

import io
import json
import socket
import struct
import time
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from mirage_cli.errors import MirageError
from mirage_cli.explore.moves import Step, key_target, step_poses
from mirage_cli.explore.session import ExploreSession
from mirage_cli.pipeline.config import GenerateConfig
from mirage_cli.pipeline.engine import Cancelled, CancelToken
from mirage_cli.pipeline.rundir import chunk_latents, load_latents

ROOM = Path(__file__).resolve().parents[1] / "examples" / "room.png"
W = 256  # a small frame keeps each step well under a second


def config(out: Path, **kw) -> GenerateConfig:
    return GenerateConfig(image=str(ROOM), out=str(out), width=W, **kw)


def files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != ".lock")


def memory_state(session: ExploreSession) -> tuple[torch.Tensor, torch.Tensor]:
    m = session.engine.memory
    return m.points.clone(), m.features.clone()


@pytest.fixture()
def session(tmp_path):
    torch.set_num_threads(1)
    s = ExploreSession.create(config(tmp_path / "run"))
    yield s
    if s.run.dir is not None:
        s.run.dir.close()


def test_moves_follow_opencv_axes():
    c0 = torch.eye(4, dtype=torch.float64)
    assert key_target(c0, "W", 0.5, 10)[2, 3] == pytest.approx(0.5)  # +z forward
    assert key_target(c0, "A", 0.5, 10)[0, 3] == pytest.approx(-0.5)  # -x left
    assert key_target(c0, "R", 0.5, 10)[1, 3] == pytest.approx(-0.5)  # -y up
    assert key_target(c0, "Q", 0.5, 10)[0, 2] < 0  # turning left: the view axis swings to -x
    poses = step_poses(c0, Step("key", key="D", distance=0.3), 8)
    assert poses.shape == (8, 4, 4) and torch.equal(poses[-1], key_target(c0, "D", 0.3, 10))
    assert bool((poses[1:, 0, 3] >= poses[:-1, 0, 3]).all())  # monotone, eased
    with pytest.raises(MirageError, match="not a move"):
        key_target(c0, "X", 0.1, 10)


@pytest.mark.parametrize("budget", [1 << 30, 0], ids=["snapshot", "from-disk"])
def test_undo_equality(tmp_path, budget):
    """Undo puts memory, history, run directory and trajectory back exactly; the same step again
    makes the same chunk (undo from an in-memory snapshot, and from the on-disk checkpoint)."""
    torch.set_num_threads(1)
    s = ExploreSession.create(config(tmp_path / "run"), undo_budget=budget)
    d = s.default_distance()
    s.step(Step("key", key="W", distance=d))
    after_one = (files(s.out), memory_state(s), len(s.engine.history), s.traj.cameras.c2w.clone(),
                 json.loads((s.out / "run.json").read_text())["chunks"])
    first = s.step(Step("key", key="E", distance=d))
    s.step(Step("key", key="W", distance=d))
    s.undo()
    s.undo()
    assert files(s.out) == after_one[0]
    pts, feats = memory_state(s)
    assert torch.equal(pts, after_one[1][0]) and torch.equal(feats, after_one[1][1])
    assert len(s.engine.history) == after_one[2] and torch.equal(s.traj.cameras.c2w, after_one[3])
    assert [c["index"] for c in json.loads((s.out / "run.json").read_text())["chunks"]] == [c["index"] for c in after_one[4]]
    again = s.step(Step("key", key="E", distance=d))
    assert torch.equal(again.latents, first.latents) and np.array_equal(again.frames_u8, first.frames_u8)
    s.finish()


def test_replay_equality(tmp_path):
    """`mirage generate IMAGE --traj DIR/trajectory.json` replays the walked path bit for bit (preview)."""
    from mirage_cli.pipeline.generate import generate

    torch.set_num_threads(1)
    s = ExploreSession.create(config(tmp_path / "walk"))
    d = s.default_distance()
    for key in ("W", "Q", "D"):
        s.step(Step("key", key=key, distance=d))
    s.undo()
    record = s.finish()
    assert record.status == "done" and len(record.chunks) == 2
    replay = generate(config(tmp_path / "replay", traj=str(tmp_path / "walk" / "trajectory.json"), keep_latents=True),
                      warn=lambda m: None, quiet=True)
    assert len(replay["chunks"]) == 2
    for k in range(2):
        assert torch.equal(load_latents(chunk_latents(tmp_path / "walk", k)), load_latents(chunk_latents(tmp_path / "replay", k)))
    a, b = iio.imread(tmp_path / "walk" / "video.mp4"), iio.imread(tmp_path / "replay" / "video.mp4")
    assert a.shape == b.shape == (17, *a.shape[1:]) and np.array_equal(a, b)


def test_resume_continues_the_session(tmp_path):
    torch.set_num_threads(1)
    s = ExploreSession.create(config(tmp_path / "run"))
    s.step(Step("key", key="W", distance=0.1))
    s.finish()
    r = ExploreSession.resume(tmp_path / "run")
    assert r.chunks_done == 1 and len(r.traj) == 9
    r.step(Step("key", key="S", distance=0.1))
    r.undo()
    r.undo()  # past the resume point: from the on-disk state (the input lifted again)
    assert r.chunks_done == 0 and len(r.traj) == 1
    r.step(Step("key", key="W", distance=0.1))
    assert torch.equal(r.last.latents, load_latents(chunk_latents(tmp_path / "run", 0)))
    assert r.finish().status == "done"


def test_cancel_and_busy_leave_the_session_as_before(session):
    session.step(Step("key", key="W", distance=0.1))
    before = files(session.out), len(session.traj)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        session.step(Step("key", key="W", distance=0.1), cancel=token)
    assert (files(session.out), len(session.traj), session.chunks_done) == (*before, 1)
    with session.busy:  # a generation in progress: a second one is refused, not interleaved
        with pytest.raises(MirageError, match="one generation at a time"):
            session.step(Step("key", key="W", distance=0.1))
    with pytest.raises(MirageError, match="nothing to undo"):
        session.undo()
        session.undo()
    assert session.chunks_done == 0


# ------------------------------------------------------------------------------------ the page's handlers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (its pixel data is empty: only the header is read)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.fixture()
def app(tmp_path):
    pytest.importorskip("viser", reason="viser not installed (pip install -e '.[explore]')")
    from mirage_cli.explore.app import ExploreApp, ExploreOptions

    torch.set_num_threads(1)
    cfg = config(tmp_path / "run")
    s = ExploreSession.create(cfg)
    a = ExploreApp(ExploreOptions(cfg, port=free_port(), uploads=tmp_path / "uploads"), s, log=lambda m: None)
    yield a
    a.close()


def wait_idle(app, timeout=60.0):
    end = time.time() + timeout
    while not app.idle():
        assert time.time() < end, "the explorer's queue did not drain"
        time.sleep(0.05)


def test_page_refuses_bad_uploads_and_stays_usable(app, tmp_path):
    app.upload("image", "notes.txt", b"not an image at all")
    assert "notes.txt: not an image" in app.message.content
    app.upload("image", "huge.png", png_header(20000, 20000))
    assert "huge.png" in app.message.content and ("too many pixels" in app.message.content or "MP" in app.message.content)
    buf = io.BytesIO()
    np.save(buf, np.ones((10, 10), np.float32))
    app.upload("depth", "small.npy", buf.getvalue())  # accepted as a file; wrong size for the image
    wait_idle(app)
    assert "depth is 10x10" in app.message.content
    assert app.session is not None and app.session.chunks_done == 0
    assert not list(tmp_path.glob("uploads/*notes*"))
    assert all(p.name.startswith("upload-") for p in (tmp_path / "uploads").iterdir())
    app._request_key("W")
    wait_idle(app)
    assert app.session.chunks_done == 1, app.message.content


def test_page_queues_keys_during_a_chunk_and_cancels_them_together(app):
    app.prompt.value = ""
    app._prompt_changed()
    assert "empty prompt" in app.message.content
    for key in ("W", "D", "W"):  # pressed while the first one runs: executed in order
        app._request_key(key)
    wait_idle(app)
    assert app.session.chunks_done == 3
    app._enqueue("undo", app._undo)
    wait_idle(app)
    assert app.session.chunks_done == 2
    with app.session.busy:  # hold the worker's next step so the queue fills behind it
        for key in ("W", "W", "W"):
            app._request_key(key)
        time.sleep(0.3)
        app.cancel()
    wait_idle(app)
    assert app.session.chunks_done == 2  # the held step was refused, the queued ones dropped together
    app._request_key("S")  # and the session is still usable
    wait_idle(app)
    assert app.session.chunks_done == 3
