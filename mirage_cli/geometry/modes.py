"""The names of the geometry's choices, without torch (``mirage generate`` checks its options
against them before torch is imported; :mod:`.intrinsics` takes them from here)."""

INTRINSICS_MODES: tuple[str, ...] = ("crop", "stretch", "fov")
"""How a file's intrinsics are fitted to an image of another aspect ratio (see :mod:`.intrinsics`)."""
