"""space-clip-datasets: download KITTI (the Eigen split's raw drives, calibration and annotated depth) or NYU Depth v2
(the release's preprocessed package) and lay them out as train/'s trainers read them.

    space-clip-datasets kitti --root /data            # /data/kitti/raw (--data-path), /data/kitti/depth (--gt-path)
    space-clip-datasets kitti --root /data --drives 2011_09_26_drive_0001,2011_09_26_drive_0002
    space-clip-datasets nyu --root /data              # /data/nyu_depth_v2 (--data-path)

Archives go to ROOT/.downloads/. Each download resumes where it stopped (HTTP Range) after a cut connection or a
Ctrl-C, retries with back-off, and is checked (size, zip directory, CRC while extracting) before anything is laid
out; each archive is extracted into a temporary folder beside its destination and moved into place, then marked done,
so a second run downloads and extracts nothing, and an interrupted one is redone. An archive with an entry that
would land outside its folder (an absolute path, ``..``, a link) is refused before anything of it is written.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

#: The split lists shipped with the training code (in the package, so an installed wheel has them too).
SPLITS = Path(__file__).resolve().parent / "splits"
#: KITTI's own server (the one the authors' scripts/setup_datasets.sh uses); --base-url for a mirror.
KITTI_BASE_URL = "https://s3.eu-central-1.amazonaws.com/avg-kitti"
#: The preprocessed NYU Depth v2 package the authors' script downloads (sync/ and official_splits/test/).
NYU_URL = "https://huggingface.co/datasets/aradhye/nyu_depth_v2/resolve/main/nyu_depth_v2.zip"
CHUNK = 1 << 20
DRIVE = re.compile(r"(\d{4}_\d{2}_\d{2})_drive_\d{4}")


class DatasetError(RuntimeError):
    """What went wrong and what to do; the command prints it and exits 1."""


@dataclass(frozen=True)
class Archive:
    url: str
    name: str  # file name under ROOT/.downloads
    dest: str  # folder under ROOT it is laid out in


# ---------------------------------------------------------------------------- downloading
def _total_from(response) -> Optional[int]:
    """The whole file's size from a 206's Content-Range or a 200's Content-Length."""
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes (?:\d+-\d+|\*)/(\d+)", content_range)
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and response.status == 200 else None


def _progress(name: str, total: Optional[int], start: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False)


def download(url: str, dest: Path, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60.0,
             progress: bool = True, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming what an earlier try left; True when something
    was fetched, False when ``dest`` was already complete. The file appears under its name only once its size
    matches the server's. Raises :class:`DatasetError` (404, disk full, no success after ``retries`` tries)."""
    if dest.exists():
        return False
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last: Optional[BaseException] = None
    for attempt in range(retries):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                total = _total_from(response)
                if response.status == 200 and have:  # the server ignored the range: start again
                    have = 0
                bar = _progress(dest.name, total, have, progress)
                try:
                    with open(part, "ab" if have else "wb") as out:
                        while True:
                            chunk = response.read(CHUNK)
                            if not chunk:
                                break
                            out.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
            size = part.stat().st_size
            if total is not None and size != total:
                if size > total:  # not the file we were resuming: throw it away
                    part.unlink()
                raise ConnectionError(f"got {size} of {total} bytes")
            os.replace(part, dest)
            return True
        except urllib.error.HTTPError as error:
            if error.code == 416 and have:  # nothing after what we have: complete, or not this file
                match = re.match(r"bytes \*/(\d+)", error.headers.get("Content-Range", ""))
                if match and int(match.group(1)) == have:
                    os.replace(part, dest)
                    return True
                part.unlink()
                last = error
                continue
            if error.code in (401, 403, 404, 410):
                raise DatasetError(f"{error.code} {error.reason}: {url} (is the URL right? a mirror is set with "
                                   "--base-url / --url)") from None
            last = error
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise DatasetError(f"disk full while writing {part} ({_free(part.parent)} free): free space and run "
                                   "again, the download resumes where it stopped") from None
            last = error  # URLError, a cut connection, a time-out: try again from what is on disk
        except (ConnectionError, zlib.error) as error:
            last = error
        except Exception as error:  # http.client.IncompleteRead and the like
            if type(error).__module__ != "http.client":
                raise
            last = error
    kept = f" (the partial file {part} is kept)" if part.exists() else ""
    raise DatasetError(f"could not download {url} after {retries} tries: {last}; run again to resume{kept}")


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2 ** 20:.0f} MB"
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------------- archives
def _hostile(info: zipfile.ZipInfo) -> Optional[str]:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in path.parts:
        return "'..' in its path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def check_archive(archive: Path) -> List[zipfile.ZipInfo]:
    """The entries of a zip archive; :class:`DatasetError` when it is not a readable zip (deleted, so that the next
    run downloads it again) or when an entry would land outside the destination (kept; nothing is extracted)."""
    try:
        with zipfile.ZipFile(archive) as z:
            entries = z.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        archive.unlink(missing_ok=True)
        raise DatasetError(f"{archive.name} is not a complete zip archive ({error}): deleted; run again to "
                           "download it anew") from None
    for info in entries:
        why = _hostile(info)
        if why:
            raise DatasetError(f"refusing {archive.name}: entry {info.filename!r} has {why}, which would be written "
                               "outside the destination folder; nothing of it was extracted (is the mirror "
                               "trustworthy?)")
    return entries


def _merge(src: Path, dst: Path) -> None:
    """Move everything under ``src`` into ``dst``: whole folders by one rename where ``dst`` has none yet."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def extract(archive: Path, dest: Path, root_hint: Optional[Callable[[Path], Path]] = None) -> None:
    """Extract ``archive`` into a temporary folder beside ``dest`` (CRC checked while reading), then move it into
    ``dest``. ``root_hint(tmp)`` picks the folder inside the archive whose contents belong in ``dest``."""
    entries = check_archive(archive)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".partial-{dest.name}-{archive.stem}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as z:
            for info in entries:
                z.extract(info, tmp)
        _merge(root_hint(tmp) if root_hint else tmp, dest)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        archive.unlink(missing_ok=True)
        raise DatasetError(f"{archive.name} is damaged ({error}): deleted, nothing of it was laid out; run again to "
                           "download it anew") from None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DatasetError(f"disk full while extracting {archive.name} into {dest} ({_free(dest)} free): the "
                               "partial extraction was removed; free space and run again") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_all(archives: Sequence[Archive], root: Path, retries: int, progress: bool,
              root_hints: Optional[Dict[str, Callable[[Path], Path]]] = None,
              log: Callable[[str], None] = print) -> Dict[str, int]:
    """Download and lay out each archive not yet done (ROOT/.downloads/<name>.done); counts of what happened."""
    state = root / ".downloads"
    state.mkdir(parents=True, exist_ok=True)
    counts = {"downloaded": 0, "extracted": 0, "already_done": 0}
    for i, archive in enumerate(archives, 1):
        done = state / f"{archive.name}.done"
        if done.exists():
            counts["already_done"] += 1
            continue
        path = state / archive.name
        log(f"[{i}/{len(archives)}] {archive.name}")
        counts["downloaded"] += download(archive.url, path, retries=retries, progress=progress)
        extract(path, root / archive.dest, (root_hints or {}).get(archive.name))
        done.write_text(f"{archive.url}\n")
        counts["extracted"] += 1
    return counts


# ---------------------------------------------------------------------------- KITTI and NYU
def default_lists() -> Dict[str, Path]:
    """The shipped Eigen split lists (:data:`SPLITS`)."""
    return {"eigen_train": SPLITS / "eigen_train_files_with_gt.txt",
            "eigen_test": SPLITS / "eigen_test_files_with_gt.txt"}


def list_drives(lists: Iterable[Path]) -> List[str]:
    """The drives (``2011_09_26_drive_0001``) whose frames the lists name."""
    drives = set()
    for path in lists:
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if parts and len(parts[0].split("/")) > 1 and parts[0].split("/")[1].endswith("_sync"):
                drives.add(parts[0].split("/")[1][: -len("_sync")])
    return sorted(drives)


def kitti_archives(drives: Sequence[str], base_url: str = KITTI_BASE_URL) -> List[Archive]:
    """Calibration of each date, each drive's synced frames, the annotated depth."""
    base = base_url.rstrip("/")
    bad = [d for d in drives if not DRIVE.fullmatch(d)]
    if bad:
        raise DatasetError(f"not KITTI drive names: {bad} (expected e.g. 2011_09_26_drive_0001)")
    dates = sorted({DRIVE.fullmatch(d).group(1) for d in drives})
    return ([Archive(f"{base}/raw_data/{date}_calib.zip", f"{date}_calib.zip", "kitti/raw") for date in dates]
            + [Archive(f"{base}/raw_data/{d}/{d}_sync.zip", f"{d}_sync.zip", "kitti/raw") for d in drives]
            + [Archive(f"{base}/data_depth_annotated.zip", "data_depth_annotated.zip", "kitti/depth")])


def reconcile_kitti(depth_root: Path, lists: Dict[str, Path]) -> Dict[str, Tuple[int, int]]:
    """The authors' reconciliation: a training line's annotated depth that sits in val/ is linked into train/, and a
    test line's that sits in train/ into val/. Returns {list: (linked, still missing)}."""
    out = {}
    for key, path in lists.items():
        home, other = ("val", "train") if "test" in key else ("train", "val")
        linked = missing = 0
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if len(parts) < 2 or parts[1] == "None":
                continue
            target = depth_root / home / parts[1]
            if target.exists():
                continue
            source = depth_root / other / parts[1]
            if not source.exists():
                missing += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.symlink_to(os.path.relpath(source, target.parent))
            except OSError:
                shutil.copy2(source, target)
            linked += 1
        out[key] = (linked, missing)
    return out


def resolve_lines(path: Path, image_root: Path, depth_roots: Sequence[Path]) -> Tuple[int, int]:
    """(lines whose image and depth both exist, lines with a sample)."""
    found = total = 0
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        total += 1
        image = image_root / parts[0].lstrip("/")
        depth_ok = len(parts) < 2 or parts[1] == "None" or any((r / parts[1].lstrip("/")).exists()
                                                                for r in depth_roots)
        found += image.exists() and depth_ok
    return found, total


def _nyu_root(tmp: Path) -> Path:
    """The folder of the NYU package holding sync/ and official_splits/ (the package's own top folder or itself)."""
    for candidate in [tmp] + sorted(p for p in tmp.iterdir() if p.is_dir()):
        if (candidate / "sync").is_dir() or (candidate / "official_splits").is_dir():
            return candidate
    raise DatasetError(f"the NYU package has neither sync/ nor official_splits/ (found {sorted(os.listdir(tmp))}): "
                       "is --url the release's nyu_depth_v2.zip?")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="space-clip-datasets", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=("kitti", "nyu"))
    parser.add_argument("--root", type=Path, required=True, help="folder for the datasets (and .downloads/)")
    parser.add_argument("--split", choices=("eigen",), default="eigen",
                        help="KITTI: the drives of the shipped Eigen train and test lists (default)")
    parser.add_argument("--drives", help="KITTI: comma-separated drives instead, e.g. 2011_09_26_drive_0001")
    parser.add_argument("--base-url", default=KITTI_BASE_URL, help=f"KITTI server or mirror (default {KITTI_BASE_URL})")
    parser.add_argument("--url", default=NYU_URL, help="NYU: the preprocessed package (default: the release's)")
    parser.add_argument("--lists", nargs="+", metavar="NAME=PATH",
                        help="split lists to reconcile and report on (default: the shipped eigen or nyu lists)")
    parser.add_argument("--retries", type=int, default=5, help="tries per download (back-off 1, 2, 4 ... s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        lists = dict(item.split("=", 1) for item in args.lists) if args.lists else None
        if args.dataset == "kitti":
            lists = {k: Path(v) for k, v in (lists or default_lists()).items()}
            drives = ([d.strip() for d in args.drives.split(",") if d.strip()] if args.drives
                      else list_drives(lists.values()))
            archives = kitti_archives(drives, args.base_url)
            print(f"KITTI: {len(drives)} drives, {len(archives)} archives into {root / 'kitti'}")
            counts = fetch_all(archives, root, args.retries, not args.no_progress)
            raw, depth = root / "kitti" / "raw", root / "kitti" / "depth"
            fixes = reconcile_kitti(depth, {k: p for k, p in lists.items() if p.exists()})
            print(f"done: {counts['downloaded']} downloaded, {counts['extracted']} laid out, "
                  f"{counts['already_done']} already there")
            for key, path in lists.items():
                found, total = resolve_lines(path, raw, [depth / "train", depth / "val"])
                linked = f", {fixes[key][0]} depth maps linked from the other folder" if key in fixes else ""
                print(f"  {key} ({path.name}): {found} of {total} lines resolve{linked}")
            print(f"train: python train/train_kitti.py --data-path {raw} --gt-path {depth} --out runs/kitti\n"
                  f"evaluate: python train/evaluate.py --dataset kitti --checkpoint runs/kitti/best.pt "
                  f"--data-path {raw} --gt-path {depth}")
        else:
            lists = {k: Path(v) for k, v in (lists or {
                "nyu_train": SPLITS / "nyudepthv2_train_files_with_gt.txt",
                "nyu_test": SPLITS / "nyudepthv2_test_files_with_gt.txt"}).items()}
            archive = Archive(args.url, "nyu_depth_v2.zip", "nyu_depth_v2")
            counts = fetch_all([archive], root, args.retries, not args.no_progress, {archive.name: _nyu_root})
            nyu = root / "nyu_depth_v2"
            print(f"done: {counts['downloaded']} downloaded, {counts['extracted']} laid out, "
                  f"{counts['already_done']} already there")
            for key, path in lists.items():
                base = nyu / ("official_splits/test" if "test" in key else "sync")
                found, total = resolve_lines(path, base, [base])
                print(f"  {key} ({path.name}): {found} of {total} lines resolve")
            print(f"train: python train/train_nyu.py --data-path {nyu} --out runs/nyu\n"
                  f"evaluate: python train/evaluate.py --dataset nyu --checkpoint runs/nyu/best.pt --data-path {nyu}")
    except DatasetError as error:
        print(f"space-clip-datasets: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("space-clip-datasets: interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
