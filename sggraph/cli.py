"""The ``sggraph`` command line.

Every command exits 0 on success and 2 on bad input, printing a one-paragraph
error (file, line, node, fix) on stderr and never a traceback.

Commands
--------
``sggraph check-conditions FILE.yaml [--json] [--node NAME]``
    The paper's conditions A.1–A.3 and (B), with witnesses and the regime.
``sggraph bench [--json]``
    Time a compiled SparseNet training step (backprop and sgprop).
``sggraph demo``
    Run the example graphs through check-conditions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .exceptions import SggraphError

__all__ = ["main", "build_parser"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(2, f"sggraph: error: {message}\n")


def _cmd_check(args: argparse.Namespace) -> int:
    from .analysis import check_conditions, extended_ancestors, siblings
    from .graph import Graph

    g = Graph.from_yaml(args.file)
    report = check_conditions(g)
    data = report.to_dict()
    if args.node is not None:
        if args.node not in g.nx:
            from .exceptions import GraphError

            raise GraphError(f"no node named '{args.node}' in the graph", node=args.node, file=args.file,
                             fix="pass a node name from the file (neurons of arrays are name[i])")
        data["node"] = {"name": args.node, "siblings": sorted(siblings(g, args.node)),
                        "extended_ancestors": sorted(extended_ancestors(g, args.node))}
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(report)
    if args.node is not None:
        sib, an = data["node"]["siblings"], data["node"]["extended_ancestors"]
        print(f"  Node {args.node}:")
        print(f"    siblings (eq. 11)            : {', '.join(sib)}")
        print(f"    extended ancestors (eq. 12)  : {', '.join(an) if an else '(none: a source)'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .analysis import check_conditions
    from .graph import Graph

    files = sorted(EXAMPLES.glob("*.yaml"))
    if not files:
        print(f"no example graphs found in {EXAMPLES}", file=sys.stderr)
        return 2
    for path in files:
        print(f"$ sggraph check-conditions {path.relative_to(EXAMPLES.parent)}")
        print(check_conditions(Graph.from_yaml(str(path))))
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sggraph`` command."""
    parser = _Parser(prog="sggraph", description="Synthetic-gradient propagation on layered computational graphs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("check-conditions", help="check the paper's conditions A.1-A.3 and (B) for a YAML graph")
    p.add_argument("file", help="graph YAML file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--node", help="also print this node's siblings and sibling-extended ancestors")
    p.set_defaults(run=_cmd_check)
    p = sub.add_parser("demo", help="run the example graphs through check-conditions")
    p.set_defaults(run=_cmd_demo)
    try:
        from .bench import add_parser as add_bench
    except ImportError:  # torch layer unavailable
        pass
    else:
        add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sggraph`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SggraphError as err:
        print(f"sggraph: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sggraph: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
