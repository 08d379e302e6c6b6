"""Any experiment from any directory:

    python -m jaxdl.run REFERENCE --workdir=DIR [--import MODULE ...] [--config.KEY=VALUE ...]

REFERENCE (the first argument) is a stock experiment's name (`digits_cnn`), a dotted
module (`experiments.digits_cnn`, `my_lab.exp1`) or the path of a .py file with a
`get_config()` (`jaxdl.config.experiment_module`). `--import MODULE` (repeatable, or
comma-separated) imports a module first, so the models, tasks and data sources it
registers by name can be named in the config (`--import my_models
--config.model.name=my_mlp`). Every other flag is the
experiment's own (`python -m experiments.NAME --help`): the run is the same as through
`python -m experiments.NAME`. Bad input is one `error:` line and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jaxdl import app, config as config_lib

IMPORT_FLAG = "--import"


def split_args(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """(the experiment reference: the first argument, unless that is a flag; the modules of
    every --import; the other arguments, in order)."""
    args = list(argv)
    reference = args.pop(0) if args and not args[0].startswith("-") else None
    imports, rest = [], []
    while args:
        arg = args.pop(0)
        if arg == IMPORT_FLAG and args:
            imports += args.pop(0).split(",")
        elif arg.startswith(IMPORT_FLAG + "="):
            imports += arg.partition("=")[2].split(",")
        else:
            rest.append(arg)
    return reference, [name for name in imports if name], rest


def main(argv: Sequence[str] | None = None) -> None:
    from jaxdl.schema import ConfigError
    argv = list(sys.argv if argv is None else argv)
    reference, imports, rest = split_args(argv[1:])
    try:
        if reference is None:
            raise ConfigError("name the experiment first: python -m jaxdl.run "
                              "NAME|MODULE|FILE.py --workdir=DIR")
        app.import_modules(imports)
        module = config_lib.experiment_module(reference)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(app.EXIT_BAD_INPUT)
    sys.argv = [f"jaxdl.run {reference}", *rest]  # absl parses sys.argv
    app.run(module.get_config)


if __name__ == "__main__":
    main()
