"""Draw the README's pictures with sggraph.draw and the real `dot`.

Run:  python examples/draw_readme_figures.py [--out examples/results] [--run RUN_DIR]

1. the expert net with an expert node's siblings and sibling-extended ancestors highlighted;
2. the POPGym recurrent cell (128 neurons, 16 wired to the embedding) unrolled for 5 steps,
   the first 6 neurons of every step drawn;
3. with ``--run`` (an sgprop bandit run directory with its ``checkpoint.pt``): the bandit
   SparseNet (1,000 neurons, arrays folded) coloured by the λ the run ended with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import sggraph
from sggraph.draw import draw, render
from sggraph.engine import lambda_state
from sggraph.models.sparsenet import sparsenet_graph

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="an sgprop bandit run directory: also draw its λ (sparsenet_lambda.png)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    expert = sggraph.Graph.from_yaml(str(HERE / "expert-net.yaml"))
    print(render(draw(expert, node="e1"), out / "expert_net_an_sib.png"))

    cell = sggraph.Cell.from_yaml(str(HERE / "popgym-sparsenet-cell.yaml"))
    print(render(draw(cell, unroll=5, expand_arrays=6), out / "popgym_cell_unrolled.png"))

    if args.run:
        import json

        cfg = json.loads((Path(args.run) / "config.json").read_text())
        graph = sparsenet_graph(cfg["width"], cfg["layers"], cfg["q"], cfg["slots"], cfg["n_parents"], 784,
                                len(cfg["classes"]), cfg["seed"])
        net = sggraph.compile(graph, grouping="child")
        state = torch.load(Path(args.run) / "checkpoint.pt", weights_only=False)["model"]
        net.load_state_dict(lambda_state(state), strict=False)
        print(render(draw(net), out / "sparsenet_lambda.png"))


if __name__ == "__main__":
    main()
