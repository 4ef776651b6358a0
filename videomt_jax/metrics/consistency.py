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
With no window at all the figure is NaN (the script's `np.nanmean` of an empty list, which
prints only numpy's "Mean of empty slice"): here it stays NaN, `num_windows[n]` is 0, and a
`ShortVideoWarning` says which figure has no window and how many frames it needs. A figure that
pools only shorter windows (VC16 of videos of 9..16 frames: the 8-frame windows alone) is a
number, with the same warning saying so.

Plain bugs, corrected under `mvc_{n}_corrected`: every window is scored (starts 0 .. T - n, so
a video with T >= n frames counts), each n is averaged over its own windows only, and
ground-truth pixels equal to `ignore_index` in the window's first frame are not common pixels.
In the project's semantic maps VSPW's "others" (0) and void (255) are both `ignore_index`.

Letters: T frames, H/W size, S window starts of one video.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from videomt_jax.metrics.video_inputs import check_videos
from videomt_jax.ops.labels import IGNORE_INDEX

VC_WINDOWS = (8, 16)  # eval_vc_vspw.py line 41


class ShortVideoWarning(UserWarning):
    """A video metric got no video long enough for one of its windows (module doc)."""


def _short_video_notes(n: int, longest: int, script_windows: int, pooled_windows: int, corrected: int) -> list[str]:
    """What a reader of mvc_{n} / mvc_{n}_corrected must know when the videos are too short for n."""
    notes = []
    if not script_windows:
        got = "NaN (no window)" if not pooled_windows else f"the mean of the {pooled_windows} shorter windows alone"
        notes.append(
            f"mvc_{n} is {got}: the authors' eval_vc_vspw.py scores a video only when it has more than {n} "
            f"frames (window starts 0 .. T-{n + 1}); the longest video here has {longest}"
        )
    if not corrected:
        notes.append(f"mvc_{n}_corrected is NaN: it needs a video of at least {n} frames; the longest has {longest}")
    return notes


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
    notes: list[str] = []
    longest = max((g.shape[0] for _, g in pairs), default=0)
    for n in sizes:
        script = [_window_vcs(p, g, n, None)[:-1] for p, g in pairs if g.shape[0] > n]  # drop the last start
        corrected = [_window_vcs(p, g, n, ignore_index) for p, g in pairs]
        pooled.extend(script)
        out[f"mvc_{n}"] = _nanmean(pooled)
        out[f"mvc_{n}_corrected"] = _nanmean(corrected)
        num_windows[n] = int(sum(len(s) for s in script))
        pooled_windows = int(sum(len(s) for s in pooled))
        notes += _short_video_notes(n, longest, num_windows[n], pooled_windows, sum(len(c) for c in corrected))
    out["num_windows"] = num_windows
    if notes:
        warnings.warn("evaluate_video_consistency: " + "; ".join(notes), ShortVideoWarning, stacklevel=2)
    return out
