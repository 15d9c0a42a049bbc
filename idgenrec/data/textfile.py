"""Line-level reading of raw text files, with errors that say where the problem is.

pandas' CSV reader reports malformed input by byte offset or not at all (a short row just
becomes NaN); these helpers check every row and name the file, the 1-based line and the
field, which is what a person needs to fix a file by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class DataFormatError(ValueError):
    """A raw data file is malformed. ``line`` is 1-based; ``None`` when the problem is the
    file as a whole (missing, emptied by filtering)."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path = Path(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = str(self.path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line number in the file
    fields: list[str]


def read_lines(
    path: Path, encoding: str = "utf-8", sep: str | None = None, field_names: Sequence[str] = ()
) -> list[tuple[int, str]]:
    """All lines as ``(line number, text)``, without line endings or a UTF-8 BOM.

    ``sep`` (``None``: whitespace) and ``field_names`` only serve to name the field that
    holds an undecodable byte.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, None, None, "is a folder, expected a file") from None
    text = _decode(path, data, encoding, sep, field_names)
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")  # not splitlines(): it also splits on \x1c, \x85, \u2028 inside fields
    if lines and lines[-1] == "":
        lines.pop()
    return [(number, line.removesuffix("\r")) for number, line in enumerate(lines, start=1)]


def read_delimited(
    path: Path, sep: str, header: Sequence[str] | None = None, encoding: str = "utf-8"
) -> tuple[list[str], list[Row]]:
    """Rows of a delimited file, each with exactly as many fields as the header.

    With ``header=None`` the first non-blank line is the header; otherwise the file has no
    header line and ``header`` names its columns. Blank lines are skipped.
    """
    lines = [(n, t) for n, t in read_lines(path, encoding, sep, header or ()) if t.strip()]
    if header is None:
        if not lines:
            raise DataFormatError(path, 1, "header", f"file is empty; expected a header line of {sep!r}-separated column names")
        header_line, header_text = lines.pop(0)
        names = [name.strip() for name in header_text.split(sep)]
        _check_header(path, header_line, names)
    else:
        names = list(header)
        if not lines:
            raise DataFormatError(path, 1, names[0], f"file is empty; expected lines of {len(names)} {sep!r}-separated fields {names}")
    rows = []
    for number, text in lines:
        fields = text.split(sep)
        if len(fields) != len(names):
            raise _field_count_error(path, number, names, fields, sep)
        if header is None and [f.strip() for f in fields] == names:
            raise DataFormatError(path, number, names[0], "repeats the header line (files concatenated?)")
        rows.append(Row(number, fields))
    return names, rows


def _check_header(path: Path, line: int, names: list[str]) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name:
            raise DataFormatError(path, line, f"column {index + 1}", "empty column name in the header")
        if name in seen:
            raise DataFormatError(path, line, name, "column appears twice in the header")
        seen.add(name)


def _field_count_error(path: Path, line: int, names: list[str], fields: list[str], sep: str) -> DataFormatError:
    if len(fields) < len(names):
        missing = names[len(fields)]
        return DataFormatError(
            path, line, missing, f"row has {len(fields)} of {len(names)} {sep!r}-separated fields; {missing!r} and after are missing"
        )
    return DataFormatError(
        path, line, f"column {len(names) + 1}", f"row has {len(fields)} {sep!r}-separated fields, the header has {len(names)}"
    )


def _decode(path: Path, data: bytes, encoding: str, sep: str | None, field_names: Sequence[str]) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        prefix = data[line_start : err.start]
        if sep is None:  # whitespace-separated: the bad byte is in the token being read
            tokens = prefix.split()
            index = len(tokens) - (0 if not prefix or prefix[-1:].isspace() else 1)
        else:
            index = prefix.count(sep.encode(encoding, errors="replace"))
        names = list(field_names) or _header_names(data, encoding, sep, line)
        if sep is None and names:  # `user item item ...`: the last name repeats
            index = min(index, len(names) - 1)
        field = names[index] if index < len(names) else f"column {index + 1}"
        raise DataFormatError(
            path, line, field, f"not valid {encoding}: byte 0x{data[err.start]:02x} at column {err.start - line_start + 1}"
        ) from None


def _header_names(data: bytes, encoding: str, sep: str | None, bad_line: int) -> list[str]:
    """The first line's column names, when the undecodable byte is not in that line."""
    if bad_line == 1 or sep is None:
        return []
    first = data.split(b"\n", 1)[0].decode(encoding, errors="replace").removesuffix("\r")
    return [name.strip() for name in first.split(sep)]
