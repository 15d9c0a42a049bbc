"""Every reader of raw and prepared files on random bytes, encodings, byte-order marks, CRLF and very
long lines (hypothesis): a file is read, or refused with the project's one-line DataFormatError
naming it; never a traceback of another kind."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idgenrec.config import DataConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.data.readers import read_raw
from idgenrec.data.textfile import DataFormatError
from idgenrec.recommender.new_items import read_new_items

pytestmark = pytest.mark.data

# (format, name, file) for every raw file a reader opens.
RAW_FILES = [
    ("recbole", "x", "x.inter"), ("recbole", "x", "x.item"),
    ("movielens", "x", "u.data"), ("movielens", "x", "u.item"),
    ("p5", "x", "user_sequence.txt"), ("p5", "x", "items.tsv"),
]
VALID = {
    "x.inter": "user_id:token\titem_id:token\ttimestamp:float\nu 1\ti 1\t1\n",
    "x.item": "item_id:token\ttitle:token_seq\ni 1\tA title\n",
    "u.data": "1\t2\t5\t881250949\n",
    "u.item": "2|GoldenEye (1995)|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n",
    "user_sequence.txt": "u1 a b c\n",
    "items.tsv": "asin\ttitle\na\tA\n",
}

text_lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["\t", "\t\t", ":token", "user_id:token\titem_id:token", "|" * 23, "nan", "inf", "1e999"]),
        st.text(min_size=1, max_size=3).map(lambda t: t * 20_000),  # very long lines
    ),
    max_size=6,
)


@st.composite
def file_bytes(draw) -> bytes:
    """Random bytes, or mutated text in a random encoding, with or without BOM and CRLF."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    lines = draw(text_lines)
    if draw(st.booleans()):
        lines = [draw(st.sampled_from(list(VALID.values())))] + lines
    text = ("\r\n" if draw(st.booleans()) else "\n").join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1", "cp1252", "utf-8-sig"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        data = draw(st.sampled_from([codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE])) + data
    return data


def refused_or_read(call) -> None:
    try:
        call()
    except DataFormatError as err:
        assert "\n" not in str(err) and str(err.path) in str(err)


@given(choice=st.sampled_from(RAW_FILES), data=file_bytes())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_raw_readers_only_raise_their_own_errors(tmp_path_factory, choice, data):
    fmt, name, damaged = choice
    folder = tmp_path_factory.mktemp(fmt)
    for _, _, file in (f for f in RAW_FILES if f[0] == fmt):
        Path(folder / file).write_text(VALID[file], encoding="utf-8")
    (folder / damaged).write_bytes(data)
    config = DataConfig(name=name, format=fmt, path=folder, text_fields=[])
    refused_or_read(lambda: read_raw(config))


@given(choice=st.sampled_from(["items.tsv", "sequences.tsv", "new"]), data=file_bytes())
@settings(max_examples=60, deadline=None)
def test_prepared_and_new_item_readers_only_raise_their_own_errors(tmp_path_factory, choice, data):
    folder = tmp_path_factory.mktemp("prepared")
    SequenceDataset("x", ["a b", "c"], ["", ""], ["t", "t"], ["u"], [[0, 1, 0]]).save(folder)
    if choice == "new":
        (folder / "new.tsv").write_bytes(data)
        refused_or_read(lambda: read_new_items(folder / "new.tsv"))
    else:
        (folder / choice).write_bytes(data)
        refused_or_read(lambda: SequenceDataset.load(folder))
