"""Videos in ``iccld predict``: frames are decoded, segmented and encoded one at a time (PyAV), so
memory does not grow with the video's length.

For a video ``IN.EXT`` (:data:`VIDEO_SUFFIXES`) ``predict`` writes into ``OUT``:

- ``IN_overlay.EXT``: every frame blended 50/50 with its label colours, at the input's size and
  (constant) average frame rate, encoded as :data:`CONTAINERS` says (mp4: H.264; webm: VP9; avi:
  MPEG-4 part 2; gif: a palette per frame). No audio is copied.
- with ``frames``: ``IN_frames/IN_000000_trainid.png``, ... one train-id PNG per frame, numbered from 0.

Every frame of a video is predicted with the same noise draw (the one the first image of a call
gets from ``--seed``), so an unchanged scene keeps its labels from frame to frame. ``smooth`` = a in
(0, 1) averages the class probabilities over frames: p_t = a * p_(t-1) + (1 - a) * softmax(logits_t),
at the resolution the model sees, before the labels are taken at the frame's size; 0 (the default)
labels each frame on its own, exactly as ``predict`` labels an image.

The overlay is encoded into a temporary file beside it and renamed when complete. A video that
cannot be read to its end (a corrupt frame, a truncated file: decoding fails, or it ends short of
the frames its header announces) stops the command with one line naming the file and the problem;
the frames predicted before it are kept: the overlay is finished properly (playable) under the name
``IN_overlay.partial.EXT``, and the frame PNGs already written stay.

PyAV (``av`` on PyPI; its wheels carry FFmpeg) is the optional extra ``iccld[video]``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.io import write_png
from ..errors import DataError, MissingExtraError
from ..outputs import check_output_file, claim_outputs
from ..utils import TMP_SUFFIX
from .predict import NOISE_SEED_STRIDE, at_size, overlay, predict_rgb

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".gif")
# suffix -> (FFmpeg container format, encoder, encoder options)
CONTAINERS: dict[str, tuple[str, str, dict[str, str]]] = {
    ".mp4": ("mp4", "libx264", {"crf": "18", "preset": "medium"}),
    ".webm": ("webm", "libvpx-vp9", {"crf": "30", "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}),
    ".avi": ("avi", "mpeg4", {"flags": "+qscale", "global_quality": str(3 * 118)}),  # ffmpeg's -q:v 3
    ".gif": ("gif", "gif", {}),
}
# frames missing at the end, beyond which a video is called truncated: rounding of a duration and
# the frames an edit list drops make a whole video come out a frame or two short of its header
SHORT_TOLERANCE = 2


def require_av(what: Path):
    """The ``av`` module, or a one-line MissingExtraError naming ``what`` (a video) and the extra."""
    try:
        import av
    except ImportError:
        raise MissingExtraError(f"{what}: reading videos needs PyAV, which is not installed; "
                              "pip install 'iccld[video]' (or: pip install av)") from None
    return av


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def video_output_paths(out: Path, video: Path, frames: bool) -> dict[str, Path]:
    """The files ``predict`` may write for ``video``: the overlay, the name it gets when the video
    cannot be read to its end, and (``frames``) the first frame's PNG, which stands for the folder."""
    stem, suffix = video.stem, video.suffix.lower()
    paths = {"overlay": out / f"{stem}_overlay{suffix}", "partial": out / f"{stem}_overlay.partial{suffix}"}
    if frames:
        paths["frames"] = frame_path(out, video, 0)
    return paths


def frame_path(out: Path, video: Path, index: int) -> Path:
    return out / f"{video.stem}_frames" / f"{video.stem}_{index:06d}_trainid.png"


def _reason(exc: BaseException) -> str:
    """FFmpeg's words for an av error, without the errno and the repeated file name."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0].strip()


# reading -----------------------------------------------------------------------------------------

class VideoReadError(DataError):
    """The video stopped being readable after some frames (the message says how; no file name)."""


class VideoReader:
    """A video file's first video stream, decoded frame by frame to (H, W, 3) uint8 RGB.

    Opening failures are DataErrors naming the file; iterating raises :class:`VideoReadError` on a
    frame that cannot be decoded or that changes the size; :meth:`check_complete` after the last
    frame raises it when the video ended well short of the frames its header announces.
    """

    def __init__(self, path: Path):
        av = require_av(path)
        self.path = Path(path)
        self._error = av.error.FFmpegError
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except (self._error, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read video ({_reason(exc)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise DataError(f"{path}: holds no video stream")
        self.stream = stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: a few frames in flight, whatever the length
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        if not rate or not self.width or not self.height:
            self.container.close()
            raise DataError(f"{path}: cannot read video (no frame rate or frame size in its header)")
        self.rate = Fraction(rate)
        self.announced = self._announced_frames()

    def _announced_frames(self) -> int | None:
        """Frames the header promises: the stream's count, else its duration x the frame rate (the
        container's duration when the video is its only stream), else None."""
        stream = self.stream
        if stream.frames:
            return int(stream.frames)
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif self.container.duration and len(self.container.streams) == 1:
            seconds = self.container.duration / 1_000_000  # AV_TIME_BASE
        else:
            return None
        return round(seconds * self.rate)

    def __iter__(self) -> Iterator[np.ndarray]:
        index = 0
        try:
            for frame in self.container.decode(self.stream):
                if (frame.width, frame.height) != (self.width, self.height):
                    raise VideoReadError(f"frame {index} is {frame.width}x{frame.height}, the video "
                                         f"{self.width}x{self.height}; iccld needs one frame size")
                yield frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                index += 1
        except self._error as exc:  # decoders hold frames back, so the broken packet may be a later one
            where = f"past its first {index} frames" if index else "a single frame"
            raise VideoReadError(f"cannot decode {where} ({_reason(exc)})") from None

    def check_complete(self, count: int) -> None:
        if self.announced is not None and count < self.announced - SHORT_TOLERANCE:
            raise VideoReadError(f"ends after {count} of the {self.announced} frames its header announces "
                                 "(truncated?)")

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# writing -----------------------------------------------------------------------------------------

class VideoWriter:
    """Encodes RGB frames into a temporary file in ``folder``; :meth:`finish` completes the file and
    renames it, :meth:`abort` removes it. The codec follows ``suffix`` (:data:`CONTAINERS`)."""

    def __init__(self, folder: Path, suffix: str, width: int, height: int, rate: Fraction):
        av = require_av(folder)
        fmt, codec, options = CONTAINERS[suffix]
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".video.", suffix=TMP_SUFFIX)
        os.close(fd)
        self.tmp, self.count, self.gif = Path(tmp), 0, fmt == "gif"
        self._error = av.error.FFmpegError
        self._frame = av.VideoFrame
        try:
            # mp4: the index first, so that a browser plays the file while it downloads
            self.container = av.open(tmp, "w", format=fmt,
                                     options={"movflags": "+faststart"} if fmt == "mp4" else {})
            self.stream = self.container.add_stream(codec, rate=rate, options=options)
            self.stream.width, self.stream.height = width, height
            # H.264 in 4:2:0 needs even sizes; 4:4:4 keeps an odd size as it is (fewer players take it)
            odd = width % 2 or height % 2
            self.stream.pix_fmt = "pal8" if self.gif else ("yuv444p" if codec == "libx264" and odd else "yuv420p")
        except BaseException as exc:
            self.abort()
            if isinstance(exc, self._error):
                raise OSError(getattr(exc, "errno", None), f"cannot write video ({_reason(exc)})", tmp) from None
            raise

    def write(self, rgb: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 frame."""
        if self.gif:  # GIF: 256 colours of each frame's own palette (no dithering: it would flicker)
            frame = self._frame.from_ndarray(_palette_frame(rgb), format="pal8")
        else:
            frame = self._frame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.count  # constant frame rate, in units of 1 / rate
        self._mux(self.stream.encode(frame))
        self.count += 1

    def _mux(self, packets) -> None:
        try:
            self.container.mux(packets)
        except self._error as exc:
            raise OSError(getattr(exc, "errno", None), f"cannot write video ({_reason(exc)})", str(self.tmp)) from None

    def finish(self, path: Path) -> Path:
        """Flush the encoder, close the file and rename it to ``path`` (replacing what is there)."""
        try:
            self._mux(self.stream.encode(None))
            self.container.close()
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes 0600
            os.replace(self.tmp, path)
        except BaseException:
            self.abort()
            raise
        return path

    def abort(self) -> None:
        try:
            if getattr(self, "container", None) is not None:
                self.container.close()
        except Exception:  # closing a half-written file may fail; it is removed anyway
            pass
        self.tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _palette_frame(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> (indices (H, W) uint8, palette (256, 4) ARGB uint8), as PyAV's pal8 wants."""
    from PIL import Image

    image = Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    colours = np.asarray(image.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 0] = 255  # opaque
    palette[: len(colours), 1:] = colours
    return np.asarray(image, dtype=np.uint8), palette


# predicting --------------------------------------------------------------------------------------

class ProbabilitySmoother:
    """Exponential moving average of the class probabilities over frames:
    p_t = alpha * p_(t-1) + (1 - alpha) * softmax(logits_t); the first frame is its own average."""

    def __init__(self, alpha: float):
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.state: torch.Tensor | None = None  # (1, C, h, w)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=1)
        self.state = probs if self.state is None else self.state.mul_(self.alpha).add_(probs, alpha=1 - self.alpha)
        return self.state


@dataclass
class VideoResult:
    frames: int
    files: list[Path]


@torch.no_grad()
def predict_video(model: nn.Module, video: Path, out: Path, *, path: str = "diffusion",
                  steps: int | None = None, samples: int = 1, seed: int = 0, overwrite: bool = False,
                  resize: tuple[int, int] | None = None, keep_ratio: bool = True, smooth: float = 0.0,
                  frames: bool = False, progress: bool | None = None) -> VideoResult:
    """Segment every frame of ``video`` and write its overlay video (and, with ``frames``, its
    train-id PNGs) into ``out``; see the module docstring. The caller has checked the outputs
    (:func:`~iccld.evaluation.predict.check_outputs` on :func:`video_output_paths`) and ``out``.

    ``resize`` and ``keep_ratio`` as for images. ``progress``: a bar over the frames (None: only on a terminal).
    Raises a DataError naming the video when it cannot be read to its end, after keeping what was
    predicted (see the module docstring).
    """
    from tqdm import tqdm

    out, video = Path(out), Path(video)
    paths = video_output_paths(out, video, frames)
    smoother = ProbabilitySmoother(smooth) if smooth else None
    written: list[Path] = []
    with VideoReader(video) as reader:
        writer = VideoWriter(out, video.suffix.lower(), reader.width, reader.height, reader.rate)
        size = (reader.height, reader.width)
        bar = tqdm(total=reader.announced, desc=video.name, unit="frame", disable=None if progress is None
                   else not progress, leave=False, mininterval=1)
        try:
            for rgb in reader:
                generator = torch.Generator().manual_seed(seed * NOISE_SEED_STRIDE)  # the same draw every frame
                try:
                    logits = predict_rgb(model, rgb, path=path, steps=steps, samples=samples, generator=generator,
                                         resize=resize, keep_ratio=keep_ratio).logits  # (1, C, h, w)
                except DataError as exc:  # e.g. frames too small for the encoder
                    raise DataError(f"{video}: {exc}") from None
                scores = smoother(logits) if smoother is not None else logits.float()
                label = at_size(scores, size).argmax(1)[0].cpu().numpy().astype(np.uint8)  # (H, W)
                if frames:
                    written.append(_write_frame(out, video, writer.count, label, overwrite))
                writer.write(overlay(rgb, label))
                bar.update()
            reader.check_complete(writer.count)
        except VideoReadError as exc:
            raise _keep_partial(video, exc, writer, paths, frames) from None
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        claim_outputs([paths["overlay"]], "predict")
        written.insert(0, writer.finish(paths["overlay"]))
    return VideoResult(writer.count, written)


def _write_frame(out: Path, video: Path, index: int, label: np.ndarray, overwrite: bool) -> Path:
    target = frame_path(out, video, index)
    if index:  # frame 0 was checked with every other output before the run
        check_output_file(target, overwrite=overwrite, command="predict", check_dir=False)
    claim_outputs([target], "predict")
    write_png(target, label)
    return target


def _keep_partial(video: Path, exc: VideoReadError, writer: VideoWriter, paths: dict[str, Path],
                  frames: bool) -> DataError:
    """Finish what was encoded under the partial name; the one-line error that says so."""
    count = writer.count
    if count == 0:
        writer.abort()
        return DataError(f"{video}: {exc}; nothing was written")
    claim_outputs([paths["partial"]], "predict")
    writer.finish(paths["partial"])
    kept = f"{paths['partial']}" + (f" and {paths['frames'].parent}/" if frames else "")
    return DataError(f"{video}: {exc}; the {count} frames read are kept in {kept}")
