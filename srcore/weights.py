"""Pretrained weights by name: what each official checkpoint is, where it comes from, where to find it.

`WEIGHTS` maps a name (`rlfn_s_x2`, `imdn_x4`, `carn_m`, ...) to a `WeightEntry`: the architecture it loads
into (a zoo name, or `genotype:<name>` for a searched network), its scale(s), file name, sha256, source
URL (the raw file at the commit it was taken from), licence and the pixel range the weights were trained
in (1 or 255; every srnas network still takes and returns [0, 1]). The facts are those of
`$SRNAS_SHARED/teachers/PROVENANCE.md`; `tests/test_weights.py` checks every hash against the files.

`resolve(name, path)` finds the file, first hit wins:
  1. `path`, when the caller gives one explicitly (used as is, not hashed: it may be a fine-tuned copy);
  2. `$SRNAS_WEIGHTS/<file>` (a folder of weight files);
  3. `<shared>/teachers/<file>`, the shared folder of srcore/paths.py ($SRNAS_SHARED, default ../shared);
  4. the user cache `$SRNAS_CACHE/weights/<file>` (default ~/.cache/srnas/weights);
  5. a download of the source URL into the cache, only when allowed (`download=True`, or
     SRNAS_ALLOW_DOWNLOAD=1 in the environment); never in tests.
Files found in 2-5 must match the registered sha256 (a mismatch is an error naming the file and both
hashes). Offline with no file, the error is one line naming every place looked at and the URL to fetch.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .paths import expand, shared_dir

ALLOW_DOWNLOAD_VAR = "SRNAS_ALLOW_DOWNLOAD"
WEIGHTS_VAR = "SRNAS_WEIGHTS"


class WeightsError(ValueError):
    """A named weight file that is unknown, missing, or not the registered bytes."""


@dataclass(frozen=True)
class WeightEntry:
    name: str
    arch: str  # zoo architecture, or "genotype:<named genotype>"
    scales: tuple[int, ...]
    file: str
    sha256: str
    url: str
    licence: str
    rgb_range: float  # the input range the weights were trained in (the network still takes [0, 1])
    paper: str = ""


def _raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_IMDN = ("Zheng222/IMDN", "8f158e6a5ac9db6e5857d9159fd4a6c4214da574")
_RLFN = ("bytedance/RLFN", "bccfde91bf8b2de80789ec033a029e6f2a932330")
_PAN = ("zhaohengyuan1/PAN", "4d045d18592c5771cd3990da88f292812774e538")
_NONE = "none stated (no LICENSE file): research use, do not redistribute"

_ENTRIES = [
    WeightEntry("imdn_x2", "imdn", (2,), "imdn_x2.pth",
                "740b39653592bd3f49955a21cd9e16f2d37f2c413368cc09327601b8fbe42ce1",
                _raw(*_IMDN, "checkpoints/IMDN_x2.pth"), _NONE, 1.0, "Hui et al., ACM MM 2019"),
    WeightEntry("imdn_x4", "imdn", (4,), "imdn_x4.pth",
                "e660c38221147217a136debeb99eb304d62d9c0f73ac421ed66281b619719714",
                _raw(*_IMDN, "checkpoints/IMDN_x4.pth"), _NONE, 1.0, "Hui et al., ACM MM 2019"),
    WeightEntry("imdn_aim19_x4", "imdn_aim19", (4,), "imdn_aim19_x4.pth",
                "115b4cc557eba9daaf1a6543c4858014c7e2a410655aafef7c8348ae54acc203",
                _raw("ofsoundof/NTIRE2022_ESR", "e95ba4a4916bb13d6348f7ee172827e2452e8a31",
                     "model_zoo/imdn_baseline.pth"), "MIT", 1.0, "IMDN, AIM 2019 winner (NTIRE 2022 ESR baseline)"),
    WeightEntry("rfdn_x4", "rfdn", (4,), "rfdn_x4.pth",
                "11af8ec8ebd68689e90ef1e29044f9804c72d3bd9f7573820b7b26035782760c",
                _raw("njulj/RFDN", "7cf4e25b6633e81fd7e26891aeee2baca4f8f927", "trained_model/RFDN_AIM.pth"),
                "MIT", 255.0, "Liu et al., ECCVW 2020 (AIM 2020 entry)"),
    WeightEntry("rlfn_x2", "rlfn", (2,), "rlfn_x2.pth",
                "eafe5d5feeb122022453595c06d79160facdc157ae88deb02a44c50f5eba2d41",
                _raw(*_RLFN, "model_zoo/rlfn_x2.pth"), "Apache-2.0", 255.0, "Kong et al., CVPRW 2022"),
    WeightEntry("rlfn_x4", "rlfn", (4,), "rlfn_x4.pth",
                "8c7edb57dfc89048bafba29d591d4c27d4099964b4a9e22df23d6dc257a637c0",
                _raw(*_RLFN, "model_zoo/rlfn_x4.pth"), "Apache-2.0", 255.0, "Kong et al., CVPRW 2022"),
    WeightEntry("rlfn_s_x2", "rlfn_s", (2,), "rlfn_s_x2.pth",
                "f5175f499f869c1b884c2552a1bcd6abd07ab352e3d8c8c9abe31b1deb60fe45",
                _raw(*_RLFN, "model_zoo/rlfn_s_x2.pth"), "Apache-2.0", 255.0, "Kong et al., CVPRW 2022"),
    WeightEntry("rlfn_s_x4", "rlfn_s", (4,), "rlfn_s_x4.pth",
                "f769c5a88433786b2db0c2b24da6ca6c92a24c62344b9354a390f8a74388e89d",
                _raw(*_RLFN, "model_zoo/rlfn_s_x4.pth"), "Apache-2.0", 255.0, "Kong et al., CVPRW 2022"),
    WeightEntry("pan_x2", "pan", (2,), "pan_x2.pth",
                "fcf8ed48656abbaae46309ee91745684b80235a9c8b37a2d8fb0715a3ad3f00f",
                _raw(*_PAN, "experiments/pretrained_models/PANx2_DF2K.pth"), _NONE, 1.0, "Zhao et al., ECCVW 2020"),
    WeightEntry("pan_x4", "pan", (4,), "pan_x4.pth",
                "739fab99ee7b7058dab4d1b84aa2869bb9fc3995a1c08789c20355bee943833c",
                _raw(*_PAN, "experiments/pretrained_models/PANx4_DF2K.pth"), _NONE, 1.0, "Zhao et al., ECCVW 2020"),
    WeightEntry("carn_m", "carn_m", (2, 3, 4), "carn_m_x2x3x4.pth",
                "d48a759a84509351facb6b7c6d5bd6edec98b98519b8c464ee4ab44d2ba964ff",
                _raw("nmhkahn/CARN-pytorch", "40d3514f81cccd680d846cd5ab07af35f2c8e0e2", "checkpoint/carn_m.pth"),
                "MIT", 1.0, "Ahn et al., ECCV 2018 (CARN-M, one multi-scale network)"),
    WeightEntry("a2n_x2", "a2n", (2,), "a2n_x2.pth",
                "076f3ef50212a0641262d71210aeeda71e03324ecec14032630d1f2225887dfb",
                _raw("haoyuc/A2N", "210b38cbe721f0283aa5ad20c98373c5822f917a", "code/experiment/model/aan_x2.pt"),
                _NONE, 255.0, "Chen et al., arXiv 2104.09497"),
    WeightEntry("dlsr_x2", "genotype:dlsr_x2", (2,), "dlsr_x2.pth",
                "d2d9253e8ab69ad3d681244b8673353538d2ed5a024c9a5a273cecb8b7a00ecb",
                _raw("DawnHH/DLSR-PyTorch", "3ea0d846f04895fb260ba419c94d6582bc7d7f0b",
                     "checkpoints/RFDN_beta21_ps128_20210128_1000.pt"), _NONE, 255.0,
                "Huang et al., arXiv 2105.03939"),
    WeightEntry("span_ntire24_x4", "span", (4,), "span_ntire24_x4.pth",
                "6c80f05048313289c6526e5fc9726688d7bb3dfdd6ae3c8b1e7dd09f601e5971",
                _raw("Amazingren/NTIRE2024_ESR", "4dcc6540246d258f994099b28f7905ea14dc3a44",
                     "model_zoo/team38_span_ch28_slim.pth"), "MIT", 1.0, "Wan et al., NTIRE 2024 ESR winner"),
    WeightEntry("dscf_ntire25_x4", "dscf", (4,), "dscf_ntire25_x4.pth",
                "239e76bc4e4e738491c3963805c0a79f524400acf5fbde34b2cb1a855dd62cb1",
                _raw("Amazingren/NTIRE2025_ESR", "9568259eb77ae31aa38f376ed71e6e79f7c00109",
                     "model_zoo/team23_DSCF.pth"), "MIT", 1.0, "DSCLoRA, NTIRE 2025 ESR winner"),
    WeightEntry("spanv2_ntire26_x4", "spanv2", (4,), "spanv2_ntire26_x4.pth",
                "fca2743272b8a7fb32931ed3287454173c7d209f204cb2f58084ee868414d371",
                _raw("Amazingren/NTIRE2026_ESR", "f8395010ea986a20c77f4ee7b4975c2ee14d2a56",
                     "model_zoo/team22_spanv2_c2.pth"), "MIT", 1.0, "SPANV2, NTIRE 2026 ESR winner"),
    WeightEntry("pfdn_ntire23_x4", "pfdn", (4,), "pfdn_ntire23_x4.pth",
                "3d97f28bcd6185adb91a9ca8ef147f8f13f523786ff19c3c7e10ee0617f4d707",
                _raw("icandle/PlainUSR", "b211ae7bcced491620fa129851945fc5245c2ecc",
                     "2023_PFDN_NTIRE/model_zoo/team08_PFDN.pth"), "MIT", 1.0, "PFDN, NTIRE 2023 ESR winner"),
]
WEIGHTS: dict[str, WeightEntry] = {e.name: e for e in _ENTRIES}


def list_weights() -> list[str]:
    return sorted(WEIGHTS)


def get_entry(name: str) -> WeightEntry:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise WeightsError(f"unknown pretrained weights {name!r}; known: {', '.join(list_weights())}") from None


def cache_dir() -> Path:
    """$SRNAS_CACHE/weights, default ~/.cache/srnas/weights."""
    return Path(os.environ.get("SRNAS_CACHE", "~/.cache/srnas")).expanduser() / "weights"


def search_dirs() -> list[Path]:
    """The folders looked in, in order: $SRNAS_WEIGHTS (if set), <shared>/teachers, the user cache."""
    dirs = [Path(expand(os.environ[WEIGHTS_VAR]))] if os.environ.get(WEIGHTS_VAR) else []
    return dirs + [shared_dir() / "teachers", cache_dir()]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: Path, entry: WeightEntry) -> Path:
    got = sha256_file(path)
    if got != entry.sha256:
        raise WeightsError(f"{path}: sha256 {got} is not that of {entry.name} ({entry.sha256}); "
                           f"the file is corrupt or another file; delete it or fetch {entry.url}")
    return path


def fetch(url: str, dest: Path) -> None:
    """Download `url` to the file `dest` (tests replace this function; they never touch the network)."""
    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
        shutil.copyfileobj(r, f)


def download(entry: WeightEntry, folder: Path) -> Path:
    """Fetch `entry` into `folder`, check its sha256, then rename it into place (never a partial file)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.file}.", dir=folder)
    os.close(fd)
    try:
        try:
            fetch(entry.url, Path(tmp))
        except OSError as e:
            raise WeightsError(f"{entry.name}: download of {entry.url} failed ({e})") from None
        check_sha256(Path(tmp), entry)
        dest = folder / entry.file
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_allowed() -> bool:
    return os.environ.get(ALLOW_DOWNLOAD_VAR, "").lower() in ("1", "true", "yes")


def resolve(name: str, path: str | os.PathLike | None = None, *, download_ok: bool | None = None) -> Path:
    """The weight file of `name` (see the module docstring for the order); raises WeightsError."""
    entry = get_entry(name)
    if path is not None:
        p = Path(expand(path))
        if not p.is_file():
            raise WeightsError(f"{p}: no such weight file (given explicitly for {name})")
        return p
    dirs = search_dirs()
    for d in dirs:
        if (d / entry.file).is_file():
            return check_sha256(d / entry.file, entry)
    if download_ok if download_ok is not None else download_allowed():
        return download(entry, cache_dir())
    raise WeightsError(
        f"{name}: {entry.file} not found in {', '.join(str(d) for d in dirs)} and downloading is off: fetch "
        f"{entry.url} (sha256 {entry.sha256[:12]}...) into one of these folders, or allow the download "
        f"({ALLOW_DOWNLOAD_VAR}=1 or --allow-download)")
