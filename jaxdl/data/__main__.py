"""`python -m jaxdl.data list`: each registered source, whether it is here, and from where."""

from __future__ import annotations

import argparse
import sys

from jaxdl import data


def list_sources() -> list[str]:
    """One line per source: name, 'available' or 'missing', and where it loads from."""
    names = data.source_names()
    width = max(map(len, names))
    lines = []
    for name in names:
        where = data.source_location(name)
        status = "missing" if where is None else "available"
        lines.append(f"{name:<{width}}  {status:<9}  {where or 'missing'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxdl.data", description=__doc__)
    parser.add_argument("command", choices=["list"])
    parser.parse_args(argv)
    print("\n".join(list_sources()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
