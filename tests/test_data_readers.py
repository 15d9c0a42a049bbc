"""Readers: the three layouts give one raw form; malformed files name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from idgenrec.config import DataConfig
from idgenrec.data.readers import read_raw, split_movielens_title
from idgenrec.data.textfile import DataFormatError

pytestmark = pytest.mark.data

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (folder / name).write_bytes(data)
    return folder


def recbole_files(inter_rows: list[str] | None = None, item_rows: list[str] | None = None) -> dict[str, str]:
    inter_rows = inter_rows if inter_rows is not None else ["1\t10\t4\t100", "1\t11\t3\t90", "2\t10\t5\t50"]
    item_rows = item_rows if item_rows is not None else ["10\tToy Story\t1995\tAnimation Comedy", "11\tHeat\t1995\tAction"]
    return {
        "toy.inter": "\n".join([INTER_HEADER, *inter_rows]) + "\n",
        "toy.item": "\n".join([ITEM_HEADER, *item_rows]) + "\n",
    }


def recbole(tmp_path: Path, **files) -> DataConfig:
    write(tmp_path / "toy", files or recbole_files())
    return DataConfig(name="toy", format="recbole", path=tmp_path / "toy")


P5_FIELDS = ["title", "brand", "categories", "description"]


def p5(tmp_path: Path, sequences: str | bytes, items: str | bytes | None = None) -> DataConfig:
    files: dict[str, str | bytes] = {"user_sequence.txt": sequences}
    if items is not None:
        files["items.tsv"] = items
    write(tmp_path / "p5", files)
    return DataConfig(name="p5", format="p5", path=tmp_path / "p5", text_fields=P5_FIELDS)


def movielens(tmp_path: Path, u_data: str | bytes, u_item: str | bytes | None = None) -> DataConfig:
    files: dict[str, str | bytes] = {"u.data": u_data}
    if u_item is not None:
        files["u.item"] = u_item
    write(tmp_path / "ml", files)
    return DataConfig(name="ml", format="movielens", path=tmp_path / "ml")


def flags(*genres: int) -> str:
    return "|".join("1" if i in genres else "0" for i in range(19))


# -- the raw form ----------------------------------------------------------------------


def test_recbole_maps_movielens_field_names_to_text_fields(tmp_path):
    raw = read_raw(recbole(tmp_path))
    assert raw.interactions[["user", "item", "timestamp", "line", "order"]].values.tolist() == [
        ["1", "10", 100.0, 2, 0], ["1", "11", 90.0, 3, 1], ["2", "10", 50.0, 4, 2]
    ]
    assert raw.text_fields == ["title", "year", "genres"]
    assert raw.item_text.set_index("item").loc["10", "genres"] == "Animation Comedy"
    assert raw.time_kind == "timestamp"


def test_recbole_without_timestamp_uses_file_order(tmp_path):
    config = recbole(tmp_path, **{"toy.inter": "user_id:token\titem_id:token\nu\ta\nu\tb\n"})
    raw = read_raw(config)
    assert raw.time_kind == "file order"
    assert raw.interactions["timestamp"].tolist() == [0.0, 1.0]
    assert raw.item_file is None and raw.item_text.empty


def test_movielens_reads_genre_flags_latin1_titles_and_years(tmp_path):
    u_item = (
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4)}\n"
        f"2|Misérables, Les (1995)|01-Jan-1995||http://x|{flags(8)}\n"
        f"3|unknown||||{flags(0)}\n"
    ).encode("latin-1")
    raw = read_raw(movielens(tmp_path, "1\t1\t5\t10\n2\t2\t1\t20\n", u_item))
    text = raw.item_text.set_index("item")
    assert text.loc["1", ["title", "year", "genres"]].tolist() == ["Toy Story", "1995", "Animation Children's"]
    assert text.loc["2", "title"] == "Misérables, Les"
    assert text.loc["3", ["title", "year", "genres"]].tolist() == ["unknown", "", "unknown"]


def test_p5_positions_are_time_and_items_tsv_is_the_text(tmp_path):
    items = "asin\ttitle\tbrand\tcategories\tdescription\nA\tLipstick\tAcme\tBeauty, Makeup\t\n"
    raw = read_raw(p5(tmp_path, "u1 A B A\nu2 B C\n", items))
    assert raw.interactions[["user", "item", "timestamp", "line"]].values.tolist() == [
        ["u1", "A", 0.0, 1], ["u1", "B", 1.0, 1], ["u1", "A", 2.0, 1], ["u2", "B", 0.0, 2], ["u2", "C", 1.0, 2]
    ]
    assert raw.time_kind == "position"
    assert raw.item_text.set_index("item").loc["A", ["brand", "description"]].tolist() == ["Acme", ""]


@pytest.mark.parametrize(
    ("name", "title", "year"),
    [
        ("Seven (Se7en) (1995)", "Seven (Se7en)", "1995"),
        ("Land Before Time III: The Time of the Great Giving (1995) (V)", "Land Before Time III: The Time of the Great Giving (1995)", "V"),
        ("unknown", "unknown", ""),
    ],
)
def test_movielens_title_split_follows_recbole(name, title, year):
    assert split_movielens_title(name) == (title, year)


# -- bad input: every error names file, line and field ----------------------------------

GOOD_INTER = ["1\t10\t4\t100", "1\t11\t3\t90"]


@pytest.mark.parametrize(
    ("case", "files", "file", "line", "field"),
    [
        ("missing column", {"toy.inter": "user_id:token\trating:float\ttimestamp:float\n1\t4\t100\n"},
         "toy.inter", 1, "item_id"),
        ("non-numeric timestamp", recbole_files(inter_rows=[*GOOD_INTER, "2\t10\t5\tyesterday"]),
         "toy.inter", 4, "timestamp:float"),
        ("non-finite timestamp", recbole_files(inter_rows=["1\t10\t4\tnan"]), "toy.inter", 2, "timestamp:float"),
        ("empty file", {"toy.inter": ""}, "toy.inter", 1, "header"),
        ("header only", {"toy.inter": INTER_HEADER + "\n"}, "toy.inter", 2, "item_id"),
        ("duplicated header column", {"toy.inter": "user_id:token\titem_id:token\tuser_id:token\n1\t2\t3\n"},
         "toy.inter", 1, "user_id:token"),
        ("header repeated in the body", recbole_files(inter_rows=[*GOOD_INTER, INTER_HEADER, "2\t10\t5\t1"]),
         "toy.inter", 4, "user_id:token"),
        ("row with too few fields", recbole_files(inter_rows=[*GOOD_INTER, "2\t10\t5"]), "toy.inter", 4, "timestamp:float"),
        ("row with too many fields", recbole_files(inter_rows=["2\t10\t5\t1\t9"]), "toy.inter", 2, "column 5"),
        ("untyped header", {"toy.inter": "user_id\titem_id\n1\t2\n"}, "toy.inter", 1, "user_id"),
        ("empty id", recbole_files(inter_rows=["\t10\t4\t100"]), "toy.inter", 2, "user_id:token"),
        ("duplicate item row", recbole_files(item_rows=["10\tA\t1995\tDrama", "10\tB\t1996\tDrama"]),
         "toy.item", 3, "item_id:token"),
        ("item row too short", recbole_files(item_rows=["10\tA\t1995"]), "toy.item", 2, "class:token_seq"),
    ],
)
def test_recbole_bad_input_names_file_line_and_field(tmp_path, case, files, file, line, field):
    with pytest.raises(DataFormatError) as caught:
        read_raw(recbole(tmp_path, **files))
    err = caught.value
    assert (err.path.name, err.line, err.field) == (file, line, field), case
    assert f"{file}, line {line}, field {field!r}" in str(err)


def test_non_utf8_bytes_name_the_line_and_field(tmp_path):
    files = recbole_files()
    files["toy.item"] = (ITEM_HEADER + "\n10\tToy Story\t1995\tAnimation\n11\tCaf\xe9\t1995\tDrama\n").encode("latin-1")
    with pytest.raises(DataFormatError) as caught:
        read_raw(recbole(tmp_path, **files))
    assert (caught.value.path.name, caught.value.line, caught.value.field) == ("toy.item", 3, "movie_title:token_seq")
    assert "not valid utf-8: byte 0xe9" in str(caught.value)


@pytest.mark.parametrize(
    ("sequences", "line", "field", "problem"),
    [
        ("u1 A B\nu2\n", 2, "item_id", "has no items"),
        ("u1 A B\nu1 C D\n", 2, "user_id", "already listed on line 1"),
        (b"u1 A B\nu2 A \xff\n", 2, "item_id", "not valid utf-8"),
        (b"", 1, "user_id", "no user lines"),
    ],
)
def test_p5_bad_sequences(tmp_path, sequences, line, field, problem):
    with pytest.raises(DataFormatError) as caught:
        read_raw(p5(tmp_path, sequences))
    assert (caught.value.path.name, caught.value.line, caught.value.field) == ("user_sequence.txt", line, field)
    assert problem in str(caught.value)


def test_p5_items_tsv_needs_a_key_column(tmp_path):
    with pytest.raises(DataFormatError) as caught:
        read_raw(p5(tmp_path, "u1 A B\n", "sku\ttitle\tbrand\tcategories\tdescription\nA\tx\t\t\t\n"))
    assert (caught.value.path.name, caught.value.line, caught.value.field) == ("items.tsv", 1, "asin")


def test_movielens_bad_rows(tmp_path):
    with pytest.raises(DataFormatError) as caught:
        read_raw(movielens(tmp_path, "1\t1\t5\t10\n2\t2\t1\n"))
    assert (caught.value.line, caught.value.field) == (2, "timestamp")
    with pytest.raises(DataFormatError) as caught:
        read_raw(movielens(tmp_path, "1\t1\t5\t10\n", f"1|Heat (1995)|||x|{flags(1)[:-1]}2\n"))
    assert (caught.value.path.name, caught.value.line, caught.value.field) == ("u.item", 1, "Western")


def test_a_text_field_the_item_file_lacks_is_a_typo(tmp_path):
    config = recbole(tmp_path).model_copy(update={"text_fields": ["title", "plot"]})
    with pytest.raises(DataFormatError) as caught:
        read_raw(config)
    assert (caught.value.path.name, caught.value.line, caught.value.field) == ("toy.item", 1, "plot")


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(DataFormatError, match="folder not found"):
        read_raw(DataConfig(path=tmp_path / "nowhere"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.inter").write_text(INTER_HEADER + "\n")
    with pytest.raises(DataFormatError, match=r"found \['x.inter'\]"):
        read_raw(DataConfig(name="toy", path=tmp_path / "other"))
