"""``mirage export``: a finished run as a 3D-reconstruction dataset (COLMAP model or nerfstudio
``transforms.json``) with its frames, exact cameras, the memory as an initial point cloud and,
optionally, the memory's per-frame depth.

- :mod:`.run`: a finished run read from its directory without a model (record, cameras, frames, memory);
- :mod:`.colmap`: COLMAP models (``cameras``, ``images``, ``points3D``; text and binary);
- :mod:`.nerfstudio`: nerfstudio's ``transforms.json`` and ``sparse_pc.ply``;
- :mod:`.dataset`: the export itself (frames, depth, the chosen layout).
"""
