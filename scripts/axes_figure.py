"""Draw docs/img/axes.png: the camera axes of mirage (OpenCV) next to OpenGL / Blender / nerfstudio.

Run from the repository root: ``python3 scripts/axes_figure.py [OUT.png]`` (matplotlib only, CPU,
about a second). The docs page "Trajectories and formats" shows its output.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Axis directions drawn in a fixed oblique view of the camera: screen right, screen up, and "into
# the picture" (away from the viewer, drawn up-right).
SCREEN = {"right": np.array([1.0, 0.0]), "down": np.array([0.0, -1.0]), "up": np.array([0.0, 1.0]),
          "forward": np.array([0.55, 0.4]), "back": np.array([-0.55, -0.4])}


def camera(ax, title, axes, note):
    # the camera body and the image plane it looks through (forward = into the picture)
    f = SCREEN["forward"]
    body = np.array([[-0.35, -0.25], [0.35, -0.25], [0.35, 0.25], [-0.35, 0.25], [-0.35, -0.25]])
    ax.plot(body[:, 0], body[:, 1], color="0.35", lw=1.5)
    plane = body * 1.6 + 1.25 * f
    ax.plot(plane[:, 0], plane[:, 1], color="0.7", lw=1, ls="--")
    for corner in body[:4]:
        ax.plot([corner[0], corner[0] * 1.6 + 1.25 * f[0]], [corner[1], corner[1] * 1.6 + 1.25 * f[1]],
                color="0.8", lw=0.8)
    ax.text(*(1.25 * f + np.array([0.62, 0.45])), "image plane", fontsize=8, color="0.5")
    colours = {"x": "tab:red", "y": "tab:green", "z": "tab:blue"}
    for name, direction in axes.items():
        d = SCREEN[direction] * (1.0 if direction != "forward" else 1.5)
        ax.annotate("", xy=d, xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", lw=2.2, color=colours[name]))
        ax.text(*(d * 1.15 + np.array([0.02, 0.02])), f"{name}  {direction}", color=colours[name],
                fontsize=11, fontweight="bold")
    ax.set_title(title, fontsize=12)
    ax.text(0, -1.45, note, ha="center", fontsize=8.5, color="0.25")
    ax.set_xlim(-1.4, 2.0)
    ax.set_ylim(-1.7, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")


def main(out: str = "docs/img/axes.png") -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.0, 4.2))
    camera(a, "mirage (OpenCV, COLMAP, RealEstate10K)", {"x": "right", "y": "down", "z": "forward"},
           "z-depth along +z; poses camera-to-world")
    camera(b, "OpenGL (Blender, nerfstudio, NeRF, WorldScore)", {"x": "right", "y": "up", "z": "back"},
           "the camera looks along -z;  c2w_opencv = c2w_opengl @ diag(1, -1, -1, 1)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
