"""Run by ``test_train_fit.test_fsdp2_checkpoint_gathers_and_reshards`` under ``torchrun --nproc_per_node 2``
(gloo, CPU): the tiny Mirage model sharded with ``fully_shard`` per DiT block and at the root (what
accelerate's FSDP2 config applies), one VACE step, then the checkpoint code: gathered weights and AdamW
moments equal an unsharded run's step, rank 0 alone writes, a reload re-shards the moments.

Usage: ``torchrun --nproc_per_node 2 tests/train_fsdp2_worker.py BASE OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from mirage_cli.train import checkpoint as ck
from mirage_cli.train.model import build_model, trainable
from mirage_cli.train.objective import transformer_fn
from mirage_cli.train.sharding import full, is_sharded


def step(model, inputs):
    named = trainable(model, "vace")
    opt = torch.optim.AdamW([p for _, p in named], lr=1e-2, weight_decay=0.01)
    out = transformer_fn(model)(*inputs)
    out.square().mean().backward()
    opt.step()
    return opt, [n for n, _ in named]


def main(base: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 48, 4, 4, 4, generator=g), torch.tensor([[0.0, 0.0, 600.0, 0.0]]),
              torch.randn(1, 6, 32, generator=g), torch.randn(1, 96, 3, 4, 4, generator=g), 1)
    plain = build_model(base, lora_rank=4)
    plain_opt, names = step(plain, inputs)
    want_w, want_m = ck.trainable_state(plain), ck.optimizer_tensors(plain_opt, names)

    model = build_model(base, lora_rank=4)
    mesh = init_device_mesh("cpu", (world,))
    for block in model.blocks:  # as configs/accelerate/fsdp_5b.yaml: DiT blocks; the VACE blocks in the root unit
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt, names2 = step(model, inputs)
    assert names2 == names and any(is_sharded(p) for p in model.parameters())
    weights, moments = ck.collect(model, opt, names, writer=rank == 0)  # every rank takes part in the gathers
    if rank == 0:
        assert weights.keys() == want_w.keys() and moments.keys() == want_m.keys()
        for k, v in {**weights, **moments}.items():
            ref = {**want_w, **want_m}[k]
            assert v.shape == ref.shape and torch.allclose(v, ref, rtol=1e-4, atol=1e-6), k
        ck.save_checkpoint(Path(out), 1, weights, moments, {"step": 1}, keep_last=2)
    else:
        assert weights == {} and moments == {}
    dist.barrier()
    saved = ck.load_checkpoint(Path(out))
    fresh = torch.optim.AdamW([p for _, p in trainable(model, "vace")], lr=1e-2)
    ck.load_optimizer(fresh, names, saved.optimizer, saved.path)
    params = [p for gr in fresh.param_groups for p in gr["params"]]
    for i, p in enumerate(params):
        st = fresh.state[p]
        assert is_sharded(st["exp_avg"]) == is_sharded(p)
        assert torch.equal(full(st["exp_avg"]), saved.optimizer[f"{names[i]}::exp_avg"])
    print(f"rank {rank}: ok ({len(saved.weights)} tensors saved)", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
