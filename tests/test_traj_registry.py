"""The one format registry: reading (load_trajectory), writing (save_trajectory, `traj convert`) and
`traj show` all go through `mirage_cli.trajectories.formats.REGISTRY`."""

import json
from pathlib import Path

import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.geometry.cameras import Cameras
from mirage_cli.trajectories import FORMATS, REGISTRY, Trajectory, detect_format, load_trajectory, save_trajectory
from mirage_cli.trajectories.formats import Format

DATA = Path(__file__).parent / "data" / "traj"


def _show_format(capsys, path) -> str:
    """The format `mirage traj show --json` reports for ``path``."""
    assert main(["traj", "show", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["format"]


def _writable_everywhere() -> Trajectory:
    """Centred principal point, one focal length: a trajectory every registered format can hold."""
    t = load_trajectory(DATA / "native_opencv.json")
    return Trajectory(Cameras(t.cameras.c2w, t.cameras.intrinsics, 640, 480), 16.0, "native", source="general")


def test_formats_are_the_registry():
    # FORMATS: read and written; the reference's geometry.npz, ViPE's and GEN3C's files are read only
    assert FORMATS == ("native", "nerfstudio", "realestate10k", "nerf", "colmap", "worldscore", "spatia", "lyra2",
                       "lingbot", "worldplay")
    assert set(REGISTRY) == set(FORMATS) | {"geometry-npz", "vipe", "gen3c"}
    assert all(REGISTRY[name].name == name for name in REGISTRY)


@pytest.mark.parametrize("name", sorted(set(FORMATS) - {"worldplay"}))  # one camera per latent: tests/test_traj_peers.py
def test_every_registered_format_round_trips_and_show_names_it(tmp_path, capsys, name):
    traj = _writable_everywhere()
    out = tmp_path / ("model" if name == "colmap" else "traj.out")
    written = save_trajectory(traj, out, name)
    assert all(p.is_file() for p in written)
    back = load_trajectory(out)
    assert back.format == name and detect_format(out) == name
    assert torch.allclose(back.cameras.c2w, traj.cameras.c2w, atol=1e-6)
    # LingBot-World's intrinsics are pixels of 832 x 480 whatever the path: its normalized intrinsics are kept
    intr = back.cameras.intrinsics if name == "lingbot" else back.cameras_for(640, 480).intrinsics
    assert torch.allclose(intr, traj.cameras.intrinsics, atol=1e-6)
    assert _show_format(capsys, out) == name


def _toy_detect(text: str) -> bool:
    return text.startswith("TOY\n")


def _toy_read(text: str, path: Path) -> Trajectory:
    rows = [[float(x) for x in line.split()] for line in text.splitlines()[1:]]
    c2w = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4, 4)
    return Trajectory(Cameras.from_fov(c2w, 50.0, 64, 48), 8.0, "toy", source=str(path), fov_only=True)


def _toy_text(traj: Trajectory) -> str:
    return "TOY\n" + "".join(" ".join(repr(v) for v in m.reshape(-1).tolist()) + "\n" for m in traj.cameras.c2w)


def test_a_format_added_to_the_registry_is_read_written_converted_and_shown(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(REGISTRY, "toy", Format("toy", "text", _toy_detect, _toy_read, text=_toy_text))
    src = tmp_path / "a.toy"
    save_trajectory(_writable_everywhere(), src, "toy")  # writing: save_trajectory
    assert src.read_text().startswith("TOY\n")
    traj = load_trajectory(src)  # reading: load_trajectory
    assert traj.format == "toy" and len(traj) == 4 and detect_format(src) == "toy"
    assert _show_format(capsys, src) == "toy"  # traj show
    assert main(["traj", "convert", str(DATA / "camera_path.json"), "-o", str(tmp_path / "b.toy"), "--to", "toy"]) == 0
    capsys.readouterr()
    converted = load_trajectory(tmp_path / "b.toy")  # traj convert wrote it through the registry
    assert torch.allclose(converted.cameras.c2w, load_trajectory(DATA / "camera_path.json").cameras.c2w, atol=1e-9)


def test_convert_says_what_the_target_format_does_not_keep(tmp_path, capsys):
    """Spatia's w2c.txt has a fixed 24 fps and no image size, COLMAP no fps: a conversion that changes
    them prints a note per lost property (found by reading the written file back); native keeps all."""
    src = tmp_path / "src.json"
    t = _writable_everywhere()
    save_trajectory(Trajectory(t.cameras, 10.0, "native", source="general"), src)
    assert main(["traj", "convert", str(src), "--absolute", "--to", "spatia", "-o", str(tmp_path / "w2c.txt")]) == 0
    err = capsys.readouterr().err
    assert "fps: 10 is not kept by format 'spatia' (read back at 24)" in err and "image size: 640x480" in err
    assert main(["traj", "convert", str(src), "--absolute", "--to", "colmap", "-o", str(tmp_path / "c")]) == 0
    assert "fps: 10 is not kept by format 'colmap'" in capsys.readouterr().err
    assert main(["traj", "convert", str(src), "-o", str(tmp_path / "n.json")]) == 0
    assert "note:" not in capsys.readouterr().err
