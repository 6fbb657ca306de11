"""Run directories: ``config.json``, ``metrics.csv``, ``summary.json``, plots and a checkpoint.

Every write is atomic (a temporary file renamed over the target), so a killed run leaves
either the old or the new file, never half of one. A run checkpoints its whole state
(model, optimizers, random generators, metrics so far) and ``--resume`` continues from the
last checkpoint without losing or repeating steps.

>>> import tempfile, pathlib
>>> d = RunDir(pathlib.Path(tempfile.mkdtemp()) / "run")
>>> _ = d.write_json("config.json", {"seed": 0})
>>> _ = d.write_metrics([{"step": 1, "reward": 0.5}])
>>> d.read_json("config.json"), (d.path / "metrics.csv").read_text().splitlines()
({'seed': 0}, ['step,reward', '1,0.5'])
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path, write_atomic
from ..exceptions import ConfigError

__all__ = ["RECORDED_ONLY", "RunDir"]

#: ``config.json`` entries that record how a run ran (not what it computes): a resumed run may differ in them.
RECORDED_ONLY = ("threads",)


class RunDir:
    """A run's directory.

    Parameters
    ----------
    path : str or Path
        Created if missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _atomic(self, name: str, data: bytes) -> Path:
        return write_atomic(self.path / name, data, sync=True)

    def write_json(self, name: str, data: Any) -> Path:
        return self._atomic(name, (json.dumps(data, indent=2) + "\n").encode())

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def write_metrics(self, rows: Sequence[dict], name: str = "metrics.csv") -> Path:
        buf = io.StringIO()
        if rows:
            fields = list(rows[0])
            for row in rows[1:]:
                fields += [k for k in row if k not in fields]
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return self._atomic(name, buf.getvalue().encode())

    def save_checkpoint(self, state: dict, name: str = "checkpoint.pt") -> Path:
        buf = io.BytesIO()
        torch.save(state, buf)
        return self._atomic(name, buf.getvalue())

    def load_checkpoint(self, name: str = "checkpoint.pt") -> dict:
        path = self.path / name
        if not path.exists():
            raise ConfigError(f"no checkpoint in {self.path}", file=str(path),
                              fix="start the run without --resume, or point --out at the killed run's directory")
        return torch.load(path, weights_only=False)

    def has_checkpoint(self, name: str = "checkpoint.pt") -> bool:
        return (self.path / name).exists()

    def check_resume(self, config: dict, growable: str) -> None:
        """Raise unless the run has a checkpoint and its ``config.json`` equals ``config`` in every
        setting but ``growable`` (the length setting a resumed run may extend) and :data:`RECORDED_ONLY`."""
        if not self.has_checkpoint():
            raise ConfigError(f"nothing to resume in {self.path}", file=str(self.path),
                              fix="run without --resume first")
        free = {growable, *RECORDED_ONLY}
        saved = {k: v for k, v in self.read_json("config.json").items() if k not in free}
        mine = {k: v for k, v in json.loads(json.dumps(config)).items() if k not in free}
        if saved != mine:
            changed = sorted(k for k in saved.keys() | mine.keys() if saved.get(k) != mine.get(k))
            raise ConfigError(f"--resume with settings that differ from the run's config.json ({', '.join(changed)})",
                              file=str(self.path), fix=f"resume with the same settings (only {growable} may grow)")

    def save_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure atomically and close it."""
        import matplotlib.pyplot as plt

        target = self.path / name
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=dpi)
        plt.close(fig)
        return target

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
