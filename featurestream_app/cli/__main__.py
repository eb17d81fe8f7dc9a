"""``python -m featurestream_app.cli``: the same as the ``featurestream`` command."""

from .main import main

main()
