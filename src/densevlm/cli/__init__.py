"""The ``densevlm`` command line (see :mod:`densevlm.cli.main`)."""
