"""`python -m kdsae_core.cli ...` (what torchrun starts) is the `kdsae` command."""

import sys

from kdsae_core.cli.main import main

sys.exit(main())
