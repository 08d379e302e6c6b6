"""Metrics of a trained run's checkpoint on one of its splits:

    python -m jaxdl.evaluate --run DIR [--checkpoint best|latest|STEP] [--split test]
                             [--json FILE] [--import MODULE]

`best` (the default) is the checkpoint `checkpoint.monitor` chose on validation. The run's
own data cut, eval-time preprocessing and compiled eval step are used (`jaxdl.trained`),
so the best checkpoint on the test split gives what summary.json reports under best/test.
Prints one line, `SPLIT at step N (CHECKPOINT): METRIC VALUE ...  (K examples)`, and with
`--json FILE` writes the metrics there too. Bad input (a workdir that is not a run, a
checkpoint or split it lacks) is one `error:` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxdl.schema import ConfigError
from jaxdl.trained import ToolParser

EXIT_BAD_INPUT = 2


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = ToolParser(prog="python -m jaxdl.evaluate",
                        description="Metrics of a trained run's checkpoint on one split.")
    parser.add_argument("--split", default="test", help="train, validation or test")
    parser.add_argument("--json", default=None, help="also write the metrics to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    # orbax warns on every read-only checkpoint it opens; the one line that matters is ours.
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
        if args.json and not Path(args.json).parent.is_dir():
            raise ConfigError(f"--json={args.json}: its folder does not exist")
        from jaxdl import app, trained
        app.import_modules(args.imports)
        run = trained.load_run(args.run, args.checkpoint)
        metrics = run.evaluate(args.split)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "examples")
    print(f"{args.split} at step {run.step} ({args.checkpoint}): {shown}  "
          f"({metrics['examples']:.0f} examples)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"run": str(run.workdir), "checkpoint": args.checkpoint, "step": run.step,
             "split": args.split, "metrics": metrics}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
