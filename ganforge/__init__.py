"""ganforge: a plugin-based GAN framework on PyTorch."""

from .hookspecs import hookimpl, hookspec

__version__ = "0.1.0"
__all__ = ["hookimpl", "hookspec", "__version__"]
