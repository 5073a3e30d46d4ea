"""``python -m gateway.cli``: the ``hftgw`` command."""
import sys

from gateway.cli.main import main

sys.exit(main())
