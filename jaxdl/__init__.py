"""jaxdl: a JAX functional research framework (pure Linen models, one jit-compiled loop)."""

__version__ = "0.1.0"
