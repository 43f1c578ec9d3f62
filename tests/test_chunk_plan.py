from dataclasses import replace

import pytest
import torch

from mirage_cli.backends import ChunkRequest
from mirage_cli.backends.preview import PreviewBackend, push_pull_fill
from mirage_cli.pipeline.plan import latent_frame_indices, plan_chunks, valid_chunk_length


@pytest.mark.parametrize("n", [1, 2, 5, 9, 10, 17, 49, 50, 121])
@pytest.mark.parametrize("L,tf", [(9, 1), (17, 4), (49, 4), (10, 4)])
def test_chunk_plan_covers_every_frame_with_one_overlap(n, L, tf):
    chunks = plan_chunks(n, L, tf)
    assert chunks[0].start == 0 and chunks[-1].stop == n
    for a, b in zip(chunks, chunks[1:]):
        assert b.start == a.stop - 1  # one frame of overlap
    for c in chunks:
        assert (c.length - 1) % tf == 0 and c.length >= c.stop - c.start
        lat = latent_frame_indices(c, tf)
        assert lat[0] == c.start and all(c.start <= f < max(c.stop, 1) for f in lat)
    covered = {f for c in chunks for f in range(c.start, c.stop)}
    assert covered == set(range(n))


def test_valid_chunk_length():
    assert valid_chunk_length(49, 4) == 49 and valid_chunk_length(50, 4) == 49 and valid_chunk_length(3, 4) == 5


def test_push_pull_keeps_known_and_fills_from_background():
    v = torch.zeros(1, 1, 16, 16)
    d = torch.ones(1, 16, 16)
    v[..., :, 8:] = 1.0  # far wall value 1 on the right
    d[..., :, 8:] = 10.0
    known = torch.ones(1, 16, 16, dtype=torch.bool)
    known[:, :, 7:9] = False  # hole at the edge between near (0) and far (1)
    out = push_pull_fill(v, known, d)
    assert torch.equal(out[:, :, known[0]], v[:, :, known[0]])
    assert float(out[0, 0, :, 7:9].mean()) > 0.8  # filled mostly from the far side


def test_preview_backend_pins_frame_zero():
    T, C, h, w = 3, 3, 8, 8
    first = torch.rand(C, h, w)
    req = ChunkRequest(read_latents=torch.rand(T, C, h, w), known=torch.rand(T, h, w) > 0.3,
                       read_depth=torch.ones(T, h, w), first_latent=first)
    out = PreviewBackend().denoise(req)
    assert torch.equal(out[0], first) and out.shape == (T, C, h, w)
    prev = torch.rand(1, C, h, w)
    req = replace(req, preceding=prev)
    assert torch.equal(PreviewBackend().denoise(req)[0], prev[0])
