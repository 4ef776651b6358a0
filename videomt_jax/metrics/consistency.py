"""Video consistency (mVC_n) of semantic video maps, as the authors score VSPW.

Source: tue-mps/videomt `utils/eval_vc_vspw.py` (the VSPW `get_common` procedure). For a window
of n frames starting at frame i, the ground-truth-common pixels are those whose ground-truth
label is the same in all n frames; VC of the window = (pixels that are ground-truth-common AND
whose predicted label is the same in all n frames) / (ground-truth-common pixels). The
prediction only has to be constant, not right (line 24: the two masks are multiplied, labels
are never compared with each other). mVC_n = mean of the window VCs over all windows of all
videos (window-weighted: a long video weighs more than a short one), NaN windows skipped.

What the script does, and the `mvc_{n}` keys reproduce (line numbers: `utils/eval_vc_vspw.py`):
- windows start at 0 .. T - n - 1 (line 15: `range(len - n)`): the last window, starting at
  T - n, is never scored; a video with T <= n frames is skipped (line 50);
- ignored pixels are not special: ground-truth ignore (255; in raw VSPW masks also 0, "others")
  that stays ignore over the window counts as common (lines 20-21); `ignore_index` plays no part;
- a window with no common pixel gives 0/0 = NaN (line 26), dropped by `np.nanmean` (line 67);
- the list of window VCs is created once, before the loop over n (line 40), and extended for
  each n (line 64): the reported VC16 is the mean over the 8-frame AND the 16-frame windows.
  In general the figure for the k-th entry of `windows` pools the windows of entries 1..k.
With no window at all the figure is NaN (the script's `np.nanmean` of an empty list).

Plain bugs, corrected under `mvc_{n}_corrected`: every window is scored (starts 0 .. T - n, so
a video with T >= n frames counts), each n is averaged over its own windows only, and
ground-truth pixels equal to `ignore_index` in the window's first frame are not common pixels.
In the project's semantic maps VSPW's "others" (0) and void (255) are both `ignore_index`.

Letters: T frames, H/W size, S window starts of one video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from videomt_jax.metrics.video_inputs import check_videos
from videomt_jax.ops.labels import IGNORE_INDEX

VC_WINDOWS = (8, 16)  # eval_vc_vspw.py line 41


def _constant_from(maps: np.ndarray, n: int) -> np.ndarray:
    """maps [T, H, W] -> [T - n + 1, H, W]: the pixel keeps one value over frames s .. s + n - 1."""
    changes = np.concatenate([np.zeros((1,) + maps.shape[1:], np.int32), np.cumsum(maps[1:] != maps[:-1], axis=0)])
    return changes[n - 1 :] == changes[: maps.shape[0] - n + 1]  # no change between s and s + n - 1


def _window_vcs(pred: np.ndarray, gt: np.ndarray, n: int, ignore_index: int | None) -> np.ndarray:
    """VC of every window of n frames (all starts 0 .. T - n): [S] float, NaN where nothing is common."""
    if gt.shape[0] < n:
        return np.zeros(0)
    common = _constant_from(gt, n)  # [S, H, W]
    if ignore_index is not None:
        common &= gt[: gt.shape[0] - n + 1] != ignore_index
    steady = common & _constant_from(pred, n)
    kept, total = steady.sum(axis=(1, 2)), common.sum(axis=(1, 2))
    return np.divide(kept, total, out=np.full(total.shape, np.nan), where=total > 0)


def _nanmean(values: list[np.ndarray]) -> float:
    v = np.concatenate(values) if values else np.zeros(0)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def evaluate_video_consistency(
    videos: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    windows: Sequence[int] = VC_WINDOWS,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """mVC of semantic videos as the authors' eval_vc_vspw.py computes it (see the module doc).

    videos: list of (pred, gt) integer class maps [T, H, W]; windows: frame counts n >= 2, in the
    order the script runs them (its pooling depends on it).
    Returns {"mvc_8", "mvc_16"} (the script's figures), {"mvc_8_corrected", "mvc_16_corrected"}
    and "num_windows": {n: windows the script scores}, fractions in [0, 1], for windows=(8, 16).
    """
    pairs = check_videos(videos, "evaluate_video_consistency")
    sizes = [int(n) for n in windows]
    if not sizes or min(sizes) < 2 or len(set(sizes)) != len(sizes):
        raise ValueError(f"windows must be distinct frame counts >= 2, got {tuple(windows)}")
    out: dict[str, Any] = {}
    pooled: list[np.ndarray] = []  # the script's list, shared by all window sizes
    num_windows = {}
    for n in sizes:
        script = [_window_vcs(p, g, n, None)[:-1] for p, g in pairs if g.shape[0] > n]  # drop the last start
        corrected = [_window_vcs(p, g, n, ignore_index) for p, g in pairs]
        pooled.extend(script)
        out[f"mvc_{n}"] = _nanmean(pooled)
        out[f"mvc_{n}_corrected"] = _nanmean(corrected)
        num_windows[n] = int(sum(len(s) for s in script))
    out["num_windows"] = num_windows
    return out
