import sys

from rstitch.cli import main

sys.exit(main())
