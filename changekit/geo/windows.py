"""The window grid of a scene and the blending weights of overlapping windows.

A scene of ``H x W`` pixels is covered by windows of ``window`` pixels whose starts are ``stride = window -
overlap`` apart; the last start on each axis is pulled back so that the last window ends on the scene edge
(so every window is full size unless the scene is smaller than one window). Windows are grouped in
*strips*: the windows sharing one row offset. Strips are the unit of work, of resume and of sharding.

Blending is separable. Along one axis a window's weight is 1 in its interior and falls off smoothly
(``sin^2``, a half Hann window) over the ``overlap`` pixels next to each edge that lies *inside* the scene;
an edge on the scene border keeps weight 1 (the floor: every scene pixel has a weight > 0). Because the
weights are separable, the normalised weight of window ``(i, j)`` at ``(y, x)`` factorises as
``ny_i(y) * nx_j(x)`` with ``ny_i = wy_i / sum_k wy_k``; the blended probability is
``sum_i ny_i(y) * P_i(y, x)`` where ``P_i = sum_j nx_j(x) * p_ij`` is strip ``i`` blended horizontally.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from changekit.errors import ConfigError

__all__ = ["Grid", "axis_starts", "axis_weights"]


def axis_starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: ``0, stride, 2*stride, ...``, the last pulled back to end on the edge."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def axis_weights(starts: list[int], size: int, length: int, overlap: int) -> np.ndarray:
    """Normalised 1-D weights, shape ``(len(starts), size)``: row k is ``w_k / sum_l w_l`` on window k's span."""
    raw = np.ones((len(starts), size), dtype=np.float64)
    if overlap > 0:
        d = np.arange(overlap, dtype=np.float64)
        ramp = np.sin(0.5 * np.pi * (d + 0.5) / overlap) ** 2  # > 0 everywhere, rises to ~1 over `overlap` px
        n = min(overlap, size)
        for k, s in enumerate(starts):
            if s > 0:  # left/top edge inside the scene
                raw[k, :n] = np.minimum(raw[k, :n], ramp[:n])
            if s + size < length:  # right/bottom edge inside the scene
                raw[k, size - n:] = np.minimum(raw[k, size - n:], ramp[:n][::-1])
    total = np.zeros(length, dtype=np.float64)
    for k, s in enumerate(starts):
        total[s:s + size] += raw[k]
    norm = np.empty_like(raw)
    for k, s in enumerate(starts):
        norm[k] = raw[k] / total[s:s + size]
    return norm.astype(np.float32)


@dataclass(frozen=True)
class Grid:
    """Windows over an ``height x width`` scene. ``win_h``/``win_w`` are the (possibly clipped) window sizes."""

    height: int
    width: int
    window: int
    overlap: int

    def __post_init__(self) -> None:
        if self.window < 16:
            raise ConfigError(f"--window {self.window}: use at least 16 pixels (512 is typical)")
        if not 0 <= self.overlap < self.window:
            raise ConfigError(f"--overlap {self.overlap}: must be >= 0 and smaller than --window {self.window}")

    @property
    def stride(self) -> int:
        return self.window - self.overlap

    @property
    def win_h(self) -> int:
        return min(self.window, self.height)

    @property
    def win_w(self) -> int:
        return min(self.window, self.width)

    @property
    def rows(self) -> list[int]:
        return axis_starts(self.height, self.window, self.stride)

    @property
    def cols(self) -> list[int]:
        return axis_starts(self.width, self.window, self.stride)

    @property
    def n_strips(self) -> int:
        return len(self.rows)

    @property
    def n_windows(self) -> int:
        return len(self.rows) * len(self.cols)

    def weights_y(self) -> np.ndarray:
        return axis_weights(self.rows, self.win_h, self.height, self.overlap)

    def weights_x(self) -> np.ndarray:
        return axis_weights(self.cols, self.win_w, self.width, self.overlap)

    def strips_covering(self, y0: int, y1: int) -> list[int]:
        """Indices (ascending) of strips that overlap rows ``[y0, y1)``."""
        return [i for i, s in enumerate(self.rows) if s < y1 and s + self.win_h > y0]
