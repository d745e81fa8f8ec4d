"""What every dataset shares: list files, skipped-line reports, image reading, the authors' resizing, the training
augmentation, and the dataset base class that turns (RGB, depth) pairs into training and evaluation items."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch.utils.data

from space_clip_ros.model.config import CLIP_MEAN, CLIP_STD, KITTI_OUTPUT_SIZE

PathLike = Union[str, Path]
SPLITS = Path(__file__).resolve().parent / "splits"

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
    """(H, W, 3) uint8 RGB; raises ValueError when the file is missing or not an image.

    An 8-bit RGB PNG (KITTI's frames) is decoded by OpenCV, a fifth faster than PIL and the same pixels (PNG is
    lossless); any other file (JPEG: decoders differ in their pixels; grey, palette, alpha, 16-bit) by PIL, as the
    authors read it."""
    from PIL import Image

    if str(path).lower().endswith(".png"):
        import cv2

        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if bgr is not None and bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3:
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None



def read_depth_png(path: PathLike, per_metre: float, what: str) -> np.ndarray:
    """A uint16 depth PNG (value = metres * ``per_metre``, 0 = no measurement) -> float32 metres (0 = none)."""
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read depth PNG {path}")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel uint16 PNG ({what}), got {raw.dtype} {raw.shape}")
    return raw.astype(np.float32) / per_metre


def write_depth_png(path: PathLike, depth: np.ndarray, per_metre: float) -> None:
    """Metres -> uint16 PNG (value = round(metres * ``per_metre``), 0 = none)."""
    import cv2

    out = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * per_metre), 0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.clip(out, 0, 65535).astype(np.uint16)):
        raise OSError(f"could not write {path}")


# ---------------------------------------------------------------------------------------- the authors' resizing
def pil_resize(array: np.ndarray, size: Tuple[int, int], mode: str) -> np.ndarray:
    """Resize with PIL as the authors do: ``bicubic`` for uint8 RGB, ``nearest`` for float32 depth."""
    from PIL import Image

    height, width = size
    resample = Image.BICUBIC if mode == "bicubic" else Image.NEAREST
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


_LEVELS = np.arange(256, dtype=np.float32) / 255.0  # uint8 -> [0, 1] as the authors convert (float32)
#: The authors' [0, 1] -> uint8 step (``(x * 255).astype(uint8)``, truncating) applied to the 256 levels: not always
#: the identity (a level can come back one lower), so it is kept as the authors compute it.
_QUANTISED = np.repeat((_LEVELS * 255).astype(np.uint8)[:, None], 3, axis=1)


def clip_input(quantised: np.ndarray, input_size: Tuple[int, int], mean: Sequence[float],
               std: Sequence[float]) -> np.ndarray:
    """The tower's input as the authors prepare it from the [0, 1] crop quantised to uint8 (``quantised``, see
    :func:`colour_table`): resized bicubic with PIL to ``input_size``, back to [0, 1], normalised; (3, h, w) float32.

    The normalisation is computed on the 256 levels of each channel and looked up (the same float32 operations as
    on every pixel, so the same values)."""
    small = pil_resize(quantised, input_size, "bicubic")
    table = (_LEVELS[:, None] - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)  # (256, 3)
    return np.stack([table[small[..., c], c] for c in range(3)])


def eval_input(small: np.ndarray, input_size: Tuple[int, int], mean: Sequence[float],
               std: Sequence[float]) -> np.ndarray:
    """The tower's input from a uint8 frame already at the evaluation size, as the authors feed it: to [0, 1], their
    quantisation back to uint8 (a per-level table), then :func:`clip_input`."""
    return clip_input(apply_levels(small, _QUANTISED), input_size, mean, std)


# ----------------------------------------------------------------------------------------------------- datasets
@dataclass
class Augment:
    """Training augmentation of the paper and the release."""

    crop: Tuple[int, int] = KITTI_OUTPUT_SIZE  # (H, W); KITTI's, the release's NYU crop is 480x640
    rotate_degrees: float = 1.0
    flip: bool = True
    color: bool = True  # gamma, brightness and per-channel colour in [0.9, 1.1], with p = 0.5
    rotate_backend: str = "pil"  # pil: the release's exact pixels | opencv: the same rotation, faster (see below)


def _affine_matrix(shape: Tuple[int, int], angle: float, x0: int, y0: int) -> Tuple[float, ...]:
    """PIL's inverse affine matrix of ``Image.rotate(angle)`` (about the centre, counter-clockwise) for the output
    window starting at (x0, y0): output (x, y) samples input (a x + b y + c, d x + e y + f)."""
    h, w = shape
    cx, cy = w / 2.0, h / 2.0
    rad = -math.radians(angle % 360.0)
    a, b = round(math.cos(rad), 15), round(math.sin(rad), 15)
    d, e = round(-math.sin(rad), 15), round(math.cos(rad), 15)
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return a, b, c + a * x0 + b * y0, d, e, f + d * x0 + e * y0


def rotated_crop(array: np.ndarray, angle: float, box: Tuple[int, int, int, int], resample, fill,
                 backend: str = "pil") -> np.ndarray:
    """``box`` = (x, y, width, height) of ``array`` rotated by ``angle`` degrees about its centre as PIL's
    ``Image.rotate(angle, resample, fillcolor=fill)`` does (same size, counter-clockwise), computed on the box only.

    ``backend="opencv"`` (bicubic only): the same geometry through ``cv2.warpAffine`` (PIL's pixel-centre convention
    carried over), about 10x faster; OpenCV's cubic kernel (a = -0.75) differs from PIL's (a = -0.5), within a few
    grey levels on real frames (tested)."""
    from PIL import Image

    x0, y0, width, height = box
    if not angle:
        return np.ascontiguousarray(array[y0:y0 + height, x0:x0 + width])
    matrix = _affine_matrix(array.shape[:2], angle, x0, y0)
    if backend == "opencv":
        import cv2

        if resample != Image.BICUBIC:
            raise ValueError("the opencv rotation backend is for bicubic images only")
        a, b, c, d, e, f = matrix
        # PIL samples output pixel centres (x + 0.5) and reads input pixel centres at (u - 0.5); OpenCV uses integer
        # centres: shift the offsets by half a pixel on both sides.
        m = np.array([[a, b, c + 0.5 * (a + b) - 0.5], [d, e, f + 0.5 * (d + e) - 0.5]], dtype=np.float64)
        value = fill if isinstance(fill, (tuple, list)) else (fill,) * 3
        return cv2.warpAffine(array, m, (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in value))
    if backend != "pil":
        raise ValueError(f"rotate_backend must be pil or opencv, got {backend!r}")
    image = Image.fromarray(array)
    return np.asarray(image.transform((width, height), Image.AFFINE, matrix, resample, fillcolor=fill))


def colour_table(rng: np.random.Generator, enabled: bool) -> np.ndarray:
    """The authors' colour augmentation (p = 0.5: gamma, brightness and per-channel colour, each uniform in
    [0.9, 1.1], clipped to [0, 1]) followed by their quantisation to uint8, as a (256, 3) uint8 table of what each
    level of each channel becomes; :func:`apply_levels` looks it up per pixel.

    The image comes from uint8 levels, so each step is computed on the 256 levels (the same float32 operations in the
    same order as on every pixel, hence the same values). Draws from ``rng``: a uniform for p, then gamma, brightness
    and the three colours."""
    if enabled and rng.random() > 0.5:
        gamma, brightness = rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)
        colours = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
        table = np.clip(((_LEVELS ** gamma) * brightness)[:, None] * colours[None, :], 0, 1)  # (256, 3) float32
        return (table * 255).astype(np.uint8)
    return _QUANTISED


def apply_levels(rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 through a (256, 3) uint8 per-channel table (OpenCV's lookup)."""
    import cv2

    return cv2.LUT(np.ascontiguousarray(rgb), np.ascontiguousarray(table[None]))


class DepthDataset:
    """Lines of a BTS-format list (``image depth focal``) as training or evaluation items.

    ``train``: random rotation (bicubic image, nearest depth), random crop of ``augment.crop``, flip, colour;
    ``eval``: the whole frame resized bicubic to ``eval_size`` as the authors feed it, with full-resolution depth.
    Subclasses say where the files are and how depth is stored (:meth:`load`). Items: see __getitem__.
    """

    name = "dataset"
    #: The evaluation input size (and the model's output size under the release's protocol), (H, W).
    eval_size: Tuple[int, int] = KITTI_OUTPUT_SIZE
    #: What --data-path must be, for error messages.
    data_root_help = "the dataset root"

    def __init__(self, list_path: PathLike, data_root: PathLike, gt_root: Optional[PathLike], mode: str,
                 input_size: Tuple[int, int] = (224, 224), mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, augment: Optional[Augment] = None,
                 strict: bool = False, require_depth: bool = True, seed: int = 0):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be train or eval, got {mode!r}")
        if not Path(list_path).is_file():
            raise FileNotFoundError(f"list file {list_path} does not exist")
        if not Path(data_root).is_dir():
            raise FileNotFoundError(f"--data-path {data_root} is not a folder ({self.data_root_help})")
        self.mode, self.data_root, self.gt_root = mode, Path(data_root), Path(gt_root) if gt_root else None
        self.input_size, self.mean, self.std = tuple(input_size), tuple(mean), tuple(std)
        self.augment = augment or Augment(crop=self.eval_size)
        self.skips = SkipReport(str(list_path))
        self.samples = []
        for sample in read_list(list_path):
            if require_depth and sample.depth is None:
                continue  # e.g. KITTI's 45 test frames without annotated depth: not an error, not evaluated
            self.samples.append(sample)
        self.strict, self.seed = strict, int(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(RGB uint8, depth metres or None) for one line; raises ValueError naming the problem."""
        raise NotImplementedError

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> dict:
        """A dict of numpy arrays, or ``{"skip": reason, "index": i}`` for a line whose files are missing or
        unreadable (raised instead with ``strict``); :func:`collate` gathers those so the main process counts them.

        ``key``: the line's index, or (epoch, index) for training items (:class:`TrainOrder` yields those): a training
        item's augmentation is drawn from a generator seeded by (seed, epoch, index), so it is the same whichever
        worker or process makes it, however many workers there are and whether the run was resumed."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
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
            return self._train_item(rgb, depth, index, np.random.default_rng((self.seed, epoch, index)))
        return self._eval_item(rgb, depth, index)

    def record_skips(self, batch: dict) -> None:
        """Add a collated batch's skipped lines to ``skips``."""
        for index, reason in batch.get("skipped", []):
            self.skips.skip(self.samples[index], reason)

    def _train_item(self, rgb: np.ndarray, depth: np.ndarray, index: int, rng: np.random.Generator) -> dict:
        """The authors' augmentation, in the cheapest order that gives their pixels: rotation of the crop's pixels
        only, colour and quantisation as one per-level table, flip, the resize, normalisation by table."""
        import cv2
        from PIL import Image

        aug = self.augment
        angle = (rng.random() - 0.5) * 2 * aug.rotate_degrees if aug.rotate_degrees > 0 else 0.0
        th, tw = aug.crop
        h, w = rgb.shape[:2]
        if h < th or w < tw:  # smaller frames are rotated whole, then resized to the crop, as the release does
            if angle:
                rgb = np.asarray(Image.fromarray(rgb).rotate(angle, resample=Image.BICUBIC, fillcolor=(0, 0, 0)))
                depth = np.asarray(Image.fromarray(depth).rotate(angle, resample=Image.NEAREST, fillcolor=0))
            image = pil_resize(rgb, (th, tw), "bicubic")
            depth = pil_resize(depth, (th, tw), "nearest")
        else:
            y, x = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
            # The image's crop of the frame rotated about its centre is computed for the crop's pixels only (PIL's
            # rotation matrix offset to the crop; the same pixels as rotating the whole frame, in half the time).
            # Depth is rotated whole (nearest-neighbour ties would fall differently with the offset; it is cheap).
            image = rotated_crop(rgb, angle, (x, y, tw, th), Image.BICUBIC, (0, 0, 0), aug.rotate_backend)
            if angle:
                depth = np.asarray(Image.fromarray(depth).rotate(angle, resample=Image.NEAREST, fillcolor=0))
            depth = depth[y:y + th, x:x + tw]
        flip = aug.flip and rng.random() > 0.5
        image = apply_levels(image, colour_table(rng, aug.color))
        if flip:  # OpenCV's flip: a contiguous copy at a tenth of numpy's for a reversed view
            image, depth = cv2.flip(image, 1), cv2.flip(np.ascontiguousarray(depth), 1)
        # No full-size image in a training item: nothing reads it, and it was two thirds of a batch's bytes
        # (shared memory between the workers and the trainer, a pinned copy every step).
        return {"pixel_values": clip_input(image, self.input_size, self.mean, self.std),
                "depth": np.ascontiguousarray(depth, np.float32)[None], "index": index}

    def _eval_item(self, rgb: np.ndarray, depth: Optional[np.ndarray], index: int) -> dict:
        """The authors' evaluation input: the whole frame resized bicubic to ``eval_size``, then to the tower's size;
        ``depth`` at full resolution."""
        small = rgb if rgb.shape[:2] == tuple(self.eval_size) else pil_resize(rgb, self.eval_size, "bicubic")
        item = {"pixel_values": eval_input(small, self.input_size, self.mean, self.std),
                "image": (small.astype(np.float32) / 255.0).transpose(2, 0, 1).copy(), "index": index}
        if depth is not None:
            item["depth"] = depth[None]
        return item


class TrainOrder(torch.utils.data.Sampler):
    """The training order of one process: its share of the epoch's shuffled lines (``DistributedSampler``: the same
    order for the same seed, epoch and number of processes), as (epoch, index) keys for
    :meth:`DepthDataset.__getitem__`, from batch ``start`` of the epoch on (a resumed run loads nothing it skips).
    It lives in the main process, so persistent DataLoader workers see each epoch's keys."""

    def __init__(self, dataset: DepthDataset, world: int, rank: int, seed: int, batch_size: int):
        self.shares = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size, self.epoch, self.start = batch_size, 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch
        self.shares.set_epoch(epoch)

    def __iter__(self):
        indices = list(self.shares)[self.start * self.batch_size:]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return max(len(self.shares) - self.start * self.batch_size, 0)


def loader(dataset, workers: int, **options) -> "torch.utils.data.DataLoader":
    """A DataLoader of ``dataset`` (items gathered by :func:`collate`) with ``workers`` processes, each one core's
    work: OpenCV is set to one thread in this process before they fork. Setting it in a forked worker hangs when
    this process has already started OpenCV's thread pool (the pool's threads do not exist in the child), and a
    worker that used the inherited pool would hang the same way; the training process itself does no OpenCV work
    worth threads."""
    if workers > 0:
        import cv2

        cv2.setNumThreads(1)
        options.setdefault("multiprocessing_context", "fork")  # what carries the setting (and Python 3.14's default
        # on Linux is forkserver)
    # Its own generator for the workers' base seed (nothing here depends on it: items are seeded per line), so making
    # an iterator, persistent or not, never moves the training's random streams: a resume stays exact.
    return torch.utils.data.DataLoader(dataset, num_workers=workers, collate_fn=collate,
                                       generator=torch.Generator(), **options)


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
