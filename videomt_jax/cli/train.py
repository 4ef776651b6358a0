"""`videomt-jax train CONFIG`: a recipe (name or JSON file, see `training/recipes.py`) ->
OUT/checkpoints (resumable; each carries its recipe), progress lines (loss, steps/s, ETA), then
OUT/model (`save_pretrained` + data.json); OUT/recipe.json holds the resolved recipe
(`videomt-jax train OUT/recipe.json --out OUT` continues the run).

Everything that can be refused is checked before anything is written (the recipe, the devices, the
recipe of OUT's checkpoints, a foreign OUT/recipe.json or OUT/model), and a start that fails before
its first checkpoint removes what it wrote. SIGTERM / SIGINT end the current step, save a checkpoint
there, stop the data-loading workers and exit with 128 + N and one line (with several processes,
every process stops at the same step: JAX's preemption sync point).
jax and the training code are imported only when the command runs, so `videomt-jax --help` stays quick.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videomt_jax.cli.common import guarded
from videomt_jax.utils.signals import GracefulStop, Interrupted

RUNS_DIR = "runs"  # default parent of OUT: runs/<recipe name>
MODEL_DIR = "model"  # OUT/model: the final weights
RECIPE_FILE = "recipe.json"  # OUT/recipe.json: the resolved recipe


def _devices(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--devices must be a positive int or 'all', got {text!r}")
    return value


def _has_checkpoints(directory: Path) -> bool:
    return directory.is_dir() and any(p.is_dir() and p.name.isdigit() for p in directory.iterdir())


# Recipe entries that may change when a run is resumed (the rest must equal the checkpoints' recipe):
# the run's name, the schedule length, logging and checkpoint policy (loop.RESUMABLE_TRAIN_FIELDS),
# where the datasets are mounted.
RESUMABLE_CHANGES = (
    "name",
    "train.steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "data.root",
    "data.coco_root",
)
MOVABLE_ONLY = ("data.coco_root",)  # may move, not appear or vanish (COCO on or off changes the training data)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def checkpoint_recipe(out: Path) -> tuple[Any, str] | None:
    """The recipe OUT's checkpoints were trained with and where it was read: the one the latest
    checkpoint carries, or, for checkpoints written before they carried it, OUT/recipe.json;
    None when OUT holds no checkpoint (or neither is there)."""
    import json

    from videomt_jax.training.checkpoint import stored_metadata
    from videomt_jax.training.loop import CHECKPOINTS_DIR
    from videomt_jax.training.recipes import load_recipe, recipe_from_dict

    checkpoints = out / CHECKPOINTS_DIR
    if not _has_checkpoints(checkpoints):
        return None
    stored = (stored_metadata(checkpoints) or {}).get("recipe")
    where = f"the recipe stored in the checkpoints of {checkpoints}"
    try:  # read as a recipe: entries added since it was written take their defaults, moved keys move
        if stored is not None:
            return recipe_from_dict(stored, str(stored.get("name", "stored"))), where
        saved_file = out / RECIPE_FILE
        if saved_file.is_file():
            return load_recipe(saved_file), f"{saved_file} (the recipe of the checkpoints in {out})"
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{where} cannot be read: {e}") from None
    return None


def check_resumable(out: Path, recipe: Any) -> None:
    """Refuse, before anything is written, to continue OUT's checkpoints with a different recipe.

    The recipe the checkpoints were trained with (`checkpoint_recipe`) must equal `recipe` but for
    `RESUMABLE_CHANGES`; another recipe would either fail deep inside orbax (other shapes) or
    silently train something else from them.
    """
    import json

    found = checkpoint_recipe(out)
    if found is None:
        return
    saved_recipe, where = found
    saved = _flat(json.loads(saved_recipe.to_json()))
    new = _flat(json.loads(recipe.to_json()))

    def may_change(k: str) -> bool:
        return k in RESUMABLE_CHANGES and (k not in MOVABLE_ONLY or (saved.get(k) is None) == (new.get(k) is None))

    differ = sorted(k for k in saved.keys() | new.keys() if saved.get(k) != new.get(k) and not may_change(k))
    if differ:
        shown = "; ".join(
            f"{k}: {saved.get(k, '(absent)')!r} there, {new.get(k, '(absent)')!r} here" for k in differ[:6]
        )
        raise ValueError(
            f"{out} holds checkpoints of another recipe ({where}); {len(differ)} entries differ: {shown}"
            f"{'; ...' if len(differ) > 6 else ''}. Nothing was changed. Continue that run with "
            f"`videomt-jax train {out / RECIPE_FILE} --out {out}`, or choose another --out"
        )


def _init_params(path: str, config: Any, seed: int) -> tuple[Any, str]:
    """--init: the recipe model's parameters from PATH (any checkpoint load_pretrained reads, an EoMT
    image model or the authors' segmenter, or a bare DINOv2-with-registers / DINOv3 backbone), strict
    about the architecture; returns the parameters and a summary of what came from the checkpoint and
    what starts fresh."""
    import jax

    from videomt_jax.weights.init_from import init_videomt_from

    try:
        params, report = init_videomt_from(path, config, jax.random.key(seed))
    except ValueError as e:
        raise ValueError(f"--init weights do not fit the recipe's model: {e}") from None
    lines = [
        f"init from {path} [{report.source}]: {len(report.from_checkpoint)} parameters from the checkpoint, "
        f"{len(report.fresh)} fresh" + (f" ({', '.join(report.fresh)})" if report.fresh else "")
    ]
    lines += [f"  resampled {name}: {how}" for name, how in report.resampled.items()]
    return params, "\n".join(lines)


def init_note(recipe: Any) -> str | None:
    """The start-up line of a run without --init whose recipe names weights to start from (`Recipe.init`)."""
    from videomt_jax.training.paper_recipes import SEGMENTERS

    if recipe.init is None:
        return None
    what = "the authors' segmenter " if recipe.init.startswith(SEGMENTERS) else ""
    return (
        f"recipe {recipe.name} starts from {what}{recipe.init}; without --init this run trains from scratch "
        "(pass --init PATH, downloaded first when it is a URL or Hub id)"
    )


def _with_data_root(recipe: Any, root: str | None) -> Any:
    """The recipe with its dataset root set from --data-root; dataset recipes must have one."""
    from dataclasses import replace

    from videomt_jax.data.sources import VideoDataConfig
    from videomt_jax.training.recipes import data_kind

    if not isinstance(recipe.data, VideoDataConfig):
        if root is not None:
            raise ValueError(
                f"recipe {recipe.name!r} trains on {data_kind(recipe.data)} data: --data-root does not apply"
            )
        return recipe
    recipe = replace(recipe, data=recipe.data.with_root(root)) if root is not None else recipe
    recipe.data.open()  # fail here, naming the file, rather than in a data-loading worker
    return recipe


def _with_coco_root(recipe: Any, root: str | None) -> tuple[Any, str | None]:
    """The recipe with COCO pseudo-videos from --coco-root (data/coco.py), and the start-up line about them.

    YouTube-VIS / OVIS recipes train 1:1 on COCO images made into clips when a COCO root is given
    (here or in the recipe); the file is read now, so a bad one fails before training, naming it, and
    the line counts the images with more instances than the recipe's target slots (`collate` keeps
    their largest). Other data kinds take no COCO root.
    """
    from dataclasses import replace

    from videomt_jax.data.sources import YTVISDataConfig
    from videomt_jax.training.recipes import data_kind

    if not isinstance(recipe.data, YTVISDataConfig):
        if root is not None:
            raise ValueError(
                f"recipe {recipe.name!r} trains on {data_kind(recipe.data)} data: --coco-root applies to "
                "YouTube-VIS / OVIS (ytvis) recipes"
            )
        return recipe, None
    data = recipe.data.with_coco_root(root) if root is not None else recipe.data
    if data.coco_root is None:
        return recipe, (
            f"COCO pseudo-videos: off (no --coco-root): training on {data.dataset} alone; the authors mix "
            f"in COCO images made into {data.num_frames}-frame clips 1:1"
        )
    coco = data.coco_clips(recipe.processor.pixel_mean).reader
    note = (
        f"COCO pseudo-videos: {len(coco)} images ({coco.num_annotations} instances) of {coco.annotation_file}, "
        f"mixed {data.coco_ratio:g}:1 with {data.dataset}"
    )
    crowded = coco.instances_per_image > recipe.max_instances
    if crowded.any():
        note += (
            f"; {int(crowded.sum())} images hold more instances (up to {int(coco.instances_per_image.max())}) "
            f"than the {recipe.max_instances} target slots: their largest are kept"
        )
    return replace(recipe, data=data), note


def _check_devices(recipe: Any, num_devices: int | None) -> None:
    """The mesh `fit` will train on and the split of the batch over it, before anything is written."""
    import jax

    from videomt_jax.training.loop import fit_mesh

    try:
        mesh = fit_mesh(num_devices, recipe.train.fsdp)
    except ValueError as e:
        raise ValueError(f"--devices: {e}") from None
    if mesh is None:
        return
    batch, processes, local = recipe.train.batch_size, jax.process_count(), len(mesh.local_devices)
    if batch % (processes * local):
        raise ValueError(
            f"batch size {batch} does not split over {processes} process(es) x {local} device(s) each "
            "(--batch-size must be a multiple of the devices of the mesh)"
        )


def _check_recipe_file(out: Path, text: str) -> bool:
    """May `train` write OUT/recipe.json (`text`)? Absent: yes. There: only when `train` wrote it
    (a resolved recipe, as `Recipe.to_json` gives it); a user's file is never replaced."""
    from videomt_jax.training.recipes import load_recipe

    path = out / RECIPE_FILE
    if not os.path.lexists(path):
        return True
    if path.is_symlink() or not path.is_file():
        raise FileExistsError(f"{path} exists and is not a regular file; not replacing it (choose another --out)")
    current = path.read_text()
    if current == text:
        return False
    try:
        ours = load_recipe(path).to_json() + "\n" == current
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{path} exists and is not a recipe this command wrote; not replacing it (move it, or choose another --out)"
        )
    return True


@dataclass
class _Created:
    """What this run created before its first checkpoint: a failed start removes it again."""

    dirs: list[Path] = field(default_factory=list)  # created folders, outermost first
    files: list[Path] = field(default_factory=list)

    def mkdir(self, path: Path) -> None:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        self.dirs += reversed(missing)

    def undo(self, checkpoints: Path) -> None:
        """Remove what was created, unless a checkpoint was saved (then the run is resumable)."""
        if _has_checkpoints(checkpoints):
            return
        for f in self.files:
            f.unlink(missing_ok=True)
        if checkpoints in self.dirs:
            shutil.rmtree(checkpoints, ignore_errors=True)  # holds no finished checkpoint: only our debris
        for d in reversed(self.dirs):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty


def _stopped(signum: int, what: str) -> int:
    print(f"videomt-jax train: stopped by {signal.Signals(signum).name}: {what}", file=sys.stderr, flush=True)
    return 128 + signum


def run_train(args: argparse.Namespace) -> int:
    """Train a recipe; resumable from OUT/checkpoints; writes OUT/model and OUT/recipe.json.
    SIGTERM / SIGINT: the step ends, a checkpoint is saved there, exit 128 + N (143 / 130)."""
    import jax

    cluster = (args.coordinator, args.num_processes, args.process_id)
    distributed = args.distributed or any(v is not None for v in cluster)
    if distributed:  # before anything touches a device: every process then sees all devices
        jax.distributed.initialize(*cluster)
        # JAX's preemption notifier holds SIGTERM (every process then stops at the same step); a
        # Ctrl-C here is passed on to it as a SIGTERM of this process
        stop = GracefulStop((signal.SIGINT,), notify=lambda signum: signal.raise_signal(signal.SIGTERM))
    else:
        stop = GracefulStop()
    try:
        with stop:
            return _train(args, stop, distributed)
    except Interrupted as e:
        return _stopped(e.signum, "a second signal; the current step was not saved (run again to resume)")


def _train(args: argparse.Namespace, stop: GracefulStop, distributed: bool) -> int:
    import json

    import jax

    from videomt_jax.data.grain_pipeline import GrainBatches
    from videomt_jax.data.synthetic import SyntheticConfig
    from videomt_jax.evaluation.synthetic import save_data_config
    from videomt_jax.training.checkpoint import host_copy, process_barrier
    from videomt_jax.training.loop import CHECKPOINTS_DIR, fit
    from videomt_jax.training.recipes import load_recipe
    from videomt_jax.utils.io import atomic_write_text, check_replaceable, output_lock
    from videomt_jax.weights.api import export_hf, save_pretrained

    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None}
    recipe = load_recipe(args.config, **overrides)
    out = Path(args.out) if args.out else Path(RUNS_DIR) / recipe.name
    checkpoints = out / CHECKPOINTS_DIR
    main_process = jax.process_index() == 0
    resuming = args.resume and _has_checkpoints(checkpoints)
    note = None if args.init or resuming else init_note(recipe)
    if main_process and note:
        print(note, flush=True)
    recipe = _with_data_root(recipe, args.data_root)
    recipe, coco_note = _with_coco_root(recipe, args.coco_root)
    num_devices = None if distributed else args.devices
    _check_devices(recipe, num_devices)
    if not args.resume and _has_checkpoints(checkpoints):
        raise FileExistsError(f"{checkpoints} holds checkpoints; pass --resume or choose another --out")
    if args.resume:
        check_resumable(out, recipe)
    recipe_text = recipe.to_json() + "\n"
    write_recipe = _check_recipe_file(out, recipe_text)
    check_replaceable(out / MODEL_DIR, overwrite=True)  # a foreign file there: refused now, not after training
    params = None
    if args.init:
        params, summary = _init_params(args.init, recipe.model, recipe.train.seed)
        if main_process:
            print(summary, flush=True)
    if stop.signum is not None:
        return _stopped(stop.signum, "before training; nothing written")
    created = _Created()
    if main_process:
        created.mkdir(out.parent)  # the lock file goes there
    try:
        with output_lock(out) if main_process else contextlib.nullcontext():
            if main_process:
                created.mkdir(out)
                if write_recipe:
                    if not os.path.lexists(out / RECIPE_FILE):
                        created.files.append(out / RECIPE_FILE)
                    atomic_write_text(out / RECIPE_FILE, recipe_text)
                if not checkpoints.exists():
                    created.dirs.append(checkpoints)
                tc = recipe.train
                if coco_note:
                    print(coco_note, flush=True)
                print(
                    f"train {recipe.name}: {tc.steps} steps, batch {tc.batch_size} x {tc.num_frames} frames "
                    f"of {recipe.data.image_hw[0]}x{recipe.data.image_hw[1]}, lr {tc.learning_rate:g}, "
                    f"{jax.process_count()} process(es), {jax.device_count()} device(s) -> {out}",
                    flush=True,
                )
            batches = GrainBatches(  # yields exactly recipe.batches(...)(step), built by worker processes
                recipe.clip_fn("train"),
                recipe.collate,
                batch_size=recipe.train.batch_size,
                steps=recipe.train.steps,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                workers=args.workers,
            )
            try:
                result = fit(
                    recipe.model,
                    recipe.train,
                    batches,
                    out,
                    params=params,
                    num_devices=num_devices,
                    stop_after=args.stop_after,
                    processor=recipe.processor,
                    stop=stop,
                    metadata={"recipe": json.loads(recipe_text)},
                )
            finally:  # also on a signal or an error: stop and join the data-loading workers
                batches.close()
            step = int(jax.device_get(result.state.step))
            if result.stopped_by is not None and step < recipe.train.steps:
                return _stopped(
                    result.stopped_by,
                    f"checkpoint of step {step}/{recipe.train.steps} saved in {checkpoints}; "
                    "run the same command to resume",
                )
            host_params = host_copy(result.state.params)  # every process takes part (FSDP: shards of all)
            if main_process:
                # save_pretrained's orbax writer waits for every process; with several, process 0 writes
                # the Hugging Face layout instead (no JAX-only config fields; load_pretrained reads both).
                write = save_pretrained if jax.process_count() == 1 else export_hf
                # The run's own model, with the pixel normalisation it was trained on.
                model_dir = write(
                    out / MODEL_DIR, recipe.model, host_params, processor=recipe.processor, overwrite=True
                )
                if isinstance(recipe.data, SyntheticConfig):  # dataset models are evaluated with --dataset
                    save_data_config(model_dir, recipe.data)
                last = result.history[-1] if result.history else {}
                loss = f", loss {last['loss']:.4f}" if "loss" in last else ""
                print(
                    f"step {step}/{recipe.train.steps}{loss}; {result.seconds:.1f} s; model -> {model_dir}", flush=True
                )
            process_barrier("videomt-jax train: model written")  # the others wait for it, then all leave
    except BaseException:  # a failed start (no checkpoint yet) removes what it created
        if main_process:
            created.undo(checkpoints)
        raise
    if stop.signum is not None:  # arrived after the last step: the run is complete, model written
        return _stopped(stop.signum, f"after the last step ({step}); the model is written")
    return 0


class _RecipesHelp(argparse.RawDescriptionHelpFormatter):
    """Lists the built-in recipes at the end of `train --help` (imported only when help is shown)."""

    def add_text(self, text: str | None) -> None:
        if text is RECIPES_EPILOG:
            import textwrap

            from videomt_jax.training.recipes import RECIPES

            names = textwrap.fill(", ".join(RECIPES), width=88, break_on_hyphens=False)
            text = f"{text}\n{textwrap.indent(names, '  ')}"
        super().add_text(text)


RECIPES_EPILOG = "built-in recipes (CONFIG):"


def add_parser(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a recipe (resumable)",
        description=" ".join((run_train.__doc__ or "").split()),
        epilog=RECIPES_EPILOG,
        formatter_class=_RecipesHelp,
    )
    train.add_argument("config", metavar="CONFIG", help="recipe name (listed below) or recipe JSON file")
    train.add_argument("--out", help=f"run directory (default {RUNS_DIR}/<recipe name>)")
    train.add_argument("--steps", type=int, help="total optimizer steps (schedule length)")
    train.add_argument("--batch-size", type=int, help="global batch: clips per step over all devices and processes")
    train.add_argument(
        "--devices", type=_devices, default=1, help="data-parallel devices of this host: N or 'all' (default 1)"
    )
    train.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from OUT/checkpoints (default); --no-resume refuses to run over existing checkpoints",
    )
    train.add_argument(
        "--data-root",
        metavar="DIR",
        help="dataset recipes: the folder holding the dataset folder (ytvis_2019/, ovis/, VIPSeg/, VSPW_480p/) "
        "or that folder",
    )
    train.add_argument(
        "--coco-root",
        metavar="DIR",
        help="YouTube-VIS / OVIS recipes: COCO (the folder holding coco/, or coco/ itself: annotations/"
        "instances_train2017.json, train2017/) made into pseudo-videos and mixed 1:1 with the videos, "
        "as the authors train",
    )
    train.add_argument(
        "--workers", type=int, help="data-loading worker processes (default: cores - 1, at most 32; 0: in this process)"
    )
    train.add_argument(
        "--init",
        metavar="PATH",
        help="initial weights: anything load_pretrained reads (a VidEoMT; an EoMT image model or the authors' "
        "segmenter .pth: fresh query updater), or an HF Dinov2WithRegistersModel / DINOv3ViTModel backbone (queries "
        'and heads fresh); prints what came from where. A recipe names what it starts from (its "init": the '
        "paper recipes name the authors' segmenter URL); without --init, train prints it and starts from scratch",
    )
    train.add_argument("--stop-after", type=int, help="stop after this many steps of this call (resume later)")
    multi = train.add_argument_group("multi-host (docs/training.md)")
    multi.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first and train on every device of every process",
    )
    multi.add_argument(
        "--coordinator", help="host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS or auto-detect)"
    )
    multi.add_argument("--num-processes", type=int, help="number of processes (default: auto-detect, e.g. SLURM)")
    multi.add_argument(
        "--process-id", type=int, help="this process's index in [0, num-processes) (default: auto-detect)"
    )
    train.set_defaults(func=guarded(run_train, "train"))
