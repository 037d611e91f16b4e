import sys

from distributed.cli import main

sys.exit(main())
