"""``mirage eval``: measured reconstruction quality and memory consistency.

``sources`` (clips: geometry.npz, frames + trajectory, the synthetic scenes), ``recon`` (each clip
through the generate pipeline, then scored), ``metrics`` (torchmetrics PSNR/SSIM, optional LPIPS,
regions, revisits, camera following, intervals over clips), ``loop`` (loop closure of a finished
run: last frame against the first, final memory against the input-only memory), ``report``
(eval.json, eval.csv, tables, ``eval compare``), ``plot`` (metric against frame), ``gate``
(``eval check``: a run against the committed baseline, with per-metric tolerances).
"""
