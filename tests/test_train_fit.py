"""Issue 25 items 1, 3 and 6: memory dropout, the pre-run memory estimate, FSDP configs, bad input before a run."""

from __future__ import annotations

from dataclasses import replace

import pytest
import test_train
import torch
from test_train import _cfg

from mirage_cli.backends import PrecedingReads
from mirage_cli.data.shards import TrainingShards, load_extras
from mirage_cli.train.loop import _draw_batch, step_seed, train
from mirage_cli.train.objective import StoredConditioning, make_batch, sample_request

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module
kit, shards = test_train.kit, test_train.shards  # test_train's module fixtures: the tiny kit, two prepared samples


# ------------------------------------------------------------------------------------------ memory dropout
def _cond(shards) -> StoredConditioning:
    return StoredConditioning(load_extras(shards), (1, 2, 2), str(shards))


def test_memory_dropout_one_is_the_empty_memory_read(shards):
    ds = TrainingShards(shards)
    s = ds[0]
    cond = _cond(shards)
    dropped = make_batch([s], cond, 2, 2, [False], [True])
    # what the engine hands the backend for an empty memory: nothing read, nothing known, no stored reads
    req = sample_request(s, 2, 2, s.key)
    T, C, h, w = req.read_latents.shape
    empty = replace(req, read_latents=torch.zeros(T, C, h, w), known=torch.zeros(T, h, w, dtype=torch.bool),
                    extras=(PrecedingReads(torch.zeros(3, C, h, w), torch.zeros(3, h, w, dtype=torch.bool)),))
    cond.set_texts({s.key: cond.pad_text(s.tensors["text"])})
    want = cond.build_inputs(empty)
    assert torch.equal(dropped.context, want.context.float())
    assert dropped.context[:, :C].abs().sum() == 0  # the memory half is empty ...
    kept = make_batch([s], cond, 2, 2, [False])
    assert kept.context[:, :C].abs().sum() > 0  # ... where the sample's read was not
    assert torch.equal(dropped.context[:, C:], kept.context[:, C:])  # the white-video half is untouched
    for f in ("x0", "reference", "preceding", "text"):
        assert torch.equal(getattr(dropped, f), getattr(kept, f)), f
    assert torch.equal(make_batch([s], cond, 2, 2, [False], [False]).context, kept.context)


def test_memory_dropout_draws_from_the_step_generator(kit, shards, tmp_path):
    ds = TrainingShards(shards)
    samples = [ds[0], ds[1]]
    cond = _cond(shards)
    C = samples[0].tensors["target"].shape[1]

    def draw(p: float, seed: int):
        g = torch.Generator().manual_seed(step_seed(seed))
        b = _draw_batch(_cfg(kit, shards, tmp_path, memory_dropout=p), cond, samples, g)
        return b, torch.rand(1, generator=g).item()  # where the generator stands after the draws

    plain = make_batch(samples, cond, 4, 2, (torch.rand(2, generator=torch.Generator().manual_seed(step_seed(0)))
                                             < 0.1).tolist())
    b0, after0 = draw(0.0, 0)
    assert torch.equal(b0.context, plain.context)
    g = torch.Generator().manual_seed(step_seed(0))
    torch.rand(2, generator=g)  # P = 0 draws nothing more than before the option existed
    assert after0 == torch.rand(1, generator=g).item()
    b1, _ = draw(1.0, 0)
    assert b1.context[:, :C].abs().sum() == 0 and torch.equal(b1.context[:, C:], plain.context[:, C:])
    # P = 0.5: per sample, the same draws for the same seed, both outcomes over seeds
    outcomes = set()
    for seed in range(12):
        a, b = draw(0.5, seed)[0], draw(0.5, seed)[0]
        assert torch.equal(a.context, b.context)
        outcomes.update(bool(a.context[i, :C].abs().sum() == 0) for i in range(2))
    assert outcomes == {True, False}


def test_memory_dropout_resume_is_bit_identical(kit, shards, tmp_path):
    cfg = _cfg(kit, shards, tmp_path / "a", stages=("vace",), max_steps=3, save_every=1, memory_dropout=0.5)
    a = train(cfg)

    def crash(rec):
        if rec.step == 2:
            raise KeyboardInterrupt
    b_cfg = replace(cfg, out=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        train(b_cfg, on_step=crash)
    b = train(b_cfg, resume=tmp_path / "b")
    assert b.losses == a.losses
    assert train(replace(cfg, out=str(tmp_path / "c"), memory_dropout=0.0)).losses != a.losses
