"""The shell's process helpers: thread budgets (:mod:`.threads`), progress bars (:mod:`.progress`),
run-directory locks (:mod:`.dirlock`) and atomic file writes (:mod:`.atomic`).

Used by the shell (draw, sweeps, experiments, cli) only; the core, the engine, the models and
the environments never import them.
"""
