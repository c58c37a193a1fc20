"""``python -m dilconv``: the command line."""

import sys

from dilconv.cli import main

sys.exit(main())
