"""featurestream: a streaming feature engine for machine learning.

This package is the shared kernel (errors, settings, event contracts) and the
composition root (the ``featurestream`` CLI and the local stack).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
