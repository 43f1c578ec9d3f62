"""Captions from a local vision-language model (placeholder, completed below)."""

from __future__ import annotations


def check_caption_model(ref: str) -> None:
    from ..models.registry import resolve_model

    resolve_model(ref)


def caption_samples(model: str | None, seed: int, device: str = "auto"):
    return None
