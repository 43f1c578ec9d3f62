#!/usr/bin/env python3
"""Compare mirage's port of WorldScore's camera generator with WorldScore's own, on the CPU.

Usage: PYTHONPATH=. python3 scripts/worldscore_camera_check.py /path/to/WorldScore

Loads ``worldscore/benchmark/helpers/camera_generator.py`` from a WorldScore checkout (its two
WorldScore imports stubbed: the layout table it does not use here, and the device, set to the CPU;
it needs scipy, as WorldScore does), generates ``camera_data.json`` for a few camera paths and frame
counts with it and with ``mirage_cli.eval.worldscore.cameras.camera_data``, and prints the largest
absolute difference over every matrix of ``cameras`` and ``cameras_interp`` (docs/worldscore.md
quotes it). Exit 1 when it exceeds 1e-5 or a count differs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

PATHS = [["move_left"], ["pan_left", "move_left", "pull_out"], ["orbit_left"], ["orbit_right", "push_in"],
         ["pan_right", "move_right", "pan_left", "push_in", "orbit_left", "pull_out", "move_left"]]
FRAMES = (5, 49)


def load_camera_generator(checkout: Path):
    """WorldScore's module, with ``worldscore.benchmark.utils.utils`` and ``worldscore.common.gpu_utils`` stubbed."""
    utils = types.ModuleType("worldscore.benchmark.utils.utils")
    utils.get_model2type, utils.layout_info, utils.type2model = (lambda t: {"check": "videogen"}), {}, {}
    gpu = types.ModuleType("worldscore.common.gpu_utils")
    gpu.get_torch_device = lambda: "cpu"
    for name in ("worldscore", "worldscore.benchmark", "worldscore.benchmark.utils", "worldscore.common"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["worldscore.benchmark.utils.utils"], sys.modules["worldscore.common.gpu_utils"] = utils, gpu
    path = checkout.joinpath(*"worldscore/benchmark/helpers/camera_generator.py".split("/"))
    spec = importlib.util.spec_from_file_location("worldscore_camera_generator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    import torch

    from mirage_cli.eval.worldscore.cameras import camera_data

    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(__doc__.strip().splitlines()[2])
        return 2
    cg = load_camera_generator(Path(argv[0]))
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for path in PATHS:
            for frames in FRAMES:
                gen = cg.CameraGen({"benchmark_root": tmp, "model": "check", "frames": frames})
                gen.generate_cameras(path, tmp)
                theirs = json.loads((Path(tmp) / "camera_data.json").read_text())
                ours = camera_data(path, frames, theirs["focal_length"], theirs["scale"])
                for key in ("cameras", "cameras_interp"):
                    a, b = torch.tensor(theirs[key], dtype=torch.float64), torch.tensor(ours[key], dtype=torch.float64)
                    if a.shape != b.shape:
                        print(f"{path} frames {frames}: {key} {tuple(a.shape)} (WorldScore) vs {tuple(b.shape)} (mirage)")
                        return 1
                    worst = max(worst, float((a - b).abs().max()))
    print(f"{len(PATHS)} camera paths x frames {FRAMES}: largest |WorldScore - mirage| = {worst:.2g}")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
