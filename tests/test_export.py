"""`mirage export` (issue 29): a finished run of the shipped example as a COLMAP model (read back
with pycolmap, a real COLMAP binding) and as a nerfstudio dataset (read back with mirage's own
``nerf`` transforms.json reader)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.export.dataset import export_run
from mirage_cli.export.run import open_run
from mirage_cli.memory.latent import LatentMemory
from mirage_cli.trajectories import load_trajectory

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "room.png"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The shipped example along orbit_left, small (208x120, 9 frames, preview backend)."""
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["--threads", "1", "generate", str(EXAMPLE), "-t", "orbit_left", "--width", "208", "--height", "120",
                 "--frames", "9", "-o", str(out), "-q"]) == 0
    return out


def _memory_points(run_dir: Path) -> int:
    mem = LatentMemory.load(run_dir / "cache" / "final.safetensors")
    return int(torch.isfinite(mem.points).all(1).sum())


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_export_reads_back_in_pycolmap(run_dir, tmp_path, binary):
    pycolmap = pytest.importorskip("pycolmap")
    out = tmp_path / "colmap"
    args = ["export", str(run_dir), str(out), "--to", "colmap", "-q"] + (["--binary"] if binary else [])
    assert main(args) == 0
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    cams = open_run(run_dir).cameras
    assert len(rec.images) == len(cams) == 9
    for image in rec.images.values():
        i = int(image.name[len("frame_"):-len(".png")])
        assert (out / "images" / image.name).is_file()
        assert np.allclose(image.projection_center(), cams.centers[i].numpy(), atol=1e-5)
        K = rec.cameras[image.camera_id].calibration_matrix()
        assert np.allclose(K, cams.K()[i].numpy(), atol=1e-5)
    assert len(rec.points3D) == _memory_points(run_dir)
    assert len(rec.cameras) == 1 and rec.cameras[1].width == 208 and rec.cameras[1].height == 120


def test_colmap_text_export_is_also_a_mirage_trajectory(run_dir, tmp_path):
    export_run(run_dir, "colmap", tmp_path / "c", every=2)
    back = load_trajectory(tmp_path / "c")  # the model folder: sparse/0/images.txt
    cams = open_run(run_dir).cameras[0::2]
    assert torch.allclose(back.cameras.c2w, cams.c2w, atol=1e-6)
    assert torch.allclose(back.cameras.intrinsics, cams.intrinsics, atol=1e-6)


def test_nerfstudio_export_reads_back_as_the_runs_cameras(run_dir, tmp_path):
    out = tmp_path / "ns"
    result = export_run(run_dir, "nerfstudio", out, every=3, depth=True)
    assert result.frames == [0, 3, 6]
    doc = json.loads((out / "transforms.json").read_text())
    assert doc["camera_model"] == "OPENCV" and doc["ply_file_path"] == "sparse_pc.ply"
    assert all((out / f["file_path"]).is_file() and (out / f["depth_file_path"]).is_file() for f in doc["frames"])
    back = load_trajectory(out / "transforms.json")  # mirage's own nerf (transforms.json) reader
    cams = open_run(run_dir).cameras[0::3]
    assert back.format == "nerf"
    assert torch.allclose(back.cameras.c2w, cams.c2w, atol=1e-6)
    assert torch.allclose(back.cameras.intrinsics, cams.intrinsics, atol=1e-6)
    header = (out / "sparse_pc.ply").read_bytes()[:400].decode("ascii", "replace")
    assert f"element vertex {_memory_points(run_dir)}\n" in header
    # depth PNGs: 16-bit millimetres; frame 0 sees the input depth (scene units) where the memory covers it
    from PIL import Image

    d0 = np.asarray(Image.open(out / "depth" / "frame_00000.png")).astype(np.float64) * 1e-3
    ref = np.load(run_dir / "depth.npy")
    known = d0 > 0
    assert known.mean() > 0.9
    assert np.median(np.abs(d0[known] - ref[known]) / ref[known]) < 0.02


def test_export_refuses_bad_input(run_dir, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [(["export", str(run_dir), str(tmp_path / "full"), "--to", "colmap"], "not empty"),
             (["export", str(run_dir), str(tmp_path / "o"), "--to", "ply"], "--to: must be colmap or nerfstudio"),
             (["export", str(run_dir), str(tmp_path / "o"), "--to", "nerfstudio", "--binary"], "only for --to colmap"),
             (["export", str(tmp_path), str(tmp_path / "o"), "--to", "colmap"], "run.json: missing")]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
