"""``python -m resilience_tasks.demo``: the same command as ``resilience-demo``."""

import sys

from resilience_tasks.demo.cli import main

sys.exit(main())
