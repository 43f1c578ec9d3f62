"""``mirage eval worldscore --check OUT``: is the benchmark output complete and readable by WorldScore?

Two levels, without WorldScore installed:

1. **WorldScore's own test**: ``worldscore-analysis -cd`` (``worldscore/run_analysis.py:52-148``) walks
   ``worldscore_output/<movement>`` and calls ``Evaluator.data_exists`` (``worldscore/benchmark/helpers/evaluator.py:697-734``)
   on every instance folder: ``image_data.json`` readable with ``total_frames``; ``frames``,
   ``image_data.json``, ``input_image.png`` (and ``camera_data.json``, static) present; at least
   ``total_frames`` ``.png``/``.jpg`` files in ``frames/``. It counts against 2000 static / 1000
   dynamic instances; here against the instances ``protocol.json`` lists (a ``--limit`` run is
   complete when all of them are), with the release's counts said beside.
2. **What the evaluator then reads** (``worldscore/benchmark/helpers/evaluator.py:75-95, 173-195, 676-683``): the
   ``image_data.json`` fields each movement needs; ``camera_data.json``: ``cameras_interp`` with
   exactly ``total_frames`` finite 4x4 matrices and a numeric ``scale``; ``frames/``: exactly
   ``000.png ... `` (``total_frames`` of them, in order, nothing else), each an image of the
   protocol's resolution; ``input_image.png`` an image; ``videos/output.mp4`` a video of that size;
   ``time.txt`` ``generate_time: <seconds>``.

A folder under ``worldscore_output`` that is not one of the listed instances is reported too: the
evaluator would score it as one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import MirageError
from .dataset import RELEASE_COUNTS, SPLITS
from .layout import CAMERA_DATA, FRAMES, IMAGE, IMAGE_DATA, OUTPUT_DIR, TIME, VIDEO

PROTOCOL = "protocol.json"
IMAGE_FIELDS = {
    "static": ("camera_path", "total_frames", "prompt_list", "num_scenes", "anchor_frame_idx", "content_list"),
    "dynamic": ("total_frames", "prompt", "num_scenes", "masks", "objects"),
}
"""``image_data.json`` fields the evaluator reads (``worldscore/benchmark/helpers/evaluator.py``: 85-95
static, 178-182 dynamic)."""
FRAME_NAME = re.compile(r"^(\d{3,})\.png$")
TIME_LINE = re.compile(r"^generate_time: (\S+)\n?$")
DEPTHS = {"static": 4, "dynamic": 3}  # folder levels below worldscore_output/<movement>/ to an instance


@dataclass
class CheckReport:
    """Result of :func:`check_output`.

    Attributes:
        expected / complete: instances per movement that protocol.json lists / that pass every check.
        problems: one line per failed check (``<instance dir>: <problem>``), WorldScore's first.
        unexpected: instance folders in the tree that protocol.json does not list.
        release: instances per movement of the released dataset (for the "of 2000" note).
    """

    expected: dict[str, int] = field(default_factory=dict)
    complete: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    release: dict[str, int] = field(default_factory=lambda: dict(RELEASE_COUNTS))

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unexpected and self.expected == self.complete


def read_protocol(out: Path) -> dict:
    """``OUT/protocol.json``, or a one-line MirageError."""
    path = Path(out) / PROTOCOL
    if not Path(out).is_dir():
        raise MirageError(f"{out}: no such folder")
    if not path.is_file():
        raise MirageError(f"{path}: missing; not an output of `mirage eval worldscore` (or it was interrupted "
                          "before its first instance: run it again with --resume)")
    try:
        doc = json.loads(path.read_text())
        doc["instances"], doc["settings"]["resolution"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MirageError(f"{path}: damaged ({type(e).__name__}: {e})") from e
    return doc


def check_output(out: Path) -> CheckReport:
    """Check every instance ``OUT/protocol.json`` lists (see the module docstring)."""
    out = Path(out)
    doc = read_protocol(out)
    size = tuple(doc["settings"]["resolution"])
    report = CheckReport()
    listed = set()
    for entry in doc["instances"]:
        movement, rel = entry["movement"], entry["dir"]
        listed.add(rel)
        report.expected[movement] = report.expected.get(movement, 0) + 1
        problems = instance_problems(out / OUTPUT_DIR / rel, movement, size)
        report.problems += [f"{OUTPUT_DIR}/{rel}: {p}" for p in problems]
        if not problems:
            report.complete[movement] = report.complete.get(movement, 0) + 1
    for movement in SPLITS:
        if movement in report.expected:
            report.complete.setdefault(movement, 0)
    report.unexpected += [f"{OUTPUT_DIR}/{rel}" for rel in tree_instances(out) if rel not in listed]
    return report


def tree_instances(out: Path) -> list[str]:
    """Every instance folder under ``OUT/worldscore_output`` (relative, posix): what the evaluator scores."""
    root = Path(out) / OUTPUT_DIR
    return [f.relative_to(root).as_posix() for m in SPLITS for f in instance_folders(root / m, DEPTHS[m])]


def instance_folders(root: Path, depth: int) -> list[Path]:
    """Folders ``depth`` levels below ``root``: where the evaluator looks for instances."""
    level = [root] if root.is_dir() else []
    for _ in range(depth):
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir())
    return level


def worldscore_problems(folder: Path, movement: str) -> list[str]:
    """``Evaluator.data_exists`` (``worldscore/benchmark/helpers/evaluator.py:697-734``): its first failure
    as one line, else []."""
    if not folder.is_dir():
        return ["missing"]
    try:
        total = json.loads((folder / IMAGE_DATA).read_text(encoding="utf-8"))["total_frames"]
    except FileNotFoundError:
        return [f"{IMAGE_DATA}: missing"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"{IMAGE_DATA}: unreadable ({type(e).__name__}: {e})"]
    names = {p.name for p in folder.iterdir()}
    for name in (FRAMES, IMAGE_DATA) + ((CAMERA_DATA,) if movement == "static" else ()) + (IMAGE,):
        if name not in names:
            return [f"{name}: missing"]
    count = sum(p.name.endswith((".png", ".jpg")) for p in (folder / FRAMES).iterdir())
    if not isinstance(total, int) or count < total:
        return [f"{FRAMES}/: {count} frames, total_frames is {total} (WorldScore: incomplete)"]
    return []


def instance_problems(folder: Path, movement: str, size: tuple[int, int]) -> list[str]:
    """Every problem of one instance folder: WorldScore's test first, then the evaluator's readers."""
    first = worldscore_problems(folder, movement)
    if first:
        return first
    problems = []
    data = json.loads((folder / IMAGE_DATA).read_text(encoding="utf-8"))
    missing = [k for k in IMAGE_FIELDS[movement] if k not in data]
    if missing:
        problems.append(f"{IMAGE_DATA}: field '{missing[0]}' missing (the evaluator reads it)")
    total = data["total_frames"]
    if movement == "static":
        problems += _camera_problems(folder / CAMERA_DATA, total)
    problems += _frame_problems(folder / FRAMES, total, size)
    problems += _image_problems(folder / IMAGE, size)
    problems += _video_problems(folder / VIDEO, size)
    try:
        text = (folder / TIME).read_text()
        m = TIME_LINE.match(text)
        if not m or not math.isfinite(float(m.group(1))):
            problems.append(f"{TIME}: not 'generate_time: <seconds>' (got {text[:40]!r})")
    except FileNotFoundError:
        problems.append(f"{TIME}: missing (the instance did not finish)")
    except ValueError:
        problems.append(f"{TIME}: not 'generate_time: <seconds>'")
    return problems


def _camera_problems(path: Path, total: int) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cams = data["cameras_interp"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"{CAMERA_DATA}: unreadable or without cameras_interp ({type(e).__name__})"]
    if not isinstance(data.get("scale", 1.0), (int, float)):
        return [f"{CAMERA_DATA}: field 'scale' must be a number"]
    if not isinstance(cams, list) or len(cams) != total:
        return [f"{CAMERA_DATA}: {len(cams) if isinstance(cams, list) else 'no'} cameras_interp, total_frames is {total} "
                "(the evaluator raises 'Number of frames and cameras do not match')"]
    for i, m in enumerate(cams):
        ok = (isinstance(m, list) and len(m) == 4 and all(isinstance(r, list) and len(r) == 4 for r in m)
              and all(isinstance(v, (int, float)) and math.isfinite(v) for r in m for v in r))
        if not ok:
            return [f"{CAMERA_DATA}: cameras_interp[{i}] is not a finite 4x4 matrix"]
    return []


def _frame_problems(folder: Path, total: int, size: tuple[int, int]) -> list[str]:
    names = sorted(p.name for p in folder.iterdir())
    want = [f"{i:03d}.png" for i in range(total)]
    if names != want:
        extra = sorted(set(names) - set(want))
        missing = sorted(set(want) - set(names))
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        return [f"{FRAMES}/: {len(names)} files, expected 000.png..{total - 1:03d}.png ({what})"]
    for name in names:
        problems = _image_problems(folder / name, size, f"{FRAMES}/{name}")
        if problems:
            return problems
    return []


def _image_problems(path: Path, size: tuple[int, int], label: str = IMAGE) -> list[str]:
    """An image file of ``size`` (its header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.size != size:
                return [f"{label}: {im.size[0]}x{im.size[1]}, the protocol's resolution is {size[0]}x{size[1]}"]
    except (OSError, UnidentifiedImageError) as e:
        return [f"{label}: not an image ({type(e).__name__})"]
    return []


def _video_problems(path: Path, size: tuple[int, int]) -> list[str]:
    """The MP4's header (its size): decoding every video of the benchmark would take long."""
    import imageio.v2 as imageio

    if not path.is_file():
        return [f"{VIDEO}: missing"]
    try:
        reader = imageio.get_reader(path)
        try:
            got = tuple(reader.get_meta_data()["size"])
        finally:
            reader.close()
    except Exception as e:  # imageio/ffmpeg raise many kinds for a damaged file
        return [f"{VIDEO}: not a readable video ({type(e).__name__})"]
    if got != size:
        return [f"{VIDEO}: {got[0]}x{got[1]}, the protocol's resolution is {size[0]}x{size[1]}"]
    return []


def summary_lines(report: CheckReport) -> list[str]:
    """``-cd``'s lines: ``static: 3 / 3 instances complete`` per movement (with the release's count)."""
    lines = []
    for movement in SPLITS:
        if movement in report.expected:
            lines.append(f"{movement}: {report.complete.get(movement, 0)} / {report.expected[movement]} instances complete"
                         f" (the release has {report.release[movement]})")
    return lines
