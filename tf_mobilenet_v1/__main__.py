"""``python -m tf_mobilenet_v1``: the ``mobilenet-v1`` command line."""

import sys

from .cli import main

sys.exit(main())
