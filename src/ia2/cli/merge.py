"""`ia2 merge`: union results stores written by shards or machines into one."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("merge", help="merge results stores (results.sqlite) into one")
    p.add_argument("target", help="the store to merge into (created if missing)")
    p.add_argument("sources", nargs="+", help="stores to merge from")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..store import merge_stores

    added, total = merge_stores(args.target, args.sources)
    print(f"merged {added} new rows into {args.target} ({total} rows)")
    return 0
