"""``[plugins.tensorboard]``: every logged figure, sample grid and traversal in TensorBoard.

Switched on by the table's presence in a recipe; needs the optional extra
(``pip install 'ganforge[tensorboard]'``). Events go to ``<run>/tensorboard`` (or ``logdir``):

- scalars, under the names of ``metrics.jsonl``: ``loss/D/total``, ``loss/G/info/digit``,
  ``mi/digit``, ``eval/fid``, ... (TensorBoard groups them by the part before the first ``/``),
  and ``speed/images_per_s``, ``speed/eval_seconds``;
- images: ``samples`` (the fixed latent batch) and ``traversal/<code>`` for every generator input
  besides the noise, at the sample cadence.

A resumed run purges the events written after the checkpoint it resumes from (TensorBoard's
``purge_step``: steps past the checkpoint's), so the curves show one history, like ``metrics.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

from ganforge.errors import RecipeError
from ganforge.checks import path_text
from ganforge.hookspecs import hookimpl
from ganforge.plugin_spec import Option, PluginSpec
from ganforge.traversal import traversal_latents

SPEED = ("images_per_s", "eval_seconds")


def summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RecipeError("needs the tensorboard package: pip install 'ganforge[tensorboard]'",
                          key="plugins.tensorboard") from None
    return SummaryWriter


class TensorBoard:
    def __init__(self, settings: dict):
        self.writer_class = summary_writer_class()  # at check time: a missing package fails before training
        self.logdir = settings["logdir"]
        self.images = settings["images"]
        self.writer = None

    @hookimpl
    def ganforge_train_start(self, run):
        if not run.ranks.primary:
            return  # under torchrun, rank 0 alone logs (the core calls ganforge_log there only)
        logdir = Path(self.logdir) if self.logdir else run.directory / "tensorboard"
        self.writer = self.writer_class(log_dir=str(logdir), purge_step=run.step + 1 if run.step else None)

    @hookimpl
    def ganforge_log(self, run, step, record):
        for name, value in record.items():
            if name in ("step", "images") or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(f"speed/{name}" if name in SPEED else name, value, step)

    @hookimpl
    def ganforge_samples(self, run, step, images):
        if not self.images:
            return
        from torchvision.utils import make_grid

        self.writer.add_image("samples", make_grid(images.cpu(), nrow=8, padding=1), step)
        for code in run.inputs:
            if code == "z":
                continue
            latents, columns = traversal_latents(run, code, seed=run.recipe.run.seed)
            grid = make_grid(run.generate(latents).cpu(), nrow=columns, padding=1)
            self.writer.add_image(f"traversal/{code}", grid, step)

    @hookimpl
    def ganforge_train_end(self, run, error):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


SPEC = PluginSpec(
    "tensorboard", TensorBoard, doc="the training figures, samples and traversals as TensorBoard logs",
    options={
        # Where and what is logged never changes what is trained: a resumed run may change both.
        "logdir": Option("", 'the log folder ("": the run\'s tensorboard/)', path_text, changes_training=False),
        "images": Option(True, "log sample grids and traversals too", changes_training=False),
    },
    changes_training=False)
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
