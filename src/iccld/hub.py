"""Sharing trained models: ``iccld export`` writes a self-contained model folder, ``iccld push``
uploads it to the Hugging Face Hub, and :func:`iccld.io.hub.resolve_model_source` lets every place that takes a
checkpoint (``evaluate``, ``predict``, stage 2's ``method.stage1_checkpoint``) take a Hub repo id.

An exported folder is a ``save_pretrained`` folder (``config.json`` + ``model.safetensors``, the
EMA weights of a finished run) plus

    config.yaml      the run's resolved training config (its data roots are the trainer's own)
    training.json    provenance: method, inference path, iterations, benchmark, val mIoU and how
                     it was measured (read by the loaders as before: method, inference_path)
    labels.json      class names, palette (RGB), ignore index and Cityscapes label ids
    README.md        the model card, with the Hub's YAML metadata header (library_name, tags,
                     datasets, metrics, model-index) and a Space's (sdk: gradio, app_file)
    app.py           a Hugging Face Space's entry point: ``iccld app`` on this folder
    requirements.txt what the Space installs: ``iccld[app]`` at the exporting version

so the same folder uploads as a model repo (``iccld push``) or as a Gradio Space (``hf upload
USER/NAME FOLDER --repo-type space``), whose page is the web demo of ``iccld app``.

and, with ``--onnx``, the predictor as ONNX (:mod:`iccld.io.onnx`): ``model.onnx`` (the diffusion
path, the noise an input) and ``model_direct.onnx`` (the stage-1 path), checked against PyTorch on
the config's val images (:mod:`iccld.evaluation.onnx_check`); the figures go into training.json.

Repo ids are resolved with ``huggingface_hub.snapshot_download``, so the Hub cache, ``HF_HOME``,
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` behave as in every other Hub library. A path that exists
locally always wins over a repo id of the same spelling.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from . import __version__
from .data.kinds import display_name
from .errors import CheckpointError, ConfigError
from .io.hub import LIBRARY_NAME, parse_repo_id, resolve_model_source  # noqa: F401 (resolve_model_source: re-exported)
from .io.run_folder import CONFIG, EXPORT_MODEL_FILES, PROVENANCE, Provenance, RunFolder, read_json
from .utils import atomic_copy, atomic_write_text

# what an exported folder holds; `push` checks each of them before uploading
MODEL_FILES = EXPORT_MODEL_FILES
SPACE_FILES = ("app.py", "requirements.txt")  # what makes the folder a Gradio Space as well
LABELS_FILE, CARD_FILE = "labels.json", "README.md"
EXPORT_FILES = MODEL_FILES + (PROVENANCE, CONFIG, LABELS_FILE, CARD_FILE) + SPACE_FILES
# the Gradio a Space runs (its header's sdk_version): the version the web demo was tested with
SPACE_GRADIO_VERSION = "6.31.0"
SPACE_APP = '''"""Hugging Face Space: the iccld web demo (`iccld app`) on the model in this folder."""

from pathlib import Path

from iccld.app import launch

launch(str(Path(__file__).resolve().parent))  # host and port: GRADIO_SERVER_NAME / _PORT, as the Space sets them
'''
PARTIAL_EXPORT = ".iccld-export-partial"  # present while an export is being written


# ----------------------------------------------------------------------------------------------
# export


def _benchmark(config: dict) -> dict:
    data = config["data"]
    kinds = {part: data[part]["kind"] for part in ("source", "target", "val")}
    name = f"{display_name(kinds['source'])} -> {display_name(kinds['target'])}"
    return {"name": name, **kinds, "val_split": data["val"].get("split", "val")}


def _measured_by(config: dict, path: str) -> tuple[str, str]:
    """(how the mIoU in results.json was measured, the command that measures it again)."""
    trainer = config["trainer"]
    steps = config["model"].get("sampling_steps")
    how = ("sliding window" if trainer.get("eval_slide") else "whole image")
    desc = (f"`iccld train`'s final evaluation: EMA weights, {path} path"
            + (f" (K={steps} DDIM steps, 1 noise draw, seed 0)" if path == "diffusion" else "")
            + f", {how}, every image of the {config['data']['val']['kind']} {config['data']['val'].get('split', 'val')} split")
    command = "iccld evaluate --checkpoint {model} --which ema" + (
        " --slide" if trainer.get("eval_slide") else "")
    return desc, command


def _labels() -> dict:
    from .data.labels import CITYSCAPES_ID_TO_TRAINID, CLASSES, IGNORE_INDEX, PALETTE

    label_ids = {train: label for label, train in CITYSCAPES_ID_TO_TRAINID.items()}
    return {"classes": list(CLASSES), "palette": [list(c) for c in PALETTE], "ignore_index": IGNORE_INDEX,
            "cityscapes_label_ids": [label_ids[i] for i in range(len(CLASSES))]}


def _read_run_config(path: Path) -> dict:
    """A run's ``config.yaml`` as data: safe YAML only, one line for anything else."""
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the run's config ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        raise CheckpointError(f"{path}: not a run's config (no data: section)")
    return config


def _check_apart(source: Path, out: Path) -> None:
    """Refuse an output folder that is, contains or lies inside the folder read from."""
    a, b = Path(os.path.realpath(source)), Path(os.path.realpath(out))
    if a == b or a in b.parents or b in a.parents:
        raise CheckpointError(f"{out}: is, holds or lies inside the run {source} that the export reads; "
                              "choose an --out outside it")


def export_run(run: str | Path, out: str | Path, *, repo_id: str | None = None, overwrite: bool = False,
               onnx: bool = False, onnx_steps: int | None = None, check_images: list[Path] | None = None,
               check_max_images: int = 0) -> Path:
    """Write the model folder of the finished run ``run`` to ``out`` (see the module doc).

    ``onnx`` also writes the ONNX predictors (K = ``onnx_steps`` DDIM steps, default the model's)
    and checks them against PyTorch on ``check_images`` or, without them, on the first
    ``check_max_images`` (0: all) images of the config's val set, skipped with a reason when that
    set cannot be read. ``repo_id`` only fills in the model card's usage lines.

    A non-empty ``out`` is refused unless ``overwrite``, and even then only when it holds an earlier
    export, whose files (:data:`EXPORT_FILES`, and the ONNX files, removed by an export without
    ``onnx``) are replaced; nothing else in it is touched (a Hub clone's ``.git/``, notes). An
    ``out`` that is, holds or lies inside ``run`` is refused before anything is written.
    """
    run, out = Path(run), Path(out)
    folder = RunFolder(run)
    final = folder.final
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run folder (expected a folder written by `iccld train`)")
    for name in MODEL_FILES:
        if not (final / name).is_file():
            raise CheckpointError(f"{final / name}: not found; the run is not finished (its EMA model is "
                                  "written at the end): resume it with `iccld train --resume`")
    results = folder.read_results()
    # the provenance beside the final model, completed by results.json's
    summary = Provenance.from_record(results)
    made_by = Provenance.from_record(read_json(folder.provenance, "written beside the final model")).merged(summary)
    inference_path = made_by.inference_path or "diffusion"
    cfg_path = folder.config
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: not found (the run's resolved config)")
    config = _read_run_config(cfg_path)
    _check_apart(run, out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise CheckpointError(f"{out}: exists and is not empty; choose another --out or pass --overwrite")
        complete = (out / PROVENANCE).is_file() and (out / MODEL_FILES[0]).is_file()
        if not out.is_dir() or not (complete or (out / PARTIAL_EXPORT).is_file()):
            raise CheckpointError(f"{out}: holds something that is not an iccld export; not replacing it")
    # an earlier export's files are replaced one by one below; anything else in the folder (a Hub
    # clone's .git/, the user's notes) stays as it is
    try:
        ema = results["val"]["ema"]
        miou = float(ema["miou"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{folder.results}: no val.ema.miou entry (written by an older iccld?)") from None

    if onnx:  # before anything is written: a missing extra is one line, not a half export
        from .io.onnx import require_export_packages
        require_export_packages()
    out.mkdir(parents=True, exist_ok=True)
    # says "an export of ours, stopped part-way" until the last file is written, so that a later
    # `export --overwrite` recognises and completes it
    atomic_write_text(out / PARTIAL_EXPORT, f"iccld export of {run}, in progress\n")
    for name in MODEL_FILES:
        atomic_copy(final / name, out / name)
    onnx_record = None
    if onnx:
        onnx_record = _export_onnx(final, out, config, cfg_path, inference_path, onnx_steps, check_images, check_max_images)
    else:
        _remove_onnx(out)
    how, command = _measured_by(config, inference_path)
    repo = repo_id or f"USER/{out.name}"
    provenance = {
        "method": made_by.method,
        "inference_path": inference_path,
        "iteration": int(summary.iteration if summary.iteration is not None else made_by.iteration or 0),
        "weights": made_by.weights,
        "benchmark": _benchmark(config),
        "val_miou": round(miou, 2),
        "val_miou_model": (round(float(results["val"]["model"]["miou"]), 2)
                           if results["val"].get("model", {}).get("miou") is not None else None),
        "per_class_iou": ema.get("per_class", {}),
        "measured_by": how,
        "command": command.format(model=repo),
        "iccld_version": __version__,
    }
    if onnx_record is not None:
        provenance["onnx"] = onnx_record
    atomic_write_text(out / PROVENANCE, json.dumps(provenance, indent=2) + "\n")
    atomic_write_text(out / CONFIG, cfg_path.read_text())
    atomic_write_text(out / LABELS_FILE, json.dumps(_labels(), indent=2) + "\n")
    atomic_write_text(out / CARD_FILE, model_card(provenance, repo))
    atomic_write_text(out / "app.py", SPACE_APP)
    atomic_write_text(out / "requirements.txt", f"iccld[app]=={__version__}\n")
    (out / PARTIAL_EXPORT).unlink()
    return out


def _export_onnx(final: Path, out: Path, config: dict, cfg_path: Path, inference_path: str, steps: int | None,
                 check_images: list[Path] | None, check_max_images: int) -> dict:
    """Write the ONNX predictors of the model in ``final`` into ``out`` and check them; returns the
    provenance record (files, which of them is the run's ``inference_path``, opset, K, inputs, the
    check's figures or why it was skipped)."""
    from .config import from_dict
    from .evaluation.onnx_check import compare_onnx
    from .io import load_pretrained
    from .io.onnx import DIRECT_ONNX_FILE, ONNX_FILE, OPSET, export_onnx, load_onnx

    model = load_pretrained(final).eval()
    files = export_onnx(model, out, steps)
    predictors = {path: load_onnx(file) for path, file in files.items()}
    info = predictors["diffusion"].config
    noise = f"noise (B, {info.latent_channels}, ceil(H/{info.latent_stride}), ceil(W/{info.latent_stride}))"
    record = {"files": {path: file.name for path, file in files.items()},
              "inference_path_file": files.get(inference_path, files["diffusion"]).name,
              "opset": OPSET, "steps": info.steps, "timesteps": info.timesteps,
              "size_multiple": max(p.config.size_multiple for p in predictors.values()),
              "inputs": {ONNX_FILE: ["image (B, 3, H, W)", noise], DIRECT_ONNX_FILE: ["image (B, 3, H, W)"]},
              "normalisation": {"mean": info.pixel_mean, "std": info.pixel_std}}
    found = _check_items(from_dict(config, str(cfg_path)), check_images, check_max_images)
    if isinstance(found, str):
        record["check"] = {"skipped": found}
    else:
        items, source = found
        record["check"] = {"on": source, "seed": 0, **compare_onnx(model, predictors, items)}
    return record


def _check_items(run_config, images: list[Path] | None, max_images: int):
    """(the images an ONNX export is checked on, a description of them): ``images`` (resized as
    ``predict`` resizes them) or the config's val set; a string saying why when that set cannot be read."""
    from .data.build import build_val_dataset
    from .errors import DataError
    from .evaluation.onnx_check import dataset_items, image_items

    val = run_config.data.val
    if images:
        return (image_items(images, tuple(val.resize) if val.resize else None, val.keep_ratio),
                f"{len(images)} images named by --check-images")
    try:
        dataset = build_val_dataset(run_config.data)
    except DataError as exc:
        return (f"the config's val set ({val.kind} {val.split} at {val.root}) is not readable here ({exc}); "
                "pass --check-images IMAGES to check on images")
    count = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    return dataset_items(dataset, max_images), f"{count} images of the {val.kind} {val.split} split at {val.root}"


def _remove_onnx(out: Path) -> None:
    """An export without --onnx over an earlier one with it: its ONNX files would no longer match."""
    from .io.onnx import ONNX_FILES

    for name in ONNX_FILES:
        (out / name).unlink(missing_ok=True)


def model_card(provenance: dict, repo_id: str) -> str:
    """The README.md of an exported model: the Hub's YAML metadata header, then the card."""
    from huggingface_hub import EvalResult, ModelCardData

    bench = provenance["benchmark"]
    datasets = sorted({bench["source"], bench["target"]})
    data = ModelCardData(
        library_name=LIBRARY_NAME, pipeline_tag="image-segmentation",
        tags=["semantic-segmentation", "domain-adaptation", "latent-diffusion", "iccld",
              f"method-{provenance['method']}"],
        datasets=datasets, metrics=["mean_iou"], model_name=repo_id.split("/")[-1],
        # read when the folder is uploaded as a Space (ignored on a model repo)
        title=repo_id.split("/")[-1], sdk="gradio", sdk_version=SPACE_GRADIO_VERSION, app_file="app.py",
        eval_results=[EvalResult(task_type="image-segmentation", task_name="Semantic Segmentation",
                                 dataset_type=bench["val"], dataset_name=f"{display_name(bench['val'])} "
                                 f"{bench['val_split']} ({bench['name']})", dataset_split=bench["val_split"],
                                 metric_type="mean_iou", metric_name="mIoU", metric_value=provenance["val_miou"])])
    per_class = provenance.get("per_class_iou") or {}
    rows = "\n".join(f"| {name} | {'n/a' if v is None else f'{v:.1f}'} |" for name, v in per_class.items())
    return f"""---
{data.to_yaml()}
---

# {repo_id.split('/')[-1]}

An ICCLD model (the `iccld` package: latent-diffusion semantic segmentation with unsupervised
domain adaptation), trained with the `{provenance['method']}` method on {bench['name']} for
{provenance['iteration']} iterations. These are the EMA weights of the finished run.

| | |
|---|---|
| val mIoU (EMA) | **{provenance['val_miou']:.2f}** on {bench['val']} {bench['val_split']} |
| measured by | {provenance['measured_by']} |
| measure again | `{provenance['command']}` (with `data.val.root` pointing at your copy) |
| inference path | `{provenance['inference_path']}` |
{_onnx_row(provenance.get("onnx"))}| iccld | {provenance['iccld_version']} |

## Use

```bash
iccld predict images/ --checkpoint {repo_id} --out predictions/
iccld evaluate --checkpoint {repo_id} data.val.root=/path/to/{bench['val']}   # its own config.yaml's val settings
iccld app {repo_id}                          # the web demo (pip install 'iccld[app]')
```

The folder is also a Gradio Space (`app.py`, `requirements.txt`, the `sdk:` fields above):
`hf upload USER/NAME . --repo-type space` serves the same web demo on the Hub.

`config.yaml` is the training config as resolved (its data roots are the trainer's: `key=value`
overrides on the command line replace them); `labels.json`
holds the class names, the palette and the Cityscapes label ids; `training.json` the provenance.

## Per-class IoU (val, EMA)

| class | IoU |
|---|---|
{rows}
"""


def _onnx_row(record: dict | None) -> str:
    """The model card's ONNX row (with its newline), empty without ONNX files."""
    if not record:
        return ""
    check = record.get("check", {})
    diffusion = check.get("diffusion")
    if diffusion:
        measured = f"; identical argmax on {diffusion['argmax_identical_percent']:.2f}% of pixels against PyTorch ({check['on']})"
    else:
        measured = f"; not checked: {check.get('skipped', 'no images')}"
    return (f"| ONNX | `model.onnx` (diffusion path, K={record['steps']}, noise as input), `model_direct.onnx` "
            f"(stage-1 path), opset {record['opset']}; this model's inference path: `{record['inference_path_file']}`"
            f"{measured} |\n")


# ----------------------------------------------------------------------------------------------
# checking and pushing


def check_export(folder: str | Path) -> list[str]:
    """Check every file of an exported model folder; returns the names of the files the export wrote
    (:data:`EXPORT_FILES`, sorted: what ``push`` uploads) or raises a CheckpointError naming the first
    bad file. Anything else in the folder is not part of the model and is never uploaded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder (expected one written by `iccld export`)")
    for name in EXPORT_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing; write the folder with `iccld export RUN --out {folder}`")
    model_config, weights = (folder / name for name in MODEL_FILES)
    cfg = read_json(model_config, "the model config")
    if cfg.get("format") != "iccld" or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"{model_config}: not an ICCLD model config")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            if not list(fh.keys()):
                raise CheckpointError(f"{weights}: holds no tensors")
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{weights}: not readable ({str(exc).splitlines()[0][:120]})") from None
    info = read_json(folder / PROVENANCE, "the provenance")
    missing = [k for k in ("method", "inference_path", "iteration", "benchmark", "val_miou", "command")
               if k not in info]
    if missing:
        raise CheckpointError(f"{folder / PROVENANCE}: missing {', '.join(missing)}; export the run again")
    labels = read_json(folder / LABELS_FILE, "class names and palette")
    if len(labels.get("classes", [])) != len(labels.get("palette", [])) or not labels.get("classes"):
        raise CheckpointError(f"{folder / LABELS_FILE}: classes and palette differ in length")
    from .config import from_dict

    try:
        from_dict(yaml.safe_load((folder / CONFIG).read_text()) or {}, str(folder / CONFIG))
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{folder / CONFIG}: not valid YAML ({str(exc).splitlines()[0]})") from None
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(folder / CARD_FILE)
    except Exception as exc:  # huggingface_hub raises ValueError or YAML errors for a bad header
        raise CheckpointError(f"{folder / CARD_FILE}: bad model card header ({str(exc).splitlines()[0][:120]})") from None
    if card.data.library_name != LIBRARY_NAME or not card.data.eval_results:
        raise CheckpointError(f"{folder / CARD_FILE}: the metadata header needs library_name: {LIBRARY_NAME} "
                              "and a model-index with the mIoU")
    from .io.onnx import ONNX_FILES

    return sorted(EXPORT_FILES + tuple(name for name in ONNX_FILES if (folder / name).is_file()))


def other_files(folder: Path) -> list[str]:
    """Files in ``folder`` that are not the export's (left out of an upload), ``.git/`` not listed."""
    from .io.onnx import ONNX_FILES

    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() not in EXPORT_FILES + ONNX_FILES
                  and p.relative_to(folder).parts[0] != ".git")


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None) -> str:
    """Upload an exported folder with ``HfApi.upload_folder`` (creating the repo if needed);
    returns the commit URL. No network, no token or a Hub error -> a one-line CheckpointError."""
    files = check_export(folder)
    left_out = other_files(Path(folder))
    if left_out:
        shown = ", ".join(left_out[:8]) + (f", ... ({len(left_out)} in all)" if len(left_out) > 8 else "")
        print(f"{folder}: not uploaded, not part of the export: {shown}", file=sys.stderr)
    if parse_repo_id(repo_id) is None or "@" in repo_id:
        raise ConfigError(f"--repo-id: expected USER/NAME, got '{repo_id}'")
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        raise CheckpointError(f"{folder}: not uploaded: HF_HUB_OFFLINE=1 is set (uploading needs the network); "
                              "unset it and run `iccld push` again")
    token = huggingface_hub.get_token()
    if not token:
        raise CheckpointError(f"{folder}: not uploaded: no Hugging Face token; run `hf auth login` or set HF_TOKEN")
    api = huggingface_hub.HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 revision=revision, allow_patterns=files,
                                 commit_message=f"Upload iccld model ({len(files)} files)")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: upload to {repo_id} failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160]})") from None
    except Exception as exc:  # httpx connection errors and the like: one line, not a traceback
        raise CheckpointError(f"{folder}: upload to {repo_id} failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else 'no message'})") from None
    return str(getattr(info, "commit_url", info))


def export_command(args) -> int:
    if not args.onnx and (args.steps is not None or args.check_images or args.check_max_images):
        raise ConfigError("--steps, --check-images and --check-max-images: apply to --onnx only; add --onnx")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps: must be >= 1, got {args.steps}")
    images = None
    if args.check_images:
        from .evaluation.commands import collect_images
        images = collect_images(args.check_images, videos=False)
    out = export_run(args.run, args.out, repo_id=args.repo_id, overwrite=args.overwrite, onnx=args.onnx,
                     onnx_steps=args.steps, check_images=images, check_max_images=args.check_max_images)
    info = json.loads((out / PROVENANCE).read_text())
    print(f"exported {args.run} to {out}: {info['method']}, {info['iteration']} iterations, "
          f"{info['benchmark']['name']}, val mIoU {info['val_miou']:.2f}; upload with "
          f"`iccld push {out} --repo-id USER/NAME`", file=sys.stderr)
    check = info.get("onnx", {}).get("check")
    if check is None:
        return 0
    if "skipped" in check:
        print(f"ONNX check skipped: {check['skipped']}", file=sys.stderr)
        return 0
    from .evaluation.onnx_check import format_check

    for line in format_check(check):
        print(line, file=sys.stderr)
    if not check.get("met", True):
        print(f"iccld export: the ONNX predictors differ from PyTorch beyond the targets ({check['targets']}); "
              f"see {out / PROVENANCE}", file=sys.stderr)
        return 1
    return 0


def push_command(args) -> int:
    url = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"uploaded {args.folder} to {args.repo_id}: {url}", file=sys.stderr)
    return 0
