"""``sggraph check-conditions``: the paper's conditions A.1–A.3 and (B) of a YAML graph (or of a
recurrent cell unrolled for ``--unroll T`` steps)."""

from __future__ import annotations

import argparse
import json

from .model_files import add_unroll_argument, load_graph

__all__ = ["add_parser"]


def _cmd_check(args: argparse.Namespace) -> int:
    from ..core.analysis import check_conditions, extended_ancestors, siblings
    from ..core.nodes import natural_key

    g = load_graph(args.file, args.unroll, "check-conditions")
    report = check_conditions(g)
    data = report.to_dict()
    if args.node is not None:
        if args.node not in g.nx:
            from ..exceptions import GraphError

            hint = "neurons of arrays are name[i]"
            if args.unroll is not None:
                hint = "unrolled names are name@t for nodes and state@t:i for state neurons, t = 1 … T"
            raise GraphError(f"no node named '{args.node}' in the graph", node=args.node, file=args.file,
                             fix=f"pass a node name from the file ({hint})")
        data["node"] = {"name": args.node, "siblings": sorted(siblings(g, args.node), key=natural_key),
                        "extended_ancestors": sorted(extended_ancestors(g, args.node), key=natural_key)}
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



def add_parser(sub) -> None:
    """Add ``sggraph check-conditions`` to the subcommands ``sub``."""
    p = sub.add_parser("check-conditions", help="check the paper's conditions A.1-A.3 and (B) for a YAML graph "
                                                "(or a recurrent cell with --unroll T)")
    p.add_argument("file", help="graph YAML file, or recurrent cell YAML file with --unroll")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--node", help="also print this node's siblings and sibling-extended ancestors "
                                  "(unrolled cells: name@t, state@t:i)")
    add_unroll_argument(p, "check")
    p.set_defaults(run=_cmd_check)
