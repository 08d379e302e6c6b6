"""`python -m jaxdl.analysis TOOL --run=WORKDIR [--flags]`: one analysis of a finished (or
checkpointed) run, written into WORKDIR/analysis/TOOL/ (see `jaxdl.analysis`).

    python -m jaxdl.analysis adversarial --run=runs/digits_cnn --attack=pgd --norm=linf
    python -m jaxdl.analysis distortions --run=runs/digits_cnn --rotate=0,15,30,45
    python -m jaxdl.analysis saliency --run=runs/digits_cnn --examples=0,1,2
    python -m jaxdl.analysis dream --run=runs/digits_cnn --layer=Conv_1
    python -m jaxdl.analysis landscape --run=runs/digits_cnn --mode=plane
    python -m jaxdl.analysis neighbours --run=runs/shakespeare_word2vec --word=king --top=10

Every flag's default lives here, in one place (the library functions take every value
explicitly). Bad input (a workdir that holds no run, a run with no checkpoint, an unknown
layer, an epsilon outside the pixel range...) is one `error:` line on stderr and exit
status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

EXIT_BAD_INPUT = 2
TOOLS = ("adversarial", "distortions", "saliency", "dream", "landscape", "neighbours")


class _Fail(Exception):
    """Bad input: one `error:` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage + message
        raise _Fail(message)


def _floats(text: str) -> list[float]:
    if not text.strip():
        return []
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from None


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None


def _pair(text: str) -> tuple[float, float]:
    values = _floats(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}")
    return values[0], values[1]


def _count(text: str) -> int | None:
    """A number of examples, or 'all'."""
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count or 'all', got {text!r}")
    return value


def _target(text: str) -> str | int | None:
    if text in ("none", "next"):
        return None if text == "none" else "next"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected none, next or a class index, got {text!r}") \
            from None


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser() -> _Parser:
    parser = _Parser(prog="python -m jaxdl.analysis", description=__doc__.splitlines()[0])
    tools = parser.add_subparsers(dest="tool", required=True, parser_class=_Parser)

    def tool(name: str, help_text: str, *, checkpoint: str = "best", split: str = "test"):
        sub = tools.add_parser(name, help=help_text)
        sub.add_argument("--run", required=True, help="the run's workdir")
        sub.add_argument("--checkpoint", default=checkpoint,
                         help="'best' (chosen on validation), 'latest' or a step number")
        sub.add_argument("--split", default=split, help="train, validation or test")
        sub.add_argument("--seed", type=int, default=0,
                         help="seeds the fixed subset and every random draw of the tool")
        return sub

    sub = tool("adversarial", "accuracy vs epsilon under FGSM or PGD")
    sub.add_argument("--attack", default="pgd", choices=("fgsm", "pgd"))
    sub.add_argument("--norm", default="linf", choices=("linf", "l2"))
    sub.add_argument("--epsilons", type=_floats, default=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
                     help="perturbation budgets in pixel units; 0 is always added")
    sub.add_argument("--steps", type=int, default=20, help="PGD steps")
    sub.add_argument("--step_size", type=float, default=0.1,
                     help="PGD step as a fraction of epsilon (Madry et al.: 2.5 / steps)")
    sub.add_argument("--random_start", type=_boolean, default=True,
                     help="PGD starts at a uniform point of the epsilon ball")
    sub.add_argument("--target", type=_target, default=None,
                     help="none (untargeted), next (label + 1 mod C) or a class index")
    sub.add_argument("--examples", type=_count, default=None,
                     help="a seeded fixed subset of this many examples, or 'all'")
    sub.add_argument("--batch_size", type=int, default=None,
                     help="examples attacked at once; default the run's data.eval_batch_size")
    sub.add_argument("--shown", type=int, default=8, help="examples in examples.png")
    sub.add_argument("--pixel_range", type=_pair, default=None,
                     help="LOW,HIGH of a valid input; default the train split's range")

    sub = tool("distortions", "accuracy under augmentation ops at a sweep of strengths")
    sub.add_argument("--rotate", type=_floats, default=[0, 10, 20, 30, 45],
                     help="max_degrees of rotate; empty = skip")
    sub.add_argument("--translate", type=_floats, default=[0, 1, 2, 3],
                     help="max_shift (pixels) of translate; empty = skip")
    sub.add_argument("--scale", type=_floats, default=[0.6, 0.8, 1.0, 1.2, 1.4],
                     help="exact zoom factors; empty = skip")
    sub.add_argument("--gaussian_noise", type=_floats, default=[0, 0.1, 0.2, 0.3, 0.5],
                     help="noise std in pixel units; empty = skip")
    sub.add_argument("--cutout", type=_floats, default=[0, 2, 3, 4],
                     help="side (pixels) of the blanked square; empty = skip")
    sub.add_argument("--examples", type=_count, default=None,
                     help="a seeded fixed subset of this many examples, or 'all'")
    sub.add_argument("--batch_size", type=int, default=None,
                     help="default the run's data.eval_batch_size")

    sub = tool("saliency", "vanilla gradients, SmoothGrad, integrated gradients")
    sub.add_argument("--examples", type=_ints, default=[0, 1, 2, 3],
                     help="row numbers in the split")
    sub.add_argument("--explain", default="label", choices=("label", "predicted"))
    sub.add_argument("--samples", type=int, default=50, help="SmoothGrad's noisy copies")
    sub.add_argument("--noise", type=float, default=0.15,
                     help="SmoothGrad's noise std as a fraction of the pixel range")
    sub.add_argument("--ig_steps", type=int, default=8192,
                     help="integrated gradients: trapezoid intervals from the baseline")
    sub.add_argument("--pixel_range", type=_pair, default=None)

    sub = tool("dream", "Deep Dream of a layer or activation maximisation of a logit")
    sub.add_argument("--layer", default=None,
                     help="module path, e.g. Conv_1 (a wrong name lists the valid ones)")
    sub.add_argument("--class_index", type=int, default=None, help="maximise this logit")
    sub.add_argument("--channel", type=int, default=None, help="one channel of the layer")
    sub.add_argument("--start", default="test", choices=("test", "noise"))
    sub.add_argument("--examples", type=_ints, default=[0, 1, 2, 3],
                     help="row numbers in the split (with --start=noise: one image each)")
    sub.add_argument("--octaves", type=int, default=3)
    sub.add_argument("--octave_scale", type=float, default=1.4)
    sub.add_argument("--steps", type=int, default=50, help="ascent steps per octave")
    sub.add_argument("--step_size", type=float, default=0.01,
                     help="pixel change per step for a gradient of mean magnitude 1")
    sub.add_argument("--jitter", type=int, default=1, help="random roll, in pixels")
    sub.add_argument("--tv_weight", type=float, default=0.05,
                     help="total-variation penalty weight")
    sub.add_argument("--pixel_range", type=_pair, default=None)

    sub = tool("landscape", "loss along a line of weights or on a filter-normalised plane",
               checkpoint="latest", split="train")
    sub.add_argument("--mode", default="line", choices=("line", "plane"))
    sub.add_argument("--from_run", default=None,
                     help="line: start at this run's weights instead of the initial ones")
    sub.add_argument("--from_checkpoint", default="latest")
    sub.add_argument("--points", type=int, default=21, help="points per axis")
    sub.add_argument("--margin", type=float, default=0.25,
                     help="line: alpha runs from -margin to 1 + margin")
    sub.add_argument("--span", type=float, default=1.0,
                     help="plane: each coordinate runs from -span to span")
    sub.add_argument("--examples", type=_count, default=1000,
                     help="a seeded fixed subset of this many examples, or 'all'")

    # A word2vec run's exported vectors: no checkpoint, split or seed is read.
    sub = tools.add_parser("neighbours", help="cosine neighbours of a word in a word2vec run")
    sub.add_argument("--run", required=True, help="the run's workdir")
    sub.add_argument("--word", required=True, help="a word of the run's vocabulary")
    sub.add_argument("--top", type=int, default=10, help="neighbours printed")
    return parser


def run_tool(args: argparse.Namespace) -> dict:
    """Loads the run and runs the tool `args.tool` with the parsed flags."""
    from jaxdl.analysis import adversarial, distortions, dream, landscape, neighbours, saliency
    from jaxdl.trained import load_run

    if args.tool == "neighbours":
        return neighbours.analyse(args.run, word=args.word, top=args.top)
    run = load_run(args.run, args.checkpoint)
    batch_size = getattr(args, "batch_size", None) or run.config.data.eval_batch_size
    common = {"split": args.split, "seed": args.seed}
    if args.tool == "adversarial":
        return adversarial.analyse(
            run, attack=args.attack, norm=args.norm, epsilons=args.epsilons, steps=args.steps,
            step_size=args.step_size, random_start=args.random_start, target=args.target,
            examples=args.examples, batch_size=batch_size, shown=args.shown,
            pixel_range=args.pixel_range, **common)
    if args.tool == "distortions":
        sweeps = {name: getattr(args, name) for name in distortions.DISTORTIONS
                  if getattr(args, name)}
        return distortions.analyse(run, sweeps=sweeps, examples=args.examples,
                                   batch_size=batch_size, **common)
    if args.tool == "saliency":
        return saliency.analyse(run, indices=args.examples, explain=args.explain,
                                samples=args.samples, noise=args.noise, steps=args.ig_steps,
                                pixel_range=args.pixel_range, **common)
    if args.tool == "dream":
        return dream.analyse(run, layer=args.layer, class_index=args.class_index,
                             channel=args.channel, start=args.start, indices=args.examples,
                             octaves=args.octaves, octave_scale=args.octave_scale,
                             steps=args.steps, step_size=args.step_size, jitter=args.jitter,
                             tv_weight=args.tv_weight, pixel_range=args.pixel_range, **common)
    if args.mode == "line":
        other = (load_run(args.from_run, args.from_checkpoint) if args.from_run else None)
        return landscape.analyse_line(run, other=other, points=args.points,
                                      margin=args.margin, examples=args.examples, **common)
    return landscape.analyse_plane(run, points=args.points, span=args.span,
                                   examples=args.examples, **common)


def main(argv: Sequence[str] | None = None) -> int:
    from jaxdl.schema import ConfigError
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
        report = run_tool(args)
    except (_Fail, ConfigError) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.tool == "neighbours":  # the answer itself, one neighbour a line
        from jaxdl.analysis import neighbours
        print("\n".join(neighbours.lines(report)))
        return 0
    shown = {k: v for k, v in report.items() if not isinstance(v, (list, dict))}
    print(json.dumps(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
