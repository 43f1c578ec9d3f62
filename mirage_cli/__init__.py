"""mirage: camera-controlled, 3D-consistent video from one image, with a latent spatial memory."""

__version__ = "0.1.0"
