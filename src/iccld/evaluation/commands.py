"""``iccld evaluate``, ``iccld predict`` (images and videos) and ``iccld score``."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

from ..config import load_config, with_overrides
from ..errors import ConfigError, DataError
from ..outputs import OutputError, RunLock, check_output_dir, check_output_file, claim_outputs
from ..utils import atomic_write_text
from .loading import load_models, pick_device
from .metrics import subsets_for_source
from .video import VIDEO_SUFFIXES, is_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _subsets_for(config) -> dict | None:
    return subsets_for_source(config.data.source.kind) if config is not None else None


def _trained_on(loaded, config):
    """The config that says what the model was trained on (its source decides the class subsets
    reported): the checkpoint's own when it has one, so that a ``--config`` naming only another
    evaluation set (configs/generalisation/) keeps a SYNTHIA model's 16/13-class means."""
    return loaded.config if loaded.config is not None else config


def _json_output(args, command: str) -> Path | None:
    if not args.json:
        return None
    return check_output_file(args.json, overwrite=args.overwrite, command=command)


def sampling_flags(args, path: str, checkpoint: str) -> tuple[int | None, int]:
    """(steps, samples) after checking them: both >= 1, and only on the diffusion path (the direct
    path D(z0) draws no noise, so they would be ignored without a word)."""
    for flag, value in (("--steps", args.steps), ("--samples", args.samples)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag}: must be >= 1, got {value}")
    if path == "direct":
        given = [flag for flag, value in (("--steps", args.steps), ("--samples", args.samples)) if value is not None]
        if given:
            why = "--direct is given" if args.direct else f"{checkpoint} is a stage-1 model"
            raise ConfigError(f"{' and '.join(given)}: apply to the diffusion path only, and {why} "
                              "(its direct path D(z0) draws no noise); drop them")
    return args.steps, args.samples or 1


def evaluate_command(args) -> int:
    from ..data.build import build_val_dataset
    from .evaluate import evaluate_model
    from .report import format_confusions, format_table

    json_path = _json_output(args, "evaluate")  # before the evaluation, not after
    loaded = load_models(args.checkpoint, args.which)
    if args.config:
        config = load_config(args.config, args.overrides)
    elif loaded.config is not None:  # overrides change the checkpoint's own saved config
        config = with_overrides(loaded.config, args.overrides) if args.overrides else loaded.config
    else:
        raise ConfigError(f"{args.checkpoint}: a save_pretrained folder has no dataset config (a run's "
                          "final/ has none; an exported model has config.yaml); pass --config")
    # --split replaces data.val.split only when given: by default the config's (or override's) split
    split = args.split if args.split is not None else config.data.val.split
    dataset = build_val_dataset(config.data, split=split, skip_bad=config.data.skip_bad)
    path = "direct" if args.direct else loaded.inference_path
    steps, samples = sampling_flags(args, path, args.checkpoint)
    device = pick_device()
    results = {}
    for label, model in loaded.models.items():
        model.to(device)
        cm = evaluate_model(model, dataset, device=device, path=path, steps=steps, samples=samples,
                            seed=args.seed, slide=args.slide, window=tuple(config.data.crop_size),
                            max_images=args.max_images)
        results[label] = cm.summary(_subsets_for(_trained_on(loaded, config)))
        print(f"\n{args.checkpoint} [{label}, {path} path, {len(dataset) if not args.max_images else args.max_images}"
              f" images of {config.data.val.root} {split or '(no split)'}]")
        print(format_table(results[label]))
        if args.confusion:
            results[label]["confusion"] = cm.confusions()
            print("\n" + format_confusions(results[label]["confusion"]))
    if json_path is not None:
        payload = results[next(iter(results))] if len(results) == 1 else results
        claim_outputs([json_path], "evaluate")
        atomic_write_text(json_path, json.dumps(payload, indent=2))
    return 0


def score_command(args) -> int:
    from .report import format_confusions, format_table
    from .score import score_folders

    json_path = _json_output(args, "score")
    if json_path is not None:  # the report must never replace one of the files it scores
        for flag, folder in (("--pred", args.pred), ("--gt", args.gt)):
            if json_path.resolve().is_relative_to(Path(folder).resolve()):
                raise OutputError(f"{json_path}: lies inside {flag} {folder}, the files being scored; "
                                  "write the report elsewhere")
    summary = score_folders(args.pred, args.gt, subsets=args.subsets, confusion=args.confusion)
    print(format_table(summary))
    if args.confusion:
        print("\n" + format_confusions(summary["confusion"]))
    if json_path is not None:
        claim_outputs([json_path], "score")
        atomic_write_text(json_path, json.dumps(summary, indent=2))
    return 0


def collect_images(inputs: list[str], videos: bool = True) -> list[Path]:
    """The images (and, with ``videos``, the videos) named on the command line, folders searched
    recursively. Only regular files are taken: a folder named ``x.png`` or a FIFO in a searched folder
    is skipped (reading a FIFO would block), and one named directly is refused."""
    suffixes = IMAGE_SUFFIXES + (VIDEO_SUFFIXES if videos else ())
    images = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in suffixes and q.is_file()
                           and stat.S_ISREG(q.stat().st_mode))
            if not found:
                raise DataError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)})"
                                + (f" or videos ({', '.join(VIDEO_SUFFIXES)})" if videos else "")
                                + " in this folder")
            images.extend(found)
        elif p.exists() and not stat.S_ISREG(p.stat().st_mode):
            raise DataError(f"{p}: not a regular file (a device, FIFO or socket), so not an image")
        elif p.is_file():
            images.append(p)
        else:
            raise DataError(f"{p}: no such image or folder")
    return images


def video_flags(args, videos: list[Path]) -> float:
    """The smoothing factor after checking the video-only flags: --smooth in [0, 1), and --frames
    and --smooth only with a video among the inputs."""
    smooth = args.smooth if args.smooth is not None else 0.0
    if not 0.0 <= smooth < 1.0:
        raise ConfigError(f"--smooth: the weight of the past frames must be in [0, 1), got {smooth:g}")
    given = [flag for flag, value in (("--frames", args.frames), ("--smooth", args.smooth)) if value]
    if given and not videos:
        raise ConfigError(f"{' and '.join(given)}: apply to videos ({', '.join(VIDEO_SUFFIXES)}) only, "
                          "and no input is one; drop them")
    return smooth


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def predict_command(args) -> int:
    from .predict import check_outputs, output_paths, predict_images
    from .video import VideoReader, predict_video, video_output_paths

    inputs = collect_images(args.inputs)
    videos = [p for p in inputs if is_video(p)]
    images = [p for p in inputs if not is_video(p)]
    submission = getattr(args, "format", "images") == "submission"
    if submission:
        from .submission import check_submission_inputs, submission_command
        check_submission_inputs(inputs, args.benchmark)  # before anything is written
    smooth = video_flags(args, videos)
    for video in videos:  # a missing extra, an unreadable header: before loading the model
        VideoReader(video).close()
    out = Path(args.out)
    check_output_dir(out)  # a file in the way, a read-only disk: before loading the model
    loaded = load_models(args.checkpoint, args.which)
    path = "direct" if args.direct else loaded.inference_path
    steps, samples = sampling_flags(args, path, args.checkpoint)
    model = loaded.models[args.which].to(pick_device())
    resize = None if args.native_size or not loaded.val_resize else tuple(loaded.val_resize)
    if submission:
        with RunLock(out):
            return submission_command(args, model, images, path, steps=steps, samples=samples, resize=resize,
                                      keep_ratio=loaded.val_keep_ratio)
    with RunLock(out):  # one writer per output folder: a second predict into it is refused
        # every output of every input checked before the first is written
        check_outputs([(p, output_paths(out, p, samples > 1)) for p in images]
                      + [(p, video_output_paths(out, p, args.frames)) for p in videos], overwrite=args.overwrite)
        written = predict_images(model, images, out, path=path, steps=steps, samples=samples,
                                 seed=args.seed, overwrite=args.overwrite, resize=resize,
                                 keep_ratio=loaded.val_keep_ratio)
        frames = 0
        for video in videos:
            result = predict_video(model, video, out, path=path, steps=steps, samples=samples, seed=args.seed,
                                   overwrite=args.overwrite, resize=resize, keep_ratio=loaded.val_keep_ratio,
                                   smooth=smooth, frames=args.frames)
            written += result.files
            frames += result.frames
    kind = "image and video frame" if images and videos else "video frame" if videos else "image"
    fitted = "fitted into" if loaded.val_keep_ratio else "resized to"
    scale = (f"each {kind} {fitted} {resize[0]}x{resize[1]} (data.val.resize; --native-size keeps it)"
             if resize else f"at each {kind}'s native size")
    what = " and ".join([_plural(len(images), "image")] * bool(images or not videos)
                        + [f"{_plural(len(videos), 'video')} ({_plural(frames, 'frame')})"] * bool(videos))
    print(f"wrote {_plural(len(written), 'file')} for {what} to {args.out} ({scale}; outputs at the input's size)",
          file=sys.stderr)
    return 0
