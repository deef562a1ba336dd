"""The ``densevlm`` command line: :func:`main`; each command is a module here (see :mod:`densevlm.cli.main`)."""

from densevlm.cli.main import main

__all__ = ["main"]
