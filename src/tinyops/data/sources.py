"""Read data sources into a `Dataset`.

Each source kind (see `tinyops.data.config`) has one reader here. Every reader:

- reads files in sorted order, so the same folder always gives the same arrays;
- turns what it reads into the array conventions of `tinyops.data.dataset`;
- fingerprints what it read (sha256 of the file, or of a folder's sorted relative paths
  and file hashes) so a snapshot can record exactly which bytes it came from;
- reports a missing path, an unreadable or corrupt file, an empty folder or a wrong
  column as a `DataError` naming the file and what was expected.

Folder sources take their class names from sub-folder names (`<path>/<label>/<file>`);
sub-folders and files whose names start with a dot are ignored.
"""

from __future__ import annotations

import hashlib
import io
import re
import wave
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from tinyops.data.config import (
    Color,
    CsvSource,
    ImageFolderSource,
    NpzSource,
    ParquetSource,
    SklearnSource,
    SourceConfig,
    TextFolderSource,
    VideoFolderSource,
    WavFolderSource,
)
from tinyops.data.dataset import (
    SAMPLE_DTYPES,
    UNLABELED,
    Dataset,
    SourceFingerprint,
    concatenate,
)
from tinyops.errors import DataError
from tinyops.store.atomic import sha256_bytes, sha256_file

if TYPE_CHECKING:
    import pandas as pd

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv")

# Token ids reserved in every text vocabulary, and their names in `feature_names`.
PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"

# A sampled frame is taken if its timestamp is within this many seconds of the target
# time: decoders report timestamps such as 0.30000000000000004 s for 0.3 s.
_TIMESTAMP_TOLERANCE_S = 1e-6


def load_sources(configs: Sequence[SourceConfig], base_dir: Path) -> Dataset:
    """Read every source and concatenate them (classes merged by name, sorted)."""
    if not configs:
        raise DataError("no data sources configured: expected at least one under data.sources")
    return concatenate([load_source(config, base_dir) for config in configs])


def load_source(config: SourceConfig, base_dir: Path) -> Dataset:
    """Read one source; relative paths are taken from `base_dir` (the project folder)."""
    if isinstance(config, CsvSource | ParquetSource):
        return _load_table(config, base_dir)
    if isinstance(config, NpzSource):
        return _load_npz(config, base_dir)
    if isinstance(config, WavFolderSource):
        return _load_wav_folder(config, base_dir)
    if isinstance(config, ImageFolderSource):
        return _load_image_folder(config, base_dir)
    if isinstance(config, VideoFolderSource):
        return _load_video_folder(config, base_dir)
    if isinstance(config, TextFolderSource):
        return _load_text_folder(config, base_dir)
    return _load_sklearn(config)


# --- tables -------------------------------------------------------------------------------


def _load_table(config: CsvSource | ParquetSource, base_dir: Path) -> Dataset:
    import pandas as pd

    path = _existing_file(base_dir, config.path, config.kind)
    try:
        if isinstance(config, CsvSource):
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path, engine="pyarrow")
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {config.kind} file {path}: {exc}") from exc
    if len(frame) == 0:
        raise DataError(f"{config.kind} file {path} has no rows; expected at least one sample")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if config.label_column is not None and config.label_column not in columns:
        raise DataError(
            f"{path} has no label column {config.label_column!r}; its columns are "
            f"{', '.join(columns)}"
        )
    if config.feature_columns is None:
        features = [
            c
            for c in columns
            if c != config.label_column and pd.api.types.is_numeric_dtype(frame[c])
        ]
        if not features:
            raise DataError(
                f"{path} has no numeric column besides the label; expected at least one "
                "feature column"
            )
    else:
        features = list(config.feature_columns)
        for column in features:
            if column not in columns:
                raise DataError(
                    f"{path} has no feature column {column!r}; its columns are {', '.join(columns)}"
                )
            if not pd.api.types.is_numeric_dtype(frame[column]):
                raise DataError(
                    f"feature column {column!r} of {path} holds {frame[column].dtype} "
                    "values; expected numbers"
                )
    x = frame[features].to_numpy(dtype=np.float32, na_value=np.nan)
    if config.label_column is None:
        y = np.full(len(frame), UNLABELED, dtype=np.int64)
        classes: tuple[str, ...] = ()
    else:
        y, classes = _encode_labels(frame[config.label_column])
    return Dataset(
        x=x,
        y=y,
        classes=classes,
        modality="table",
        feature_names=tuple(features),
        sources=(_file_fingerprint(config.kind, config.path, path, len(frame)),),
    )


def _encode_labels(values: pd.Series) -> tuple[NDArray[np.int64], tuple[str, ...]]:
    """Class indices for a label column: names are the values as text, sorted; NaN = -1."""
    import pandas as pd

    missing = values.isna().to_numpy()
    present = values[~missing]
    if pd.api.types.is_float_dtype(present) and bool((present == present.round()).all()):
        # A label column with gaps is read as float: 3.0 should still be class "3".
        present = present.astype(np.int64)
    names = np.array([str(v) for v in present], dtype=str)
    classes, inverse = np.unique(names, return_inverse=True)
    y = np.full(len(values), UNLABELED, dtype=np.int64)
    y[~missing] = inverse
    return y, tuple(str(c) for c in classes)


# --- npz ----------------------------------------------------------------------------------


def _load_npz(config: NpzSource, base_dir: Path) -> Dataset:
    path = _existing_file(base_dir, config.path, config.kind)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            for key in (config.x_key, config.y_key):
                if key is not None and key not in keys:
                    raise DataError(
                        f"{path} has no array {key!r}; its arrays are {', '.join(keys)}"
                    )
            x = np.asarray(archive[config.x_key])
            raw_y = None if config.y_key is None else np.asarray(archive[config.y_key])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read npz file {path}: {exc}") from exc
    where = f"{path}[{config.x_key!r}]"
    x = _as_modality(x, config.modality, where)
    if raw_y is None:
        y = np.full(x.shape[0], UNLABELED, dtype=np.int64)
        classes: tuple[str, ...] = tuple(config.classes or ())
    else:
        y, classes = _npz_labels(raw_y, config.classes, f"{path}[{config.y_key!r}]")
    if y.shape[0] != x.shape[0]:
        raise DataError(
            f"{path}: {config.x_key!r} has {x.shape[0]} samples but {config.y_key!r} has "
            f"{y.shape[0]} labels; expected one label per sample"
        )
    return Dataset(
        x=x,
        y=y,
        classes=classes,
        modality=config.modality,
        sample_rate=config.sample_rate,
        sources=(_file_fingerprint(config.kind, config.path, path, x.shape[0]),),
    )


def _as_modality(x: NDArray[Any], modality: str, where: str) -> NDArray[Any]:
    """Check an array against a modality's conventions and cast it to its dtype."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where} holds {x.dtype} values; expected numbers")
    if modality == "image":
        if x.ndim == 3:
            x = x[..., np.newaxis]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise DataError(
                f"{where} has shape {x.shape}; images must be (N, H, W) or (N, H, W, C) "
                "with C = 1 or 3"
            )
        if x.dtype != np.uint8 and (
            x.dtype.kind == "f" or (x.size and (x.min() < 0 or x.max() > 255))
        ):
            raise DataError(f"{where} holds {x.dtype} values; images must be uint8 0..255")
    elif modality == "text":
        if x.ndim != 2 or x.dtype.kind not in "iu":
            raise DataError(
                f"{where} has {x.dtype} shape {x.shape}; text must be integer token ids (N, L)"
            )
        if x.size and (x.min() < 0 or x.max() > np.iinfo(np.int32).max):
            raise DataError(f"{where} has token ids outside 0..2**31-1")
    else:
        if x.ndim != 2:
            raise DataError(f"{where} has shape {x.shape}; {modality} samples must be (N, F)")
        if modality == "audio" and x.dtype.kind != "f":
            raise DataError(f"{where} holds {x.dtype}; audio must be float values in [-1, 1]")
    return np.ascontiguousarray(x, dtype=SAMPLE_DTYPES[modality])


def _npz_labels(
    raw: NDArray[Any], names: list[str] | None, where: str
) -> tuple[NDArray[np.int64], tuple[str, ...]]:
    if raw.ndim != 1:
        raise DataError(f"{where} has shape {raw.shape}; labels must be one-dimensional")
    if raw.dtype.kind in "US":
        text = raw.astype(str)
        if names is None:
            classes, inverse = np.unique(text, return_inverse=True)
            return inverse.astype(np.int64), tuple(str(c) for c in classes)
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(text.tolist()) - set(index))
        if unknown:
            raise DataError(f"{where} has labels {unknown} that are not in classes {names}")
        return np.array([index[t] for t in text], dtype=np.int64), tuple(names)
    if raw.dtype.kind == "f" and np.array_equal(raw, np.round(raw)):
        raw = raw.astype(np.int64)
    if raw.dtype.kind not in "iub":
        raise DataError(
            f"{where} holds {raw.dtype} values; labels must be integer class indices "
            "(-1 = unlabeled) or strings"
        )
    labels = raw.astype(np.int64)
    if names is not None:
        if labels.size and (labels.min() < UNLABELED or labels.max() >= len(names)):
            raise DataError(
                f"{where} has labels in [{labels.min()}, {labels.max()}] but there are "
                f"{len(names)} classes; expected -1 (unlabeled) to {len(names) - 1}"
            )
        return labels, tuple(names)
    values = np.unique(labels[labels >= 0])
    y = np.full(labels.shape, UNLABELED, dtype=np.int64)
    labelled = labels >= 0
    y[labelled] = np.searchsorted(values, labels[labelled])
    return y, tuple(str(v) for v in values)


# --- folders: shared --------------------------------------------------------------------


class _FolderDigest:
    """sha256 over a folder's files: their sorted relative paths and each file's sha256."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._entries: list[tuple[str, str]] = []

    def add(self, path: Path, file_sha256: str) -> None:
        self._entries.append((path.relative_to(self._root).as_posix(), file_sha256))

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for relative, file_hash in sorted(self._entries):
            h.update(f"{relative}\0{file_hash}\n".encode())
        return h.hexdigest()


def _label_folders(
    root: Path, extensions: tuple[str, ...], kind: str
) -> list[tuple[str, list[Path]]]:
    """(label, sorted files) for every sub-folder of `root`, in sorted label order."""
    if not root.exists():
        raise DataError(f"{kind} folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{kind} path {root} is a file; expected a folder of label sub-folders")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(
            f"{kind} folder {root} has no sub-folders; expected one sub-folder per label "
            f"holding {'/'.join(extensions)} files"
        )
    result = []
    for folder in folders:
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
        )
        if not files:
            raise DataError(
                f"label folder {folder} has no {'/'.join(extensions)} files; expected at "
                "least one (or remove the folder)"
            )
        result.append((folder.name, files))
    return result


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _to_color(image: NDArray[np.uint8], color: Color, path: Path) -> NDArray[np.uint8]:
    """An OpenCV BGR (or gray) image as gray (H, W, 1) or RGB (H, W, 3)."""
    import cv2

    if color == "gray":
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return image[..., np.newaxis]
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    if image.shape[2] != 3:
        raise DataError(f"{path} has {image.shape[2]} channels; expected 1 or 3")
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _resize(image: NDArray[np.uint8], size: tuple[int, int] | None) -> NDArray[np.uint8]:
    import cv2

    if size is None or image.shape[:2] == size:
        return image
    height, width = size
    resized = np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    # OpenCV drops a single channel axis when resizing; put it back.
    return resized.reshape(height, width, image.shape[2])


def _stack_frames(
    frames: list[NDArray[np.uint8]], origins: list[Path], kind: str
) -> NDArray[np.uint8]:
    reference = frames[0].shape
    for frame, origin in zip(frames, origins, strict=True):
        if frame.shape != reference:
            raise DataError(
                f"{origin} is {frame.shape[1]}x{frame.shape[0]} pixels but {origins[0]} is "
                f"{reference[1]}x{reference[0]}; set `size: [height, width]` on the "
                f"{kind} source to resize them all"
            )
    return np.stack(frames)


# --- wav ----------------------------------------------------------------------------------


def _load_wav_folder(config: WavFolderSource, base_dir: Path) -> Dataset:
    root = base_dir / config.path
    folders = _label_folders(root, (".wav",), config.kind)
    length = round(config.sample_rate * config.duration_s)  # samples per clip
    digest = _FolderDigest(root)
    clips: list[NDArray[np.float32]] = []
    labels: list[int] = []
    for label_index, (_, files) in enumerate(folders):
        for path in files:
            data = _read_bytes(path)
            digest.add(path, sha256_bytes(data))
            clips.append(_fit_length(_decode_wav(data, path, config.sample_rate), length))
            labels.append(label_index)
    return Dataset(
        x=np.stack(clips),
        y=np.array(labels, dtype=np.int64),
        classes=tuple(label for label, _ in folders),
        modality="audio",
        sample_rate=config.sample_rate,
        sources=(_fingerprint(config.kind, config.path, digest.hexdigest(), len(clips)),),
    )


def _decode_wav(data: bytes, path: Path, sample_rate: int) -> NDArray[np.float32]:
    """PCM WAV bytes as mono float32 in [-1, 1]: channels are averaged."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            rate = reader.getframerate()
            channels = reader.getnchannels()
            width = reader.getsampwidth()  # bytes per sample
            declared = reader.getnframes()
            raw = reader.readframes(declared)
    except (wave.Error, EOFError) as exc:
        raise DataError(f"{path} is not a readable PCM WAV file: {exc}") from exc
    if rate != sample_rate:
        raise DataError(
            f"{path} is sampled at {rate} Hz; expected {sample_rate} Hz (resample it, or "
            "change sample_rate of the source)"
        )
    frames = len(raw) // (width * channels)
    if frames < declared:
        raise DataError(
            f"{path} is truncated: its header declares {declared} frames but it holds {frames}"
        )
    pcm = np.frombuffer(raw[: frames * width * channels], dtype=np.uint8)
    if width == 1:
        # 8-bit WAV is unsigned with silence at 128.
        values = (pcm.astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        values = pcm.view("<i2").astype(np.float32) / 32768.0
    elif width == 3:
        # 24-bit little-endian: widen each sample to 32 bits, sign carried in the top byte.
        triples = pcm.reshape(-1, 3).astype(np.uint32)
        widened = (triples[:, 0] << 8) | (triples[:, 1] << 16) | (triples[:, 2] << 24)
        values = widened.view(np.int32).astype(np.float32) / 2147483648.0
    elif width == 4:
        values = pcm.view("<i4").astype(np.float32) / 2147483648.0
    else:
        raise DataError(f"{path} has {8 * width}-bit samples; expected 8, 16, 24 or 32-bit PCM")
    return np.asarray(values.reshape(frames, channels).mean(axis=1), dtype=np.float32)


def _fit_length(clip: NDArray[np.float32], length: int) -> NDArray[np.float32]:
    """Cut a clip to `length` samples, or pad it with silence (zeros) at the end."""
    if clip.shape[0] >= length:
        return clip[:length]
    return np.pad(clip, (0, length - clip.shape[0]))


# --- images -------------------------------------------------------------------------------


def _load_image_folder(config: ImageFolderSource, base_dir: Path) -> Dataset:
    import cv2

    root = base_dir / config.path
    folders = _label_folders(root, IMAGE_EXTENSIONS, config.kind)
    flag = cv2.IMREAD_GRAYSCALE if config.color == "gray" else cv2.IMREAD_COLOR
    digest = _FolderDigest(root)
    images: list[NDArray[np.uint8]] = []
    origins: list[Path] = []
    labels: list[int] = []
    for label_index, (_, files) in enumerate(folders):
        for path in files:
            data = _read_bytes(path)
            digest.add(path, sha256_bytes(data))
            decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
            if decoded is None:
                raise DataError(
                    f"{path} is not a readable image; expected a valid "
                    f"{'/'.join(IMAGE_EXTENSIONS)} file"
                )
            image = _to_color(np.asarray(decoded, dtype=np.uint8), config.color, path)
            images.append(_resize(image, config.size))
            origins.append(path)
            labels.append(label_index)
    return Dataset(
        x=_stack_frames(images, origins, config.kind),
        y=np.array(labels, dtype=np.int64),
        classes=tuple(label for label, _ in folders),
        modality="image",
        sources=(_fingerprint(config.kind, config.path, digest.hexdigest(), len(images)),),
    )


# --- video --------------------------------------------------------------------------------


def _load_video_folder(config: VideoFolderSource, base_dir: Path) -> Dataset:
    root = base_dir / config.path
    folders = _label_folders(root, VIDEO_EXTENSIONS, config.kind)
    digest = _FolderDigest(root)
    frames: list[NDArray[np.uint8]] = []
    origins: list[Path] = []
    labels: list[int] = []
    for label_index, (_, files) in enumerate(folders):
        for path in files:
            try:
                digest.add(path, sha256_file(path))
            except OSError as exc:
                raise DataError(f"cannot read {path}: {exc}") from exc
            sampled = _sample_video(path, config)
            frames.extend(sampled)
            origins.extend([path] * len(sampled))
            labels.extend([label_index] * len(sampled))
    return Dataset(
        x=_stack_frames(frames, origins, config.kind),
        y=np.array(labels, dtype=np.int64),
        classes=tuple(label for label, _ in folders),
        modality="image",
        sources=(_fingerprint(config.kind, config.path, digest.hexdigest(), len(frames)),),
    )


def _sample_video(path: Path, config: VideoFolderSource) -> list[NDArray[np.uint8]]:
    """The first frame at or after each of 0, 1/fps, 2/fps ... seconds of the video."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"{path} is not a readable video; expected a file OpenCV can decode")
        native_fps = float(capture.get(cv2.CAP_PROP_FPS))  # frames per second in the file
        sampled: list[NDArray[np.uint8]] = []
        next_sample = 0  # index k of the next target time k / config.fps, in seconds
        index = 0
        previous_time = -1.0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            # The decoder's presentation time of the frame just read (handles variable
            # frame rates); backends without timestamps report 0, so fall back to
            # index / native rate.
            time_s = float(capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
            if time_s <= previous_time and native_fps > 0:
                time_s = index / native_fps
            previous_time = time_s
            index += 1
            if time_s + _TIMESTAMP_TOLERANCE_S < next_sample / config.fps:
                continue
            image = _to_color(np.asarray(frame, dtype=np.uint8), config.color, path)
            sampled.append(_resize(image, config.size))
            # Skip target times this frame already covers (fps above the file's rate).
            next_sample = int(np.floor((time_s + _TIMESTAMP_TOLERANCE_S) * config.fps)) + 1
    finally:
        capture.release()
    if not sampled:
        raise DataError(f"{path} has no decodable frames; expected a video with at least one")
    return sampled


# --- text ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+")  # runs of letters and digits (Unicode), nothing else


def tokenize(line: str) -> list[str]:
    """Lowercase, then split on anything that is not a letter or digit."""
    return _TOKEN.findall(line.lower())


def build_vocabulary(token_lists: Sequence[Sequence[str]], vocab_size: int) -> tuple[str, ...]:
    """Tokens by id: 0 padding, 1 out-of-vocabulary, then the most frequent tokens.

    Ties in frequency are broken alphabetically, so the vocabulary depends only on the
    text, never on reading order.
    """
    counts = Counter(token for tokens in token_lists for token in tokens)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return (PAD_TOKEN, OOV_TOKEN, *(token for token, _ in ranked[: vocab_size - 2]))


def encode_tokens(
    tokens: Sequence[str], vocabulary: dict[str, int], max_length: int
) -> NDArray[np.int32]:
    """Token ids of one sample, cut or padded (with id 0, at the end) to `max_length`."""
    ids = np.full(max_length, PAD_ID, dtype=np.int32)
    for position, token in enumerate(tokens[:max_length]):
        ids[position] = vocabulary.get(token, OOV_ID)
    return ids


def _load_text_folder(config: TextFolderSource, base_dir: Path) -> Dataset:
    root = base_dir / config.path
    folders = _label_folders(root, (".txt",), config.kind)
    digest = _FolderDigest(root)
    token_lists: list[list[str]] = []
    labels: list[int] = []
    for label_index, (_, files) in enumerate(folders):
        before = len(labels)
        for path in files:
            data = _read_bytes(path)
            digest.add(path, sha256_bytes(data))
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path} is not UTF-8 text: {exc}") from exc
            for line in text.splitlines():
                if line.strip():
                    token_lists.append(tokenize(line))
                    labels.append(label_index)
        if len(labels) == before:
            raise DataError(
                f"label folder {root / folders[label_index][0]} has only empty lines; "
                "expected at least one non-empty line"
            )
    vocabulary = build_vocabulary(token_lists, config.vocab_size)
    ids = {token: i for i, token in enumerate(vocabulary)}
    x = np.stack([encode_tokens(tokens, ids, config.max_length) for tokens in token_lists])
    return Dataset(
        x=x,
        y=np.array(labels, dtype=np.int64),
        classes=tuple(label for label, _ in folders),
        modality="text",
        feature_names=vocabulary,
        sources=(_fingerprint(config.kind, config.path, digest.hexdigest(), len(labels)),),
    )


# --- scikit-learn ---------------------------------------------------------------------------


def _load_sklearn(config: SklearnSource) -> Dataset:
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }[config.name]
    bunch = loader()
    y = np.asarray(bunch.target, dtype=np.int64)
    classes = tuple(str(name) for name in bunch.target_names)
    if config.name == "digits":
        # Pixel intensities are integers 0..16 stored as float64.
        x: NDArray[Any] = np.asarray(bunch.images, dtype=np.uint8)[..., np.newaxis]
        dataset = Dataset(x=x, y=y, classes=classes, modality="image")
    else:
        x = np.ascontiguousarray(bunch.data, dtype=np.float32)
        dataset = Dataset(
            x=x,
            y=y,
            classes=classes,
            modality="table",
            feature_names=tuple(str(name) for name in bunch.feature_names),
        )
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(dataset.x).data)
    h.update(dataset.y.data)
    fingerprint = SourceFingerprint(
        kind=config.kind, location=f"sklearn:{config.name}", sha256=h.hexdigest(), samples=len(y)
    )
    return replace(dataset, sources=(fingerprint,))


# --- helpers ------------------------------------------------------------------------------


def _existing_file(base_dir: Path, relative: Path, kind: str) -> Path:
    path = base_dir / relative
    if not path.exists():
        raise DataError(f"{kind} file {path} does not exist (path {relative.as_posix()!r})")
    if not path.is_file():
        raise DataError(f"{kind} path {path} is a folder; expected a file")
    return path


def _file_fingerprint(kind: str, relative: Path, path: Path, samples: int) -> SourceFingerprint:
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return _fingerprint(kind, relative, digest, samples)


def _fingerprint(kind: str, relative: Path, digest: str, samples: int) -> SourceFingerprint:
    return SourceFingerprint(
        kind=kind, location=relative.as_posix(), sha256=digest, samples=samples
    )
