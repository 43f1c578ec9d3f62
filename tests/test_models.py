"""Model registry, Hub/local/offline resolution, device/dtype policy, `mirage models` CLI."""

import json
import time
from pathlib import Path

import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.errors import MirageError
from mirage_cli.models.registry import (
    REGISTRY,
    VACE_SUBFOLDERS,
    cache_status,
    hub_cache_dir,
    missing_parts,
    resolve_device,
    resolve_dtype,
    resolve_model,
    weights_kind,
)

REPO = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty HF_HOME, offline."""
    home = tmp_path / "hf"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _fake_vace_folder(root: Path, shards: bool = True) -> Path:
    """A diffusers Wan-VACE folder with placeholder files (resolution only looks at the layout)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanVACEPipeline",
                                                       "transformer": ["diffusers", "WanVACETransformer3DModel"]}))
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    (root / "tokenizer" / "tokenizer_config.json").write_text("{}")
    for sf in ("text_encoder", "transformer", "vae"):
        (root / sf).mkdir()
        (root / sf / "config.json").write_text("{}")
    (root / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (root / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    if shards:
        names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        (root / "text_encoder" / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"a": names[0], "b": names[1]}}))
        for n in names:
            (root / "text_encoder" / n).write_bytes(b"x")
    else:
        (root / "text_encoder" / "model.safetensors").write_bytes(b"x")
    return root


def _fake_cache(home: Path, repo: str = REPO, commit: str = "0123abcd") -> Path:
    repo_dir = home / "hub" / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return _fake_vace_folder(repo_dir / "snapshots" / commit)


def test_registry_names_and_repos():
    assert REGISTRY["wan2.1-vace-1.3b"].repo_id == "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
    assert REGISTRY["wan2.1-vace-14b"].repo_id == "Wan-AI/Wan2.1-VACE-14B-diffusers"
    assert REGISTRY["depth-anything-v2-small"].repo_id == "depth-anything/Depth-Anything-V2-Small-hf"
    assert REGISTRY["wan2.1-vae"].repo_id == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    assert REGISTRY["wan2.2-vae"].repo_id == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    assert REGISTRY["wan2.1-vae"].default_subfolder == "vae" and REGISTRY["wan2.2-vae"].subfolders == ("vae",)
    assert set(REGISTRY["wan2.1-vace-1.3b"].subfolders) == {"scheduler", "tokenizer", "text_encoder",
                                                            "transformer", "vae"}
    assert all(s.size_gb > 0 for s in REGISTRY.values())


def test_offline_missing_model_fails_fast_with_the_fetch_command(empty_hub):
    t0 = time.perf_counter()
    with pytest.raises(MirageError) as ei:
        resolve_model("wan2.1-vace-1.3b", list(VACE_SUBFOLDERS))
    assert time.perf_counter() - t0 < 1.0
    msg = str(ei.value)
    assert "wan2.1-vace-1.3b" in msg and REPO in msg and "mirage models download wan2.1-vace-1.3b" in msg
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg


def test_missing_model_without_offline_flag_never_touches_the_network(empty_hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    t0 = time.perf_counter()
    with pytest.raises(MirageError, match="mirage models download Wan-AI/Some-Model"):
        resolve_model("Wan-AI/Some-Model")  # a repo id, not in the registry; download=False by default
    assert time.perf_counter() - t0 < 1.0


def test_cached_snapshot_resolves_and_partial_is_reported(empty_hub):
    snap = _fake_cache(empty_hub)
    assert resolve_model("wan2.1-vace-1.3b") == snap
    assert resolve_model(REPO, ["vae"]) == snap  # repo id works too
    assert cache_status(REGISTRY["wan2.1-vace-1.3b"]) == ("cached", snap)
    (snap / "text_encoder" / "model-00002-of-00002.safetensors").unlink()
    assert resolve_model("wan2.1-vace-1.3b", ["vae"]) == snap  # only what is asked for is checked
    with pytest.raises(MirageError, match="incomplete.*text_encoder/.*shard"):
        resolve_model("wan2.1-vace-1.3b")
    assert cache_status(REGISTRY["wan2.1-vace-1.3b"])[0] == "partial"
    assert hub_cache_dir() == empty_hub / "hub"


def test_local_directory_in_hub_layout(tmp_path):
    root = _fake_vace_folder(tmp_path / "m", shards=False)
    assert resolve_model(str(root), list(VACE_SUBFOLDERS)) == root.resolve()
    assert missing_parts(root, list(VACE_SUBFOLDERS)) == []
    (root / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    (root / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(MirageError, match="transformer/ has only pickle weights"):
        resolve_model(root, list(VACE_SUBFOLDERS))
    with pytest.raises(MirageError, match="does not exist"):
        resolve_model(str(tmp_path / "nope" / "deeper"))
    with pytest.raises(MirageError, match="unknown model 'not-a-model'"):
        resolve_model("not-a-model")


def test_a_mistyped_local_path_is_not_taken_for_a_repo_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kit").mkdir()
    with pytest.raises(MirageError, match=r"model directory kit/vae does not exist \(its parent kit/ is a local folder"):
        resolve_model("kit/vae")


def test_weights_kind_marker(tmp_path):
    assert weights_kind(tmp_path) == "real"
    (tmp_path / "mirage_random_weights.json").write_text("{}")
    (tmp_path / "vae").mkdir()
    assert weights_kind(tmp_path) == "random" and weights_kind(tmp_path / "vae") == "random"


def test_device_and_dtype_policy():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype("fp16", "cpu") == torch.float16
    assert resolve_dtype(torch.float32, "cuda") == torch.float32
    with pytest.raises(MirageError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(MirageError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(MirageError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cli_models_list_and_download_offline(empty_hub, capsys):
    _fake_cache(empty_hub)
    assert main(["models", "list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    status = {m["name"]: m["cached"] for m in out["models"]}
    assert status["wan2.1-vace-1.3b"] == "cached" and status["wan2.1-vace-14b"] == "absent"
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert "wan2.1-vace-14b" in table
    assert "depth-anything-v2-metric-outdoor-small" in table  # a name is never broken, even at 80 columns
    assert main(["models", "download", "wan2.1-vace-14b"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "Wan-AI/Wan2.1-VACE-14B-diffusers" in err and "Traceback" not in err
    assert main(["models", "download", "wan2.1-vace-1.3b"]) == 0  # already cached: prints the path
