"""`ia2 models`: the embedded short names and whether each is ready to load offline."""

from __future__ import annotations

from .. import models


def register(sub) -> None:
    p = sub.add_parser("models", help="list the embedded models and whether each is ready")
    p.add_argument("--prepare", metavar="NAME", help="install and convert NAME now")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.prepare:
        path, fingerprint = models.resolve(args.prepare)
        print(f"{args.prepare}: ready at {path} ({fingerprint[:24]})")
        return 0
    print(f"{'name':<14} {'status':<10} {'licence':<20} wheels")
    for name, spec in models.EMBEDDED.items():
        default = " (default)" if name == models.DEFAULT_MODEL else ""
        print(f"{name:<14} {models.status(name):<10} {spec.licence:<20} {spec.packages[0]}{default}")
    print(f"cache: {models.converted_dir('x').parent}  (ready = converted copy cached; "
          "any hub id or local directory also works)")
    return 0
