"""``python -m densevlm`` (and ``torchrun ... -m densevlm train ...``)."""

import sys

from densevlm.cli.main import main

sys.exit(main())
