"""The CLI run in-process by a test."""

from __future__ import annotations

import logging

from densevlm.cli.main import main


def run_main(argv: list[str]) -> int:
    """``densevlm ARGV`` in this process; the ``densevlm`` logger is left as it was found (main
    binds a handler to the sys.stderr of the moment, which pytest closes after the test)."""
    logger = logging.getLogger("densevlm")
    saved = (logger.handlers[:], logger.level, logger.propagate, logging.getLogger().level)
    try:
        return main(argv)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[:3]
        logging.getLogger().setLevel(saved[3])
