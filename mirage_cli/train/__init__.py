"""``mirage train``: train the paper's VACE branch and LoRA on ``mirage data`` shards.

Modules:

- :mod:`.config`: :class:`~.config.TrainConfig`, every option, validated (one-line errors).
- :mod:`.model`: the trainable :class:`~mirage_cli.models.mirage_transformer.MirageTransformer3DModel`
  (frozen Wan2.2-TI2V base + VACE branch initialised from scratch or copied + peft LoRA on the DiT blocks).
- :mod:`.objective`: the flow-matching loss of the reference (per-frame shifted sigmas, frame 0 clean,
  target ``eps - x0``, MSE over target frames 1..) on the conditioning the mirage backend builds at inference.
- :mod:`.checkpoint`: resumable checkpoints (safetensors + JSON, atomic) and the exported
  ``vace.safetensors`` / ``lora.safetensors`` in the reference's naming.
- :mod:`.loop`: the training loop on accelerate (device, mixed precision, gradient accumulation, DDP).
- :mod:`.validate`: the held-out set and the validation every ``--validate-every`` steps (a fixed-noise loss,
  a generation through the chunk engine with the weights being trained, scored by eval's metrics).
- :mod:`.report`: ``OUT/loss.png`` and ``--report-to`` (accelerate's trackers).
"""
