"""`python -m jaxdl.compress report --run DIR`: a finished classification run at fp32, bf16
(weights cast) and int8 (Qwix post-training quantization, calibrated on training batches)
as one Markdown table on stdout, also written as report.json and report.md into
DIR/analysis/compress/ (or --output):

    python -m jaxdl.compress report --run runs/mnist_cnn [--split test] [--batch 1000]
        [--repeats 20] [--calibration_examples 1000] [--checkpoint best] [--output DIR]

Every flag's default lives here (the library functions take every value explicitly).
Bad input (a workdir that is not a finished run, a split it lacks, a batch larger than the
split, a count below 1, an --output whose folder does not exist) is one `error:` line on
stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2


class _Fail(Exception):
    """Bad input: one `error:` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage + message
        raise _Fail(message)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> _Parser:
    parser = _Parser(prog="python -m jaxdl.compress", description=__doc__.splitlines()[0])
    tools = parser.add_subparsers(dest="tool", required=True, parser_class=_Parser)
    sub = tools.add_parser("report", help="fp32 / bf16 / int8: sizes, accuracy, latency")
    sub.add_argument("--run", required=True, help="the workdir of a finished run")
    sub.add_argument("--checkpoint", default="best",
                     help="'best' (chosen on validation), 'latest' or a step number")
    sub.add_argument("--split", default="test", help="the split accuracy is measured on")
    sub.add_argument("--batch", type=_positive, default=None,
                     help="examples per timed batch; default the run's "
                          "data.eval_batch_size")
    sub.add_argument("--repeats", type=_positive, default=20,
                     help="timed calls per variant (the median is reported)")
    sub.add_argument("--calibration_examples", type=_positive, default=1000,
                     help="training examples (a seeded subset) that set the int8 "
                          "activation scales")
    sub.add_argument("--seed", type=int, default=0, help="chooses the calibration subset")
    sub.add_argument("--output", default=None,
                     help="folder for report.json and report.md; default "
                          "RUN/analysis/compress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # orbax warns on every read-only checkpoint it opens; the one line that matters is ours.
    logging.getLogger("absl").setLevel(logging.ERROR)
    from jaxdl import runs
    from jaxdl.schema import ConfigError
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
        if args.output and not Path(args.output).expanduser().absolute().parent.is_dir():
            raise ConfigError(f"--output={args.output}: its parent folder does not exist")
        from jaxdl.compress import report as report_lib
        from jaxdl.trained import load_run
        if runs.RunDir(Path(args.run).expanduser()).looks_like_run():
            report_lib.require_finished(args.run)  # before its data is read
        run = load_run(args.run, args.checkpoint)
        table = report_lib.report(run, split=args.split,
                                  batch=args.batch or run.config.data.eval_batch_size,
                                  repeats=args.repeats,
                                  calibration_examples=args.calibration_examples,
                                  seed=args.seed)
    except (_Fail, ConfigError) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    folder = Path(args.output).expanduser() if args.output else report_lib.default_folder(run)
    written = report_lib.write(table, folder)
    print(report_lib.markdown(table), end="")
    print(f"written: {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
