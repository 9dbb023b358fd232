"""The pretrained-weight registry (srcore/weights.py): lookup order, checksums, the offline error, the shared
files' hashes, and the `${SRNAS_SHARED}` path convention. No test touches the network: `fetch` is replaced."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import require_shared

from srcore import paths, weights
from srcore.weights import WEIGHTS, WeightEntry, WeightsError, resolve

BYTES = b"pretend weights"
ENTRY = WeightEntry("toy_x2", "rlfn_s", (2,), "toy_x2.pth", hashlib.sha256(BYTES).hexdigest(),
                    "https://example.invalid/toy_x2.pth", "MIT", 255.0)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A registered toy entry and three empty places: $SRNAS_WEIGHTS, the shared teachers/, the cache."""
    monkeypatch.setitem(WEIGHTS, ENTRY.name, ENTRY)
    dirs = {k: tmp_path / k for k in ("env", "shared", "cache")}
    monkeypatch.setenv("SRNAS_WEIGHTS", str(dirs["env"]))
    monkeypatch.setenv("SRNAS_SHARED", str(dirs["shared"]))
    monkeypatch.setenv("SRNAS_CACHE", str(dirs["cache"]))
    monkeypatch.delenv("SRNAS_ALLOW_DOWNLOAD", raising=False)
    fetched = []

    def fake_fetch(url, dest):  # never the network
        fetched.append(url)
        Path(dest).write_bytes(fake_fetch.payload)

    fake_fetch.payload = BYTES
    monkeypatch.setattr(weights, "fetch", fake_fetch)
    dirs["teachers"] = dirs["shared"] / "teachers"
    dirs["cache_w"] = dirs["cache"] / "weights"
    return dirs, fetched, fake_fetch


def put(folder: Path, data: bytes = BYTES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ENTRY.file).write_bytes(data)
    return folder / ENTRY.file


def test_lookup_order(places, tmp_path):
    dirs, fetched, _ = places
    explicit = put(tmp_path / "mine", b"a fine-tuned copy")  # explicit: used as is, not hashed
    c, s, e = put(dirs["cache_w"]), put(dirs["teachers"]), put(dirs["env"])
    assert resolve("toy_x2", explicit) == explicit
    assert resolve("toy_x2") == e
    e.unlink()
    assert resolve("toy_x2") == s
    s.unlink()
    assert resolve("toy_x2") == c
    assert not fetched


def test_checksum_mismatch_is_an_error(places):
    dirs, _, fake = places
    bad = put(dirs["teachers"], b"something else")
    with pytest.raises(WeightsError, match=f"{bad}: sha256 .* is not that of toy_x2"):
        resolve("toy_x2")
    bad.unlink()
    fake.payload = b"a corrupted download"
    with pytest.raises(WeightsError, match="sha256"):
        resolve("toy_x2", download_ok=True)
    assert not any(dirs["cache_w"].iterdir())  # nothing half-written or wrong left in the cache


def test_offline_error_names_places_and_url(places):
    dirs, fetched, _ = places
    with pytest.raises(WeightsError) as err:
        resolve("toy_x2")
    msg = str(err.value)
    assert "\n" not in msg and ENTRY.url in msg
    for d in ("env", "teachers", "cache_w"):
        assert str(dirs[d]) in msg
    assert not fetched


def test_download_only_when_allowed_and_checked(places, monkeypatch):
    dirs, fetched, _ = places
    monkeypatch.setenv("SRNAS_ALLOW_DOWNLOAD", "1")
    path = resolve("toy_x2")
    assert path == dirs["cache_w"] / ENTRY.file and path.read_bytes() == BYTES and fetched == [ENTRY.url]
    assert resolve("toy_x2") == path and len(fetched) == 1  # cached now


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(WeightsError, match="known: .*rlfn_s_x2"):
        resolve("rlfn_s_x3")


def test_registry_matches_the_shared_teachers():
    """Every file in $SRNAS_SHARED/teachers is registered with its true sha256, and PROVENANCE.md agrees."""
    folder = require_shared("teachers")
    files = sorted(p.name for p in folder.glob("*.pth"))
    assert sorted(e.file for e in WEIGHTS.values()) == files and len(files) == 17
    provenance = (folder / "PROVENANCE.md").read_text()
    for e in WEIGHTS.values():
        assert weights.sha256_file(folder / e.file) == e.sha256, e.name
        assert e.sha256 in provenance and e.url.startswith("https://raw.githubusercontent.com/"), e.name
        commit = e.url.split("/")[5]
        assert len(commit) == 40 and commit[:8] in provenance, e.name
    assert {WEIGHTS[n].arch for n in ("span_ntire24_x4", "dscf_ntire25_x4", "spanv2_ntire26_x4",
                                      "pfdn_ntire23_x4")} == {"span", "dscf", "spanv2", "pfdn"}


def test_shared_path_convention(monkeypatch, tmp_path):
    monkeypatch.setenv("SRNAS_SHARED", str(tmp_path))
    assert paths.expand("${SRNAS_SHARED}/data/T91") == str(tmp_path / "data" / "T91")
    assert paths.expand("$SRNAS_SHARED") == str(tmp_path)
    assert paths.expand("runs/x") == "runs/x"
    monkeypatch.delenv("SRNAS_SHARED")
    assert paths.shared_dir() == Path(paths.__file__).resolve().parents[2] / "shared"  # ../shared of the repo
