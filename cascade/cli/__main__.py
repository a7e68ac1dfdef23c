"""`python -m cascade.cli ...`, as the `cascade` script."""

import sys

from cascade.cli import main

sys.exit(main())
