import sys

from zpressor.cli import main

sys.exit(main())
