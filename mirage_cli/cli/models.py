"""`mirage models ...`: list the known models, download one, write the tiny test kit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from ..errors import MirageError
from ..units import fmt_bytes
from .checks import check_output_parent
from .console import console, err_console

app = typer.Typer(help="Known models: list, download, convert the paper's checkpoints, tiny random-weight kit.",
                  no_args_is_help=True)


@app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Known model names, their Hub repos, approximate sizes and whether they are in the local cache."""
    from ..models.registry import REGISTRY, cache_status, hub_cache_dir

    entries = [(spec, *cache_status(spec)) for spec in REGISTRY.values()]
    rows = [{"name": spec.name, "repo": spec.repo_id, "kind": spec.kind,
             "subfolders": list(spec.subfolders) if spec.subfolders else None,
             "size_gb": spec.size_gb, "cached": status, "path": str(snap) if snap else None,
             "description": spec.description} for spec, status, snap in entries]
    if as_json:
        typer.echo(json.dumps({"cache_dir": str(hub_cache_dir()), "models": rows}, indent=2))
        return
    # a name is what the user types: never broken (the column is as wide as the longest); its Hub
    # repo goes dim on the line below and folds where 80 columns cannot hold it
    table = Table(title=f"models (cache: {hub_cache_dir()})", title_justify="left")
    table.add_column("name / Hub repo", overflow="fold", min_width=max(len(spec.name) for spec, _, _ in entries))
    for col in ("kind", "size", "cached"):
        table.add_column(col, no_wrap=True)
    colour = {"cached": "green", "partial": "yellow", "absent": "dim"}
    for spec, status, _ in entries:
        table.add_row(f"{spec.name}\n[dim]{spec.repo_id}[/]", spec.kind, f"≈{spec.size_gb:g} GB",
                      f"[{colour[status]}]{status}[/]")
    console.print(table)
    console.print("fetch one with [bold]mirage models download NAME[/]; any diffusers-layout folder also works "
                  "as --model DIR", highlight=False)


@app.command("download")
def download(
    name: str = typer.Argument(..., help="Registry name (see `mirage models list`) or Hub repo id."),
) -> None:
    """Fetch a model's needed subfolders (configs + safetensors only) into the Hugging Face cache."""
    from ..models.registry import hub_cache_dir, hub_offline, lookup, missing_parts, resolve_model, snapshot_dir

    repo_id, spec = lookup(name)
    if hub_offline():
        snap = snapshot_dir(repo_id, hub_cache_dir())
        sub = list(spec.subfolders) if spec and spec.subfolders else None
        if snap is None or missing_parts(snap, sub):
            raise MirageError(f"cannot download {name} ({repo_id}): HF_HUB_OFFLINE is set; unset it (and be online), "
                              "or pass a local copy in Hub layout as --model DIR")
    size = f" (≈{spec.size_gb:g} GB)" if spec else ""
    err_console.print(f"downloading {name} from {repo_id}{size} ...", highlight=False)
    path = resolve_model(name, download=True)
    console.print(f"{name}: {path}", highlight=False)


@app.command("convert")
def convert(
    base: str = typer.Option(..., "--base", help="Wan2.2-TI2V-5B in diffusers layout: DIR, Hub repo id or "
                             "registry name (wan2.2-ti2v-5b)."),
    vace: Path = typer.Option(..., "--vace", help="The trained VACE safetensors (the reference's vace.safetensors "
                              "or Spatia's step-8500 / control_weight_8500.safetensors)."),
    lora: Path | None = typer.Option(None, "--lora", help="The trained LoRA safetensors (optional)."),
    layout: str = typer.Option("mirage", "--layout", help="mirage (the reference's: VACE blocks evenly spaced, LoRA "
                               "fused) or spatia (Spatia's: VACE on every 4th layer, its LoRA key rule, LoRA kept "
                               "unfused so --backend spatia runs round 0 without it)."),
    vace_layers: str | None = typer.Option(None, "--vace-layers", help="DiT layers of the VACE blocks, e.g. "
                                              "0,4,8,12,16,20,24,28 (default: the layout's)."),
    out: Path = typer.Option(..., "--out", "-o", help="New directory for the converted model."),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="W += scale * B @ A (1 = as trained)."),
    download: bool = typer.Option(False, "--download", help="Fetch a missing base from the Hub."),
    max_shard_gb: float = typer.Option(5.0, "--max-shard-size", help="Largest transformer shard file in GB "
                                       "(the conversion streams one tensor at a time whatever the size)."),
) -> None:
    """Convert the paper's VACE + LoRA checkpoints and a Wan2.2-TI2V-5B base into one diffusers folder.

    The result loads with `--backend mirage --model OUT` (`--backend spatia` for --layout spatia).
    """
    from ..models.convert import convert_mirage

    if not max_shard_gb > 0:
        raise MirageError(f"--max-shard-size must be > 0 (got {max_shard_gb})")
    check_output_parent(out, "--out")
    layers = None
    if vace_layers is not None:
        try:
            layers = [int(x) for x in vace_layers.split(",") if x.strip()]
        except ValueError:
            raise MirageError(f"--vace-layers: expected comma-separated layer numbers (got '{vace_layers}')") from None
    report = convert_mirage(base, vace, lora, out, lora_scale=lora_scale, download=download,
                            max_shard_bytes=int(max_shard_gb * 1e9), vace_layers=layers, layout=layout,
                            log=lambda s: err_console.print(s, highlight=False))
    sys.stderr.flush()  # the progress lines above come first, also when both streams go to one pipe
    shards = f"{report.shards} shard{'s' if report.shards != 1 else ''}"
    lora_info = report.info.get("lora")
    how = ("no LoRA" if lora_info is None else
           f"LoRA fused into {report.lora_modules} weights (scale {lora_scale:g})" if lora_info["fused"] else
           f"LoRA for {report.lora_modules} weights kept unfused in {lora_info['file']} (switchable per chunk)")
    console.print(f"{report.out} ({layout} layout): {report.tensors} tensors ({fmt_bytes(report.total_bytes)}) in "
                  f"{shards}, {how}; peak held {fmt_bytes(report.peak_held_bytes)}, "
                  f"peak RSS {fmt_bytes(report.peak_rss_bytes)}, {report.seconds:.1f} s", highlight=False, soft_wrap=True)


TINY_KINDS = ("wan-vace", "mirage", "spatia")  # what models/tiny.py's make_tiny_kit writes


@app.command("tiny")
def tiny(
    directory: Path = typer.Argument(..., help="New (or empty) directory to write the kit into."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    kind: str = typer.Option("wan-vace", "--kind", help="wan-vace (a Wan2.1-VACE folder), mirage (a Wan2.2 "
                             "base + VACE + LoRA in the reference's naming, for `mirage models convert`) or spatia "
                             "(the same in Spatia's layout, for `mirage models convert --layout spatia`)."),
) -> None:
    """Write tiny random-weight models in Hub layout (model + DIR/depth) for tests and smoke runs.

    wan-vace: use it as `mirage generate IMAGE --backend wan-vace --model DIR` (runs on CPU in seconds, output is
    noise). mirage: convert DIR/base + DIR/vace.safetensors + DIR/lora.safetensors with `mirage models convert`.
    """
    if kind not in TINY_KINDS:  # before the import below (torch, seconds)
        raise MirageError(f"unknown tiny kit kind '{kind}' (use {' or '.join(TINY_KINDS)})")
    from ..models.tiny import make_tiny_kit

    paths = make_tiny_kit(directory, seed=seed, kind=kind)
    if kind in ("mirage", "spatia"):
        console.print(f"Wan2.2 base (random weights): {paths['base']}\nVACE: {paths['vace_file']}\n"
                      f"LoRA: {paths['lora_file']}\ndepth model (random weights): {paths['depth']}", highlight=False)
        return
    console.print(f"wan-vace (random weights): {paths['vace']}\ndepth model (random weights): {paths['depth']}",
                  highlight=False)
