"""Paired transforms keep date 1, date 2 and the label aligned; photometric ops are per date; stats, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from changekit.data.transforms import (
    DEFAULT_AUGMENT,
    ExchangeTime,
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomBlur,
    RandomCrop,
    RandomFlip,
    RandomRescale,
    RandomRotate,
    RandomRotFlip,
    ToTensor,
    build_transforms,
    hsv_to_rgb,
    resolve_stats,
    rgb_to_hsv,
)
from changekit.errors import ConfigError, DataError

H, W = 48, 64
MARK = (slice(9, 16), slice(40, 47))  # off-centre 7x7 marker


def _marked(c: int = 3) -> dict:
    t1 = np.full((H, W, c), 20.0, np.float32)
    t2 = np.full((H, W, c), 30.0, np.float32)
    t1[MARK] = 220.0
    t2[MARK] = 200.0
    lab = np.zeros((H, W), np.int64)
    lab[MARK] = 1
    return {"t1": t1, "t2": t2, "label": lab, "label_sem1": lab.copy(), "name": "m"}


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    assert len(ys), "marker lost"
    return np.array([ys.mean(), xs.mean()])


def _as_np(s: dict) -> dict:
    out = dict(s)
    for k in ("t1", "t2"):
        if isinstance(s[k], torch.Tensor):
            out[k] = s[k].numpy().transpose(1, 2, 0)
    for k in ("label", "label_sem1"):
        if isinstance(s.get(k), torch.Tensor):
            out[k] = s[k].numpy()
    return out


def _assert_aligned(s: dict, tol: float = 0.75) -> None:
    s = _as_np(s)
    lab = _centroid(s["label"] == 1)
    for k in ("t1", "t2"):
        img = s[k][..., 0]
        thr = (img.max() + np.median(img)) / 2
        np.testing.assert_allclose(_centroid(img > thr), lab, atol=tol, err_msg=k)
    np.testing.assert_array_equal(s["label"], s["label_sem1"])
    assert s["t1"].shape[:2] == s["t2"].shape[:2] == s["label"].shape


@pytest.mark.parametrize("t", [
    RandomFlip(1.0, "horizontal"),
    RandomFlip(1.0, "vertical"),
    RandomRotate(1.0, 180),
    RandomCrop((40, 56), cat_max_ratio=0.75),
    RandomCrop((44, 60)),
    PhotoMetricDistortion(),
    ExchangeTime(1.0),
    Pad(32),
    Pad(None, size=80),
], ids=repr)
def test_each_transform_keeps_marker_aligned(t):
    for seed in range(6):
        torch.manual_seed(seed)
        _assert_aligned(t(_marked()))


def test_geometry_moves_the_marker_as_expected():
    s = RandomFlip(1.0, "horizontal")(_marked())
    np.testing.assert_allclose(_centroid(s["label"] == 1), [12, W - 1 - 43])
    s = RandomFlip(1.0, "vertical")(_marked())
    np.testing.assert_allclose(_centroid(s["label"] == 1), [H - 1 - 12, 43])
    rot = RandomRotate(1.0, 0.0)  # degree 0: identity
    np.testing.assert_array_equal(rot(_marked())["label"], _marked()["label"])


def test_rotation_pads_label_with_ignore_and_image_with_zero():
    torch.manual_seed(1)
    s = RandomRotate(1.0, degree=180)(_marked())
    while abs(_angle_hint(s)) < 1:  # pragma: no cover - practically never
        s = RandomRotate(1.0, degree=180)(_marked())
    assert s["label"][0, 0] == 255 and s["t1"][0, 0, 0] == 0.0 and s["label"].dtype == np.int64
    assert set(np.unique(s["label"])) <= {0, 1, 255}  # nearest: no blended label values


def _angle_hint(s):
    return float((s["label"] == 255).mean() * 100)


def test_full_train_pipeline_keeps_alignment_and_pads():
    t = build_transforms(train=True, crop_size=(44, 60), cat_max_ratio=0.75, mean=None,
                         augment={"exchange": 0.5, "rotate": {"prob": 1.0, "degree": 30}})
    for seed in range(8):
        torch.manual_seed(seed)
        out = t(_marked())
        assert out["t1"].shape == (3, 64, 64) and out["label"].shape == (64, 64)  # crop 44x60 -> pad to 64 (x32)
        assert out["t1"].dtype == torch.float32 and out["label"].dtype == torch.int64
        assert (out["label"][44:, :] == 255).all() and (out["t1"][:, 44:, :] == 0).all()
        assert (out["label"][:, 60:] == 255).all()
        _assert_aligned(out, tol=1.0)


def test_cat_max_ratio_redraws_crops():
    lab = np.zeros((128, 128), np.int64)
    lab[80:120, 80:120] = 1
    s = {"t1": np.zeros((128, 128, 3), np.float32), "t2": np.zeros((128, 128, 3), np.float32), "label": lab}

    def share(ratio):
        torch.manual_seed(0)
        crop = RandomCrop(32, cat_max_ratio=ratio)
        return np.mean([(crop(s)["label"] == 1).any() for _ in range(40)])

    with_ratio, without = share(0.75), share(1.0)
    assert with_ratio > without + 0.3, (with_ratio, without)


def test_photometric_is_drawn_per_date_and_clipped():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (16, 16, 3)).astype(np.float32)
    s = {"t1": img, "t2": img.copy(), "label": np.zeros((16, 16), np.int64)}
    pm = PhotoMetricDistortion()
    differs = 0
    for seed in range(10):
        torch.manual_seed(seed)
        out = pm(s)
        assert out["t1"].min() >= 0 and out["t1"].max() <= 255
        differs += not np.allclose(out["t1"], out["t2"])
    assert differs >= 5


def test_photometric_non_rgb_is_brightness_contrast_only():
    rng = np.random.default_rng(0)
    img = rng.uniform(50, 200, (16, 16, 4)).astype(np.float32)
    pm = PhotoMetricDistortion(value_range=None)
    for seed in range(10):
        torch.manual_seed(seed)
        out = pm.distort(img)
        a, b = np.polyfit(img.ravel(), out.ravel(), 1)  # out = a * img + b exactly: no per-band (HSV) mixing
        np.testing.assert_allclose(out, a * img + b, atol=1e-3)
        assert 0.8 - 1e-6 <= a <= 1.2 + 1e-6


def test_hsv_round_trip():
    rgb = np.random.default_rng(1).uniform(0, 255, (20, 20, 3)).astype(np.float32)
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-3)
    hsv = rgb_to_hsv(np.array([[[255.0, 0, 0], [0, 255.0, 0], [0, 0, 255.0]]], np.float32))
    np.testing.assert_allclose(hsv[0, :, 0], [0, 120, 240], atol=1e-4)


def test_normalize_presets_and_band_mismatch():
    m, s = resolve_stats("clip")
    np.testing.assert_allclose(m, [122.7709, 116.7460, 104.0937])
    np.testing.assert_allclose(s, [68.5005, 66.6322, 70.3232])
    m, s = resolve_stats("imagenet")
    np.testing.assert_allclose(m, [123.675, 116.28, 103.53])
    np.testing.assert_allclose(s, [58.395, 57.12, 57.375])
    img = np.broadcast_to(m, (4, 4, 3)).astype(np.float32)
    out = Normalize("imagenet")({"t1": img, "t2": img + s, "name": "x"})
    np.testing.assert_allclose(out["t1"], 0, atol=1e-6)
    np.testing.assert_allclose(out["t2"], 1, atol=1e-6)
    with pytest.raises(DataError, match="x: image has 4 band.*mean/std have 3 values.*changekit stats"):
        Normalize("imagenet")({"t1": np.zeros((4, 4, 4), np.float32), "t2": np.zeros((4, 4, 4), np.float32), "name": "x"})
    with pytest.raises(ConfigError):
        resolve_stats([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError):
        resolve_stats("nope")


def test_eval_pipeline_and_augment_keys():
    s = _marked()
    out = build_transforms(train=False, mean="clip", size_divisor=None)(s)
    assert out["t1"].shape == (3, H, W)
    np.testing.assert_allclose(out["t1"][0, 0, 0].item(), (20 - 122.7709) / 68.5005, rtol=1e-5)
    out = build_transforms(train=False, mean="clip", size_divisor=32)(s)
    assert out["t1"].shape == (3, 64, 64) and out["label"][50, 0] == 255
    with pytest.raises(ConfigError, match="unknown key"):
        build_transforms(train=True, augment={"sharpen": 1})
    assert set(DEFAULT_AUGMENT) == {"rot_flip", "rotate", "hflip", "vflip", "photometric", "exchange", "rescale", "blur",
                                    "rot90", "gain", "haze"}
    off = build_transforms(train=True, augment={"rotate": False, "hflip": 0, "vflip": 0, "photometric": False},
                           mean=None, size_divisor=None)
    np.testing.assert_array_equal(off(_marked())["label"].numpy(), _marked()["label"])
    assert isinstance(off.transforms[-1], ToTensor)


def test_rotate_90_is_rot90_for_images_and_labels():
    a = np.random.default_rng(0).uniform(0, 255, (6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(RandomRotate.rotate(a, 90, False, 0), np.rot90(a, 1), atol=1e-3)
    lab = np.arange(36).reshape(6, 6)
    np.testing.assert_array_equal(RandomRotate.rotate(lab, 90, True, 255), np.rot90(lab, 1))
    r = RandomRotate.rotate(np.zeros((6, 8)), 90, True, 255)  # non-square: uncovered columns get the fill
    assert (r[:, 0] == 255).all() and (r[:, -1] == 255).all() and (r[:, 1:-1] == 0).all()


def _square_sample(n: int = 9) -> dict:
    rng = np.random.default_rng(0)
    t1 = rng.uniform(0, 255, (n, n, 3)).astype(np.float32)
    return {"t1": t1, "t2": t1[..., ::-1].copy(), "label": rng.integers(0, 2, (n, n)).astype(np.int64)}


def test_rot_flip_rotation_branch_is_mmcv_clockwise():
    s = _square_sample()
    torch.manual_seed(0)
    out = RandomRotFlip(rotate_prob=1.0, flip_prob=1.0, degree=(90, 90))(s)
    # a positive angle turns clockwise (mmcv.imrotate); a quarter turn of a square is exact for labels
    assert np.array_equal(out["label"], np.rot90(s["label"], -1))
    assert np.allclose(out["t1"], np.rot90(s["t1"], -1), atol=1e-3)
    assert np.allclose(out["t2"], np.rot90(s["t2"], -1), atol=1e-3)
    # a small angle pads the labels' corners with ignore (255), never both branches at once
    out = RandomRotFlip(rotate_prob=1.0, flip_prob=1.0, degree=(20, 20))(_square_sample(21))
    assert out["label"][0, 0] == 255 and set(np.unique(out["label"])) <= {0, 1, 255}


def test_rot_flip_flip_branch_gives_the_four_reflections_only():
    s = _square_sample()
    reflections = [np.flip(np.rot90(s["label"], k), 0) for k in range(4)]
    seen = set()
    torch.manual_seed(0)
    for _ in range(64):
        out = RandomRotFlip(rotate_prob=0.0, flip_prob=1.0)(s)
        idx = [i for i, r in enumerate(reflections) if np.array_equal(out["label"], r)]
        assert len(idx) == 1  # a rotation by k·90° and a flip: always a reflection, never the identity
        k = idx[0]
        # both dates and the label move together
        assert np.array_equal(out["t1"], np.flip(np.rot90(s["t1"], k), 0))
        assert np.array_equal(out["t2"], np.flip(np.rot90(s["t2"], k), 0))
        seen.add(k)
    assert seen == {0, 1, 2, 3}
    assert np.array_equal(RandomRotFlip(rotate_prob=0.0, flip_prob=0.0)(s)["label"], s["label"])


def test_rot_flip_probabilities_and_config_errors():
    s = _square_sample()
    torch.manual_seed(1)
    reflections = [np.flip(np.rot90(s["label"], k), 0) for k in range(4)]
    n, flipped, unchanged = 400, 0, 0
    for _ in range(n):
        out = RandomRotFlip(rotate_prob=0.5, flip_prob=0.5, degree=(-20, 20))(s)
        flipped += any(np.array_equal(out["label"], r) for r in reflections)
        unchanged += np.array_equal(out["label"], s["label"])
    # P(flip) = 0.5 · 0.5 = 0.25 (tried only when no rotation happened); unchanged: the other 0.25, plus
    # rotations by angles too small to move a nearest-neighbour label on a 9×9 grid
    assert abs(flipped / n - 0.25) < 0.07 and 0.18 < unchanged / n < 0.45
    pipeline = build_transforms(crop_size=8, augment={"rot_flip": {"rotate_prob": 0.5, "flip_prob": 0.5,
                                                                   "degree": [-20, 20]}, "rotate": False})
    assert "RandomRotFlip(rotate_prob=0.5, flip_prob=0.5, degree=(-20.0, 20.0))" in repr(pipeline)
    with pytest.raises(ConfigError, match="rot_flip: unknown key"):
        build_transforms(augment={"rot_flip": {"prob": 0.5}})
    with pytest.raises(ConfigError, match="must be in"):
        RandomRotFlip(rotate_prob=1.5)


def test_rescale_and_blur_of_the_bit_recipe():
    s = _square_sample(10)
    torch.manual_seed(0)
    out = RandomRescale((1.2, 1.2))(s)
    assert out["t1"].shape == (12, 12, 3) and out["label"].shape == (12, 12)
    assert set(np.unique(out["label"])) <= set(np.unique(s["label"]))  # nearest: no new label values
    assert np.array_equal(out["label"][::6, ::6], s["label"][::5, ::5])
    assert RandomRescale((1.0, 1.0))(s) is s
    # blur: a constant image stays constant, labels are untouched, both dates get the same radius
    flat = {"t1": np.full((9, 9, 3), 7.0, np.float32), "t2": np.full((9, 9, 3), 7.0, np.float32),
            "label": s["label"][:9, :9]}
    out = RandomBlur(1.0)(flat)
    assert np.allclose(out["t1"], 7.0) and np.array_equal(out["label"], flat["label"])
    imp = np.zeros((15, 15, 3), np.float32)
    imp[7, 7] = 255.0
    b = RandomBlur.blur(imp, 1.0)
    assert abs(b.sum() - 255.0 * 3) < 1e-2 and abs(b[7, 8, 0] / b[7, 7, 0] - np.exp(-0.5)) < 1e-5
    from PIL import Image, ImageFilter

    pil = np.asarray(Image.fromarray(s["t1"].astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0)), np.float32)
    ours = RandomBlur.blur(s["t1"].astype(np.uint8).astype(np.float32), 1.0)
    assert np.abs(pil - ours)[2:-2, 2:-2].mean() < 6.0  # PIL approximates the Gaussian with box blurs
    pipeline = build_transforms(crop_size=8, augment={"rescale": [1.0, 1.2], "blur": 1.0, "rotate": False})
    text = repr(pipeline)
    assert text.index("RandomRescale") < text.index("RandomCrop") < text.index("RandomBlur")


def test_rot90_turns_images_and_labels_together():
    from changekit.data.transforms import RandomRot90

    s = _marked()
    out = RandomRot90(prob=1.0)(s)
    k = next(k for k in (1, 2, 3) if np.array_equal(out["label"], np.rot90(s["label"], k)))
    for key in ("t1", "t2"):
        assert np.array_equal(out[key], np.rot90(s[key], k, axes=(0, 1)))


def test_gain_scales_each_date_and_band_within_its_range():
    from changekit.data.transforms import RandomGain

    s = {"t1": np.full((8, 8, 13), 1000.0, np.float32), "t2": np.full((8, 8, 13), 1000.0, np.float32),
         "label": np.zeros((8, 8), np.int64)}
    out = RandomGain(date=0.1, band=0.05)(s)
    for key in ("t1", "t2"):
        g = out[key][0, 0] / 1000.0
        assert ((g > 0.9 * 0.95 - 1e-6) & (g < 1.1 * 1.05 + 1e-6)).all() and len(np.unique(g)) > 1
        assert (out[key] == out[key][0, 0]).all()  # one gain per band over the whole image
    assert not np.array_equal(out["t1"], out["t2"]) and (out["label"] == 0).all()
    assert (s["t1"] == 1000).all()  # the input is not modified in place
    with pytest.raises(ConfigError, match="augment.gain"):
        build_transforms(train=True, augment={"gain": {"scale": 1}})


def test_haze_brightens_one_date_towards_a_cloud_and_leaves_the_label():
    from changekit.data.transforms import RandomHaze

    rng = np.random.default_rng(0)
    s = {"t1": rng.uniform(100, 1000, (64, 64, 4)).astype(np.float32),
         "t2": rng.uniform(100, 1000, (64, 64, 4)).astype(np.float32), "label": np.eye(64, dtype=np.int64)}
    torch.manual_seed(0)
    for _ in range(10):
        out = RandomHaze(prob=1.0, opacity=1.0)(s)
        changed = [k for k in ("t1", "t2") if not np.array_equal(out[k], s[k])]
        assert len(changed) <= 1 and np.array_equal(out["label"], s["label"])  # at most one date, never the label
        for k in changed:
            assert (out[k] >= s[k] - 1e-3).all()  # blended towards a cloud brighter than every pixel
            cloud_max = 3.0 * np.quantile(np.concatenate([s["t1"], s["t2"]]).reshape(-1, 4), 0.99, axis=0)
            assert (out[k] <= cloud_max + 1e-3).all()
    hazed = sum(not np.array_equal(RandomHaze(prob=1.0)(s)["t1"], s["t1"]) for _ in range(40))
    assert 5 < hazed < 35  # either date, drawn at random (a few draws cut the whole field away)
    assert all(RandomHaze(prob=0.0)(s) is s for _ in range(5))
    with pytest.raises(ConfigError, match="augment.haze.*known"):
        build_transforms(train=True, augment={"haze": {"alpha": 1}})
    with pytest.raises(ConfigError, match="opacity 2"):
        RandomHaze(opacity=2)
