"""Paired (bi-temporal) transforms, as open-cd's ``MultiImg*`` pipeline.

Every transform is a callable on a sample dict: ``t1``/``t2`` float32 numpy (H, W, C) in stored units,
``label`` (and any other ``label*`` key) int64 numpy (H, W), ``name``. Geometry is drawn once and applied to
both dates and every label; photometric changes are drawn independently per date. :class:`ToTensor` ends
the pipeline (CHW float32 / HW int64 tensors). Randomness comes from torch's global generator, so it is
seeded per DataLoader worker by torch and reproducible with ``torch.manual_seed``.

:func:`build_transforms` builds the standard train / eval pipelines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from changekit.errors import ConfigError, DataError

__all__ = [
    "STATS",
    "resolve_stats",
    "Compose",
    "RandomRotFlip",
    "RandomRescale",
    "RandomBlur",
    "RandomRotate",
    "RandomCrop",
    "RandomFlip",
    "PhotoMetricDistortion",
    "ExchangeTime",
    "RandomHaze",
    "Normalize",
    "Pad",
    "ToTensor",
    "build_transforms",
    "DEFAULT_AUGMENT",
]

#: Normalisation statistics in 0..255 units (RGB).
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "clip": ((122.7709, 116.7460, 104.0937), (68.5005, 66.6322, 70.3232)),
}

#: the images of a sample: both dates of a pair, or the one image of a single-date sample
IMAGE_KEYS = ("t1", "t2", "image")

Sample = dict[str, Any]


def _rand() -> float:
    return float(torch.rand(()))


def _uniform(a: float, b: float) -> float:
    return a + (b - a) * _rand()


def _randint(lo: int, hi: int) -> int:
    """Integer in [lo, hi) (numpy convention)."""
    return int(torch.randint(lo, hi, ()))


def _image_keys(s: Sample) -> list[str]:
    """The sample's images: both dates, or ``image`` for single-date (segmentation) samples."""
    return [k for k in IMAGE_KEYS if k in s]


def _hw(s: Sample) -> tuple[int, int]:
    """The sample's height and width (of its first image; its images share the grid)."""
    return s[_image_keys(s)[0]].shape[:2]


def _label_keys(s: Sample) -> list[str]:
    return [k for k, v in s.items() if k.startswith("label") and isinstance(v, np.ndarray)]


def resolve_stats(mean: str | Sequence[float] | None, std: Sequence[float] | None = None
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """``"imagenet"``/``"clip"`` or explicit per-band lists -> (mean, std) float32 arrays; None -> None."""
    if mean is None:
        return None
    if isinstance(mean, str):
        if mean not in STATS:
            raise ConfigError(f"mean={mean!r}: unknown statistics preset; use one of {sorted(STATS)} or per-band lists.")
        m, s = STATS[mean]
        if std is not None and not isinstance(std, str):
            s = std
        return np.asarray(m, np.float32), np.asarray(s, np.float32)
    if isinstance(std, str):
        std = STATS[std][1]
    if std is None:
        raise ConfigError("mean given as a list needs std as a list of the same length.")
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if m.shape != s.shape or m.ndim != 1:
        raise ConfigError(f"mean ({len(m)} values) and std ({len(s)} values) must be per-band lists of equal length.")
    if np.any(s <= 0):
        raise ConfigError(f"std={s.tolist()} must be positive.")
    return m, s


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, s: Sample) -> Sample:
        for t in self.transforms:
            s = t(s)
        return s

    def __repr__(self) -> str:
        return "Compose(\n  " + ",\n  ".join(map(repr, self.transforms)) + "\n)"


class RandomRotate:
    """Rotate by an angle uniform in [-degree, degree] with probability ``prob`` (about the image centre,
    same size). Images bilinear, padded with ``pad_val``; labels nearest, padded with ``seg_pad_val``."""

    def __init__(self, prob: float = 0.5, degree: float = 180.0, pad_val: float = 0.0, seg_pad_val: int = 255):
        self.prob, self.degree, self.pad_val, self.seg_pad_val = prob, float(degree), pad_val, seg_pad_val

    @staticmethod
    def rotate(arr: np.ndarray, angle: float, nearest: bool, fill: float) -> np.ndarray:
        """Rotate (H, W[, C]) by ``angle`` degrees (counter-clockwise) about the image centre, same size;
        outside pixels get ``fill``. torch ``grid_sample`` (bilinear or nearest), pixel-centre convention."""
        hw = arr.ndim == 2
        t = torch.from_numpy(np.ascontiguousarray(arr[None] if hw else arr.transpose(2, 0, 1))).float()[None]
        h, w = t.shape[-2:]
        a = math.radians(angle)
        cos, sin = math.cos(a), math.sin(a)
        # output pixel (x, y) samples input at R^-1 (x - c) + c, in pixel units; convert to [-1, 1] coords
        ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
        xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        sx = cos * xx - sin * yy
        sy = sin * xx + cos * yy
        grid = torch.stack([(sx + (w - 1) / 2) * 2 / w + 1 / w - 1, (sy + (h - 1) / 2) * 2 / h + 1 / h - 1], -1)[None]
        ones = torch.ones_like(t[:, :1])
        mode = "nearest" if nearest else "bilinear"
        r = torch.nn.functional.grid_sample(t, grid, mode=mode, padding_mode="zeros", align_corners=False)
        m = torch.nn.functional.grid_sample(ones, grid, mode=mode, padding_mode="zeros", align_corners=False)
        if nearest:
            r = torch.where(m > 0.5, r, torch.full_like(r, fill))
        else:
            r = r + (1 - m) * fill  # zeros padding blended with the fill value at the border
        r = r[0].numpy()
        return r[0] if hw else r.transpose(1, 2, 0)

    def __call__(self, s: Sample) -> Sample:
        if _rand() >= self.prob:
            return s
        angle = _uniform(-self.degree, self.degree)
        s = dict(s)
        for k in _image_keys(s):
            s[k] = np.ascontiguousarray(self.rotate(s[k], angle, False, self.pad_val), dtype=np.float32)
        for k in _label_keys(s):
            s[k] = self.rotate(s[k], angle, True, self.seg_pad_val).round().astype(np.int64)
        return s

    def __repr__(self) -> str:
        return f"RandomRotate(prob={self.prob}, degree={self.degree})"


class RandomRotFlip:
    """open-cd's ``MultiImgRandomRotFlip`` (the DSQNet recipe): with probability ``rotate_prob`` rotate both dates
    and the labels by an angle uniform in ``degree`` (min, max); otherwise, with probability ``flip_prob``, rotate by
    a random multiple of 90° and flip along a random axis (rows or columns). Never both."""

    def __init__(self, rotate_prob: float = 0.5, flip_prob: float = 0.5, degree: float | Sequence[float] = (-20, 20),
                 pad_val: float = 0.0, seg_pad_val: int = 255):
        if not (0 <= rotate_prob <= 1 and 0 <= flip_prob <= 1):
            raise ConfigError(f"rot_flip: rotate_prob {rotate_prob} and flip_prob {flip_prob} must be in [0, 1].")
        if isinstance(degree, (int, float)):
            if degree <= 0:
                raise ConfigError(f"rot_flip: degree {degree} must be positive (or a (min, max) pair).")
            degree = (-degree, degree)
        if len(degree) != 2:
            raise ConfigError(f"rot_flip: degree {degree} must be a number or a (min, max) pair.")
        self.rotate_prob, self.flip_prob = rotate_prob, flip_prob
        self.degree = (float(min(degree)), float(max(degree)))
        self.pad_val, self.seg_pad_val = pad_val, seg_pad_val

    def __call__(self, s: Sample) -> Sample:
        s = dict(s)
        if _rand() < self.rotate_prob:
            # mmcv.imrotate turns clockwise for positive angles; RandomRotate.rotate counter-clockwise
            angle = -_uniform(*self.degree)
            for k in _image_keys(s):
                s[k] = np.ascontiguousarray(RandomRotate.rotate(s[k], angle, False, self.pad_val), dtype=np.float32)
            for k in _label_keys(s):
                s[k] = RandomRotate.rotate(s[k], angle, True, self.seg_pad_val).round().astype(np.int64)
        elif _rand() < self.flip_prob:
            k90, axis = _randint(0, 4), _randint(0, 2)
            for k in _image_keys(s) + _label_keys(s):
                s[k] = np.ascontiguousarray(np.flip(np.rot90(s[k], k90), axis=axis))
        return s

    def __repr__(self) -> str:
        return f"RandomRotFlip(rotate_prob={self.rotate_prob}, flip_prob={self.flip_prob}, degree={self.degree})"


class RandomRescale:
    """Rescale both dates (bicubic) and the labels (nearest) by one factor uniform in ``scale`` — BIT_CD's
    ``with_scale_random_crop`` rescale (1 to 1.2) before its random crop."""

    def __init__(self, scale: Sequence[float] = (1.0, 1.2)):
        if len(scale) != 2 or not 0 < float(scale[0]) <= float(scale[1]):
            raise ConfigError(f"rescale: {scale} must be [min, max] with 0 < min <= max.")
        self.scale = (float(scale[0]), float(scale[1]))

    @staticmethod
    def resize(arr: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
        hw = arr.ndim == 2
        t = torch.from_numpy(np.ascontiguousarray(arr[None] if hw else arr.transpose(2, 0, 1))).float()[None]
        if nearest:
            r = torch.nn.functional.interpolate(t, size=size, mode="nearest")
        else:
            r = torch.nn.functional.interpolate(t, size=size, mode="bicubic", align_corners=False)
        r = r[0].numpy()
        return r[0] if hw else r.transpose(1, 2, 0)

    def __call__(self, s: Sample) -> Sample:
        f = _uniform(*self.scale)
        h, w = _hw(s)
        size = (int(round(h * f)), int(round(w * f)))
        if size == (h, w):
            return s
        s = dict(s)
        for k in _image_keys(s):
            s[k] = np.ascontiguousarray(self.resize(s[k], size, False), dtype=np.float32)
        for k in _label_keys(s):
            s[k] = self.resize(s[k], size, True).round().astype(np.int64)
        return s

    def __repr__(self) -> str:
        return f"RandomRescale(scale={self.scale})"


class RandomBlur:
    """Gaussian blur of both dates with one radius uniform in [0, ``max_radius``) (PIL's ``GaussianBlur``, whose
    radius is the standard deviation) — BIT_CD's ``with_random_blur``. Labels are untouched."""

    def __init__(self, max_radius: float = 1.0):
        if float(max_radius) <= 0:
            raise ConfigError(f"blur: max radius {max_radius} must be positive.")
        self.max_radius = float(max_radius)

    @staticmethod
    def blur(arr: np.ndarray, sigma: float) -> np.ndarray:
        if sigma <= 0:
            return arr
        r = int(math.ceil(3 * sigma))
        x = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
        k = k / k.sum()
        t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()[:, None]  # (C, 1, H, W)
        t = torch.nn.functional.pad(t, (r, r, r, r), mode="replicate")
        t = torch.nn.functional.conv2d(t, k.view(1, 1, 1, -1))
        t = torch.nn.functional.conv2d(t, k.view(1, 1, -1, 1))
        return t[:, 0].numpy().transpose(1, 2, 0)

    def __call__(self, s: Sample) -> Sample:
        sigma = _uniform(0.0, self.max_radius)
        s = dict(s)
        for k in _image_keys(s):
            s[k] = np.ascontiguousarray(self.blur(s[k], sigma), dtype=np.float32)
        return s

    def __repr__(self) -> str:
        return f"RandomBlur(max_radius={self.max_radius})"


class RandomCrop:
    """mmseg ``RandomCrop``: a random (h, w) window; with ``cat_max_ratio < 1`` redraw up to 10 times until
    no single class (``ignore_index`` excluded) covers more than that share of the crop. Images smaller
    than the crop are cropped to their own size (padding comes later)."""

    def __init__(self, crop_size: int | Sequence[int], cat_max_ratio: float = 1.0, ignore_index: int = 255):
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        if len(self.crop_size) != 2 or min(self.crop_size) <= 0:
            raise ConfigError(f"crop_size={crop_size!r} must be a positive int or (h, w).")
        self.cat_max_ratio, self.ignore_index = cat_max_ratio, ignore_index

    def _bbox(self, h: int, w: int) -> tuple[int, int, int, int]:
        ch, cw = self.crop_size
        y = _randint(0, max(h - ch, 0) + 1)
        x = _randint(0, max(w - cw, 0) + 1)
        return y, min(y + ch, h), x, min(x + cw, w)

    def __call__(self, s: Sample) -> Sample:
        h, w = _hw(s)
        box = self._bbox(h, w)
        if self.cat_max_ratio < 1.0 and isinstance(s.get("label"), np.ndarray):
            for _ in range(10):
                y0, y1, x0, x1 = box
                labels, cnt = np.unique(s["label"][y0:y1, x0:x1], return_counts=True)
                cnt = cnt[labels != self.ignore_index]
                if len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio:
                    break
                box = self._bbox(h, w)
        y0, y1, x0, x1 = box
        s = dict(s)
        for k in _image_keys(s) + _label_keys(s):
            s[k] = np.ascontiguousarray(s[k][y0:y1, x0:x1])
        return s

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


class RandomFlip:
    def __init__(self, prob: float = 0.5, direction: str = "horizontal"):
        if direction not in ("horizontal", "vertical"):
            raise ConfigError(f"flip direction {direction!r} must be 'horizontal' or 'vertical'.")
        self.prob, self.direction = prob, direction

    def __call__(self, s: Sample) -> Sample:
        if _rand() >= self.prob:
            return s
        ax = 1 if self.direction == "horizontal" else 0
        s = dict(s)
        for k in _image_keys(s) + _label_keys(s):
            s[k] = np.ascontiguousarray(np.flip(s[k], axis=ax))
        return s

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob}, direction={self.direction!r})"


class RandomRot90:
    """Rotate by a random multiple of 90 degrees with probability ``prob`` (exact: no resampling, no padding;
    applied after the crop, so it costs a crop-sized copy)."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, s: Sample) -> Sample:
        if _rand() >= self.prob:
            return s
        k = _randint(1, 4)
        s = dict(s)
        for key in _image_keys(s) + _label_keys(s):
            s[key] = np.ascontiguousarray(np.rot90(s[key], k, axes=(0, 1)))
        return s

    def __repr__(self) -> str:
        return f"RandomRot90(prob={self.prob})"


class RandomGain:
    """Radiometric jitter for multispectral data in any units: each date is multiplied by a gain drawn in
    ``1 ± date`` and each of its bands by one in ``1 ± band`` (sun angle, season, atmosphere and calibration
    differ between acquisitions; the model should not call that change)."""

    def __init__(self, date: float = 0.1, band: float = 0.05, prob: float = 1.0):
        self.date, self.band, self.prob = float(date), float(band), float(prob)

    def __call__(self, s: Sample) -> Sample:
        s = dict(s)
        for key in _image_keys(s):
            if _rand() >= self.prob:
                continue
            c = s[key].shape[2]
            gain = _uniform(1 - self.date, 1 + self.date) * np.array(
                [_uniform(1 - self.band, 1 + self.band) for _ in range(c)], dtype=np.float32)
            s[key] = (s[key] * gain).astype(np.float32)
        return s

    def __repr__(self) -> str:
        return f"RandomGain(date={self.date}, band={self.band}, prob={self.prob})"


class RandomHaze:
    """Cloud and haze on one date, label unchanged: optical pairs (Sentinel-2 above all) often carry thin cloud or
    haze on one date, which is no change on the ground. With probability ``prob`` one date, drawn at random, is
    blended towards a bright, flat cloud spectrum (each band at its ``quantile`` over the sample's dates, times
    ``1.5..3``: in any units) through a smooth random opacity field: a coarse grid of uniform values (2-6 cells a
    side) resized bilinearly, cut below a random level (patchy or whole-window cover) and scaled to a peak opacity
    uniform in ``(0, opacity]``."""

    def __init__(self, prob: float = 0.3, opacity: float = 0.8, quantile: float = 0.99):
        if not (0 < float(opacity) <= 1) or not (0 < float(quantile) <= 1):
            raise ConfigError(f"augment.haze: opacity {opacity} and quantile {quantile} must lie in (0, 1].")
        self.prob, self.opacity, self.quantile = float(prob), float(opacity), float(quantile)

    def field(self, h: int, w: int) -> np.ndarray:
        """(H, W, 1) opacity in [0, opacity]."""
        cells = _randint(2, 7)
        grid = torch.rand(1, 1, cells, cells)
        f = torch.nn.functional.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)[0, 0]
        cut = _uniform(0.0, 0.6)
        f = ((f - cut) / (1 - cut)).clamp_(0, 1) * _uniform(0.0, self.opacity)
        return f.numpy()[..., None].astype(np.float32)

    def __call__(self, s: Sample) -> Sample:
        keys = [k for k in ("t1", "t2") if k in s]
        if len(keys) < 2 or _rand() >= self.prob:
            return s
        s = dict(s)
        key = keys[_randint(0, 2)]
        both = np.concatenate([s[k].reshape(-1, s[k].shape[2]) for k in keys])
        cloud = np.quantile(both, self.quantile, axis=0).astype(np.float32) * _uniform(1.5, 3.0)
        alpha = self.field(*s[key].shape[:2])
        s[key] = ((1 - alpha) * s[key] + alpha * cloud).astype(np.float32)
        return s

    def __repr__(self) -> str:
        return f"RandomHaze(prob={self.prob}, opacity={self.opacity}, quantile={self.quantile})"


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB (any scale) -> H in degrees [0, 360), S in [0, 1], V in RGB units."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = rgb.max(-1)
    minc = rgb.min(-1)
    delta = maxc - minc
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1), 0)
    safe = np.where(delta > 0, delta, 1)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0) * 360.0
    return np.stack([h, s, maxc], -1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0] / 60.0, hsv[..., 1], hsv[..., 2]
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], -1).astype(np.float32)


class PhotoMetricDistortion:
    """mmseg ``PhotoMetricDistortion``, drawn independently for each date.

    Brightness (+uniform(-delta, delta)), contrast (x uniform(lower, upper)) applied first or last at random,
    saturation (S x uniform) and hue (H + randint(-hue_delta, hue_delta) on OpenCV's 0..180 scale), each with
    p=0.5. Only 3-band images get the HSV operations; other band counts get brightness/contrast only.
    Values are clipped to ``value_range`` (None: no clipping).
    """

    def __init__(self, brightness_delta: float = 10, contrast_range: Sequence[float] = (0.8, 1.2),
                 saturation_range: Sequence[float] = (0.8, 1.2), hue_delta: int = 10,
                 value_range: Sequence[float] | None = (0.0, 255.0), prob: float = 0.5):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta, self.value_range, self.prob = hue_delta, value_range, prob

    def _clip(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, *self.value_range) if self.value_range is not None else x

    def distort(self, img: np.ndarray) -> np.ndarray:
        img = img.astype(np.float32, copy=True)
        if _rand() < self.prob:
            img = self._clip(img + _uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = _randint(0, 2) == 1
        if contrast_first and _rand() < self.prob:
            img = self._clip(img * _uniform(self.contrast_lower, self.contrast_upper))
        if img.shape[2] == 3:
            do_sat, do_hue = _rand() < self.prob, False
            sat = _uniform(self.saturation_lower, self.saturation_upper) if do_sat else 1.0
            do_hue = _rand() < self.prob
            hue = _randint(-self.hue_delta, self.hue_delta) * 2.0 if do_hue else 0.0  # 0..180 scale -> degrees
            if do_sat or do_hue:
                hsv = rgb_to_hsv(img)
                hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
                hsv[..., 0] = (hsv[..., 0] + hue) % 360.0
                img = self._clip(hsv_to_rgb(hsv))
        if not contrast_first and _rand() < self.prob:
            img = self._clip(img * _uniform(self.contrast_lower, self.contrast_upper))
        return img

    def __call__(self, s: Sample) -> Sample:
        s = dict(s)
        for k in _image_keys(s):
            s[k] = self.distort(s[k])
        return s

    def __repr__(self) -> str:
        return (f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, contrast=({self.contrast_lower}, "
                f"{self.contrast_upper}), saturation=({self.saturation_lower}, {self.saturation_upper}), "
                f"hue_delta={self.hue_delta})")


class ExchangeTime:
    """Swap the two dates with probability ``prob`` (binary change labels are symmetric;
    ``label_sem1``/``label_sem2`` are swapped with them)."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, s: Sample) -> Sample:
        if "t2" not in s or _rand() >= self.prob:  # single-date samples have nothing to swap
            return s
        s = dict(s)
        s["t1"], s["t2"] = s["t2"], s["t1"]
        if "classes_a" in s:  # per-date class names follow their image
            s["classes_a"], s["classes_b"] = s["classes_b"], s["classes_a"]
        if "label_sem1" in s and "label_sem2" in s:
            s["label_sem1"], s["label_sem2"] = s["label_sem2"], s["label_sem1"]
        return s

    def __repr__(self) -> str:
        return f"ExchangeTime(prob={self.prob})"


class Normalize:
    """(x - mean) / std per band; the statistics must have one value per band."""

    def __init__(self, mean: str | Sequence[float] = "imagenet", std: Sequence[float] | None = None):
        stats = resolve_stats(mean, std)
        if stats is None:
            raise ConfigError("Normalize needs mean/std.")
        self.mean, self.std = stats

    def __call__(self, s: Sample) -> Sample:
        s = dict(s)
        for k in _image_keys(s):
            c = s[k].shape[2]
            if c != len(self.mean):
                raise DataError(f"{s.get('name', '<sample>')}: image has {c} band(s) but mean/std have "
                                f"{len(self.mean)} values. Give per-band mean/std for all {c} bands "
                                "(`changekit stats` computes them) or select bands with `bands:`.")
            s[k] = ((s[k] - self.mean) / self.std).astype(np.float32)
        return s

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Pad:
    """Pad bottom/right to a multiple of ``size_divisor`` and/or at least ``size`` (h, w);
    images with ``pad_val``, labels with ``seg_pad_val`` (ignore)."""

    def __init__(self, size_divisor: int | None = 32, size: int | Sequence[int] | None = None,
                 pad_val: float = 0.0, seg_pad_val: int = 255):
        self.size_divisor = size_divisor
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.pad_val, self.seg_pad_val = pad_val, seg_pad_val

    def __call__(self, s: Sample) -> Sample:
        h, w = _hw(s)
        th, tw = h, w
        if self.size is not None:
            th, tw = max(th, self.size[0]), max(tw, self.size[1])
        if self.size_divisor:
            d = self.size_divisor
            th, tw = math.ceil(th / d) * d, math.ceil(tw / d) * d
        if (th, tw) == (h, w):
            return s
        s = dict(s)
        for k in _image_keys(s):
            s[k] = np.pad(s[k], ((0, th - h), (0, tw - w), (0, 0)), constant_values=self.pad_val)
        for k in _label_keys(s):
            s[k] = np.pad(s[k], ((0, th - h), (0, tw - w)), constant_values=self.seg_pad_val)
        return s

    def __repr__(self) -> str:
        return f"Pad(size_divisor={self.size_divisor}, size={self.size})"


def to_tensor_item(item: dict[str, Any]) -> dict[str, Any]:
    """numpy HWC/HW arrays -> torch CHW float32 / HW int64 (other keys unchanged). Read-only arrays (a dataset's
    in-memory cache) are copied: the tensors never share memory with them."""

    def tensor(a: np.ndarray, dtype) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=dtype)
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    out = dict(item)
    for k in IMAGE_KEYS:
        if isinstance(out.get(k), np.ndarray):
            out[k] = tensor(out[k].transpose(2, 0, 1), np.float32)
    for k, v in item.items():
        if k.startswith("label") and isinstance(v, np.ndarray):
            out[k] = tensor(v, np.int64)
    return out


class ToTensor:
    """numpy HWC float32 / HW int -> torch CHW float32 / HW int64."""

    def __call__(self, s: Sample) -> Sample:
        return to_tensor_item(s)

    def __repr__(self) -> str:
        return "ToTensor()"


#: open-cd / BAN training augmentation (exchange-time is commented out there, so 0 here).
DEFAULT_AUGMENT: dict[str, Any] = {
    "rot_flip": False,
    "rotate": {"prob": 0.5, "degree": 180},
    "hflip": 0.5,
    "vflip": 0.5,
    "photometric": True,
    "exchange": 0.0,
    "rescale": False,
    "blur": False,
    "rot90": False,
    "gain": False,
    "haze": False,
}


def _op_kwargs(name: str, value: Any, known: set[str]) -> dict[str, Any]:
    """An ``augment`` entry's keyword arguments: ``True`` means the defaults; unknown keys are refused by name."""
    kw = {} if value is True else dict(value)
    unknown = set(kw) - known
    if unknown:
        raise ConfigError(f"augment.{name}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}.")
    return kw


def build_transforms(
    train: bool = True,
    crop_size: int | Sequence[int] | None = None,
    cat_max_ratio: float = 1.0,
    augment: dict[str, Any] | None = None,
    mean: str | Sequence[float] | None = "imagenet",
    std: Sequence[float] | None = None,
    size_divisor: int | None = 32,
    ignore_index: int = 255,
) -> Compose:
    """The standard pipelines.

    train: rot_flip -> rotate -> rescale -> crop(crop_size, cat_max_ratio) -> h/v flips -> rot90 -> gain -> haze -> blur ->
    photometric (per date) -> exchange
    -> normalise -> pad (to crop_size, then to a multiple of size_divisor) -> tensors.
    eval: normalise -> pad (size_divisor; ``None`` keeps the size) -> tensors.

    ``augment`` overrides :data:`DEFAULT_AUGMENT` key by key; a falsy value switches an op off. Keys:
    ``rot_flip`` ({rotate_prob, flip_prob, degree}: :class:`RandomRotFlip`, or False), ``rotate`` ({prob, degree}
    or False), ``rescale`` ([min, max] factor, :class:`RandomRescale`), ``blur`` (max radius, :class:`RandomBlur`), ``hflip``/``vflip`` (prob), ``photometric`` (True, False or
    PhotoMetricDistortion kwargs), ``haze`` (True or {prob, opacity, quantile}: :class:`RandomHaze`), ``exchange``
    (prob). ``mean=None`` skips normalisation.
    """
    ts: list[Callable] = []
    if train:
        aug = dict(DEFAULT_AUGMENT)
        if augment:
            unknown = set(augment) - set(DEFAULT_AUGMENT)
            if unknown:
                raise ConfigError(f"augment: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULT_AUGMENT)}.")
            aug.update(augment)
        if aug["rot_flip"]:
            kw = _op_kwargs("rot_flip", aug["rot_flip"], {"rotate_prob", "flip_prob", "degree"})
            ts.append(RandomRotFlip(**kw, seg_pad_val=ignore_index))
        rot = aug["rotate"]
        if rot:
            rot = {} if rot is True else dict(rot)
            ts.append(RandomRotate(prob=rot.get("prob", 0.5), degree=rot.get("degree", 180), seg_pad_val=ignore_index))
        if aug["rescale"]:
            ts.append(RandomRescale(aug["rescale"]))
        if crop_size:
            ts.append(RandomCrop(crop_size, cat_max_ratio, ignore_index))
        if aug["hflip"]:
            ts.append(RandomFlip(float(aug["hflip"]), "horizontal"))
        if aug["vflip"]:
            ts.append(RandomFlip(float(aug["vflip"]), "vertical"))
        if aug["rot90"]:
            ts.append(RandomRot90(float(aug["rot90"])))
        if aug["gain"]:
            ts.append(RandomGain(**_op_kwargs("gain", aug["gain"], {"date", "band", "prob"})))
        if aug["haze"]:
            ts.append(RandomHaze(**_op_kwargs("haze", aug["haze"], {"prob", "opacity", "quantile"})))
        if aug["blur"]:
            ts.append(RandomBlur(1.0 if aug["blur"] is True else float(aug["blur"])))
        if aug["photometric"]:
            kw = {} if aug["photometric"] is True else dict(aug["photometric"])
            ts.append(PhotoMetricDistortion(**kw))
        if aug["exchange"]:
            ts.append(ExchangeTime(float(aug["exchange"])))
    if mean is not None:
        ts.append(Normalize(mean, std))
    if (train and crop_size) or size_divisor:
        ts.append(Pad(size_divisor, size=crop_size if train else None, seg_pad_val=ignore_index))
    ts.append(ToTensor())
    return Compose(ts)
