"""A small labelled embedded world shared by the inspection tests."""

from __future__ import annotations

import pytest

from densevlm.data.synth import write_world


@pytest.fixture(scope="session")
def labelled_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("labelled")
    write_world(out, 24, seed=11, progress=False)
    return out
