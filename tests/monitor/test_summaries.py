"""Summaries: golden values computed by hand, the auto rule, and refused shapes."""

from __future__ import annotations

import numpy as np
import pytest

from tinyops.errors import DataError
from tinyops.monitor.summaries import resolve_kind, row_bands, summarizer


def test_columns_are_the_input_values_named_by_the_table() -> None:
    s = summarizer("columns", (3,), modality="table", column_names=["temp", "hum", "co2"])
    assert s.feature_names == ("temp", "hum", "co2")
    out = s.summarize(np.array([[1.5, 2.0, -3.0], [0.0, 4.0, 7.25]], dtype=np.float32))
    assert out.tolist() == [[1.5, 2.0, -3.0], [0.0, 4.0, 7.25]]


def test_columns_fall_back_to_numbered_names() -> None:
    # Names that do not match the input (a reshape block) or repeat are not used.
    assert summarizer("columns", (3,), column_names=["a", "b"]).feature_names == (
        "column_00",
        "column_01",
        "column_02",
    )
    assert summarizer("columns", (2,), column_names=["a", "a"]).feature_names == (
        "column_00",
        "column_01",
    )
    s = summarizer("columns", (2, 2))
    assert s.summarize_one([[1, 2], [3, 4]]).tolist() == [1.0, 2.0, 3.0, 4.0]  # C order


def test_bands_are_the_mean_over_time_of_each_band() -> None:
    # 3 frames × 2 bands: band 0 = (1 + 3 + 8) / 3 = 4, band 1 = (2 + 4 + 0) / 3 = 2.
    x = np.array([[1, 2], [3, 4], [8, 0]], dtype=np.float32)
    s = summarizer("bands", (3, 2))
    assert s.feature_names == ("band_00", "band_01")
    assert s.summarize_one(x).tolist() == [4.0, 2.0]
    # The same with a trailing channel axis (a DS-CNN spectrogram input).
    s1 = summarizer("bands", (3, 2, 1))
    assert s1.summarize_one(x[:, :, None]).tolist() == [4.0, 2.0]


def test_channels_of_a_colour_image_are_the_mean_of_each_channel() -> None:
    # 2×2 RGB: R = (1+2+3+4)/4 = 2.5, G = (0+0+0+8)/4 = 2, B = 10 everywhere.
    img = np.zeros((2, 2, 3), dtype=np.float32)
    img[..., 0] = [[1, 2], [3, 4]]
    img[1, 1, 1] = 8
    img[..., 2] = 10
    s = summarizer("channels", (2, 2, 3))
    assert s.feature_names == ("channel_00", "channel_01", "channel_02")
    assert s.summarize_one(img).tolist() == [2.5, 2.0, 10.0]


def test_a_grayscale_digit_gives_one_feature_per_row() -> None:
    img = np.arange(64, dtype=np.float32).reshape(8, 8, 1)
    s = summarizer("channels", (8, 8, 1))
    assert s.feature_names == tuple(f"row_band_{i:02d}" for i in range(8))
    # Row r holds 8r .. 8r+7: its mean is 8r + 3.5.
    assert s.summarize_one(img).tolist() == [8 * r + 3.5 for r in range(8)]


def test_a_tall_grayscale_image_is_cut_into_eight_row_bands() -> None:
    # 10 rows into 8 bands: band k holds rows floor(10k/8) .. floor(10(k+1)/8) - 1.
    assert row_bands(10) == ((0, 1), (1, 2), (2, 3), (3, 5), (5, 6), (6, 7), (7, 8), (8, 10))
    img = np.zeros((10, 2, 1), dtype=np.float32)
    img[:, :, 0] = np.arange(10)[:, None]  # row r is all r
    img[3, 0, 0] = 5.0  # band 3 = rows 3, 4: (5 + 3 + 4 + 4) / 4 = 4
    out = summarizer("channels", (10, 2, 1)).summarize_one(img).tolist()
    assert out == [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.5]


def test_batches_summarize_each_sample_on_its_own() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4, 3)).astype(np.float32)
    s = summarizer("bands", (4, 3))
    batch = s.summarize(x)
    assert batch.shape == (5, 3)
    for i in range(5):
        assert batch[i].tolist() == s.summarize_one(x[i]).tolist()


@pytest.mark.parametrize(
    ("shape", "modality", "kind"),
    [
        ((8, 8, 1), "image", "channels"),
        ((96, 96, 3), "image", "channels"),
        ((49, 10, 1), "audio", "bands"),
        ((49, 40), "audio", "bands"),
        ((16000,), "audio", "columns"),
        ((4,), "table", "columns"),
        ((20,), "text", "columns"),
        ((49, 10), None, "bands"),
        ((8, 8, 1), None, "channels"),
        ((4,), None, "columns"),
    ],
)
def test_auto_picks_from_modality_and_shape(
    shape: tuple[int, ...], modality: str | None, kind: str
) -> None:
    assert resolve_kind("auto", shape, modality) == kind


def test_shapes_that_do_not_fit_the_kind_are_refused() -> None:
    with pytest.raises(DataError, match="'bands' needs"):
        summarizer("bands", (8, 8, 3))
    with pytest.raises(DataError, match="'channels' needs an image"):
        summarizer("channels", (10,))
    with pytest.raises(DataError, match="at most 1024 fit"):
        summarizer("columns", (96, 96, 1))
    s = summarizer("bands", (3, 2))
    with pytest.raises(DataError, match=r"inputs must have shape \(N, 3, 2\)"):
        s.summarize(np.zeros((4, 2, 3)))
