"""Every source kind read from small real files, and every way a source can be wrong."""

from __future__ import annotations

import hashlib
import wave
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter, ValidationError

from tinyops.data import (
    CsvSource,
    ImageFolderSource,
    ParquetSource,
    SklearnSource,
    SourceConfig,
    WavFolderSource,
    load_sources,
)
from tinyops.data.sources import build_vocabulary, tokenize
from tinyops.errors import DataError
from tinyops.store.atomic import sha256_file

SOURCES = TypeAdapter(list[SourceConfig])


def write_wav(path: Path, frames: np.ndarray, rate: int, width: int = 2) -> None:
    """Write PCM frames (N,) or (N, channels) of raw integer sample values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = frames.reshape(frames.shape[0], -1)
    if width == 1:
        raw = frames.astype(np.uint8).tobytes()
    elif width == 3:
        values = frames.astype("<i4").reshape(-1, 1).view(np.uint8)
        raw = values[:, :3].tobytes()
    else:
        raw = frames.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(frames.shape[1])
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(raw)


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def write_video(path: Path, intensities: list[int], fps: float = 10.0) -> None:
    """An MJPG .avi of 24x32 frames, each of one gray level."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 24))
    assert writer.isOpened()
    for level in intensities:
        writer.write(np.full((24, 32, 3), level, dtype=np.uint8))
    writer.release()


def load(tmp_path: Path, *configs: dict[str, Any]) -> Any:
    return load_sources(SOURCES.validate_python(list(configs)), tmp_path)


# --- config -----------------------------------------------------------------------------------


def test_source_kind_selects_the_model() -> None:
    parsed = SOURCES.validate_python(
        [
            {"kind": "csv", "path": "a.csv"},
            {"kind": "wav_folder", "path": "audio", "sample_rate": 16000},
            {"kind": "image_folder", "path": "img", "size": [96, 96], "color": "gray"},
        ]
    )
    assert isinstance(parsed[0], CsvSource)
    assert isinstance(parsed[1], WavFolderSource) and parsed[1].duration_s == 1.0
    assert isinstance(parsed[2], ImageFolderSource) and parsed[2].size == (96, 96)


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "hdf5", "path": "a.h5"},
        {"kind": "csv", "path": "a.csv", "label": "y"},
        {"kind": "wav_folder", "path": "audio"},
        {"kind": "image_folder", "path": "img", "color": "cmyk"},
        {"kind": "npz", "path": "a.npz", "sample_rate": 8000},
        {"kind": "text_folder", "path": "t", "vocab_size": 2},
        {"kind": "sklearn", "name": "mnist"},
    ],
)
def test_invalid_source_configs_are_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SOURCES.validate_python([config])


# --- tables -------------------------------------------------------------------------------------

CSV = "a,b,name,label\n1,2.5,x,dog\n3,,y,cat\n5,6,z,\n7,8,w,cat\n"


def test_csv_defaults_to_numeric_columns_and_sorted_label_names(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(CSV)
    ds = load(tmp_path, {"kind": "csv", "path": "t.csv", "label_column": "label"})
    assert ds.modality == "table"
    assert ds.feature_names == ("a", "b")
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(
        ds.x, np.array([[1, 2.5], [3, np.nan], [5, 6], [7, 8]], dtype=np.float32)
    )
    assert ds.classes == ("cat", "dog")
    # A missing label is an unlabeled sample.
    np.testing.assert_array_equal(ds.y, [1, 0, -1, 0])
    (fingerprint,) = ds.sources
    assert fingerprint.kind == "csv"
    assert fingerprint.location == "t.csv"
    assert fingerprint.sha256 == sha256_file(tmp_path / "t.csv")
    assert fingerprint.samples == 4


def test_csv_feature_columns_keep_the_given_order(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(CSV)
    ds = load(tmp_path, {"kind": "csv", "path": "t.csv", "feature_columns": ["b", "a"]})
    np.testing.assert_array_equal(ds.x[0], [2.5, 1.0])
    assert ds.feature_names == ("b", "a")
    # No label column: every sample is unlabeled and there are no classes.
    assert ds.classes == ()
    np.testing.assert_array_equal(ds.y, [-1, -1, -1, -1])


def test_integer_labels_with_gaps_are_named_as_integers(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("f,label\n0.5,1\n0.25,\n1.5,0\n")
    ds = load(tmp_path, {"kind": "csv", "path": "t.csv", "label_column": "label"})
    assert ds.classes == ("0", "1")
    np.testing.assert_array_equal(ds.y, [1, -1, 0])


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x1": [0.5, 1.5], "x2": [2, 3], "kind": ["b", "a"]})
    frame.to_parquet(tmp_path / "t.parquet")
    ds = load(tmp_path, {"kind": "parquet", "path": "t.parquet", "label_column": "kind"})
    assert isinstance(SOURCES.validate_python([{"kind": "parquet", "path": "p"}])[0], ParquetSource)
    np.testing.assert_array_equal(ds.x, np.array([[0.5, 2], [1.5, 3]], dtype=np.float32))
    assert ds.classes == ("a", "b")
    np.testing.assert_array_equal(ds.y, [1, 0])
    assert ds.sources[0].sha256 == sha256_file(tmp_path / "t.parquet")


def test_unknown_label_column_names_file_and_columns(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(CSV)
    with pytest.raises(DataError, match=r"t\.csv has no label column 'class'.*a, b, name, label"):
        load(tmp_path, {"kind": "csv", "path": "t.csv", "label_column": "class"})


def test_unknown_feature_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(CSV)
    with pytest.raises(DataError, match="no feature column 'c'"):
        load(tmp_path, {"kind": "csv", "path": "t.csv", "feature_columns": ["a", "c"]})


def test_text_feature_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(CSV)
    with pytest.raises(DataError, match=r"feature column 'name'.*expected numbers"):
        load(tmp_path, {"kind": "csv", "path": "t.csv", "feature_columns": ["name"]})


def test_missing_csv_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"csv file .*missing\.csv does not exist"):
        load(tmp_path, {"kind": "csv", "path": "missing.csv"})


def test_corrupt_parquet_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "t.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"cannot read parquet file .*t\.parquet"):
        load(tmp_path, {"kind": "parquet", "path": "t.parquet"})


def test_csv_without_rows_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="has no rows"):
        load(tmp_path, {"kind": "csv", "path": "t.csv"})


# --- npz --------------------------------------------------------------------------------------


def test_npz_integer_labels_with_class_names(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([1, 0, -1]))
    ds = load(tmp_path, {"kind": "npz", "path": "d.npz", "classes": ["yes", "no"]})
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))
    # Classes are sorted by name: "no" is now 0 and "yes" 1; labels follow their names.
    assert ds.classes == ("no", "yes")
    np.testing.assert_array_equal(ds.y, [0, 1, -1])


def test_npz_string_labels_and_custom_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", feats=np.ones((3, 2)), target=np.array(["b", "a", "b"]))
    ds = load(tmp_path, {"kind": "npz", "path": "d.npz", "x_key": "feats", "y_key": "target"})
    assert ds.classes == ("a", "b")
    np.testing.assert_array_equal(ds.y, [1, 0, 1])


def test_npz_images_get_a_channel_axis_and_audio_a_rate(tmp_path: Path) -> None:
    np.savez(tmp_path / "img.npz", x=np.full((2, 4, 5), 7, dtype=np.int64), y=np.array([3, 5]))
    ds = load(tmp_path, {"kind": "npz", "path": "img.npz", "modality": "image"})
    assert ds.x.shape == (2, 4, 5, 1) and ds.x.dtype == np.uint8
    assert ds.classes == ("3", "5")
    np.testing.assert_array_equal(ds.y, [0, 1])
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 80), dtype=np.float64))
    audio = load(
        tmp_path,
        {"kind": "npz", "path": "a.npz", "y_key": None, "modality": "audio", "sample_rate": 8000},
    )
    assert audio.sample_rate == 8000 and audio.x.dtype == np.float32
    np.testing.assert_array_equal(audio.y, [-1, -1])


def test_npz_missing_key_lists_the_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((2, 2)), labels=np.array([0, 1]))
    with pytest.raises(DataError, match=r"no array 'y'; its arrays are x, labels"):
        load(tmp_path, {"kind": "npz", "path": "d.npz"})


def test_npz_label_out_of_class_range_is_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((2, 2)), y=np.array([0, 2]))
    with pytest.raises(DataError, match=r"labels in \[0, 2\] but there are 2 classes"):
        load(tmp_path, {"kind": "npz", "path": "d.npz", "classes": ["a", "b"]})


def test_npz_image_values_outside_uint8_are_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.full((1, 2, 2), 300), y=np.array([0]))
    with pytest.raises(DataError, match=r"images must be uint8 0\.\.255"):
        load(tmp_path, {"kind": "npz", "path": "d.npz", "modality": "image"})


def test_corrupt_npz_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(DataError, match=r"cannot read npz file .*d\.npz"):
        load(tmp_path, {"kind": "npz", "path": "d.npz"})


# --- wav ----------------------------------------------------------------------------------------


def test_wav_sine_is_scaled_and_padded(tmp_path: Path) -> None:
    rate = 8000  # Hz
    t = np.arange(1600) / rate  # 0.2 s
    sine = np.round(16384 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # half scale, 440 Hz
    write_wav(tmp_path / "audio" / "tone" / "a.wav", sine, rate)
    ds = load(
        tmp_path, {"kind": "wav_folder", "path": "audio", "sample_rate": rate, "duration_s": 0.25}
    )
    assert ds.modality == "audio" and ds.sample_rate == rate
    assert ds.x.shape == (1, 2000) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x[0, :1600], 0.5 * np.sin(2 * np.pi * 440 * t), atol=1 / 32768)
    # 0.25 s at 8 kHz is 2000 samples: the last 400 are silence.
    np.testing.assert_array_equal(ds.x[0, 1600:], 0.0)
    assert ds.classes == ("tone",)


@pytest.mark.parametrize(
    ("width", "raw", "expected"),
    [
        # 8-bit PCM is unsigned, silence at 128, scale 1/128.
        (1, [128, 192, 0, 255], [0.0, 0.5, -1.0, 127 / 128]),
        # 16-bit signed, scale 1/32768.
        (2, [0, 16384, -32768, 32767], [0.0, 0.5, -1.0, 32767 / 32768]),
        # 24-bit signed, scale 1/2**23.
        (3, [0, 2**22, -(2**23), -(2**22)], [0.0, 0.5, -1.0, -0.5]),
        # 32-bit signed, scale 1/2**31.
        (4, [0, 2**30, -(2**31), -(2**29)], [0.0, 0.5, -1.0, -0.25]),
    ],
)
def test_wav_sample_widths_scale_to_unit_range(
    tmp_path: Path, width: int, raw: list[int], expected: list[float]
) -> None:
    write_wav(tmp_path / "a" / "x" / "s.wav", np.array(raw), 4, width)
    ds = load(tmp_path, {"kind": "wav_folder", "path": "a", "sample_rate": 4, "duration_s": 1})
    np.testing.assert_array_equal(ds.x[0], np.array(expected, dtype=np.float32))


def test_wav_stereo_is_averaged_and_long_clips_truncated(tmp_path: Path) -> None:
    stereo = np.array([[16384, 0], [-16384, -16384], [8192, 8192], [0, 0], [100, 100]])
    write_wav(tmp_path / "a" / "x" / "s.wav", stereo, 4)
    ds = load(tmp_path, {"kind": "wav_folder", "path": "a", "sample_rate": 4, "duration_s": 0.75})
    np.testing.assert_array_equal(ds.x[0], np.array([0.25, -0.5, 0.25], dtype=np.float32))


def test_wav_folders_are_labels_read_in_sorted_order(tmp_path: Path) -> None:
    for label, name, value in [("yes", "b.wav", 3), ("no", "z.wav", 2), ("yes", "a.wav", 1)]:
        write_wav(tmp_path / "a" / label / name, np.array([value * 1024]), 4)
    (tmp_path / "a" / "yes" / "notes.txt").write_text("not audio")
    (tmp_path / "a" / ".cache").mkdir()
    ds = load(tmp_path, {"kind": "wav_folder", "path": "a", "sample_rate": 4, "duration_s": 0.25})
    assert ds.classes == ("no", "yes")
    np.testing.assert_array_equal(ds.y, [0, 1, 1])
    np.testing.assert_array_equal(ds.x[:, 0] * 32768 / 1024, [2, 1, 3])
    # The folder fingerprint is over sorted relative paths and the file hashes.
    expected = hashlib.sha256()
    for relative in ["no/z.wav", "yes/a.wav", "yes/b.wav"]:
        expected.update(f"{relative}\0{sha256_file(tmp_path / 'a' / relative)}\n".encode())
    assert ds.sources[0].sha256 == expected.hexdigest()
    assert ds.sources[0].samples == 3


def test_folder_fingerprint_changes_with_a_file(tmp_path: Path) -> None:
    config = {"kind": "wav_folder", "path": "a", "sample_rate": 4, "duration_s": 0.25}
    write_wav(tmp_path / "a" / "x" / "s.wav", np.array([1]), 4)
    before = load(tmp_path, config).sources[0].sha256
    assert load(tmp_path, config).sources[0].sha256 == before
    write_wav(tmp_path / "a" / "x" / "s.wav", np.array([2]), 4)
    assert load(tmp_path, config).sources[0].sha256 != before


def test_wav_with_another_sample_rate_is_named(tmp_path: Path) -> None:
    write_wav(tmp_path / "a" / "x" / "ok.wav", np.zeros(16), 16000)
    write_wav(tmp_path / "a" / "x" / "slow.wav", np.zeros(8), 8000)
    with pytest.raises(DataError, match=r"slow\.wav is sampled at 8000 Hz; expected 16000 Hz"):
        load(tmp_path, {"kind": "wav_folder", "path": "a", "sample_rate": 16000})


def test_corrupt_wav_is_named(tmp_path: Path) -> None:
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "a" / "x" / "bad.wav").write_bytes(b"RIFF\x00\x00not a wave file at all")
    with pytest.raises(DataError, match=r"bad\.wav is not a readable PCM WAV file"):
        load(tmp_path, {"kind": "wav_folder", "path": "a", "sample_rate": 16000})


def test_truncated_wav_is_named(tmp_path: Path) -> None:
    write_wav(tmp_path / "a" / "x" / "cut.wav", np.arange(100), 16000)
    data = (tmp_path / "a" / "x" / "cut.wav").read_bytes()
    (tmp_path / "a" / "x" / "cut.wav").write_bytes(data[:-50])
    with pytest.raises(DataError, match=r"cut\.wav is truncated: .* declares 100 frames"):
        load(tmp_path, {"kind": "wav_folder", "path": "a", "sample_rate": 16000})


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"wav_folder folder .*nowhere does not exist"):
        load(tmp_path, {"kind": "wav_folder", "path": "nowhere", "sample_rate": 16000})


def test_folder_without_label_folders_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    write_wav(tmp_path / "a" / "loose.wav", np.zeros(4), 16000)
    with pytest.raises(DataError, match="has no sub-folders; expected one sub-folder per label"):
        load(tmp_path, {"kind": "wav_folder", "path": "a", "sample_rate": 16000})


def test_empty_label_folder_is_an_error(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "cat" / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "img" / "dog").mkdir()
    with pytest.raises(DataError, match=r"label folder .*dog has no .png/.jpg/.jpeg/.bmp files"):
        load(tmp_path, {"kind": "image_folder", "path": "img"})


# --- images -------------------------------------------------------------------------------------


def test_rgb_images_are_converted_from_opencv_bgr(tmp_path: Path) -> None:
    bgr = np.zeros((2, 3, 3), dtype=np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # blue, green, red
    write_image(tmp_path / "img" / "a" / "x.png", bgr)
    write_image(tmp_path / "img" / "b" / "y.bmp", bgr)
    ds = load(tmp_path, {"kind": "image_folder", "path": "img"})
    assert ds.modality == "image" and ds.x.shape == (2, 2, 3, 3) and ds.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.x[0, 0, 0], [30, 20, 10])
    assert ds.classes == ("a", "b")
    np.testing.assert_array_equal(ds.y, [0, 1])


def test_gray_images_are_resized_by_area_averaging(tmp_path: Path) -> None:
    gray = np.array(
        [[0, 4, 10, 10], [8, 12, 10, 10], [1, 1, 200, 100], [1, 1, 0, 100]], dtype=np.uint8
    )
    write_image(tmp_path / "img" / "a" / "x.png", gray)
    ds = load(tmp_path, {"kind": "image_folder", "path": "img", "size": [2, 2], "color": "gray"})
    assert ds.x.shape == (1, 2, 2, 1)
    # Each output pixel is the mean of a 2x2 block: (0+4+8+12)/4 = 6, (200+100+0+100)/4 = 100.
    np.testing.assert_array_equal(ds.x[0, :, :, 0], [[6, 10], [1, 100]])


def test_images_of_different_sizes_need_a_size(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a" / "x.png", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "img" / "a" / "y.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(DataError, match=r"y\.png is 6x4 pixels but .*x\.png is 4x4.*size"):
        load(tmp_path, {"kind": "image_folder", "path": "img", "color": "gray"})
    ds = load(tmp_path, {"kind": "image_folder", "path": "img", "color": "gray", "size": [2, 3]})
    assert ds.x.shape == (2, 2, 3, 1)


def test_corrupt_png_is_named(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a" / "good.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "img" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"bad\.png is not a readable image"):
        load(tmp_path, {"kind": "image_folder", "path": "img"})


# --- video --------------------------------------------------------------------------------------


def test_video_frames_are_sampled_by_timestamp(tmp_path: Path) -> None:
    # 2 s at 10 fps: frame i has gray level 10·i. Sampling at 2 fps takes the frames at
    # 0, 0.5, 1.0 and 1.5 s, that is frames 0, 5, 10 and 15.
    write_video(tmp_path / "vid" / "wave" / "a.avi", [10 * i for i in range(20)])
    write_video(tmp_path / "vid" / "idle" / "b.avi", [200] * 20)
    ds = load(
        tmp_path,
        {"kind": "video_folder", "path": "vid", "fps": 2, "size": [12, 16], "color": "gray"},
    )
    assert ds.modality == "image"
    assert ds.x.shape == (8, 12, 16, 1)
    assert ds.classes == ("idle", "wave")
    np.testing.assert_array_equal(ds.y, [0, 0, 0, 0, 1, 1, 1, 1])
    # MJPG is lossy: levels come back within a few units.
    levels = ds.x.reshape(8, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [200, 200, 200, 200, 0, 50, 100, 150], atol=3)
    assert ds.sources[0].samples == 8


def test_video_rgb_keeps_frame_size(tmp_path: Path) -> None:
    write_video(tmp_path / "vid" / "a" / "x.avi", [100] * 10)
    ds = load(tmp_path, {"kind": "video_folder", "path": "vid", "fps": 5})
    # 1 s at 10 fps sampled at 5 fps: frames at 0, 0.2, 0.4, 0.6 and 0.8 s.
    assert ds.x.shape == (5, 24, 32, 3)


def test_corrupt_video_is_named(tmp_path: Path) -> None:
    (tmp_path / "vid" / "a").mkdir(parents=True)
    (tmp_path / "vid" / "a" / "bad.avi").write_bytes(b"RIFF garbage" * 20)
    with pytest.raises(DataError, match=r"bad\.avi is not a readable video"):
        load(tmp_path, {"kind": "video_folder", "path": "vid", "fps": 2})


# --- text ---------------------------------------------------------------------------------------


def test_tokenize_lowercases_and_splits_on_non_alphanumerics() -> None:
    assert tokenize("Turn ON the light_2, now!  Café-au-lait") == [
        "turn",
        "on",
        "the",
        "light",
        "2",
        "now",
        "café",
        "au",
        "lait",
    ]


def test_vocabulary_ranks_by_count_then_alphabetically() -> None:
    vocabulary = build_vocabulary([["zeta", "beta"], ["alpha", "beta"], ["gamma"]], vocab_size=4)
    # Counts beta 2, then zeta, alpha and gamma 1 each: two slots after pad and OOV, and
    # the tie goes to "alpha" although "zeta" was seen first.
    assert vocabulary == ("<pad>", "<oov>", "beta", "alpha")


def test_text_folder_lines_become_padded_token_ids(tmp_path: Path) -> None:
    (tmp_path / "txt" / "on").mkdir(parents=True)
    (tmp_path / "txt" / "off").mkdir(parents=True)
    (tmp_path / "txt" / "on" / "a.txt").write_text("Lights on\n\n  \nturn lights ON now\n")
    (tmp_path / "txt" / "off" / "b.txt").write_text("lights off, please\n")
    ds = load(tmp_path, {"kind": "text_folder", "path": "txt", "max_length": 3, "vocab_size": 5})
    # Counts: lights 3, on 2, then now/off/please/turn 1 each -> "now" wins the last slot.
    assert ds.feature_names == ("<pad>", "<oov>", "lights", "on", "now")
    assert ds.modality == "text" and ds.x.dtype == np.int32
    assert ds.classes == ("off", "on")
    # Samples in folder order (off, on), lines in file order; cut or padded to 3 ids.
    np.testing.assert_array_equal(ds.x, [[2, 1, 1], [2, 3, 0], [1, 2, 3]])
    np.testing.assert_array_equal(ds.y, [0, 1, 1])


def test_text_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "txt" / "a").mkdir(parents=True)
    (tmp_path / "txt" / "a" / "latin.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match=r"latin\.txt is not UTF-8"):
        load(tmp_path, {"kind": "text_folder", "path": "txt"})


# --- scikit-learn -------------------------------------------------------------------------------


def test_sklearn_digits_are_small_gray_images() -> None:
    ds = load_sources([SklearnSource(name="digits")], Path("."))
    assert ds.modality == "image"
    assert ds.x.shape == (1797, 8, 8, 1) and ds.x.dtype == np.uint8
    assert ds.x.max() == 16
    assert ds.classes == tuple(str(d) for d in range(10))
    assert ds.sources[0].location == "sklearn:digits" and ds.sources[0].samples == 1797


def test_sklearn_tables_keep_feature_and_class_names() -> None:
    ds = load_sources([SklearnSource(name="iris")], Path("."))
    assert ds.x.shape == (150, 4) and ds.x.dtype == np.float32
    assert ds.feature_names is not None and ds.feature_names[0] == "sepal length (cm)"
    assert ds.classes == ("setosa", "versicolor", "virginica")
    np.testing.assert_array_equal(np.bincount(ds.y), [50, 50, 50])
    # breast_cancer lists "malignant" (0) before "benign" (1); names are kept with samples.
    cancer = load_sources([SklearnSource(name="breast_cancer")], Path("."))
    assert cancer.classes == ("benign", "malignant")
    assert np.bincount(cancer.y).tolist() == [357, 212]


# --- several sources ------------------------------------------------------------------------------


def test_sources_are_concatenated_with_merged_classes(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("f,label\n1,zebra\n2,ant\n")
    (tmp_path / "two.csv").write_text("f,label\n3,moth\n4,zebra\n")
    ds = load(
        tmp_path,
        {"kind": "csv", "path": "one.csv", "label_column": "label"},
        {"kind": "csv", "path": "two.csv", "label_column": "label"},
    )
    assert ds.classes == ("ant", "moth", "zebra")
    np.testing.assert_array_equal(ds.x[:, 0], [1, 2, 3, 4])
    np.testing.assert_array_equal(ds.y, [2, 0, 1, 2])
    assert [s.location for s in ds.sources] == ["one.csv", "two.csv"]


def test_sources_of_different_modalities_cannot_be_mixed(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match=r"holds image data but 't\.csv' holds table"):
        load_sources([CsvSource(path=Path("t.csv")), SklearnSource(name="digits")], tmp_path)


def test_tables_with_different_columns_cannot_be_mixed(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("a,b\n1,2\n")
    (tmp_path / "two.csv").write_text("b,a\n1,2\n")
    with pytest.raises(DataError, match=r"features \[b, a\].*has \[a, b\]"):
        load(tmp_path, {"kind": "csv", "path": "one.csv"}, {"kind": "csv", "path": "two.csv"})


def test_no_sources_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data sources"):
        load_sources([], tmp_path)
