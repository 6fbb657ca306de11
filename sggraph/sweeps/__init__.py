"""Sweeps: one command over a grid of settings (local process pool or Ray), and their figures.

:mod:`~sggraph.sweeps.spec` reads and validates a spec against the command line's parser (which
the command line hands over: the sweep never imports it), :mod:`~sggraph.sweeps.run` plans and
runs the grid, :mod:`~sggraph.sweeps.figures` draws the paper's figures from a sweep directory.
"""

from .commands import CommandParser
from .run import RunPlan, execute_run, plan_runs, run_sweep
from .spec import GridCell, SweepSpec, command_options, expand_grid, format_value, load_spec, run_name, spec_from_dict

__all__ = ["CommandParser", "GridCell", "RunPlan", "SweepSpec", "command_options", "execute_run", "expand_grid",
           "format_value", "load_spec", "plan_runs", "run_name", "run_sweep", "spec_from_dict"]
