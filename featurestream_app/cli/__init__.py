"""The ``featurestream`` command line (the composition root)."""

__all__: list[str] = []
