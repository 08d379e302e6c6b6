"""`python -m jaxdl.weights import --from torchvision --model NAME --state_dict FILE --out DIR`:
see the package doc. Bad input is one line on stderr and exit status 2, nothing written."""

from __future__ import annotations

import argparse
import sys

from jaxdl import weights
from jaxdl.schema import ConfigError

EXIT_USAGE = 2


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m jaxdl.weights", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("import", help="convert another framework's weights into a "
                                             "jaxdl checkpoint that init_from reads")
    run.add_argument("--from", dest="source", required=True, choices=weights.SOURCES,
                     help="the framework the weights come from")
    run.add_argument("--model", required=True,
                     help=f"the network: {', '.join(weights.supported_models())}")
    run.add_argument("--state_dict", required=True,
                     help="a torch.save file (.pt/.pth) or a .safetensors file")
    run.add_argument("--out", required=True, help="a new or empty directory to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = weights.import_torchvision(args.model, args.state_dict, args.out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    fields = " ".join(f"--config.model.{k}={v}" for k, v in model.items())
    print(f"wrote {args.out}: torchvision's {args.model} as a jaxdl checkpoint. Train from it "
          f"with --config.init_from={args.out} {fields}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
