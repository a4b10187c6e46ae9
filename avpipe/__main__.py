"""``python -m avpipe``: the ``avpipe`` command."""

import sys

from avpipe.cli import main

sys.exit(main())
