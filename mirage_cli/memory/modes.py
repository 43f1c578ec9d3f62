"""The names of the memory's choices, without torch: write policies and splat modes.

``mirage generate`` checks its options against these before torch is imported (see
``pipeline/config.py``); :mod:`.policies` and :mod:`.splat` take them from here.
"""

NEW, REPLACE, AVERAGE, APPEND = "new", "replace", "average", "append"
LATENT_POLICIES = (NEW, REPLACE, AVERAGE, APPEND)
"""The write policies (see :mod:`.policies`), the ``--write-policy`` choices."""

SPLAT_MODES = ("patch", "point")
"""The memory read's footprints (see :mod:`.splat`), the ``--splat`` choices."""
