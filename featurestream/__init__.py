"""featurestream: a streaming feature engine for machine learning.

This package is the shared kernel every layer uses: the exception tree
(:mod:`featurestream.errors`), typed settings (:mod:`featurestream.settings`),
the clock (:mod:`featurestream.clock`), rate-limited logging of repeated
conditions (:mod:`featurestream.logs`) and the event contracts with their codec
(:mod:`featurestream.events`). It holds no I/O adapters; the composition root
(the ``featurestream`` command, the local stack, benchmarks) is
:mod:`featurestream_app`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
