import sys

from vlseg.cli import main

sys.exit(main())
