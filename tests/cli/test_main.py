"""The CLI's log handler follows sys.stderr, so an in-process run never leaves a dead stream behind."""

from __future__ import annotations

import io
import logging
import sys

from densevlm.cli.main import _setup_logging


def test_log_lines_go_to_the_current_stderr_after_the_first_one_was_closed(monkeypatch):
    logger = logging.getLogger("densevlm")
    saved = logger.handlers[:], logger.level, logger.propagate
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    _setup_logging(verbose=False, quiet=False)
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    try:
        logging.getLogger("densevlm.anything").warning("still heard")
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    assert second.getvalue() == "still heard\n"
