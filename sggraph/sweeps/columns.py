"""What ``sggraph plot`` reads from a sweep's runs: the columns of ``metrics.csv`` it plots and the settings it
draws as ablations (light to import: the command line names them in its help).

>>> next(iter(X_COLUMNS)), next(iter(Y_COLUMNS))
('samples', 'eval_reward')
"""

from __future__ import annotations

__all__ = ["ABLATIONS", "X_COLUMNS", "Y_COLUMNS"]

#: Settings drawn as ablations when the grid varies them, with their axis labels.
ABLATIONS = {"p_flip": "reward flip probability p_flip (reward noise)", "n_parents": "parents per neuron (fan-in)"}
#: Candidate x columns of ``metrics.csv``, in order of preference, with axis labels.
X_COLUMNS = {"samples": "training samples", "episodes": "episodes", "step": "training step", "batch": "batch"}
#: Candidate y columns, in order of preference, with axis labels.
Y_COLUMNS = {"eval_reward": "evaluation reward", "success_rate": "success rate", "mean_return": "mean return"}
