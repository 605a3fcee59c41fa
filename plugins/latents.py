"""Built-in latent distributions, registered through the same hook as anyone's."""

from __future__ import annotations

from ganforge import hookimpl
from ganforge.latents import Normal, Uniform


@hookimpl
def ganforge_register_latents(register):
    register("normal", Normal)
    register("uniform", Uniform)
