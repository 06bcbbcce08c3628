"""`python -m consumer` is the same as the `event-consumer` command."""

import sys

from consumer.cli import main

sys.exit(main())
