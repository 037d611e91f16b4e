import os
import sys

from distributed.cli.main import main

status = main()
# exit at once: a request to a frozen worker may still hold a pool thread, which the interpreter would wait for
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
