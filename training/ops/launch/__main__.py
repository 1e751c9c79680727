"""`python -m training.ops.launch`: see training.ops.launch.cli."""

import sys

from training.ops.launch.cli import main

sys.exit(main())
