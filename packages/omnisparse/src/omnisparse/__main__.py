import sys

from omnisparse.cli import main

sys.exit(main())
