import sys

from pmloss.cli import main

sys.exit(main())
