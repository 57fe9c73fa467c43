"""`python -m smtpconfig.cli`."""

import sys

from smtpconfig.cli.main import main

sys.exit(main())
