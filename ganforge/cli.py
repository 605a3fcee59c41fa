"""The ``ganforge`` command: run, check, plugins, sample."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .errors import GanforgeError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train GANs from TOML recipes. Variants (DCGAN, InfoGAN, ...) are plugins switched on in the recipe.",
)
console = Console()
errors = Console(stderr=True)

RecipeArgument = typer.Argument(..., help="A TOML recipe, e.g. recipes/dcgan_shapes.toml.", exists=True, dir_okay=False)
SetOption = typer.Option([], "--set", help="Override a recipe key: SECTION.KEY=VALUE (repeatable).")


def fail(error: GanforgeError) -> None:
    errors.print(f"error: {error}", highlight=False, soft_wrap=True, markup=False, emoji=False)
    raise typer.Exit(error.exit_code)


@app.command()
def run(recipe: Path = RecipeArgument, set_: list[str] = SetOption,
        resume: bool = typer.Option(False, "--resume", help="Continue the run from its checkpoints/last.pt."),
        force_resume: bool = typer.Option(
            False, "--force-resume",
            help="Resume even though the recipe changed keys that change the training; they are listed in a warning.")):
    """Train the recipe; outputs go to <run.out_dir>/<run.name>/.

    SIGINT (Ctrl-C) or SIGTERM finishes the current step, writes a checkpoint and prints the command
    that resumes the run; the exit code is 130 or 143.
    """
    from .launch import run_recipe
    from .training import TrainingInterrupted

    try:
        run_recipe(recipe, set_, resume, force_resume=force_resume, console=console)
    except TrainingInterrupted as stop:
        errors.print(str(stop), highlight=False, soft_wrap=True, markup=False, emoji=False)
        raise typer.Exit(stop.exit_code) from None
    except GanforgeError as error:
        fail(error)
    except KeyboardInterrupt:
        # Ctrl-C before the training loop (loading data, building models): nothing to save yet.
        errors.print("interrupted before training started; nothing was written to resume from", highlight=False)
        raise typer.Exit(130) from None


@app.command()
def check(recipe: Path = RecipeArgument, set_: list[str] = SetOption):
    """Validate the recipe, build the models and print their sizes and the resolved recipe; train nothing."""
    from .launch import check_recipe

    try:
        check_recipe(recipe, set_, console)
    except GanforgeError as error:
        fail(error)


@app.command()
def plugins():
    """List installed plugins: distribution, version, hooks implemented and names registered."""
    from .pluginmanager import make_plugin_host

    try:
        host = make_plugin_host()
    except GanforgeError as error:
        fail(error)
    table = Table("plugin", "from", "hooks", "registers")
    for name, plugin in host.plugins():
        info = host.info.get(name)
        origin = f"{info.distribution} {info.version}".strip() if info else ""
        hooks = "\n".join(hook.removeprefix("ganforge_") for hook in host.hooks_of(plugin))
        registered = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in host.registered_by(name).items())
        table.add_row(name, origin, hooks, registered)
    console.print(table)


@app.command()
def sample(checkpoint: Path = typer.Argument(..., help="A checkpoint, e.g. runs/NAME/checkpoints/last.pt."),
           out: Path = typer.Option(..., "--out", help="PNG file to write."),
           n: int | None = typer.Option(None, "--n", min=1, max=4096,
                                           help="How many images (default 64), or traversal rows (default 10)."),
           seed: int = typer.Option(0, "--seed", min=0, help="Seed for the latents."),
           traverse: str | None = typer.Option(None, "--traverse", help="Sweep this code: N rows, one column per value.")):
    """Draw a grid of samples from a checkpoint, or a traversal of one code."""
    from .launch import sample_checkpoint

    try:
        sample_checkpoint(checkpoint, out, n or (64 if traverse is None else 10), seed, traverse)
        console.print(f"wrote {out}", highlight=False)
    except GanforgeError as error:
        fail(error)


@app.command("eval")
def evaluate(run_dir: Path = typer.Argument(..., help="A run directory, e.g. runs/infogan_mnist.", exists=True,
                                            file_okay=False),
             json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
             set_: list[str] = SetOption,
             checkpoint: str = typer.Option("last.pt", "--checkpoint", help="A file in the run's checkpoints/.")):
    """Evaluate a run's last checkpoint on its dataset with every registered metric
    (for InfoGAN: each categorical code's matched accuracy and NMI against the labels)."""
    import json

    from .launch import evaluate_run

    try:
        results, run = evaluate_run(run_dir, overrides=set_, checkpoint=checkpoint)
    except GanforgeError as error:
        fail(error)
    if json_output:
        print(json.dumps({"run": str(run_dir), "step": run.step, "eval_images": len(run.data), **results}))
        return
    table = Table("metric", "value", title=f"{run_dir} at step {run.step}, on {len(run.data)} {run.recipe.data.name} images")
    for name, value in results.items():
        table.add_row(name, f"{value:.4f}")
    if not results:
        table.add_row("(none)", "no metric applies to this run")
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="ganforge")
