"""``python -m service.cli``: the ``kf`` command without the console script."""

import sys

from service.cli import main

sys.exit(main())
