"""``sggraph check-conditions``: the paper's conditions A.1–A.3 and (B) of a YAML graph."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser"]


def _report(file: str, node: str | None) -> dict:
    """The conditions of one file (and ``node``'s sets) as the JSON-ready mapping, with the report object."""
    from ..core.analysis import check_conditions, extended_ancestors, siblings
    from ..core.graph import Graph

    g = Graph.from_yaml(file)
    report = check_conditions(g)
    data = report.to_dict()
    if node is not None:
        if node not in g.nx:
            from ..exceptions import GraphError

            raise GraphError(f"no node named '{node}' in the graph", node=node, file=file,
                             fix="pass a node name from the file (neurons of arrays are name[i])")
        data["node"] = {"name": node, "siblings": sorted(siblings(g, node)),
                        "extended_ancestors": sorted(extended_ancestors(g, node))}
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
        result = _report(args.file[0], args.node)
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
            result = _report(file, None)
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
    p = sub.add_parser("check-conditions", help="check the paper's conditions A.1-A.3 and (B) for YAML graphs")
    p.add_argument("file", nargs="+", help="graph YAML file(s); several are checked in turn")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (several files: a mapping of file to report)")
    p.add_argument("--node", help="also print this node's siblings and sibling-extended ancestors (one file)")
    p.set_defaults(run=_cmd_check)
