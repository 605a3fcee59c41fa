"""The ``ganforge`` command: run, check, plugins, sample."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .threads import prefer_short_spins

prefer_short_spins()  # before anything imports torch (ganforge.threads says why)

import typer  # noqa: E402
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import GANFORGE_BUG, GanforgeError, UsageError, exit_code_table
from .evaluation import DEFAULT_IMAGES
from .evaluator import EVALUATOR_EPOCHS
from .pluginmanager import make_plugin_host, one_line

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Train GANs from TOML recipes. Variants (DCGAN, InfoGAN, ...) are plugins switched on in the recipe.",
    # \b keeps click from re-flowing the table into one paragraph.
    epilog=f"\b\nExit codes (every command):\n{exit_code_table()}",
)
console = Console()
errors = Console(stderr=True)

RecipeArgument = typer.Argument(..., help="A TOML recipe, e.g. recipes/dcgan_shapes.toml.", exists=True, dir_okay=False)
SetOption = typer.Option([], "--set", help="Override a recipe key: SECTION.KEY=VALUE (repeatable).")


def say(line: str) -> None:
    """One line on stderr, as written: no markup, emoji or re-wrapping."""
    errors.print(line, highlight=False, soft_wrap=True, markup=False, emoji=False)


@contextmanager
def reporting() -> Iterator[None]:
    """Turn what ends a command into its exit code: a GanforgeError is one ``error:`` line and the
    code of whoever must fix it (2 the user, 3 a plugin); anything else is a bug in ganforge, shown
    with its traceback and a request to report it (1)."""
    from .training import TrainingInterrupted

    try:
        yield
    except TrainingInterrupted as stop:
        say(str(stop))
        raise typer.Exit(stop.exit_code) from None
    except GanforgeError as error:
        say(f"error: {error}")
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (loading data, building models): nothing to save yet.
        say("interrupted before training started; nothing was written to resume from")
        raise typer.Exit(130) from None
    except Exception as error:
        traceback.print_exc()
        notes = "".join(f"; {note}" for note in getattr(error, "__notes__", ()))
        say(f"error: a bug in ganforge {__version__}: {type(error).__name__}: {one_line(error)}; please report it"
            f" with the traceback above and the command that caused it{notes}")
        raise typer.Exit(GANFORGE_BUG) from None


def plugin_host(keep_broken: bool = False):
    """The installed plugins; a plugin that will do nothing is one warning line on stderr."""
    host = make_plugin_host(keep_broken=keep_broken)
    for warning in host.warnings:
        say(f"warning: {warning}")
    return host


@app.command()
def run(recipe: Path = RecipeArgument, set_: list[str] = SetOption,
        resume: bool = typer.Option(False, "--resume", help="Continue the run from its checkpoints/last.pt."),
        force_resume: bool = typer.Option(
            False, "--force-resume",
            help="Resume even though the recipe changed keys that change the training; they are listed in a warning.")):
    """Train the recipe; outputs go to <run.out_dir>/<run.name>/.

    SIGINT (Ctrl-C) or SIGTERM finishes the current step, writes a checkpoint and prints the command
    that resumes the run; the exit code is 130 or 143. A run that fails before its first checkpoint
    leaves nothing behind; one that fails later keeps its checkpoints and says how to resume.
    """
    from .launch import run_recipe

    with reporting():
        run_recipe(recipe, set_, resume, force_resume=force_resume, host=plugin_host(), console=console)


@app.command()
def check(recipe: Path = RecipeArgument, set_: list[str] = SetOption):
    """Validate the recipe, build the models, try every plugin it uses on a tiny batch (contract
    checks), run one real D and G step of the recipe on a few images (plugins' loss terms and
    step_end included), and print the models' sizes, the step's losses and the resolved recipe.
    Writes nothing: no run directory, checkpoint or log."""
    from .launch import check_recipe

    with reporting():
        check_recipe(recipe, set_, console, host=plugin_host())


@app.command()
def plugins(options: bool = typer.Option(False, "--options", help="Show each plugin table's options instead:"
                                          " type, accepted values, default and meaning.")):
    """List installed plugins: distribution, version, hooks implemented and names registered;
    plugins that failed to import are listed with their error."""
    with reporting():
        host = plugin_host(keep_broken=True)
    if options:
        from .plugin_docs import options_markdown

        console.print(options_markdown(host), highlight=False, markup=False, soft_wrap=True)
        return
    table = Table("plugin", "from", "hooks", "registers")
    for name, plugin in host.plugins():
        info = host.info.get(name)
        origin = f"{info.distribution} {info.version}".strip() if info else ""
        hooks = "\n".join([*(hook.removeprefix("ganforge_") for hook in host.hooks_of(plugin)),
                           *(f"{table} (run plugin): {', '.join(hook.removeprefix('ganforge_') for hook in names)}"
                             for table, names in host.run_plugin_hooks(name).items() if names)])
        registered = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in host.registered_by(name).items())
        table.add_row(name, origin, hooks or "(none)", registered)
    for name, broken in sorted(host.broken.items()):
        origin = f"{broken.info.distribution} {broken.info.version}".strip()
        table.add_row(name, origin, "(failed to import)", broken.error)
    console.print(table)
    # The listing did its job (exit 0); every other command stops at a broken plugin (exit 3).
    for broken in host.broken.values():
        say(f"warning: {broken.error}")


@app.command()
def sample(checkpoint: Path = typer.Argument(..., help="A checkpoint, e.g. runs/NAME/checkpoints/last.pt."),
           out: Path = typer.Option(..., "--out", help="PNG file to write."),
           n: int | None = typer.Option(None, "--n", min=1, max=4096,
                                           help="How many images (default 64), or traversal rows (default 10)."),
           seed: int = typer.Option(0, "--seed", min=0, help="Seed for the latents."),
           traverse: str | None = typer.Option(None, "--traverse", help="Sweep this code: N rows, one column per value."),
           truncation: float | None = typer.Option(None, "--truncation",
                                                    help="Draw a normal noise z within this many standard deviations"
                                                         " of 0 (the truncation trick; e.g. 0.5); StyleGAN2: psi,"
                                                         " w moved towards its average.")):
    """Draw a grid of samples from a checkpoint, or a traversal of one code."""
    from .launch import sample_checkpoint

    with reporting():
        sample_checkpoint(checkpoint, out, n or (64 if traverse is None else 10), seed, traverse, host=plugin_host(),
                          truncation=truncation)
        console.print(f"wrote {out}", highlight=False)


@app.command("eval")
def evaluate(run_dir: Path = typer.Argument(..., help="A run directory, e.g. runs/infogan_mnist.", exists=True,
                                            file_okay=False),
             json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
             set_: list[str] = SetOption,
             checkpoint: str = typer.Option("last.pt", "--checkpoint", help="A file in the run's checkpoints/."),
             on: str = typer.Option("train", "--on", help="Score the images trained on ('train'), or the"
                                                        " data.holdout images the run never saw ('holdout')."),
             metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated metric names (default: all"
                                                                       " that can run)."),
             n: int = typer.Option(DEFAULT_IMAGES, "--n", min=100, max=100_000,
                                   help="Real and generated images the sample-quality metrics compare."),
             seed: int = typer.Option(0, "--seed", min=0, help="Seed of the generated images and real choice."),
             evaluator: Path | None = typer.Option(None, "--evaluator", help="A feature network file (with its .json),"
                                                  " or 'inception' for Inception-v3 from --inception-weights."),
             inception_weights: Path | None = typer.Option(None, "--inception-weights",
                                                          help="torch-fidelity's Inception-v3 weights file (default:"
                                                               " $GANFORGE_INCEPTION_WEIGHTS); checked by SHA-256."),
             train_evaluator: bool = typer.Option(False, "--train-evaluator",
                                                  help="Train the dataset's default feature network if it is missing."),
             device: str | None = typer.Option(None, "--device", help="Where to load the checkpoint (default: where"
                                                                    " it was trained if this machine has it, else cpu).")):
    """Evaluate a run's checkpoint on its dataset with the registered metrics: InfoGAN's category
    matching, and FID, KID, precision, recall, density, coverage, the classifier score (the
    Inception Score with --evaluator inception) and, for conditional runs, intra-class FID in a
    feature network's space (`ganforge evaluator train` makes one); every figure with how it was made."""
    import json

    from .data import PARTS
    from .evaluation import EvalSettings
    from .launch import evaluate_run

    with reporting():
        if on not in PARTS:
            raise UsageError(f"--on must be one of {', '.join(PARTS)}, got {on!r}")
        names = [name.strip() for name in metrics.split(",") if name.strip()] if metrics is not None else None
        settings = EvalSettings(n=n, seed=seed, evaluator_path=evaluator, inception_weights=inception_weights,
                                train_evaluator=train_evaluator)
        results, run, data = evaluate_run(run_dir, host=plugin_host(), overrides=set_, checkpoint=checkpoint,
                                          part=on, device=device, metrics=names, settings=settings)
    for name, why in settings.skipped.items():
        say(f"note: {name} skipped: {why}")
    for note in settings.notes:
        say(f"note: {note}")
    for warning in settings.warnings:
        say(f"warning: {warning}")
    if json_output:
        print(json.dumps({"run": str(run_dir), "step": run.step, "on": on, "eval_images": len(data), **results,
                          "provenance": settings.provenance}))
        return
    table = Table("metric", "value", title=f"{run_dir} at step {run.step}, on {len(data)} {run.recipe.data.name}"
                                           f" images ({on})")
    for name, value in results.items():
        table.add_row(name, f"{value:.4f}")
    if not results:
        table.add_row("(none)", "no metric applies to this run")
    console.print(table)
    for name, facts in settings.provenance.items():
        console.print(f"{name}: " + ", ".join(f"{key} {value}" for key, value in facts.items()), highlight=False,
                      markup=False)


@app.command()
def compare(run_dirs: list[Path] = typer.Argument(..., help="Run directories evaluated with ganforge eval.",
                                                  exists=True, file_okay=False),
            metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated figures (default: every"
                                                                      " figure of the runs)."),
            on: str = typer.Option("train", "--on", help="Compare evaluations on 'train' or 'holdout' images."),
            json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table.")):
    """One table of the runs' latest evaluations (`ganforge eval` records each in the run's
    evaluations.jsonl): seeds or variants side by side, with the step each was scored at."""
    import json

    from .launch import latest_evaluations

    with reporting():
        records = latest_evaluations(run_dirs, on)
        figures = list(dict.fromkeys(name for record in records for name in record["results"]))
        if metrics is not None:
            wanted = [name.strip() for name in metrics.split(",") if name.strip()]
            missing = [name for name in wanted if name not in figures]
            if missing:
                raise UsageError(f"--metrics: no run has {', '.join(map(repr, missing))}; the runs have:"
                                 f" {', '.join(figures)}")
            figures = wanted
    if json_output:
        print(json.dumps({"on": on, "runs": [{"run": r["run"], "step": r["step"], "checkpoint": r["checkpoint"],
                                               **{name: r["results"].get(name) for name in figures}} for r in records]}))
        return
    table = Table("run", "step", *figures, title=f"latest evaluations on {on} images")
    for record in records:
        values = [f"{record['results'][name]:.4f}" if name in record["results"] else "-" for name in figures]
        table.add_row(record["run"], str(record["step"]), *values)
    console.print(table)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory.", exists=True, file_okay=False),
           out: Path | None = typer.Option(None, "--out", help="HTML file to write (default: RUN_DIR/report.html).")):
    """Write one self-contained HTML page for a run: loss and metric curves, sample grids over
    training, every traversal, the latest evaluations with their provenance, the resolved recipe.
    It loads nothing from the network: open it anywhere, mail it, archive it."""
    from .report import write_report

    with reporting():
        path = write_report(run_dir, out)
    console.print(f"wrote {path}", highlight=False)


evaluator_app = typer.Typer(no_args_is_help=True, help="Feature networks for the sample-quality metrics.")
app.add_typer(evaluator_app, name="evaluator")


@evaluator_app.command("train")
def evaluator_train(data: str = typer.Option(..., "--data", help="A labelled dataset: mnist, fashion-mnist, shapes, cifar10."),
                    root: str = typer.Option("", "--root", help="Its folder (as data.root)."),
                    split: str = typer.Option("all", "--split", help="train, test or all (as data.split)."),
                    image_size: int = typer.Option(0, "--image-size", min=0, help="As data.image_size (0: as stored)."),
                    holdout: int = typer.Option(2000, "--holdout", min=1, help="Images held out to measure it (the"
                                                                                " same ones as data.holdout)."),
                    epochs: int = typer.Option(EVALUATOR_EPOCHS, "--epochs", min=1, max=100),
                    out: Path | None = typer.Option(None, "--out", help="Weights file (default: the cache, where"
                                                                       " ganforge eval looks).")):
    """Train a small classifier on a labelled dataset as the feature network of FID, KID and
    precision/recall; writes its weights, their SHA-256 and a record of how it was made."""
    from .evaluator import default_path, train_evaluator
    from .launch import recipe_from_dict
    from .run import load_data

    with reporting():
        host = plugin_host()
        recipe = recipe_from_dict({"data": {"name": data, "root": root, "split": split, "image_size": image_size}},
                                    host, "ganforge evaluator train")
        images = load_data(recipe, host, "train", holdout=0)
        path = out or default_path(data, images.image_shape)
        evaluator = train_evaluator(images, data, split, holdout, epochs, path,
                                    log=lambda line: console.print(line, highlight=False))
        held = evaluator.record["held_out"]
        console.print(f"wrote {path} (sha256 {evaluator.sha256}); accuracy {held['accuracy']:.4f} on"
                      f" {held['images']} held-out images; record {path.with_suffix('.json')}", highlight=False)


class ReaderMayLeave:
    """Standard output that, once its reader has closed the pipe (``ganforge check R | head -1``),
    discards what follows: the command still runs to its end and exits with its own code. A
    closed pipe is the reader's choice, not a failure of the command."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        # Point the descriptor at /dev/null: what is still buffered (and the flush at exit) goes there.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    sys.stdout = ReaderMayLeave(sys.stdout)
    app(args=argv if argv is not None else sys.argv[1:], prog_name="ganforge")
