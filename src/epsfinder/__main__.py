import sys

from epsfinder.cli import main

sys.exit(main())
