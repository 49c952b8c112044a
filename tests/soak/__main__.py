"""``python -m tests.soak [--minutes 30] [--cameras 16] [--postgres]``."""

from tests.soak.run import main

raise SystemExit(main())
