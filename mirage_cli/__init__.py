"""mirage: camera-controlled, 3D-consistent video from one image, with a latent spatial memory."""

__version__ = "0.1.0"

__all__ = ["MirageTransformer3DModel", "__version__"]


def __getattr__(name: str):
    # PEP 562 lazy re-export, limited to this one name: the class needs diffusers, and
    # `import mirage_cli` must stay light: heavy libraries (diffusers, transformers, ray) are imported
    # where they are used (tests/test_startup.py checks it).
    if name == "MirageTransformer3DModel":
        from .models.mirage_transformer import MirageTransformer3DModel

        return MirageTransformer3DModel
    raise AttributeError(f"module 'mirage_cli' has no attribute {name!r}")
