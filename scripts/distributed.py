# The webui loads this file by path with the extension root on sys.path only while it runs: import everything now.
from distributed.webui.callbacks import register
from distributed.webui.script import DistributedScript

register()

__all__ = ["DistributedScript"]
