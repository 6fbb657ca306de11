"""``sggraph check-conditions``: the paper's conditions A.1–A.3 and (B) of YAML graphs (or of a
recurrent cell unrolled for ``--unroll T`` steps), one file or several in turn."""

from __future__ import annotations

import argparse
import json
import sys

from .model_files import add_unroll_argument, load_graph, load_model

__all__ = ["add_parser"]


def _graph(file: str, unroll: int | None, several: bool):
    """The graph to check: with several files, ``--unroll`` applies to the cell files among them."""
    if several and unroll is not None:
        from ..core.unroll import Cell

        if not isinstance(load_model(file, None), Cell):
            return load_graph(file, None, "check-conditions")
    return load_graph(file, unroll, "check-conditions")


def _report(file: str, args: argparse.Namespace, several: bool) -> dict:
    """The conditions of one file (and ``--node``'s sets) as the JSON-ready mapping, with the report object."""
    from ..core.analysis import check_conditions, extended_ancestors, siblings
    from ..core.nodes import natural_key

    g = _graph(file, args.unroll, several)
    report = check_conditions(g)
    data = report.to_dict()
    if args.node is not None:
        if args.node not in g.nx:
            from ..exceptions import GraphError

            hint = "neurons of arrays are name[i]"
            if args.unroll is not None:
                hint = "unrolled names are name@t for nodes and state@t:i for state neurons, t = 1 … T"
            raise GraphError(f"no node named '{args.node}' in the graph", node=args.node, file=file,
                             fix=f"pass a node name from the file ({hint})")
        data["node"] = {"name": args.node, "siblings": sorted(siblings(g, args.node), key=natural_key),
                        "extended_ancestors": sorted(extended_ancestors(g, args.node), key=natural_key)}
    return {"data": data, "report": report}


def _print_text(result: dict, node: str | None) -> None:
    print(result["report"])
    if node is not None:
        sib, an = result["data"]["node"]["siblings"], result["data"]["node"]["extended_ancestors"]
        print(f"  Node {node}:")
        print(f"    siblings (eq. 11)            : {', '.join(sib)}")
        print(f"    extended ancestors (eq. 12)  : {', '.join(an) if an else '(none: a source)'}")


def _cmd_check(args: argparse.Namespace) -> int:
    """One file: its report (JSON: the mapping). Several: each in turn (JSON: file → mapping, or
    ``{"error": ...}`` for a file that fails); exit 2 when any file fails, after reporting the others."""
    from ..exceptions import ConfigError, SggraphError

    if len(args.file) == 1:
        result = _report(args.file[0], args, several=False)
        if args.json:
            print(json.dumps(result["data"], indent=2, ensure_ascii=False))
        else:
            _print_text(result, args.node)
        return 0
    if args.node is not None:
        raise ConfigError(f"--node names a node of one graph, but {len(args.file)} files were given",
                          fix="pass one file with --node, or drop --node")
    failed, collected = False, {}
    for i, file in enumerate(args.file):
        try:
            result = _report(file, args, several=True)
        except SggraphError as err:
            failed = True
            collected[file] = {"error": str(err)}
            print(f"sggraph: error: {err}", file=sys.stderr)
            continue
        collected[file] = result["data"]
        if not args.json:
            print(("\n" if i else "") + f"== {file}")
            _print_text(result, None)
    if args.json:
        print(json.dumps(collected, indent=2, ensure_ascii=False))
    return 2 if failed else 0



def add_parser(sub) -> None:
    """Add ``sggraph check-conditions`` to the subcommands ``sub``."""
    p = sub.add_parser("check-conditions", help="check the paper's conditions A.1-A.3 and (B) for YAML graphs "
                                                "(or a recurrent cell with --unroll T)",
                       description="Check the paper's conditions on a YAML graph: A.1 stochastic terminal feedback, "
                                   "A.2 stochastic computation, A.3 sparse connectivity, whether (A) holds, what is "
                                   "known of (B), and the regime (Theorem 1, 2 or 3), with witnesses. A recurrent "
                                   "cell is checked as the graph of --unroll T steps.")
    p.add_argument("file", nargs="+", help="graph YAML file(s), or recurrent cell YAML files with --unroll; "
                                           "several are checked in turn")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (several files: a mapping of file to report)")
    p.add_argument("--node", help="also print this node's siblings and sibling-extended ancestors "
                                  "(one file; unrolled cells: name@t, state@t:i)")
    add_unroll_argument(p, "check")
    p.set_defaults(run=_cmd_check)
