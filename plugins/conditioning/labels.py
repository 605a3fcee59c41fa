"""What the conditional variants share: the class label as a generator input, the real images'
labels as the discriminator's conditions, and the generator-side class accuracy."""

from __future__ import annotations

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.checks import between
from ganforge.errors import RecipeError
from ganforge.plugin_spec import CLASS_LABEL, Option

LABEL = "label"  # the generator input, and the condition key
MAX_CLASSES = 100_000


class LabelledVariant:
    """What ``conditional`` and ``acgan`` both do: the ``label`` generator input of ``classes``
    categories, the real batch's labels as the discriminator's conditions, and a class grid at
    the sample cadence. Subclasses add their head and terms."""

    name = ""

    def __init__(self, settings: dict):
        self.classes = settings["classes"]

    @hookimpl
    def ganforge_generator_inputs(self, run):
        check_dataset_classes(run, self.classes, self.name)
        return [(LABEL, label_input(run, self.classes, self.name))]

    @hookimpl
    def ganforge_real_conditions(self, run, labels):
        return real_label_conditions(run, labels, self.classes)

    @hookimpl
    def ganforge_samples(self, run, step, path):
        save_class_grid(run, step, path.parent)


#: What both variants declare: the label fed to G, which one plugin at a time may do.
CLASSES_OPTION = Option(10, "how many classes the label has (at least the dataset's)", between(2, MAX_CLASSES))
LABEL_CAPABILITY = {"provides": frozenset({CLASS_LABEL}),
                    "conflicts": {CLASS_LABEL: "both add the class label as a generator input; pick one of them"}}


def label_input(run, classes: int, plugin: str):
    """The ``label`` generator input: a one-hot categorical of ``classes`` categories."""
    return run.make_distribution("categorical", classes, {}, key=f"plugins.{plugin}.classes")


def check_dataset_classes(run, classes: int, plugin: str) -> None:
    """The dataset's main label must fit in ``classes``: said at check, not as an index error later."""
    data = run.data
    if data is None:
        return  # a checkpoint loaded without its data: it was checked when it trained
    label = data.main_label
    if label is None:
        raise RecipeError(f"{plugin} needs a labelled dataset; {run.recipe.data.name} has no labels", key="data.name")
    present = int(data.labels[label].max()) + 1
    if present > classes:
        raise RecipeError(f"{run.recipe.data.name}'s {label!r} has {present} classes; set classes = {present}",
                          key=f"plugins.{plugin}.classes")


def real_label_conditions(run, labels: dict[str, torch.Tensor], classes: int) -> dict[str, torch.Tensor]:
    main = next(iter(labels))
    return {LABEL: nn.functional.one_hot(labels[main].to(run.device), classes).float()}


CLASS_GRID_COLUMNS = 10


def save_class_grid(run, step: int, folder) -> None:
    """``classes_<step>.png``: one row per class, each column one draw of the other inputs (the
    same draws in every row), from the run's seed."""
    from ganforge.images import save_grid
    from ganforge.traversal import traversal_latents

    latents, classes = traversal_latents(run, LABEL, rows=CLASS_GRID_COLUMNS, seed=run.recipe.run.seed)
    # traversal_latents gives a row per draw and a column per class: transpose to a row per class.
    order = torch.arange(CLASS_GRID_COLUMNS * classes).view(CLASS_GRID_COLUMNS, classes).t().flatten()
    images = run.generate({name: value[order.to(value.device)] for name, value in latents.items()})
    save_grid(images, folder / f"classes_{step:07d}.png", columns=CLASS_GRID_COLUMNS)


def generated_class_accuracy(run, settings, classes: int) -> dict[str, float]:
    """``n / classes`` images per class, classified by the feature network: how often G draws the
    class it was asked for (no matching: the label means a class)."""
    evaluator = settings.evaluator()
    per_class = max(1, settings.n // classes)
    wanted = torch.arange(classes).repeat_interleave(per_class)
    images = settings.generated_images(run, len(wanted), {LABEL: nn.functional.one_hot(wanted, classes).float()})
    predicted = evaluator.classify(images)
    settings.record("class-accuracy", **settings.network_facts(), images_per_class=per_class, step=run.step,
                    seed=settings.seed)
    per = {f"class_accuracy/{k}": float((predicted[wanted == k] == k).float().mean()) for k in range(classes)}
    return {"class_accuracy": float((predicted == wanted).float().mean()), **per}
