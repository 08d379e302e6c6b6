"""Which datasets are here, and preparing TFDS datasets for offline reading.

`python -m jaxdl.data list [--data_dir D]`: each registered source, whether it is here
and from where, then every TFDS dataset prepared in D (TFDS's default directory unless
given) as the `tfds:NAME:VERSION` a config names it by.

`python -m jaxdl.data prepare NAME [--data_dir D] [--manual_dir M] [--file_format F]`:
downloads and prepares the TFDS dataset NAME ('cifar10', 'mnist:3.0.1'; a 'tfds:' prefix is
accepted) so that `config.data.name = "tfds:NAME"` reads it offline; `--file_format
array_record` writes the random-access files that `config.data.options.streaming=True` reads
(TFDS keeps one format per folder: prepare each format in its own data directory). Run it where there is network
(imagenet2012 and other manual datasets need their files in M, by default
D/downloads/manual, instead). Without network, or without the manual files, it stops with
one line on stderr and exit status 2, without TFDS's minutes of download retries.

`python -m jaxdl.data download NAME [--data_dir ROOT] [--base_url URL]`: fetches a file
dataset (mnist, fashion_mnist, shakespeare, rainfall, sentiment) from its canonical URL
into ROOT/<folder>, by default the per-user cache where the loaders look
(`$XDG_CACHE_HOME/jaxdl/data`, else `~/.cache/jaxdl/data`). Each file's SHA-256 is checked
before it takes its name; an interrupted download resumes where it stopped when run
again. `--base_url` fetches the same file names from a mirror instead.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from jaxdl import data
from jaxdl.data import files, mnist, rainfall, sentiment, text

# A host every machine that can download TFDS data reaches (TFDS's own bucket); probed
# before downloading so that an offline machine fails at once.
PROBE_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 5.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
EXIT_USAGE = 2
EXIT_FAILED = 1

# NAME of `download NAME` -> what it fetches.
DOWNLOADS = {spec.name: spec for spec in (mnist.MNIST_DOWNLOAD, mnist.FASHION_MNIST_DOWNLOAD,
                                          text.DOWNLOAD, rainfall.DOWNLOAD, sentiment.DOWNLOAD)}


def list_sources(tfds_data_dir: str | None = None) -> list[str]:
    """One line per source: name, 'available' or 'missing', and where it loads from;
    then one per prepared TFDS dataset."""
    rows = [(name, data.source_location(name)) for name in data.source_names()]
    try:
        rows += [(f"{data.tfds_source.PREFIX}{name}", str(folder))
                 for name, folder in data.tfds_source.prepared_datasets(tfds_data_dir)]
    except ImportError:  # no tensorflow-datasets: no TFDS datasets to list
        pass
    width = max(len(name) for name, _ in rows)
    lines = []
    for name, where in rows:
        status = "missing" if where is None else "available"
        lines.append(f"{name:<{width}}  {status:<9}  {where or 'missing'}")
    return lines


def network_problem(host: tuple[str, int] = PROBE_HOST,
                    timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why this machine cannot download (one line), or None if it seems it can.

    Behind a proxy the direct probe says nothing, so it is skipped.
    """
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return None
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError as e:
        return f"no network: cannot reach {host[0]}:{host[1]} ({e})"
    return None


def prepare(name: str, data_dir: str | None, manual_dir: str | None,
            file_format: str | None = None) -> str:
    """Prepares TFDS dataset `name`; returns its folder. ValueError/OSError say why not."""
    spec = name.removeprefix(data.tfds_source.PREFIX)
    builder = data.tfds_source.builder(spec, data_dir)
    if data.tfds_source.is_prepared(builder):  # at once, or why its format is not that
        return data.tfds_source.prepare(spec, data_dir, manual_dir, file_format)
    if not builder.MANUAL_DOWNLOAD_INSTRUCTIONS and (problem := network_problem()):
        raise OSError(f"{problem}; run `python -m jaxdl.data prepare {spec} --data_dir "
                      f"{builder.data_dir_root}{data.tfds_source.format_flag(file_format)}` "
                      f"on a machine with network and copy "
                      f"{builder.data_dir_root} here")
    return data.tfds_source.prepare(spec, data_dir, manual_dir, file_format)


def download(name: str, root: str | None = None, base_url: str | None = None,
             progress: bool = True) -> int:
    """`download NAME`: 0 and one line naming the folder, or one `error:` line and 1."""
    try:
        folder = files.download(DOWNLOADS[name], root, base_url=base_url, progress=progress)
    except (files.DownloadError, files.ChecksumError, OSError) as e:
        print(f"error: download {name}: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{DOWNLOADS[name].title} is in {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxdl.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the datasets available here")
    listing.add_argument("--data_dir", default=None, help="TFDS data directory to list")
    preparing = commands.add_parser("prepare", help="download and prepare a TFDS dataset")
    preparing.add_argument("name", help="TFDS catalog name, e.g. cifar10 or mnist:3.0.1")
    preparing.add_argument("--data_dir", default=None, help="TFDS data directory")
    preparing.add_argument("--manual_dir", default=None,
                           help="where a manual download lies (default DATA_DIR/downloads/manual)")
    preparing.add_argument("--file_format", default=None,
                           choices=data.tfds_source.FILE_FORMATS,
                           help="record files to write (default tfrecord; array_record for "
                                "config.data.options.streaming=True)")
    downloading = commands.add_parser("download", help="fetch a file dataset into the cache")
    downloading.add_argument("name", choices=sorted(DOWNLOADS))
    downloading.add_argument("--data_dir", default=None,
                             help="data root to fill (default: the per-user cache, "
                                  f"{files.cache_dir()})")
    downloading.add_argument("--base_url", default=None,
                             help="a mirror holding the same file names")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(list_sources(args.data_dir)))
        return 0
    if args.command == "download":
        return download(args.name, args.data_dir, args.base_url)
    try:
        folder = prepare(args.name, args.data_dir, args.manual_dir, args.file_format)
    except (ImportError, ValueError, OSError, AssertionError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        print(f"error: prepare {args.name}: {' '.join(lines)[:2000]}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001  TFDS's DownloadError...: one line, no traceback
        print(f"error: prepare {args.name}: {type(e).__name__}: "
              f"{' '.join(str(e).split())[:2000]}", file=sys.stderr)
        return 1
    streaming = (" and config.data.options.streaming=True"
                 if args.file_format == data.tfds_source.STREAMING_FORMAT else "")
    print(f"prepared {args.name} in {folder}; read it with config.data.name="
          f"'{data.tfds_source.PREFIX}{args.name.removeprefix(data.tfds_source.PREFIX)}'"
          f"{streaming}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
