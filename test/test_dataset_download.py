"""space-clip-datasets against a loopback HTTP server the test starts (127.0.0.1 only) serving small archives in
KITTI's and NYU's layouts: a whole set-up with its report, a connection cut mid-archive, a 404, a zip-slip archive,
a damaged archive, a re-run that downloads nothing, and the trainer reading what was laid out."""

import http.server
import io
import re
import threading
import zipfile
from pathlib import Path

import pytest
from space_clip_train import download as datasets
from space_clip_train.download import DatasetError, download, kitti_archives, list_drives

DRIVES = ["2011_09_26_drive_0001", "2011_09_26_drive_0002"]


class Server:
    """Serves ``files`` (path -> bytes) with HTTP Range; ``cut`` (path -> n) closes the connection after n bytes of
    the first response for that path; every request is logged."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                limit = server.cut.pop(self.path, None)
                self.wfile.write(body if limit is None else body[:limit])
                if limit is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _zip(entries):
    """Zip bytes from {name: bytes}."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _tree_files(folder: Path, prefix: str = ""):
    return {prefix + str(p.relative_to(folder)).replace("\\", "/"): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kitti_mirror(server, tree):
    """KITTI's archives, as its server lays them out, from a KITTI tree the tests wrote; a test list line whose
    depth is in train/ (the case the authors' reconciliation links)."""
    raw = tree.raw / "2011_09_26"
    server.files["/raw_data/2011_09_26_calib.zip"] = _zip(
        {f"2011_09_26/{p.name}": p.read_bytes() for p in raw.glob("calib_*.txt")})
    for drive in DRIVES:
        server.files[f"/raw_data/{drive}/{drive}_sync.zip"] = _zip(
            _tree_files(raw / f"{drive}_sync", f"2011_09_26/{drive}_sync/"))
    depth = _tree_files(tree.gt)
    moved = next(n for n in depth if n.startswith("val/"))
    depth["train/" + moved[len("val/"):]] = depth.pop(moved)  # annotated depth in the other folder
    server.files["/data_depth_annotated.zip"] = _zip(depth)


@pytest.fixture
def kitti(tmp_path, tree, server):
    kitti_mirror(server, tree)
    return tree


def _run(root, server, *extra, lists=None):
    lists = lists or []
    return datasets.main(["kitti", "--root", str(root), "--base-url", server.url, "--drives", ",".join(DRIVES),
                          "--no-progress", *(["--lists", *lists] if lists else []), *extra])


def test_kitti_set_up_lays_out_reconciles_reports_and_a_second_run_downloads_nothing(kitti, server, tmp_path,
                                                                                      capsys):
    root = tmp_path / "data"
    lists = [f"eigen_train={kitti.train_list}", f"eigen_test={kitti.test_list}"]
    assert _run(root, server, lists=lists) == 0
    out = capsys.readouterr().out
    raw, depth = root / "kitti" / "raw", root / "kitti" / "depth"
    first = next(iter(kitti.depth))
    assert (raw / first).read_bytes() == (kitti.raw / first).read_bytes()
    assert (raw / "2011_09_26" / "calib_cam_to_cam.txt").is_file()
    test_line = kitti.test_list.read_text().splitlines()[0].split()
    assert (depth / "val" / test_line[1]).is_symlink()  # linked from train/, where the archive had it
    assert "eigen_train (train.txt): 4 of 4 lines resolve" in out
    assert "eigen_test (test.txt): 3 of 3 lines resolve, 1 depth maps linked from the other folder" in out
    assert f"python train/train_kitti.py --data-path {raw} --gt-path {depth}" in out
    assert not list(root.glob("**/.partial-*")) and not list(root.glob(".downloads/*.part"))
    requests = len(server.requests)
    assert _run(root, server, lists=lists) == 0
    assert len(server.requests) == requests  # nothing downloaded again
    assert "0 downloaded, 0 laid out, 4 already there" in capsys.readouterr().out


def test_the_laid_out_tree_trains(kitti, server, tmp_path):
    """What the trainers read: the KITTI dataset of train/ finds every training sample."""
    from space_clip_train.kitti import KittiDepth

    root = tmp_path / "data"
    assert _run(root, server) == 0
    dataset = KittiDepth(kitti.train_list, root / "kitti" / "raw", root / "kitti" / "depth", "eval", strict=True)
    assert len(dataset) == 4 and all(dataset[i]["depth"].max() > 0 for i in range(4))


def test_a_cut_connection_resumes_with_a_range_request(server, tmp_path):
    data = bytes(range(256)) * 4000
    server.files["/big.zip"] = data
    server.cut["/big.zip"] = 300_000
    dest = tmp_path / "big.zip"
    assert download(server.url + "/big.zip", dest, progress=False, sleep=lambda s: None)
    assert dest.read_bytes() == data
    assert server.requests == [("/big.zip", None), ("/big.zip", "bytes=300000-")]
    assert not dest.with_name("big.zip.part").exists()


def test_an_interrupted_run_resumes_the_partial_file(server, tmp_path):
    """A Ctrl-C (or anything) leaves big.zip.part; the next run asks only for the rest."""
    data = b"x" * 100_000
    server.files["/big.zip"] = data
    dest = tmp_path / "big.zip"
    dest.with_name("big.zip.part").write_bytes(data[:60_000])
    assert download(server.url + "/big.zip", dest, progress=False)
    assert dest.read_bytes() == data and server.requests == [("/big.zip", "bytes=60000-")]
    dest.unlink()
    dest.with_name("big.zip.part").write_bytes(data)  # complete but not yet renamed: the server answers 416
    assert download(server.url + "/big.zip", dest, progress=False) and dest.read_bytes() == data


def test_404_says_which_url_and_what_to_check(server, tmp_path, capsys):
    assert datasets.main(["kitti", "--root", str(tmp_path), "--base-url", server.url, "--drives",
                          "2011_09_26_drive_0001", "--no-progress", "--retries", "2"]) == 1
    err = capsys.readouterr().err
    assert "404" in err and f"{server.url}/raw_data/2011_09_26_calib.zip" in err and "--base-url" in err
    assert len(server.requests) == 1  # not retried
    assert not (tmp_path / ".downloads" / "2011_09_26_calib.zip").exists()


def test_retries_give_up_with_the_partial_file_kept(server, tmp_path):
    server.files["/a.zip"] = b"y" * 10_000
    server.cut = _Always(1000)  # every try is cut after 1000 bytes
    waits = []
    with pytest.raises(DatasetError, match="after 3 tries.*run again to resume.*partial file"):
        download(server.url + "/a.zip", tmp_path / "a.zip", retries=3, progress=False, sleep=waits.append)
    assert waits == [1.0, 2.0]  # back-off between the tries
    assert (tmp_path / "a.zip.part").stat().st_size == 3000


class _Always(dict):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def pop(self, key, default=None):
        return self.n


@pytest.mark.parametrize("name, why", [("../evil.txt", "'..'"), ("/etc/evil.txt", "an absolute path"),
                                       ("2011_09_26/../../evil.txt", "'..'")])
def test_a_zip_slip_archive_is_refused_and_nothing_is_written(server, tmp_path, capsys, name, why):
    server.files["/raw_data/2011_09_26_calib.zip"] = _zip({"2011_09_26/calib_cam_to_cam.txt": b"ok",
                                                            name: b"evil"})
    root = tmp_path / "data"
    assert datasets.main(["kitti", "--root", str(root), "--base-url", server.url, "--drives",
                          "2011_09_26_drive_0001", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "refusing 2011_09_26_calib.zip" in err and why in err
    written = [p for p in tmp_path.rglob("*") if p.is_file() and ".downloads" not in p.parts]
    assert written == [] and not (root / "kitti" / "raw" / "2011_09_26").exists()
    assert not (root / ".downloads" / "2011_09_26_calib.zip.done").exists()


def test_a_damaged_archive_is_deleted_and_downloaded_again(server, tmp_path, capsys):
    good = _zip({"2011_09_26/calib_cam_to_cam.txt": b"calib " * 1000})
    damaged = bytearray(good)
    damaged[60:70] = b"\xff" * 10  # inside the compressed data: the CRC check fails while extracting
    server.files["/raw_data/2011_09_26_calib.zip"] = bytes(damaged)
    root = tmp_path / "data"
    args = ["kitti", "--root", str(root), "--base-url", server.url, "--drives", "2011_09_26_drive_0001",
            "--no-progress"]
    assert datasets.main(args) == 1
    assert "damaged" in capsys.readouterr().err and not (root / ".downloads" / "2011_09_26_calib.zip").exists()
    assert not (root / "kitti" / "raw" / "2011_09_26").exists()  # nothing half-written that a run would trust
    server.files["/raw_data/2011_09_26_calib.zip"] = good
    assert datasets.main(args) == 1  # the drive archive is missing on this server: 404 after the calibration
    assert (root / "kitti" / "raw" / "2011_09_26" / "calib_cam_to_cam.txt").read_bytes() == b"calib " * 1000


def test_nyu_package_is_laid_out_as_train_nyu_reads_it(server, tmp_path, capsys):
    from nyu_tree import write_nyu_tree

    nyu = write_nyu_tree(tmp_path / "made")
    server.files["/nyu_depth_v2.zip"] = _zip(_tree_files(nyu.root, "nyu_depth_v2/"))
    root = tmp_path / "data"
    lists = [f"nyu_train={nyu.train_list}", f"nyu_test={nyu.test_list}"]
    assert datasets.main(["nyu", "--root", str(root), "--url", server.url + "/nyu_depth_v2.zip", "--no-progress",
                          "--lists", *lists]) == 0
    out = capsys.readouterr().out
    assert (root / "nyu_depth_v2" / "sync").is_dir() and (root / "nyu_depth_v2" / "official_splits").is_dir()
    total = len(nyu.train_list.read_text().split("\n")) - 1
    assert f"nyu_train ({nyu.train_list.name}): {total} of {total} lines resolve" in out
    assert f"python train/train_nyu.py --data-path {root / 'nyu_depth_v2'}" in out


def test_drive_lists_and_archive_names():
    assert list_drives([Path(datasets.default_lists()["eigen_test"])])[:2] == ["2011_09_26_drive_0002",
                                                                               "2011_09_26_drive_0009"]
    eigen = list_drives(datasets.default_lists().values())
    assert len(eigen) > 50 and all(datasets.DRIVE.fullmatch(d) for d in eigen)
    archives = kitti_archives(["2011_09_26_drive_0001", "2011_09_28_drive_0002"], "http://mirror/kitti/")
    assert [a.url for a in archives] == [
        "http://mirror/kitti/raw_data/2011_09_26_calib.zip", "http://mirror/kitti/raw_data/2011_09_28_calib.zip",
        "http://mirror/kitti/raw_data/2011_09_26_drive_0001/2011_09_26_drive_0001_sync.zip",
        "http://mirror/kitti/raw_data/2011_09_28_drive_0002/2011_09_28_drive_0002_sync.zip",
        "http://mirror/kitti/data_depth_annotated.zip"]
    with pytest.raises(DatasetError, match="not KITTI drive names"):
        kitti_archives(["drive_1"])
