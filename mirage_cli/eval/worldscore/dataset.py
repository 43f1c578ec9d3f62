"""The WorldScore dataset as WorldScore's ``WorldScore/download.py`` lays it out, read instance by instance.

Layout (WorldScore@344983c: ``WorldScore/download.py`` unzips ``WorldScore-Dataset.zip`` into ``$DATA_PATH``;
``worldscore/benchmark/helpers/__init__.py:14-18`` reads
``$DATA_PATH/WorldScore-Dataset/<movement>/<movement>.json``)::

    WorldScore-Dataset/
      static/static.json       a JSON list, one object per instance (2000 in the release)
      dynamic/dynamic.json     (1000 in the release)
      ...                      the images (and dynamic masks), at the paths the objects give
                               relative to WorldScore-Dataset/

Fields WorldScore's loader and evaluator read (``worldscore/benchmark/helpers/dataloader.py:106-212``,
``worldscore/benchmark/helpers/evaluator.py:75-95, 173-182``): every instance ``image`` (relative path;
its parent folder is the static *category*,
its stem the instance *name*), ``visual_movement``, ``visual_style``, ``camera_path`` (layout
names), ``style`` (a sentence appended to every prompt); static ``scene_type``, ``prompt_list``
(one more than there are scenes: the input's, then each scene's), ``content_list`` (likewise, the
object-detection targets); dynamic ``motion_type``, ``prompt``, ``objects``, ``masks``.

:func:`read_dataset` checks each instance on its own: a bad one (a missing field, a camera path
WorldScore cannot make, an image that does not open) is one line in ``problems`` and the others
are kept, so that one broken instance does not stop a 3000-instance run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import MirageError
from .layouts import FIXED, LAYOUTS, MOVING, scene_count, scene_prompts, with_style

SPLITS = ("static", "dynamic")
DATASET_DIR = "WorldScore-Dataset"
RELEASE_COUNTS = {"static": 2000, "dynamic": 1000}
"""Instances of the released dataset (the dataset card; ``worldscore/run_analysis.py:141`` checks against them)."""

REQUIRED = {
    "static": ("image", "visual_style", "scene_type", "camera_path", "style", "prompt_list", "content_list"),
    "dynamic": ("image", "visual_style", "motion_type", "camera_path", "style", "prompt", "objects", "masks"),
}


@dataclass(frozen=True)
class Instance:
    """One benchmark instance, checked.

    Attributes:
        movement: ``static`` or ``dynamic``. index: its position in the split's JSON list (0-based).
        record: the JSON object as the dataset has it (``image_data.json`` starts from it).
        image: the image file, absolute. style: ``visual_style``. group: ``scene_type`` (static)
            or ``motion_type`` (dynamic). category: the image's folder name (static; ``""`` dynamic).
        name: the image's stem (the instance folder's name).
        camera_path: layout names, one per scene. prompts: what WorldScore gives an image-to-video
            model, one per scene (:func:`~.layouts.scene_prompts`). first_prompt: the input
            image's own description with the style (``prompt_list[0]`` / ``prompt``; what the
            reference runner uses for every frame).
    """

    movement: str
    index: int
    record: dict = field(compare=False, hash=False)
    image: str = ""
    style: str = ""
    group: str = ""
    category: str = ""
    name: str = ""
    camera_path: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    first_prompt: str = ""

    @property
    def rel_dir(self) -> str:
        """The instance's folder under ``worldscore_output/`` (``worldscore/benchmark/helpers/dataloader.py:125-129, 177-181``):
        ``static/<style>/<scene_type>/<category>/<name>`` or ``dynamic/<style>/<motion_type>/<name>``."""
        parts = [self.movement, self.style, self.group] + ([self.category] if self.movement == "static" else []) + [self.name]
        return "/".join(parts)

    @property
    def job_id(self) -> str:
        """The batch job's id: :attr:`rel_dir` with ``-`` for ``/``."""
        return self.rel_dir.replace("/", "-")

    @property
    def scenes(self) -> int:
        return scene_count(list(self.camera_path))


def dataset_root(data: Path) -> Path:
    """``DATA`` as given (``$DATA_PATH`` or its ``WorldScore-Dataset`` folder) -> the dataset folder.

    Raises:
        MirageError: no such folder, or neither it nor a ``WorldScore-Dataset`` inside holds a split.
    """
    data = Path(data)
    if not data.is_dir():
        raise MirageError(f"{data}: no such folder (the WorldScore dataset: $DATA_PATH or its {DATASET_DIR}/, "
                          "as WorldScore's WorldScore/download.py unpacks it)")
    for root in (data / DATASET_DIR, data):
        if any((root / s / f"{s}.json").is_file() for s in SPLITS):
            return root.resolve()
    raise MirageError(f"{data}: not the WorldScore dataset (no {DATASET_DIR}/static/static.json or "
                      f"{DATASET_DIR}/dynamic/dynamic.json; fetch it with WorldScore's WorldScore/download.py)")


def split_file(root: Path, movement: str) -> Path:
    return root / movement / f"{movement}.json"


def read_dataset(data: Path, splits: tuple[str, ...] = SPLITS) -> tuple[Path, list[Instance], list[str]]:
    """Read and check every instance of ``splits``.

    Returns:
        ``(root, instances, problems)``: the dataset folder, the good instances in dataset order
        (static first), and one line per bad instance or missing split file.
    Raises:
        MirageError: ``data`` is not the dataset (see :func:`dataset_root`).
    """
    root = dataset_root(data)
    instances, problems = [], []
    seen: dict[str, int] = {}  # output folder -> the instance index that has it
    for movement in splits:
        path = split_file(root, movement)
        if not path.is_file():
            problems.append(f"{path}: missing (the {movement} split of the dataset)")
            continue
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problems.append(f"{path}: not readable JSON ({e})")
            continue
        if not isinstance(items, list):
            problems.append(f"{path}: must be a JSON list of instances (got {type(items).__name__})")
            continue
        for i, item in enumerate(items):
            try:
                inst = read_instance(item, movement, i, root)
            except MirageError as e:
                problems.append(f"{path}: instance {i}: {e}")
                continue
            if inst.rel_dir in seen:
                problems.append(f"{path}: instance {i}: same output folder {inst.rel_dir} as instance {seen[inst.rel_dir]}")
                continue
            seen[inst.rel_dir] = i
            instances.append(inst)
    return root, instances, problems


def read_instance(item, movement: str, index: int, root: Path) -> Instance:
    """One JSON object of split ``movement`` -> :class:`Instance`; MirageError ``field 'F': problem``."""
    if not isinstance(item, dict):
        raise MirageError(f"not a JSON object (got {type(item).__name__})")
    for key in REQUIRED[movement]:
        if key not in item:
            raise MirageError(f"field '{key}': missing")
    if item.get("visual_movement", movement) != movement:
        raise MirageError(f"field 'visual_movement': '{item['visual_movement']}' in the {movement} split")
    for key in ("image", "visual_style", "style") + (("scene_type",) if movement == "static" else ("motion_type", "prompt")):
        if not isinstance(item[key], str) or (key != "style" and not item[key].strip()):
            raise MirageError(f"field '{key}': must be a non-empty string (got {json.dumps(item[key])[:60]})")
    path = _camera_path(item["camera_path"], movement)
    scenes = scene_count(path)
    if movement == "static":
        for key in ("prompt_list", "content_list"):
            _strings(item[key], key, scenes + 1, f"one for the input and one per scene: {scenes + 1}")
        styled = with_style(item["prompt_list"], item["style"])
    else:
        _strings(item["objects"], "objects", 0, "")
        _strings(item["masks"], "masks", 0, "")
        styled = with_style([item["prompt"]], item["style"])
    rel = item["image"].replace("\\", "/")
    parts = rel.split("/")
    image = root / rel
    check_image(image, "image")
    # (scene_type: checked for a static item; motion_type: for the others)
    for part in (item["visual_style"], item.get("scene_type") or item["motion_type"], parts[-2] if len(parts) > 1 else ""):
        if "/" in part or part in (".", ".."):
            raise MirageError(f"'{part}': not usable as a folder name")
    if movement == "static" and len(parts) < 2:
        raise MirageError(f"field 'image': '{rel}' has no category folder (WorldScore names the instance "
                          "<category>/<name> from its last two parts)")
    return Instance(
        movement=movement, index=index, record=item, image=str(image), style=item["visual_style"],
        group=item["scene_type"] if movement == "static" else item["motion_type"],
        category=parts[-2] if movement == "static" else "", name=Path(parts[-1]).stem.split(".")[0],
        camera_path=tuple(path), prompts=tuple(scene_prompts(styled, path, movement == "static")), first_prompt=styled[0],
    )


def _camera_path(value, movement: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise MirageError(f"field 'camera_path': must be a non-empty list of layout names (got {json.dumps(value)[:60]})")
    allowed = MOVING + ((FIXED,) if movement == "dynamic" else ())
    for name in value:
        if name not in LAYOUTS:
            raise MirageError(f"field 'camera_path': unknown layout '{name}' (WorldScore's: {', '.join(LAYOUTS)})")
        if name not in allowed:
            raise MirageError(f"field 'camera_path': layout '{name}' is not one WorldScore's camera generator makes "
                              f"for a {movement} instance ({', '.join(allowed)}; its CameraGen.generate_keyframe_cameras)")
    if FIXED in value and value != [FIXED]:
        raise MirageError(f"field 'camera_path': 'fixed' must be the whole path (got {value})")
    return value


def _strings(value, key: str, at_least: int, why: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MirageError(f"field '{key}': must be a list of strings (got {json.dumps(value)[:60]})")
    if len(value) < at_least:
        raise MirageError(f"field '{key}': {len(value)} entries, needs {at_least} ({why})")


def check_image(path: Path, key: str) -> None:
    """MirageError when ``path`` is missing or is not an image Pillow can decode."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MirageError(f"field '{key}': file not found ({path})")
    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise MirageError(f"field '{key}': {path} does not open as an image ({type(e).__name__}: {e})") from e


def select(instances: list[Instance], only: list[str] | None = None, limit: int | None = None) -> list[Instance]:
    """The instances a run covers: those whose style, scene type / motion type or category is one of
    ``only`` (all when None), then the first ``limit`` of each split (all when None), in dataset order.

    Raises:
        MirageError: a name of ``only`` that matches no instance.
    """
    if only:
        names = set(only)
        unknown = names - {v for i in instances for v in (i.style, i.group, i.category)}
        if unknown:
            raise MirageError(f"--only: {', '.join(sorted(unknown))} matches no instance (names are visual styles, "
                              "scene types, categories and motion types, e.g. photorealistic, indoor, articulated)")
        instances = [i for i in instances if {i.style, i.group, i.category} & names]
    if limit is not None:
        kept = []
        for movement in SPLITS:
            kept += [i for i in instances if i.movement == movement][:limit]
        instances = kept
    return instances
