"""Issue 25: `mirage train` — objective, initialisation, stages, checkpoints / resume, export -> convert -> generate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mirage_cli.cli import main
from mirage_cli.data.shards import TrainingShards, load_extras
from mirage_cli.train.config import TrainConfig
from mirage_cli.train.loop import train
from mirage_cli.train.model import build_model, is_lora, is_vace
from mirage_cli.train.objective import Batch, StoredConditioning, flow_loss, make_batch, sample_sigmas, transformer_fn

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module


@pytest.fixture(scope="module")
def kit(train_kit):  # conftest: one tiny mirage kit for the trainer's test modules
    return train_kit


@pytest.fixture(scope="module")
def shards(train_shards):  # conftest: two synthetic clips prepared once
    return train_shards


def _cfg(kit, shards, out, **kw) -> TrainConfig:
    base = dict(data=str(shards), model=str(kit["base"]), out=str(out), max_steps=2, lora_rank=4, lora_alpha=8.0,
                lr_vace=1e-3, lr_lora=1e-3, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _random_batch(B=2, C=3, T=4, R=2, P=1, h=2, w=2, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return Batch(r(B, C, T, h, w), r(B, C, R, h, w), r(B, C, P, h, w), r(B, 2 * C, T + P, h, w), r(B, 5, 7),
                 tuple(str(i) for i in range(B)))


# ------------------------------------------------------------------------------------------ objective
def test_loss_is_zero_for_the_exact_velocity_and_ignores_context_frames():
    batch = _random_batch()
    T, R = batch.x0.shape[2], batch.reference.shape[2]
    sig = sample_sigmas(T, 5.0, torch.Generator().manual_seed(1))
    noise = torch.randn(batch.x0.shape, generator=torch.Generator().manual_seed(2))
    assert sig[0] == 0 and (sig[1:] > 0).all() and (sig < 1).all()

    def exact(junk: float):
        def fn(seq, ts, text, ctx, n_ref):
            out = torch.full_like(seq, junk)  # references, frame 0 and preceding frames: anything
            out[:, :, n_ref + 1:n_ref + T] = (noise - batch.x0)[:, :, 1:]
            return out
        return fn

    assert flow_loss(exact(0.0), batch, sig, noise) == 0
    assert flow_loss(exact(123.0), batch, sig, noise) == 0

    seen = {}

    def zero(seq, ts, text, ctx, n_ref):
        seen.update(seq=seq.clone(), ts=ts.clone(), n_ref=n_ref)
        return torch.zeros_like(seq)

    loss = flow_loss(zero, batch, sig, noise)
    # hand-computed: the noisy target and the MSE of a zero prediction against eps - x0 on frames 1..
    s = sig.view(1, 1, T, 1, 1)
    xt = (1 - s) * batch.x0 + s * noise
    assert torch.equal(seen["seq"][:, :, R:R + T], xt) and torch.equal(seen["seq"][:, :, R, :], batch.x0[:, :, 0])
    assert torch.equal(seen["seq"][:, :, :R], batch.reference) and seen["n_ref"] == R
    assert seen["ts"].tolist() == [[0.0] * R + (1000 * sig).tolist() + [0.0]] * 2
    expected = ((noise - batch.x0)[:, :, 1:] ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="sigmas"):
        flow_loss(zero, batch, sig + 0.1, noise)


def test_batch_is_built_by_the_backends_build_inputs(shards):
    ds = TrainingShards(shards)
    s = ds[0]
    cond = StoredConditioning(load_extras(shards), (1, 2, 2), str(shards))
    b = make_batch([s], cond, 3, 2, [False])
    T, C, h, w = s.tensors["target"].shape
    assert b.x0.shape == (1, C, T, h, w) and b.reference.shape == (1, C, 3, h, w) and b.preceding.shape == (1, C, 2, h, w)
    assert torch.equal(b.preceding[0].permute(1, 0, 2, 3), s.tensors["preceding"].float())
    read = s.tensors["target_read"].float() * s.tensors["target_known"][:, None]
    assert torch.equal(b.context[0, :C, :T].permute(1, 0, 2, 3), read)
    assert torch.equal(b.context[0, C:].permute(1, 0, 2, 3), load_extras(shards).white[T + 2].float())
    n = s.tensors["text"].shape[0]
    assert b.text.shape[1] == 512 and torch.equal(b.text[0, :n], s.tensors["text"].float()) and b.text[0, n:].abs().sum() == 0
    dropped = make_batch([s], cond, 0, 0, [True])
    assert dropped.reference.shape[2] == 0 and dropped.context.shape[2] == T
    assert torch.equal(dropped.text, cond.empty_text)


# ------------------------------------------------------------------------------------------ init / stages
def test_fresh_vace_and_lora_leave_the_base_prediction_unchanged(kit):
    model = build_model(str(kit["base"]), lora_rank=4)
    names = [n for n, _ in model.named_parameters()]
    assert not any(is_vace(n) and is_lora(n) for n in names)  # no LoRA in the VACE blocks
    assert sum(is_lora(n) for n in names) == 2 * 10 * model.config.num_layers  # A, B x (q k v o x 2 attentions + 2 FFN)
    batch = _random_batch(B=1, C=48, T=3, R=1, P=1, h=4, w=4)
    batch = replace(batch, text=torch.randn(1, 5, model.config.text_dim), context=torch.randn(1, 96, 4, 4, 4))
    ts = torch.tensor([[0.0, 0.0, 500.0, 500.0, 0.0]])
    seq = torch.cat([batch.reference, batch.x0, batch.preceding], 2)
    fn = transformer_fn(model)
    with torch.no_grad():
        out = fn(seq, ts, batch.text, batch.context, 1)
        no_hint = model(seq, ts, batch.text, batch.context, num_ref_frames=1,
                        control_hidden_states_scale=torch.zeros(len(model.config.vace_layers)), return_dict=False)[0]
    assert torch.equal(out, no_hint)
    mixed = build_model(str(kit["base"]), lora_rank=4, base_dtype=torch.bfloat16)  # --mixed-precision bf16
    assert {p.dtype for n, p in mixed.named_parameters() if is_vace(n) or is_lora(n)} == {torch.float32}
    assert {p.dtype for n, p in mixed.named_parameters() if not (is_vace(n) or is_lora(n))} == {torch.bfloat16}
    copy = build_model(str(kit["base"]), init_vace="copy")
    vb, blk = copy.vace_blocks[1], copy.blocks[copy.config.vace_layers[1]]
    assert torch.equal(vb.attn1.to_q.weight, blk.attn1.to_q.weight) and vb.proj_out.weight.abs().sum() == 0


def test_each_stage_changes_only_its_tensors_and_never_the_base(kit, shards, tmp_path):
    def params(model):  # peft moves a wrapped Linear's weight to <module>.base_layer.weight
        return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.named_parameters()}

    fresh = params(build_model(str(kit["base"]), lora_rank=4))
    for stage in ("vace", "lora"):
        r = train(_cfg(kit, shards, tmp_path / stage, stages=(stage,), max_steps=1))
        after = params(r.model)
        for n, p in after.items():
            changed = not torch.equal(p, fresh[n])
            if is_vace(n):
                assert p.dtype == torch.float32
            if stage == "vace" and is_lora(n):
                pytest.fail(f"{n}: a vace-only run has no LoRA")
            mine = is_vace(n) if stage == "vace" else is_lora(n)
            if not mine:
                assert not changed, n
        assert any(not torch.equal(p, fresh[n]) for n, p in after.items()
                   if (is_vace(n) if stage == "vace" else ".lora_B." in n))


# ------------------------------------------------------------------------------------------ resume
def test_resume_after_a_kill_is_bit_identical(kit, shards, tmp_path):
    """4 steps (2 vace + 2 lora, batch 2 over 2 samples, 2 epochs) straight, against 1 step, a crash, and a resume."""
    cfg = _cfg(kit, shards, tmp_path / "a", save_every=1, batch_size=2, text_dropout=0.5, random_counts=True)
    a = train(cfg)
    assert a.steps == 4 and all(torch.isfinite(torch.tensor(a.losses)))

    def crash(rec):
        if rec.step == 2:
            raise KeyboardInterrupt  # as a kill: step 2 is not checkpointed
    b_cfg = replace(cfg, out=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        train(b_cfg, on_step=crash)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-0000001"]
    b = train(b_cfg, resume=tmp_path / "b")
    assert b.resumed_from.name == "step-0000001" and b.losses == a.losses
    for n, p in a.model.named_parameters():
        assert torch.equal(p, dict(b.model.named_parameters())[n]), n
    rows = [json.loads(r) for r in (tmp_path / "b" / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and [r["loss"] for r in rows] == a.losses
    # a checkpoint from another configuration is refused with one line
    assert main(["train", "--data", str(shards), "--model", str(kit["base"]), "--out", str(tmp_path / "b"),
                 "--resume", str(tmp_path / "b"), "--lora-rank", "8", "--device", "cpu", "-q"]) == 2


# ------------------------------------------------------------------------------------------ export
def test_export_convert_forward_matches_and_generate_runs(kit, shards, tmp_path, capsys):
    from mirage_cli.models.convert import convert_mirage
    from mirage_cli.models.mirage_transformer import MirageTransformer3DModel

    assert main(["train", "--data", str(shards), "--model", str(kit["base"]), "--out", str(tmp_path / "t"),
                 "--max-steps", "2", "--lora-rank", "4", "--lora-alpha", "8", "--lr-vace", "1e-2", "--lr-lora", "1e-2",
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "mirage models convert --base" in err and "lora" in err
    final = tmp_path / "t" / "final"
    with safe_open(str(final / "lora.safetensors"), "pt") as f:
        assert f.metadata()["rank"] == "4" and f.metadata()["alpha"] == "8.0"
        assert "pipe.dit.blocks.0.self_attn.q.lora_A.weight" in f.keys() and "pipe.dit.blocks.0.ffn.2.alpha" in f.keys()
    record = json.loads((final / "train.json").read_text())
    assert record["steps"] == 4 and record["config"]["lora_rank"] == 4
    out = tmp_path / "model"
    convert_mirage(kit["base"], final / "vace.safetensors", final / "lora.safetensors", out)
    converted = MirageTransformer3DModel.from_pretrained(str(out / "transformer")).eval()

    from mirage_cli.train.checkpoint import load_exported
    trained = build_model(str(kit["base"]), lora_rank=4, lora_alpha=8.0).eval()
    load_exported(trained, final / "vace.safetensors", final / "lora.safetensors")
    assert any(p.abs().sum() > 0 for n, p in trained.named_parameters() if ".lora_B." in n)
    g = torch.Generator().manual_seed(0)
    seq, ctx = torch.randn(1, 48, 5, 4, 4, generator=g), torch.randn(1, 96, 4, 4, 4, generator=g)
    text = torch.randn(1, 6, trained.config.text_dim, generator=g)
    ts = torch.tensor([[0.0, 0.0, 700.0, 700.0, 0.0]])
    with torch.no_grad():
        want = transformer_fn(trained)(seq, ts, text, ctx, 1)
        got = transformer_fn(converted)(seq, ts, text, ctx, 1)
    assert (got - want).abs().max() < 1e-5 * max(1.0, want.abs().max().item())

    from mirage_cli.io import read_video
    from mirage_cli.pipeline.generate import GenerateConfig, generate

    room = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
    rec = generate(GenerateConfig(image=room, traj="orbit_left", backend="mirage", model=str(out), steps=2, height=64,
                                  width=96, frames=9, chunk_frames=9, out=str(tmp_path / "run"), device="cpu"),
                   warn=lambda m: None, quiet=True)
    frames = read_video(tmp_path / "run" / "video.mp4")
    assert len(frames) == rec["trajectory"]["frames"] == 9 and frames.std() > 0


def test_validation_loss_at_fixed_noise_decreases_with_training(kit, shards, tmp_path):
    cfg = _cfg(kit, shards, tmp_path / "v", stages=("vace",), max_steps=12, lr_vace=3e-3, text_dropout=0.0)
    ds = TrainingShards(shards)
    cond = StoredConditioning(load_extras(shards), (1, 2, 2), str(shards))
    batch = make_batch([ds[0], ds[1]], cond, 4, 2, [False, False])
    sig = torch.tensor([0.0] + [0.6] * (batch.x0.shape[2] - 1))
    noise = torch.randn(batch.x0.shape, generator=torch.Generator().manual_seed(5))

    def val(model):
        with torch.no_grad():
            return flow_loss(transformer_fn(model.eval()), batch, sig, noise).item()

    before = val(build_model(str(kit["base"]), lora_rank=None))
    r = train(cfg)
    after = val(r.model)
    assert all(torch.isfinite(torch.tensor(r.losses))) and after < before


def test_bad_input_is_one_line_exit_2(kit, shards, tmp_path, capsys):
    base = ["train", "--out", str(tmp_path / "o"), "--max-steps", "1", "--device", "cpu", "-q"]
    cases = [(["--data", str(tmp_path / "none"), "--model", str(kit["base"])], "no such folder"),
             (["--data", str(shards / "index.json"), "--model", str(kit["base"])], "a file, not a shard folder"),
             (["--data", str(shards), "--model", str(shards)], "transformer"),
             (["--data", str(shards), "--model", str(kit["base"]), "--lora-rank", "0"], "--lora-rank"),
             (["--data", str(shards), "--model", str(kit["base"]), "--stage", "dit"], "--stage"),
             (["--data", str(shards), "--model", str(kit["base"]), "--resume", str(tmp_path)], "no checkpoint")]
    for args, word in cases:
        assert main(base + args) == 2, args
        err = capsys.readouterr().err.strip()
        assert word in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o" / "final").exists()


def test_an_out_holding_an_earlier_run_is_refused_without_resume_or_overwrite(kit, shards, tmp_path, capsys):
    """Two runs' checkpoints in one folder would make --keep-last delete the new ones and --resume pick the old."""
    out = tmp_path / "o"
    args = ["train", "--data", str(shards), "--model", str(kit["base"]), "--out", str(out), "--max-steps", "1",
            "--stage", "vace", "--device", "cpu", "-q"]
    assert main(args) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(args + ["--lora-rank", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds an earlier training run" in err and f"--resume {out}" in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing touched
    (out / "checkpoints" / "step-0000099").mkdir()  # an older run's higher step, which --keep-last would favour
    assert main(args + ["--overwrite"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000001"]


def _cli(kit, shards, out, *extra) -> list[str]:
    return [sys.executable, "-m", "mirage_cli", "--threads", "1", "train", "--data", str(shards), "--model",
            str(kit["base"]), "--out", str(out), "--lora-rank", "4", "--lora-alpha", "8", "--lr-vace", "1e-3",
            "--lr-lora", "1e-3", "--device", "cpu", *extra]


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _losses(out: Path) -> list[float]:
    return [json.loads(r)["loss"] for r in (out / "train.jsonl").read_text().splitlines()]


def _final(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {f"{f}:{k}": v for f in ("vace", "lora") for k, v in load_file(str(out / "final" / f"{f}.safetensors")).items()}


RESUME_ARGS = ("--save-every", "1", "--keep-last", "100", "--batch-size", "2", "--text-dropout", "0.5",
               "--random-counts", "-q")


@pytest.fixture(scope="module")
def straight_run(kit, shards, tmp_path_factory):
    """An uninterrupted subprocess run: 2 stages x 5 steps, batch 2 (every draw of the trainer exercised)."""
    out = tmp_path_factory.mktemp("train-straight") / "s"
    subprocess.run(_cli(kit, shards, out, "--max-steps", "5", *RESUME_ARGS), env=_env(), check=True, timeout=300)
    return out


def _interrupt(kit, shards, out: Path, sig: int) -> subprocess.CompletedProcess:
    """A subprocess run sent ``sig`` once its step-2 checkpoint is on disk (it would run 100000 steps)."""
    proc = subprocess.Popen(_cli(kit, shards, out, "--max-steps", "100000", *RESUME_ARGS), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mark = out / "checkpoints" / "step-0000002"
    deadline = time.time() + 120
    while time.time() < deadline and not mark.is_dir() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
                         ids=["sigint", "sigkill"])
def test_resume_in_a_new_process_after_sigint_or_sigkill_is_bit_identical(kit, shards, straight_run, tmp_path, sig):
    """Killed (SIGKILL: mid-step, after checkpoint 2) or interrupted (SIGINT: finishes the step, writes a
    checkpoint, exit 130) in one process, resumed with --resume in another: the same train.jsonl losses
    and final weights, bit for bit, as the uninterrupted subprocess run (same --threads 1 everywhere)."""
    out = tmp_path / "k"
    done = _interrupt(kit, shards, out, sig)
    if sig == signal.SIGINT:
        assert done.returncode == 130 and "interrupted" in done.stderr, done.stderr
    else:
        assert done.returncode == -signal.SIGKILL
    assert not (out / "final").exists()
    newest = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert 2 <= newest < 5  # stopped inside the VACE stage; the resume crosses into the LoRA stage
    state = json.loads((out / "checkpoints" / f"step-{newest:07d}" / "state.json").read_text())
    assert state["threads"] == 1
    resumed = subprocess.run(_cli(kit, shards, out, "--max-steps", "5", "--resume", str(out), *RESUME_ARGS),
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step {newest}" in resumed.stderr and "warning" not in resumed.stderr
    want = _losses(straight_run)
    assert len(want) == 10 and _losses(out) == want
    a, b = _final(straight_run), _final(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_at_another_thread_count_warns(kit, shards, straight_run, tmp_path):
    """The last bits of CPU reductions depend on the thread count (1 vs 2 threads changed a loss by
    1 ulp): a resume at another count than the checkpoint's says so and names the --threads to give."""
    import shutil

    out = tmp_path / "w"
    shutil.copytree(straight_run, out)
    state = out / "checkpoints" / "step-0000010" / "state.json"
    other = torch.get_num_threads() + 1  # whatever count the suite runs at
    state.write_text(json.dumps({**json.loads(state.read_text()), "threads": other}))
    said: list[str] = []
    cfg = _cfg(kit, shards, out, max_steps=6, save_every=1, keep_last=100, batch_size=2, text_dropout=0.5,
               random_counts=True)
    assert train(cfg, resume=out, say=said.append).steps == 11  # the LoRA stage goes on to its step 6
    assert any(f"{other} CPU threads" in m and f"--threads {other}" in m for m in said), said


@pytest.mark.slow
def test_torchrun_two_ranks_see_disjoint_samples_and_write_once(kit, shards, tmp_path):
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *_cli(kit, shards, out,
           "--max-steps", "2", "-q")[1:]]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(r) for r in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["samples"] == 8
    for r in rows:
        (a,), (b,) = r["keys"]
        assert a != b  # each rank its own sample
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000002", "step-0000004"]
    assert (out / "final" / "vace.safetensors").is_file()


def test_the_progress_line_fits_an_80_column_terminal(kit, shards, tmp_path):
    """The stage's step, the loss and the ETA stay readable at 80 columns (rich cuts what does not fit with '…')."""
    proc = subprocess.run(_cli(kit, shards, tmp_path / "o", "--stage", "vace", "--max-steps", "2"), timeout=300,
                          env={**_env(), "COLUMNS": "80"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bar = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith("vace 2/2")]
    assert bar and "loss " in bar[-1] and "s/step" in bar[-1] and "…" not in bar[-1], proc.stderr[-2000:]
