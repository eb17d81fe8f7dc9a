"""``python -m featurestream.cli``: the same as the ``featurestream`` command."""

from .main import main

main()
