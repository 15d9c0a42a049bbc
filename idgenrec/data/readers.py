"""Readers for the three raw layouts, all producing one in-memory form, :class:`RawDataset`.

Layouts (``data.format`` in params.yaml):

- ``recbole``: RecBole atomic files ``<name>.inter`` and ``<name>.item`` (tab-separated,
  typed header ``field:type``). RecBole's MovieLens field names are mapped to the text
  fields the project uses: ``movie_title`` -> ``title``, ``release_year`` -> ``year``,
  ``class`` -> ``genres``.
- ``movielens``: GroupLens raw files ``u.data`` (tab-separated user, item, rating,
  timestamp; no header) and ``u.item`` (pipe-separated, latin-1, 19 genre flags).
- ``p5``: ``user_sequence.txt`` (``user item item ...`` per line, chronological) and
  ``items.tsv`` (header ``asin title brand categories description``). There is no time
  stamp: an interaction's position in its line is its time.

Every problem is a :class:`DataFormatError` naming the file, line and field, because the
person fixing a 100,000-line file needs to know where to look.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from idgenrec.config import DataSource
from idgenrec.data.textfile import DataFormatError, Row, read_delimited, read_lines

__all__ = [
    "DataFormatError",
    "MOVIELENS_GENRES",
    "RawDataset",
    "read_movielens",
    "read_p5",
    "read_raw",
    "read_recbole",
    "split_movielens_title",
]

TimeKind = Literal["timestamp", "position", "file order"]

# u.item's 19 genre flags, in file order (GroupLens README). "unknown" is a real flag.
MOVIELENS_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
MOVIELENS_ITEM_COLUMNS = (
    "movie_id", "movie_title", "release_date", "video_release_date", "imdb_url", *MOVIELENS_GENRES
)

# RecBole field name -> the project's text field name. Other fields keep their own name.
RECBOLE_TEXT_ALIASES = {"movie_title": "title", "release_year": "year", "class": "genres"}
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass(frozen=True)
class RawDataset:
    """Raw interactions and item text, whatever layout they came from.

    ``interactions`` columns: ``user`` and ``item`` (str), ``timestamp`` (float: a time
    stamp, the position in the user's line for P5, or the file order when the file has no
    time), ``line`` (1-based line in ``interactions_file``) and ``order`` (0-based row in
    file order; breaks timestamp ties). ``item_text`` columns: ``item`` (str), ``line`` and
    one str column per text field (``""`` when empty).
    """

    interactions: pd.DataFrame
    item_text: pd.DataFrame
    interactions_file: Path
    item_file: Path | None
    time_kind: TimeKind

    @property
    def text_fields(self) -> list[str]:
        return [c for c in self.item_text.columns if c not in ("item", "line")]


def read_raw(config: DataSource) -> RawDataset:
    """Read ``config.path`` in the layout ``config.format`` names."""
    folder = Path(config.path)
    if not folder.is_dir():
        raise DataFormatError(folder, None, "data.path", "folder not found (fetch the data or fix data.path in params.yaml)")
    readers = {"recbole": read_recbole, "movielens": read_movielens, "p5": read_p5}
    raw = readers[config.format](folder, config.name)
    _check_text_fields(raw, config.text_fields)
    return raw


def _check_text_fields(raw: RawDataset, wanted: Sequence[str]) -> None:
    """A configured text field the item file lacks is a typo, not a missing value."""
    if raw.item_file is None:
        return  # no item file at all: every item gets the fallback text (counted)
    unknown = [f for f in wanted if f not in raw.text_fields]
    if unknown:
        raise DataFormatError(
            raw.item_file, 1, unknown[0],
            f"data.text_fields names {unknown} but the file has text fields {raw.text_fields}",
        )


# -- RecBole atomic files --------------------------------------------------------------


def read_recbole(folder: Path, name: str) -> RawDataset:
    """``<name>.inter`` (required) and ``<name>.item`` (optional: without it every item
    gets the fallback text)."""
    inter_path = _find_one(folder, name, ".inter")
    header, rows = read_delimited(inter_path, "\t")
    fields = _recbole_fields(inter_path, header)
    for required in ("user_id", "item_id"):
        if required not in fields:
            raise DataFormatError(inter_path, 1, required, f"missing column `{required}:token` (header has {header})")
    user_col, item_col = fields.index("user_id"), fields.index("item_id")
    time_col = fields.index("timestamp") if "timestamp" in fields else None
    users, items, times, lines = [], [], [], []
    for row in rows:
        users.append(_token(inter_path, row, user_col, header))
        items.append(_token(inter_path, row, item_col, header))
        times.append(_number(inter_path, row, time_col, header) if time_col is not None else float(len(times)))
        lines.append(row.line)
    interactions = _interaction_frame(users, items, times, lines, inter_path)

    item_path = folder / f"{name}.item"
    item_text = _empty_item_text()
    if item_path.exists():
        item_header, item_rows = read_delimited(item_path, "\t")
        item_fields = _recbole_fields(item_path, item_header)
        if "item_id" not in item_fields:
            raise DataFormatError(item_path, 1, "item_id", f"missing column `item_id:token` (header has {item_header})")
        names = [_text_alias(f, item_fields) for f in item_fields]
        item_text = _item_text_frame(item_path, item_rows, item_fields.index("item_id"), names, item_header)
    return RawDataset(
        interactions, item_text, inter_path, item_path if item_path.exists() else None,
        "timestamp" if time_col is not None else "file order",
    )


def _find_one(folder: Path, name: str, suffix: str) -> Path:
    path = folder / f"{name}{suffix}"
    if path.exists():
        return path
    found = sorted(folder.glob(f"*{suffix}"))
    hint = f"; found {[p.name for p in found]} (data.name must match)" if found else ""
    raise DataFormatError(path, None, "data.name", f"file not found{hint}")


def _recbole_fields(path: Path, header: list[str]) -> list[str]:
    """Strip the ``:type`` of each header column, checking it is a RecBole type."""
    fields = []
    for column in header:
        field, sep, kind = column.partition(":")
        if not sep or kind not in RECBOLE_TYPES or not field:
            raise DataFormatError(path, 1, column, f"expected `name:type` with type one of {list(RECBOLE_TYPES)}")
        fields.append(field)
    _no_duplicates(path, fields, header)
    return fields


def _text_alias(field: str, fields: list[str]) -> str:
    alias = RECBOLE_TEXT_ALIASES.get(field)
    return alias if alias and alias not in fields else field


# -- MovieLens raw files ---------------------------------------------------------------


def read_movielens(folder: Path, name: str) -> RawDataset:
    """``u.data`` and ``u.item`` exactly as in GroupLens's ml-100k.zip."""
    del name  # the GroupLens file names are fixed
    data_path = folder / "u.data"
    if not data_path.exists():
        raise DataFormatError(data_path, None, "data.path", "file not found")
    columns = ["user_id", "item_id", "rating", "timestamp"]
    _, rows = read_delimited(data_path, "\t", header=columns)
    users, items, times, lines = [], [], [], []
    for row in rows:
        users.append(_token(data_path, row, 0, columns))
        items.append(_token(data_path, row, 1, columns))
        times.append(_number(data_path, row, 3, columns))
        lines.append(row.line)
    interactions = _interaction_frame(users, items, times, lines, data_path)

    item_path = folder / "u.item"
    item_text = _empty_item_text()
    if item_path.exists():
        _, item_rows = read_delimited(item_path, "|", header=list(MOVIELENS_ITEM_COLUMNS), encoding="latin-1")
        records = []
        for row in item_rows:
            title, year = split_movielens_title(row.fields[1])
            genres = [g for column, g in enumerate(MOVIELENS_GENRES, start=5) if _flag(item_path, row, column)]
            records.append(Row(row.line, [row.fields[0], title, year, " ".join(genres)]))
        item_text = _item_text_frame(item_path, records, 0, ["item_id", "title", "year", "genres"], list(MOVIELENS_ITEM_COLUMNS))
    return RawDataset(interactions, item_text, data_path, item_path if item_path.exists() else None, "timestamp")


def split_movielens_title(name: str) -> tuple[str, str]:
    """``"Seven (Se7en) (1995)"`` -> ``("Seven (Se7en)", "1995")``: the last parenthesis is
    the year, as in RecBole's ml-100k.item (which keeps e.g. ``(V)`` as the year of item
    1412). ``("unknown", "")`` when there is no trailing parenthesis."""
    name = name.strip()
    cut = name.rfind(" (")
    if not name.endswith(")") or cut < 0:
        return name, ""
    return name[:cut], name[cut + 2 : -1]


def _flag(path: Path, row: Row, column: int) -> bool:
    value = row.fields[column].strip()
    if value not in ("0", "1"):
        raise DataFormatError(path, row.line, MOVIELENS_ITEM_COLUMNS[column], f"genre flag must be 0 or 1, found {value!r}")
    return value == "1"


# -- P5 / Amazon layout ----------------------------------------------------------------


def read_p5(folder: Path, name: str) -> RawDataset:
    """``user_sequence.txt`` (already chronological) and ``items.tsv``."""
    del name
    seq_path = folder / "user_sequence.txt"
    if not seq_path.exists():
        raise DataFormatError(seq_path, None, "data.path", "file not found")
    users, items, times, lines = [], [], [], []
    first_line: dict[str, int] = {}
    for line_no, text in read_lines(seq_path, field_names=("user_id", "item_id")):
        tokens = text.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise DataFormatError(seq_path, line_no, "item_id", f"user {tokens[0]!r} has no items (expected `user item item ...`)")
        user = tokens[0]
        if user in first_line:
            raise DataFormatError(seq_path, line_no, "user_id", f"user {user!r} already listed on line {first_line[user]}")
        first_line[user] = line_no
        for position, item in enumerate(tokens[1:]):
            users.append(user)
            items.append(item)
            times.append(float(position))
            lines.append(line_no)
    if not users:
        raise DataFormatError(seq_path, 1, "user_id", "file has no user lines (expected `user item item ...`)")
    interactions = _interaction_frame(users, items, times, lines, seq_path)

    item_path = folder / "items.tsv"
    item_text = _empty_item_text()
    if item_path.exists():
        header, rows = read_delimited(item_path, "\t")
        _no_duplicates(item_path, header, header)
        key = next((c for c in ("asin", "item_id") if c in header), None)
        if key is None:
            raise DataFormatError(item_path, 1, "asin", f"missing item key column `asin` (or `item_id`); header has {header}")
        item_text = _item_text_frame(item_path, rows, header.index(key), header, header)
    return RawDataset(interactions, item_text, seq_path, item_path if item_path.exists() else None, "position")


# -- shared helpers --------------------------------------------------------------------


def _token(path: Path, row: Row, column: int, header: Sequence[str]) -> str:
    """An id: any non-empty text (spaces, quotes, any script), stripped of surrounding
    whitespace. A tab or carriage return inside it cannot be written to a tab-separated line."""
    value = row.fields[column].strip()
    if not value:
        raise DataFormatError(path, row.line, header[column], "empty id")
    if "\t" in value or "\r" in value:
        raise DataFormatError(path, row.line, header[column], f"id {value!r} contains a tab or carriage return")
    return value


def _number(path: Path, row: Row, column: int, header: Sequence[str]) -> float:
    value = row.fields[column].strip()
    try:
        number = float(value)
    except ValueError:
        raise DataFormatError(path, row.line, header[column], f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise DataFormatError(path, row.line, header[column], f"not a finite number: {value!r}")
    return number


def _no_duplicates(path: Path, names: Sequence[str], header: Sequence[str]) -> None:
    seen: set[str] = set()
    for name, column in zip(names, header):
        if name in seen:
            raise DataFormatError(path, 1, column, "column appears twice in the header")
        seen.add(name)


def _interaction_frame(users: list[str], items: list[str], times: list[float], lines: list[int], path: Path) -> pd.DataFrame:
    if not users:
        raise DataFormatError(path, 2, "item_id", "no interactions after the header")
    return pd.DataFrame(
        {
            "user": pd.Series(users, dtype=object),
            "item": pd.Series(items, dtype=object),
            "timestamp": pd.Series(times, dtype="float64"),
            "line": pd.Series(lines, dtype="int64"),
            "order": pd.RangeIndex(len(users)).to_numpy(dtype="int64"),
        }
    )


def _empty_item_text() -> pd.DataFrame:
    return pd.DataFrame({"item": pd.Series([], dtype=object), "line": pd.Series([], dtype="int64")})


def _item_text_frame(
    path: Path, rows: Sequence[Row] | Iterator[Row], key: int, names: Sequence[str], header: Sequence[str]
) -> pd.DataFrame:
    """One row per item: its key, line and every other column as a stripped string."""
    first_line: dict[str, int] = {}
    columns: dict[str, list] = {"item": [], "line": []}
    text_columns = [(i, n) for i, n in enumerate(names) if i != key]
    for _, name in text_columns:
        columns[name] = []
    for row in rows:
        item = _token(path, row, key, header)
        if item in first_line:
            raise DataFormatError(path, row.line, header[key], f"item {item!r} already described on line {first_line[item]}")
        first_line[item] = row.line
        columns["item"].append(item)
        columns["line"].append(row.line)
        for index, name in text_columns:
            columns[name].append(row.fields[index].strip())
    frame = pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})
    return frame.astype({"line": "int64"})
