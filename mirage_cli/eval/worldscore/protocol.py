"""``OUT/protocol.json``, the WorldScore model config and the commands that evaluate ``OUT``.

Reported WorldScore numbers are hard to compare when nobody records how the videos were made;
``protocol.json`` records it: WorldScore's commit this code was matched against and the dataset's
hash, the split and subset, instance counts, resolution, frames, fps, focal length, how cameras and
prompts were used, backend, model and its weights' identity (sha256 over the model folder's
files), steps, guidance, seed, mirage version, device, and each instance's time and status.

Registering a model with WorldScore takes a config file and one line (its README, "Register your
model"): ``config/model_configs/<name>.yaml`` with ``model``, ``runs_root``, ``resolution``,
``generate_type``, ``frames``, ``fps`` (merged over ``config/base_config.yaml``:
``worldscore/run_evaluate.py:189-198``), and ``<name>`` in the ``videogen`` list of
``worldscore/benchmark/utils/modeltype.py`` (videogen models are evaluated on both splits:
``worldscore/run_evaluate.py:213-217``). :func:`model_config` writes the first (``runs_root`` = ``OUT``, so the
evaluator reads ``OUT/worldscore_output`` and writes ``OUT/worldscore_output/worldscore.json``,
``worldscore/run_evaluate.py:174``); :func:`evaluate_commands` says the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from ...errors import MirageError
from . import WORLDSCORE_COMMIT

FORMAT = "mirage.worldscore"
VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONFIG_DIR = "worldscore_config"


def check_name(name: str) -> str:
    """A WorldScore model name usable as a file name and a Python string; else a MirageError."""
    if not NAME_PATTERN.match(name):
        raise MirageError(f"--name: '{name}' is not usable as a WorldScore model name (letters, digits, _ . -)")
    return name


def model_config(name: str, out: Path, size: tuple[int, int], frames: int, fps: float, focal: float) -> str:
    """The text of ``config/model_configs/<name>.yaml`` (keys of WorldScore's README, plus
    ``focal_length``: ``base_config.yaml`` says 500 and the cameras were made with ``focal``)."""
    fps_text = int(fps) if float(fps).is_integer() else fps
    return (f"model: {name}\n\nruns_root: {Path(out).resolve()}\n\nresolution: [{size[0]}, {size[1]}]\n"
            f"generate_type: i2v\n\nframes: {frames}\nfps: {fps_text}\nfocal_length: {focal:g}\n")


def modeltype_line(name: str) -> str:
    """The line to add to the ``videogen`` list of ``worldscore/benchmark/utils/modeltype.py``."""
    return f'        "{name}",'


def evaluate_commands(name: str, out: Path, dataset_root: Path, splits: tuple[str, ...]) -> list[str]:
    """Shell lines that register the model in a WorldScore checkout and evaluate ``OUT`` with it."""
    out = Path(out).resolve()
    lines = [
        "cd $WORLDSCORE_PATH   # a clone of https://github.com/haoyi-duan/WorldScore with its evaluation environment",
        f"cp {out / CONFIG_DIR / (name + '.yaml')} config/model_configs/",
        "# add this line to the \"videogen\" list in worldscore/benchmark/utils/modeltype.py:",
        f"#{modeltype_line(name)}",
        f"export DATA_PATH={Path(dataset_root).resolve().parent}",
        f"worldscore-analysis -cd --model_name {name}",
        f"python worldscore/run_evaluate.py --model_name {name}",
        f"# result: {out / 'worldscore_output' / 'worldscore.json'}",
    ]
    if tuple(splits) != ("static", "dynamic"):
        lines.insert(-1, "# note: WorldScore evaluates a videogen model on static AND dynamic; with one split generated "
                         "the other one's evaluation fails (no such folder) and WorldScore-Dynamic is not meaningful")
    return lines


def folder_sha256(folder: Path) -> tuple[str, int]:
    """``(sha256, files)``: a hash of every file under ``folder`` (sorted relative paths, sizes and
    contents), the identity of a model's weights whatever their layout."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for p in files:
        fh = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                fh.update(block)
        h.update(f"{p.relative_to(folder).as_posix()}\0{p.stat().st_size}\0{fh.hexdigest()}\n".encode())
    return h.hexdigest(), len(files)


def folder_stat(folder: Path) -> str:
    """A cheap signature of a folder's files (relative paths, sizes, modification times): when it
    is unchanged, an earlier :func:`folder_sha256` still holds (a ``--resume`` does not hash again)."""
    h = hashlib.sha256()
    for p in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        st = p.stat()
        h.update(f"{p.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def model_identity(model: str | None, describe: dict | None, earlier: dict | None = None) -> dict:
    """What weights made the videos: the backend's own description (from a run's ``run.json``) and,
    when the model resolves to a local folder (a ``mirage models convert`` output, a Hub snapshot),
    the sha256 over its files (``earlier``: a previous protocol's ``weights``, reused when the
    folder's files are unchanged)."""
    ident: dict[str, Any] = {"model": model, "backend": describe}  # JSON: protocol.json's weights
    if model:
        from ...models.registry import resolve_model

        try:  # a local folder as it is (a converted model has no root config.json), else the registry / Hub cache
            folder = Path(model).expanduser().resolve() if Path(model).expanduser().is_dir() else resolve_model(model)
        except MirageError as e:
            ident["folder_sha256"], ident["note"] = None, f"not hashed: {e}"
            return ident
        ident["folder"], ident["folder_stat"] = str(folder), folder_stat(folder)
        if earlier and earlier.get("folder") == ident["folder"] and earlier.get("folder_stat") == ident["folder_stat"]:
            ident["folder_sha256"], ident["files"] = earlier.get("folder_sha256"), earlier.get("files")
        else:
            ident["folder_sha256"], ident["files"] = folder_sha256(folder)
    return ident


def device_name(device: str | None) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (AMD EPYC ..., N cores)``."""
    import torch

    if device and device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device or 'cpu'} ({model}, {os.cpu_count()} cores)"


def dataset_hash(root: Path, splits: tuple[str, ...]) -> dict[str, str]:
    """sha256 of each split's JSON (which dataset release was run)."""
    from ...io import file_sha256

    return {s: file_sha256(root / s / f"{s}.json") for s in splits if (root / s / f"{s}.json").is_file()}


def write_protocol(out: Path, doc: dict) -> None:
    from ...io import write_json

    write_json(Path(out) / "protocol.json", doc)


def read_earlier(out: Path) -> dict | None:
    """An earlier protocol.json in ``OUT`` (None: none there); its ``settings`` must be readable."""
    path = Path(out) / "protocol.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        doc["settings"].items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise MirageError(f"{path}: damaged ({type(e).__name__}); use --overwrite or another --out") from e
    return doc


def worldscore_reference() -> dict:
    return {"repository": "https://github.com/haoyi-duan/WorldScore", "matched_commit": WORLDSCORE_COMMIT,
            "note": "WorldScore is not on PyPI and has no version number; its layout and readers were matched at this commit"}
