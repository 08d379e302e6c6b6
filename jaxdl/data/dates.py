"""`dates`: date-format translation, character level, with a known answer.

Each example is one calendar date between 1 January 1900 and 31 December 2099 written in
one of `FORMATS` (e.g. '12 March 1987', 'Thursday, March 12, 1987', '12.03.1987',
'12-MAR-1987'), and its target is the same date in ISO 8601 ('1987-03-12'). The model
must learn month and weekday names, reordering, and zero-padding of days and months; the
answer is computed by `datetime`, so it is right by construction.

Rows are a pure function of `seed` (numpy's generator): `examples` distinct (date, format)
pairs drawn without replacement, so no source string occurs twice and no test source was
seen in training (a test date may appear in another format). No file is read or written.
The config's `split_seed` and fractions cut train / validation / test as for any pool.

Ids: the source characters are `SOURCE_VOCABULARY` (id 0 pads, then one id per
character); the target tokens are `TARGET_VOCABULARY`: 0 pads, 1 begins (the decoder's
first input), 2 ends, then the digits and '-'. Features: [N, S] int32 sources padded with
0 at the end, S the longest source of the set; targets: [N, 11] int32, the ISO date and
the end token. Metadata: both vocabularies and the special ids, as the `seq2seq` task
reads them.
"""

from __future__ import annotations

import calendar
import datetime

import numpy as np

from jaxdl.data.dataset import Dataset
from jaxdl.data.registry import register_source

NAME = "dates"
FIRST, LAST = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
_MONTHS = [calendar.month_name[m] for m in range(1, 13)]
_DAYS = list(calendar.day_name)


def _months(d: datetime.date) -> tuple[str, str]:
    name = _MONTHS[d.month - 1]
    return name, name[:3]


# name -> how a date is written. Zero-padded and bare numbers, names in three cases,
# day-first and month-first orders: the month's position and spelling must be learned.
FORMATS = {
    "day month year": lambda d: f"{d.day} {_months(d)[0]} {d.year}",
    "month day, year": lambda d: f"{_months(d)[0]} {d.day}, {d.year}",
    "weekday, day month year": lambda d: f"{_DAYS[d.weekday()]}, {d.day} {_months(d)[0]} "
                                         f"{d.year}",
    "weekday, month day, year": lambda d: f"{_DAYS[d.weekday()]}, {_months(d)[0]} {d.day}, "
                                          f"{d.year}",
    "dd.mm.yyyy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "dd/mm/yyyy": lambda d: f"{d.day:02d}/{d.month:02d}/{d.year}",
    "yyyy/mm/dd": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    "DD-MON-YYYY": lambda d: f"{d.day:02d}-{_months(d)[1].upper()}-{d.year}",
    "mon dd yyyy": lambda d: f"{_months(d)[1].lower()} {d.day:02d} {d.year}",
    "d mon yyyy": lambda d: f"{d.day} {_months(d)[1]} {d.year}",
    "day month year (lower case)": lambda d: f"{d.day} {_months(d)[0].lower()} {d.year}",
}

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<s>", "</s>")
# Every character any format writes, in a fixed order (so ids do not depend on the seed).
SOURCE_VOCABULARY = (SPECIALS[0], *sorted(set("0123456789 ,./-").union(
    *_MONTHS, *_DAYS, *(m.upper() for m in _MONTHS), *(m.lower() for m in _MONTHS))))
TARGET_VOCABULARY = (*SPECIALS, *"0123456789-")
TARGET_LENGTH = len("yyyy-mm-dd") + 1  # and the end token
NUM_DAYS = (LAST - FIRST).days + 1


def iso(date: datetime.date) -> str:
    return date.isoformat()


def encode_source(texts, width: int) -> np.ndarray:
    """[N, width] source ids of `texts`, padded with 0 (ValueError on an unknown
    character or a text longer than `width`)."""
    index = {c: i for i, c in enumerate(SOURCE_VOCABULARY)}
    out = np.zeros((len(texts), width), np.int32)
    for row, text in enumerate(texts):
        if len(text) > width:
            raise ValueError(f"source {text!r} of length {len(text)} is longer than {width}")
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"source {text!r} has characters outside the dates vocabulary: "
                             f"{''.join(unknown)!r}")
        out[row, :len(text)] = [index[c] for c in text]
    return out


def encode_target(texts) -> np.ndarray:
    index = {c: i for i, c in enumerate(TARGET_VOCABULARY)}
    return np.asarray([[index[c] for c in text] + [EOS] for text in texts], np.int32)


@register_source(NAME, locate=lambda: "generated (date-format translation)")
def load_dates(*, examples: int, seed: int) -> Dataset:
    """`examples` distinct (date, format) pairs drawn with `seed` (see the module doc)."""
    if not 1 <= examples <= NUM_DAYS * len(FORMATS):
        raise ValueError(f"dates: examples must be in [1, {NUM_DAYS * len(FORMATS)}] (the "
                         f"distinct (date, format) pairs), got {examples}")
    rng = np.random.default_rng(seed)
    picks = rng.choice(NUM_DAYS * len(FORMATS), size=examples, replace=False)
    writers = list(FORMATS.values())
    dates = [FIRST + datetime.timedelta(days=int(p) // len(FORMATS)) for p in picks]
    sources = [writers[int(p) % len(FORMATS)](d) for p, d in zip(picks, dates)]
    width = max(map(len, sources))
    return Dataset(
        name=NAME, features=encode_source(sources, width),
        targets=encode_target([iso(d) for d in dates]), num_classes=None,
        description=f"{examples} dates in {len(FORMATS)} formats -> ISO 8601 (seed {seed})",
        metadata={"source_vocabulary": SOURCE_VOCABULARY,
                  "target_vocabulary": TARGET_VOCABULARY,
                  "pad_id": PAD, "bos_id": BOS, "eos_id": EOS})
