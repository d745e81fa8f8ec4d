"""KITTI on disk: split lists, calibration, Velodyne ground truth, evaluation crops and the training dataset.

Layouts (see ../../shared/docs/kitti-evaluation.md):
  raw data   DATA/2011_09_26/{calib_cam_to_cam.txt, calib_velo_to_cam.txt}
             DATA/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
             DATA/2011_09_26/2011_09_26_drive_0002_sync/velodyne_points/data/0000000069.bin
  annotated  GT/{train,val}/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png (uint16, m*256)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from space_clip_ros.kitti_calib import read_kitti_calib

PathLike = Union[str, Path]
SPLITS = Path(__file__).resolve().parent / "splits"
EIGEN_TEST = SPLITS / "eigen_test_files_with_gt.txt"  # 697 lines, 652 with annotated depth
EIGEN_TEST_VELODYNE = SPLITS / "eigen_test_files.txt"  # the same 697 frames, monodepth2 format
MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0
KITTI_CROP_SIZE = (352, 704)  # the random training crop and the authors' evaluation size


# ---------------------------------------------------------------------------------------------------------- lists
@dataclass(frozen=True)
class Sample:
    """One list line: the image (relative to the raw root), its annotated depth (relative to the depth root, None
    when the line says None) and the focal length the list gives."""

    line_no: int
    line: str
    image: str
    depth: Optional[str]
    focal: float


def read_list(path: PathLike) -> List[Sample]:
    """A list in BTS format (``image depth focal``) or monodepth2 format (``date/drive frame side``)."""
    samples = []
    for no, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) == 3 and parts[2] in ("l", "r") and parts[1].isdigit():
            folder, frame, side = parts
            camera = "image_02" if side == "l" else "image_03"
            samples.append(Sample(no, line, f"{folder}/{camera}/data/{int(frame):010d}.png", None, 0.0))
            continue
        try:
            focal = float(parts[2]) if len(parts) > 2 else 0.0
        except ValueError:
            focal = float("nan")
        depth = parts[1] if len(parts) > 1 and parts[1] != "None" else None
        samples.append(Sample(no, line, parts[0], depth, focal))
    return samples


def resolve_depth_path(gt_root: PathLike, rel: str) -> Optional[Path]:
    """Annotated depth ``rel`` under ``gt_root`` itself, or under its ``train/`` or ``val/`` folder."""
    root = Path(gt_root)
    for candidate in (root / rel, root / "train" / rel, root / "val" / rel):
        if candidate.is_file():
            return candidate
    return None


class SkipReport:
    """Counts list lines that could not be used and names the first few."""

    def __init__(self, what: str, show: int = 5):
        self.what, self.show = what, show
        self.skipped: List[Tuple[Sample, str]] = []

    def skip(self, sample: Sample, reason: str) -> None:
        self.skipped.append((sample, reason))

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.what}: no lines skipped"
        named = "; ".join(f"line {s.line_no}: {r}" for s, r in self.skipped[:self.show])
        more = f"; and {len(self.skipped) - self.show} more" if len(self.skipped) > self.show else ""
        return f"{self.what}: skipped {len(self.skipped)} line(s) ({named}{more})"


# --------------------------------------------------------------------------------------------------- reading files
def read_rgb(path: PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB; raises ValueError when the file is missing or not an image."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


def read_depth_png(path: PathLike) -> np.ndarray:
    """Annotated KITTI depth: uint16 PNG, metres = value / 256, 0 = no measurement -> float32 metres (0 = none)."""
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read depth PNG {path}")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel uint16 PNG (KITTI depth), got {raw.dtype} {raw.shape}")
    return raw.astype(np.float32) / 256.0


def write_depth_png(path: PathLike, depth: np.ndarray) -> None:
    """Metres -> KITTI's uint16 PNG (value = round(m * 256), 0 = none)."""
    import cv2

    out = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * 256.0), 0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.clip(out, 0, 65535).astype(np.uint16)):
        raise OSError(f"could not write {path}")


def read_velodyne(path: PathLike) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance from a KITTI ``.bin`` scan."""
    data = np.fromfile(str(path), dtype=np.float32)
    if data.size % 4:
        raise ValueError(f"{path}: {data.size} floats is not a whole number of (x, y, z, r) points")
    return data.reshape(-1, 4)


# ------------------------------------------------------------------------------------------ Velodyne ground truth
def velodyne_to_image_matrix(calib_dir: PathLike, camera: int = 2) -> Tuple[np.ndarray, Tuple[int, int]]:
    """3x4 projection from Velodyne to rectified camera ``camera`` pixels, and that image's (H, W):
    P_rect_0c @ R_rect_00 (4x4) @ [R | T] (4x4)."""
    cam = read_kitti_calib(Path(calib_dir) / "calib_cam_to_cam.txt")
    velo = read_kitti_calib(Path(calib_dir) / "calib_velo_to_cam.txt")
    velo_to_cam = np.eye(4)
    velo_to_cam[:3, :3] = velo["R"].reshape(3, 3)
    velo_to_cam[:3, 3] = velo["T"]
    rect = np.eye(4)
    rect[:3, :3] = cam["R_rect_00"].reshape(3, 3)
    p_rect = cam[f"P_rect_0{camera}"].reshape(3, 4)
    width, height = (int(v) for v in cam[f"S_rect_0{camera}"])
    return p_rect @ rect @ velo_to_cam, (height, width)


def project_velodyne(points: np.ndarray, projection: np.ndarray, size: Tuple[int, int],
                     vel_depth: bool = False) -> np.ndarray:
    """Sparse (H, W) float32 depth from Velodyne points (0 = none), monodepth2's recipe with a correct pixel index.

    Points behind the scanner (x < 0) are dropped; pixel = round(u) - 1, round(v) - 1 (KITTI's MATLAB convention);
    where several points land on one pixel the nearest wins. Depth is the camera z, or the Velodyne x with
    ``vel_depth`` (monodepth2's legacy ``--split eigen`` ground truth)."""
    height, width = size
    pts = points[points[:, 0] >= 0].astype(np.float64)
    homogeneous = np.concatenate([pts[:, :3], np.ones((len(pts), 1))], axis=1)
    uvz = homogeneous @ projection.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(uvz[:, 0] / uvz[:, 2]) - 1
        v = np.round(uvz[:, 1] / uvz[:, 2]) - 1
    depth = pts[:, 0] if vel_depth else uvz[:, 2]
    keep = np.isfinite(u) & np.isfinite(v) & (u >= 0) & (v >= 0) & (u < width) & (v < height) & (depth > 0)
    u, v, depth = u[keep].astype(np.int64), v[keep].astype(np.int64), depth[keep]
    out = np.zeros((height, width), dtype=np.float32)
    order = np.argsort(-depth, kind="stable")  # far first, so the nearest point on a pixel is written last
    out[v[order], u[order]] = depth[order]
    return out


def velodyne_depth(data_root: PathLike, image_rel: str, vel_depth: bool = False) -> np.ndarray:
    """Ground truth for one raw image (``date/drive/image_0c/data/N.png``) from its Velodyne scan."""
    rel = Path(image_rel)
    date_dir = Path(data_root) / rel.parts[0]
    drive_dir = Path(data_root) / rel.parts[0] / rel.parts[1]
    camera = int(rel.parts[2][-1])
    projection, size = velodyne_to_image_matrix(date_dir, camera)
    scan = read_velodyne(drive_dir / "velodyne_points" / "data" / (rel.stem + ".bin"))
    return project_velodyne(scan, projection, size, vel_depth=vel_depth)


# ------------------------------------------------------------------------------------------------------ crops
def crop_mask(size: Tuple[int, int], crop: str) -> Optional[np.ndarray]:
    """Boolean (H, W) evaluation mask: ``garg``, ``eigen`` or ``none`` (None)."""
    height, width = size
    if crop == "none":
        return None
    rows = {"garg": (0.40810811, 0.99189189), "eigen": (0.3324324, 0.91351351)}
    if crop not in rows:
        raise ValueError(f"crop must be garg, eigen or none, got {crop!r}")
    mask = np.zeros((height, width), dtype=bool)
    top, bottom = rows[crop]
    mask[int(top * height):int(bottom * height), int(0.03594771 * width):int(0.96405229 * width)] = True
    return mask


def kb_crop_box(size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """KB crop (352x1216, bottom-centred) as (top, left, height, width)."""
    height, width = size
    return height - 352, int((width - 1216) / 2), 352, 1216


# ---------------------------------------------------------------------------------------- the authors' resizing
def pil_resize(array: np.ndarray, size: Tuple[int, int], mode: str) -> np.ndarray:
    """Resize with PIL as the authors do: ``bicubic`` for uint8 RGB, ``nearest`` for float32 depth."""
    from PIL import Image

    height, width = size
    resample = Image.BICUBIC if mode == "bicubic" else Image.NEAREST
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


def clip_input(rgb01: np.ndarray, input_size: Tuple[int, int], mean: Sequence[float],
               std: Sequence[float]) -> np.ndarray:
    """The tower's input as the authors prepare it: the [0, 1] crop quantised to uint8 (truncating), resized bicubic
    with PIL to ``input_size``, back to [0, 1], normalised; (3, h, w) float32."""
    quantised = (rgb01 * 255).astype(np.uint8)
    small = pil_resize(quantised, input_size, "bicubic").astype(np.float32) / 255.0
    return ((small - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1).copy()


# ----------------------------------------------------------------------------------------------------- datasets
@dataclass
class Augment:
    """Training augmentation of the paper and the release."""

    crop: Tuple[int, int] = KITTI_CROP_SIZE
    rotate_degrees: float = 1.0
    flip: bool = True
    color: bool = True  # gamma, brightness and per-channel colour in [0.9, 1.1], with p = 0.5


def rotated_crop(array: np.ndarray, angle: float, box: Tuple[int, int, int, int], resample, fill) -> np.ndarray:
    """``box`` = (x, y, width, height) of ``array`` rotated by ``angle`` degrees about its centre as PIL's
    ``Image.rotate(angle, resample, fillcolor=fill)`` does (same size, counter-clockwise), computed on the box only."""
    from PIL import Image

    x0, y0, width, height = box
    if not angle:
        return np.ascontiguousarray(array[y0:y0 + height, x0:x0 + width])
    h, w = array.shape[:2]
    cx, cy = w / 2.0, h / 2.0
    rad = -math.radians(angle % 360.0)
    a, b = round(math.cos(rad), 15), round(math.sin(rad), 15)
    d, e = round(-math.sin(rad), 15), round(math.cos(rad), 15)
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    matrix = (a, b, c + a * x0 + b * y0, d, e, f + d * x0 + e * y0)
    image = Image.fromarray(array)
    return np.asarray(image.transform((width, height), Image.AFFINE, matrix, resample, fillcolor=fill))


class KittiDepth:
    """Samples of a BTS-format list that have annotated depth.

    ``train``: random rotation (bicubic image, nearest depth), random crop, flip, colour; ``eval``: the whole frame
    as the authors feed it, with full-resolution depth. Items: see __getitem__.
    """

    def __init__(self, list_path: PathLike, data_root: PathLike, gt_root: Optional[PathLike], mode: str,
                 input_size: Tuple[int, int] = (224, 224), mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
                 std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711), augment: Optional[Augment] = None,
                 strict: bool = False, require_depth: bool = True):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be train or eval, got {mode!r}")
        if not Path(list_path).is_file():
            raise FileNotFoundError(f"list file {list_path} does not exist")
        if not Path(data_root).is_dir():
            raise FileNotFoundError(f"--data-path {data_root} is not a folder (the KITTI raw root with date folders)")
        self.mode, self.data_root, self.gt_root = mode, Path(data_root), Path(gt_root) if gt_root else None
        self.input_size, self.mean, self.std = tuple(input_size), tuple(mean), tuple(std)
        self.augment = augment or Augment()
        self.skips = SkipReport(str(list_path))
        self.samples = []
        for sample in read_list(list_path):
            if require_depth and sample.depth is None:
                continue  # the 45 test frames without annotated depth: not an error, not evaluated
            self.samples.append(sample)
        self.strict = strict

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(RGB uint8, depth metres or None) for one line; raises ValueError naming the problem."""
        sample = self.samples[index]
        if not np.isfinite(sample.focal):
            raise ValueError(f"malformed line (focal is not a number): {sample.line!r}")
        rgb = read_rgb(self.data_root / sample.image)
        depth = None
        if sample.depth is not None and self.gt_root is not None:
            path = resolve_depth_path(self.gt_root, sample.depth)
            if path is None:
                raise ValueError(f"no annotated depth {sample.depth} under {self.gt_root} (or its train/, val/)")
            depth = read_depth_png(path)
            if depth.shape != rgb.shape[:2]:
                raise ValueError(f"depth {depth.shape} and image {rgb.shape[:2]} differ in size")
        return rgb, depth

    def __getitem__(self, index: int) -> dict:
        """A dict of numpy arrays, or ``{"skip": reason, "index": i}`` for a line whose files are missing or
        unreadable (raised instead with ``strict``); :func:`collate` gathers those so the main process counts them."""
        try:
            rgb, depth = self.load(index)
            if depth is None and self.mode == "train":
                raise ValueError("no annotated depth for a training line")
        except ValueError as error:
            if self.strict:
                sample = self.samples[index]
                raise FileNotFoundError(f"line {sample.line_no} ({sample.line!r}): {error} (--strict is on; "
                                        "without it such lines are skipped and counted)") from None
            return {"skip": str(error), "index": index}
        if self.mode == "train":
            return self._train_item(rgb, depth, index)
        return self._eval_item(rgb, depth, index)

    def record_skips(self, batch: dict) -> None:
        """Add a collated batch's skipped lines to ``skips``."""
        for index, reason in batch.get("skipped", []):
            self.skips.skip(self.samples[index], reason)

    def _train_item(self, rgb: np.ndarray, depth: np.ndarray, index: int) -> dict:
        from PIL import Image

        aug = self.augment
        angle = (random.random() - 0.5) * 2 * aug.rotate_degrees if aug.rotate_degrees > 0 else 0.0
        th, tw = aug.crop
        h, w = rgb.shape[:2]
        if h < th or w < tw:  # smaller frames are rotated whole, then resized to the crop, as the release does
            if angle:
                rgb = np.asarray(Image.fromarray(rgb).rotate(angle, resample=Image.BICUBIC, fillcolor=(0, 0, 0)))
                depth = np.asarray(Image.fromarray(depth).rotate(angle, resample=Image.NEAREST, fillcolor=0))
            image = pil_resize(rgb, (th, tw), "bicubic").astype(np.float32) / 255.0
            depth = pil_resize(depth, (th, tw), "nearest")
        else:
            y, x = random.randint(0, h - th), random.randint(0, w - tw)
            # The image's crop of the frame rotated about its centre is computed for the crop's pixels only (PIL's
            # rotation matrix offset to the crop; the same pixels as rotating the whole frame, in half the time).
            # Depth is rotated whole (nearest-neighbour ties would fall differently with the offset; it is cheap).
            rgb = rotated_crop(rgb, angle, (x, y, tw, th), Image.BICUBIC, (0, 0, 0))
            if angle:
                depth = np.asarray(Image.fromarray(depth).rotate(angle, resample=Image.NEAREST, fillcolor=0))
            depth = depth[y:y + th, x:x + tw]
            image = rgb.astype(np.float32) / 255.0
        if aug.flip and random.random() > 0.5:
            image, depth = image[:, ::-1], depth[:, ::-1]
        if aug.color and random.random() > 0.5:
            image = image ** random.uniform(0.9, 1.1)
            image = image * random.uniform(0.9, 1.1)
            image = np.clip(image * np.random.uniform(0.9, 1.1, size=3).astype(np.float32), 0, 1)
        image = np.ascontiguousarray(image, dtype=np.float32)
        return {"pixel_values": clip_input(image, self.input_size, self.mean, self.std),
                "image": image.transpose(2, 0, 1).copy(), "depth": np.ascontiguousarray(depth, np.float32)[None],
                "index": index}

    def _eval_item(self, rgb: np.ndarray, depth: Optional[np.ndarray], index: int) -> dict:
        """The authors' evaluation input: the whole frame resized bicubic to 352x704, then to the tower's size;
        ``depth`` at full resolution."""
        small = pil_resize(rgb, KITTI_CROP_SIZE, "bicubic").astype(np.float32) / 255.0
        item = {"pixel_values": clip_input(small, self.input_size, self.mean, self.std),
                "image": small.transpose(2, 0, 1).copy(), "index": index}
        if depth is not None:
            item["depth"] = depth[None]
        return item


def collate(batch: List[dict]) -> dict:
    """Stack items; skipped ones go to ``skipped`` as (index, reason) and ``n`` counts the rest. Full-resolution
    depth maps of different sizes stay a list."""
    import torch

    out = {"skipped": [(b["index"], b["skip"]) for b in batch if "skip" in b]}
    batch = [b for b in batch if "skip" not in b]
    out["n"] = len(batch)
    for key in (batch[0] if batch else {}):
        values = [b[key] for b in batch]
        if key == "index":
            out[key] = torch.tensor(values)
        elif len({v.shape for v in values}) == 1:
            out[key] = torch.from_numpy(np.stack(values))
        else:
            out[key] = [torch.from_numpy(v) for v in values]
    return out
