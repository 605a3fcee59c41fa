"""What the CLI commands do, as plain functions: build the host, read the recipe, run."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from .checkpoint import load_checkpoint, restore_run_state, seed_global_rngs
from .data import ImageData
from .distributed import ProcessGroup, from_primary, ranks_from_environment
from .errors import GanforgeError, RecipeError, UsageError
from .evaluation import EvalSettings, chosen_metrics, evaluator_trainer, recipe_warnings, score
from .images import save_grid
from .loading import loadable_device, read_recipe, recipe_from_dict, run_directory, run_from_checkpoint
from .models import count_parameters
from .onestep import try_one_step
from .outputs import LAST, RunOutputs, read_json_lines, writing
from .plugin_spec import PluginSpec, resumable_keys
from .pluginmanager import PluginHost, make_plugin_host, plugin_specs
from .progress import make_progress
from .recipe import SCHEMA, Recipe
from .run import Run, load_data, resolve_device
from .threads import describe_threads
from .training import TrainingInterrupted, train
from .traversal import save_traversal

# Where they were before ganforge.loading held them: scripts import them from here.
__all__ = ["loadable_device", "read_recipe", "recipe_from_dict", "run_directory", "run_from_checkpoint"]

#: Keys a resumed run may change: where things are and how long and often, not what is trained.
RESUMABLE_CHANGES = {
    "run.out_dir", "data.root", "data.download", "train.steps", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.threads",
    # How the same arithmetic runs: checkpoints from either setting load in the other.
    "train.compile", "train.compile_mode", "train.precision", "train.memory_format",
    # Scoring never changes what is trained (ganforge.scoring): every [eval] key.
    *(f"eval.{key}" for key in SCHEMA["eval"]),
}


def run_recipe(path: Path, overrides: list[str] = (), resume: bool = False, *, force_resume: bool = False,
               host: PluginHost | None = None, console: Console | None = None) -> Run:
    """``ganforge run``: validate, build, (resume,) train. Returns the finished run.

    ``force_resume`` resumes even where the recipe changed keys that change the training; the
    changes are printed as a warning.
    """
    host = host or make_plugin_host()
    ranks = ranks_from_environment()
    console = console or Console()
    if not ranks.primary:
        console = Console(quiet=True)  # rank 0 alone prints (and writes files)
    resume = resume or force_resume
    recipe = read_recipe(path, overrides, host)
    outputs = RunOutputs(run_directory(recipe), recipe.train.keep_checkpoints)

    def check_folder() -> dict | None:
        # Before anything heavy: is there a run to resume, or a run that a new one would overwrite?
        outputs.check_start(resume)
        if not resume:
            return None
        stored = load_checkpoint(outputs.last_checkpoint)
        check_resumable(stored["recipe"], recipe, force_resume, console, plugin_specs(host))
        return stored

    seed_global_rngs(recipe.run.seed)  # plugins drawing from Python's or numpy's generator: same seed, same draws
    with ProcessGroup(ranks, resolve_device(recipe.run.device)):
        state = from_primary(check_folder, ranks)  # rank 0 reads its files; the other ranks get what it read
        run = Run(recipe, host, outputs.directory, ranks=ranks)
        if ranks.primary:
            outputs.prepare(recipe.to_toml(), resume=resume)
        try:
            if state is not None:
                restore_run_state(run, state, outputs.last_checkpoint)
                outputs.saved_step = run.step
                if ranks.primary:
                    outputs.truncate_metrics(run.step)
                console.print(f"resuming {outputs.directory} at step {run.step}", highlight=False)
            _print_header(console, recipe, run, outputs)
            train(run, outputs, make_progress(console), resumed=state)
        except TrainingInterrupted as stop:
            stop.resume_command = resume_command(path, overrides)
            raise
        except BaseException as error:
            if ranks.primary:
                explain_failure(error, outputs, path, overrides, new_run=not resume)
            raise
    console.print(f"done: {run.step} steps, {run.images_seen} images; outputs in {outputs.directory}", highlight=False)
    return run


def explain_failure(error: BaseException, outputs: RunOutputs, path: Path, overrides: list[str], new_run: bool) -> None:
    """After a failed run: a new run without a checkpoint leaves nothing behind (so the same
    command can start it again); otherwise its checkpoints stay and the error says how to resume."""
    if outputs.last_checkpoint.is_file():
        note = (f"the run's checkpoints are kept (last: step {outputs.saved_step}); once fixed, resume with:"
                f" {resume_command(path, overrides)}")
    elif new_run:
        outputs.discard()
        note = f"the run stopped before its first checkpoint, so {outputs.directory} was removed: the same command starts it again"
    else:
        return
    if isinstance(error, GanforgeError):
        error.hint(note)
    elif isinstance(error, Exception):
        error.add_note(note)


def resume_command(path: Path, overrides: list[str]) -> str:
    """The shell command that continues a run started with ``path`` and ``overrides``."""
    settings = [part for assignment in overrides for part in ("--set", assignment)]
    return shlex.join(["ganforge", "run", str(path), *settings, "--resume"])


def check_resumable(stored: dict, recipe: Recipe, force: bool, console: Console,
                    specs: dict[str, PluginSpec] | None = None) -> None:
    """Refuse (or with ``force``, warn about) changes to keys that change what is trained."""
    resumable = RESUMABLE_CHANGES | resumable_keys(specs or {})
    stored = with_core_defaults(stored)
    changed = [key for key in _differing_keys(stored, recipe.to_dict()) if key not in resumable]
    if not changed:
        return
    if not force:
        raise RecipeError(f"differs from the run being resumed in {', '.join(changed)}; only"
                          f" {', '.join(sorted(resumable))} may change (--force-resume resumes anyway)",
                          source=recipe.source)
    current = recipe.to_dict()
    changes = ", ".join(f"{key} ({_lookup(stored, key)!r} -> {_lookup(current, key)!r})" for key in changed)
    console.print(f"warning: resuming with a changed recipe: {changes}", highlight=False, markup=False)


def with_core_defaults(stored: dict) -> dict:
    """A stored recipe with the core keys added since it was written at their defaults, which
    train as the run did: a checkpoint from before a key existed resumes."""
    filled = {section: dict(values) if isinstance(values, dict) else values for section, values in stored.items()}
    for section, fields in SCHEMA.items():
        table = filled.setdefault(section, {})
        if isinstance(table, dict):
            for key, field in fields.items():
                table.setdefault(key, copy.deepcopy(field.default))
    return filled


def _lookup(values: dict, dotted: str):
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _differing_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differing_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def batch_description(recipe: Recipe) -> str:
    """``64``, or with ``train.accumulate = 4``, ``256 (4 micro-batches of 64)``."""
    size, parts = recipe.train.batch_size, recipe.train.accumulate
    return f"{size * parts} ({parts} micro-batches of {size})" if parts > 1 else str(size)


def _print_header(console: Console, recipe: Recipe, run: Run, outputs: RunOutputs) -> None:
    inputs = ", ".join(f"{name}[{dist.input_dim}]" for name, dist in run.inputs.items())
    console.print(
        f"ganforge: {recipe.model.name} on {recipe.data.name} ({len(run.data)} images"
        f" {'x'.join(map(str, run.data.image_shape))}), {recipe.loss.name} loss, inputs {inputs},"
        f" plugins: {', '.join(run.plugins) or 'none'}; {recipe.train.steps} steps of {batch_description(recipe)}"
        f"{f', {run.d_steps} D steps each' if run.d_steps > 1 else ''} -> {outputs.directory}", highlight=False)
    if run.device.type == "cpu":
        console.print(f"threads: {describe_threads(recipe.train.threads)}", highlight=False)
    if run.ranks.distributed:
        ranks = run.ranks.world_size
        console.print(f"distributed: {ranks} processes (DDP, {'NCCL' if run.device.type == 'cuda' else 'gloo'});"
                      f" the global batch of {recipe.train.batch_size} is {recipe.train.batch_size // ranks} per"
                      f" process{' in each micro-batch' if recipe.train.accumulate > 1 else ''}", highlight=False)
    for note in run.notes:
        console.print(f"note: {note}", highlight=False, markup=False)


def check_recipe(path: Path, overrides: list[str], console: Console, host: PluginHost | None = None) -> Run:
    """``ganforge check``: everything ``run`` does before the first step, one real step on a tiny
    batch (:func:`ganforge.onestep.try_one_step`, writing nothing), and a report of it."""
    host = host or make_plugin_host()
    recipe = read_recipe(path, overrides, host)
    run = Run(recipe, host, run_directory(recipe))
    table = Table("network", "parameters", box=None)
    table.add_row("generator", f"{count_parameters(run.generator):,}")
    table.add_row("discriminator (with heads)", f"{count_parameters(run.discriminator):,}")
    for name, head in run.discriminator.heads.items():
        table.add_row(f"  head {name}", f"{count_parameters(head):,}")
    _print_header(console, recipe, run, RunOutputs(run_directory(recipe)))
    for warning in recipe_warnings(recipe, run.image_shape):
        console.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    console.print(table)
    console.print(try_one_step(run).summary(), highlight=False)
    console.print("resolved recipe:", highlight=False)
    console.print(recipe.to_toml(), highlight=False, markup=False)
    return run


def sample_checkpoint(path: Path, out: Path, n: int, seed: int, traverse: str | None = None,
                      host: PluginHost | None = None, truncation: float | None = None) -> Path:
    """``ganforge sample``: ``n`` images from fresh latents drawn with ``seed``, as one PNG grid, or
    with ``traverse`` a traversal of that code (``n`` rows)."""
    if traverse is not None and truncation is not None:
        raise UsageError("--truncation applies to sample grids, not to --traverse")
    if truncation is not None and not truncation > 0:
        raise UsageError(f"--truncation must be greater than 0 (e.g. 0.5), got {truncation:g}")
    run, _ = run_from_checkpoint(path, host)
    if traverse is not None:
        return save_traversal(run, traverse, out, rows=n, seed=seed)
    images = run.generate(run.sample_latents(n, torch.Generator().manual_seed(seed), truncation), truncation)
    return save_grid(images, out, columns=max(1, round(n**0.5)))


def evaluate_run(run_directory: Path, host: PluginHost | None = None, overrides: list[str] = (),
                 checkpoint: str = LAST, part: str = "train", device: str | None = None,
                 metrics: list[str] | None = None, settings: EvalSettings | None = None,
                 ) -> tuple[dict[str, float], Run, ImageData]:
    """``ganforge eval``: the registered metrics (``metrics``, all by default) on one of the run's
    checkpoints (the last by default) and its dataset: the images it trained on
    (``part="train"``), or the ``data.holdout`` images it never saw (``part="holdout"``).

    A metric that needs a feature network is skipped when none is available and it was not asked
    for by name (``settings.skipped`` says why); asked for, it is a one-line error. Returns the
    results, the run and the images scored; ``settings.provenance`` says how each was made."""
    host = host or make_plugin_host()
    settings = settings or EvalSettings()
    entries = chosen_metrics(host, metrics)
    path = Path(run_directory) / "checkpoints" / checkpoint
    run, _ = run_from_checkpoint(path, host, overrides=overrides, device=device)
    data = load_data(run.recipe, host, part)
    settings.part = part
    settings.trainer = settings.trainer or evaluator_trainer(run, host, load_data)
    results = score(run, data, entries, settings, strict=metrics is not None)
    try:
        record_evaluation(Path(run_directory), {"checkpoint": checkpoint, "step": run.step, "on": part,
                                                "images": len(data), "results": results,
                                                "provenance": settings.provenance})
    except GanforgeError as error:  # a run directory one may read but not write: the figures still count
        settings.notes.append(f"not recorded for ganforge compare: {error}")
    return results, run, data


EVALUATIONS = "evaluations.jsonl"


def record_evaluation(run_directory: Path, record: dict) -> None:
    """Append one evaluation to the run's ``evaluations.jsonl``, which ``ganforge compare`` reads."""
    path = run_directory / EVALUATIONS
    with writing(path), path.open("a") as file:
        file.write(json.dumps(record) + "\n")


def latest_evaluations(run_directories: list[Path], part: str = "train") -> list[dict]:
    """Each run's newest evaluation on ``part`` (any checkpoint), for ``ganforge compare``."""
    found = []
    for directory in run_directories:
        records = [record for record in read_json_lines(Path(directory) / EVALUATIONS) if record.get("on") == part]
        if not records:
            raise UsageError(f"{directory} has no evaluation on its {part} images; run `ganforge eval {directory}"
                             f"{'' if part == 'train' else ' --on ' + part}` first")
        found.append({"run": str(directory), **records[-1]})
    return found
