"""flowrun's standard library of node functions (`uses: flowrun.std.<name>`).

They are plain node functions, called like any user code; nothing in the engine knows them.
"""

from flowrun.std.shell import ShellError, shell

__all__ = ["ShellError", "shell"]
