"""ganforge: a plugin-based GAN framework on PyTorch."""

from .hookspecs import hookimpl, hookspec

__version__ = "0.1.0"
__all__ = ["hookimpl", "hookspec", "load_generator", "__version__"]


def load_generator(checkpoint_path, device=None):
    """The generator of a checkpoint, with ``.codes`` and ``.sample(n, fixed=..., seed=...)``.

    See :class:`ganforge.api.Generator`. Imported lazily: ``import ganforge`` stays light.
    """
    from .api import load_generator as load

    return load(checkpoint_path, device)
