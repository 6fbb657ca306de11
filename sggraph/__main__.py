"""``python -m sggraph`` — the ``sggraph`` command (how a sweep starts each run).

When a sweep starts the run (``SGGRAPH_PARENT_PID`` is set), the run asks Linux to kill it
if the sweep's worker dies, so a killed sweep leaves no orphaned runs behind.
"""

import os
import sys

if __name__ == "__main__":
    if os.environ.get("SGGRAPH_PARENT_PID"):
        from sggraph.sweeps.run import die_with_parent

        die_with_parent(int(os.environ.pop("SGGRAPH_PARENT_PID")))
    from sggraph.cli import main

    sys.exit(main())
