"""The hooks a ganforge plugin can implement: this module is the contract.

Hooks are grouped in the order a run calls them: registration (once, when the plugin manager is
built), run plugins (once per run, for each ``[plugins.<name>]`` table), setup (once per run, after
the models are built), pictures and metrics (whenever images are drawn from the generator), per
step (every training step) and events. Every hook may accept any subset of the arguments listed
here, so new arguments can be added without breaking plugins.

Implement a hook with the ``hookimpl`` marker::

    from ganforge import hookimpl

    @hookimpl
    def ganforge_register_losses(register):
        register("hinge", HingeLoss())

``docs/hooks.md`` has a section per hook with an example; a test keeps the two in step.
"""

from __future__ import annotations

import pluggy

PROJECT = "ganforge"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------------------
# Registration: called once per plugin manager. ``register`` belongs to a registry owned by the
# core; it records which plugin registered each name and rejects duplicates.
# ---------------------------------------------------------------------------------------------


@hookspec
def ganforge_register_models(register):
    """Register model families (a generator and a discriminator that belong together).

    Call ``register(name, build)`` where ``build(image_shape, input_dim)`` returns
    ``(generator, discriminator)``: ``image_shape`` is ``(C, H, W)`` of the dataset, ``input_dim``
    the width of the generator's input (noise plus every extra generator input). The generator maps
    ``(B, input_dim)`` to images in [-1, 1]; the discriminator is a
    :class:`ganforge.models.Discriminator` (shared ``features`` plus an adversarial head). ``build``
    raises :class:`ganforge.errors.RecipeError` for an image shape it cannot take. A ``build`` that
    takes keyword arguments gets the recipe's ``model.options`` as them; one with an ``input_layout``
    parameter also gets the input row's parts in order, ``{name: width}`` (the noise ``"z"`` first, then
    each extra input by name), for a generator that feeds them to different layers. ``build`` may
    carry ``provides`` (capabilities) and ``conflicts`` (a table or capability -> the reason)
    attributes, which ``ganforge check`` counts as a plugin's; a generator whose forward has a
    ``truncation`` parameter truncates its own latents at sampling (docs/hooks.md).
    Selected by the recipe key ``model.name``. Return value ignored.
    Not ``firstresult``: every plugin registers.
    """


@hookspec
def ganforge_register_losses(register):
    """Register adversarial objectives (the GAN variant's loss).

    Call ``register(name, loss)`` where ``loss`` has ``discriminator_loss(real_logits,
    fake_logits)`` and ``generator_loss(fake_logits)``, each returning a scalar tensor
    (see :class:`ganforge.losses.AdversarialLoss`). Selected by ``loss.name``. Return value ignored.
    Not ``firstresult``: every plugin registers.
    """


@hookspec
def ganforge_register_datasets(register):
    """Register datasets.

    Call ``register(name, load)`` where ``load(settings)`` takes a
    :class:`ganforge.data.DataSettings` and returns a :class:`ganforge.data.ImageData` (in memory, or
    streamed from its files with ``data.stream``), or raises :class:`ganforge.errors.DataError` saying which files are missing, where it
    looked and how to get them. Selected by ``data.name``. Return value ignored.
    Not ``firstresult``: every plugin registers.
    """


@hookspec
def ganforge_register_latents(register):
    """Register latent distributions (for the noise ``z`` and for codes fed to the generator).

    Call ``register(name, factory)`` where ``factory(size, **options)`` returns a
    :class:`ganforge.latents.LatentDistribution`. Selected by ``latent.noise`` and by plugins that
    add generator inputs. Return value ignored.
    Not ``firstresult``: every plugin registers.
    """


@hookspec
def ganforge_register_metrics(register):
    """Register metrics computed on a trained run (by ``ganforge eval``).

    Call ``register(name, metric)`` where ``metric(run, data, settings)`` (any subset of those
    names) returns a dict of named floats (or an empty dict when the metric does not apply to this
    run). ``data`` are the images scored; ``settings`` is a :class:`ganforge.evaluation.EvalSettings`:
    ``n``, ``seed``, the verified feature network (``evaluator()``), cached real features,
    seeded generated images, and ``record(name, **facts)`` for the figures' provenance.
    Return value ignored.
    Not ``firstresult``: every plugin registers.
    """


@hookspec
def ganforge_register_optimizers(register):
    """Register optimizers, selected by ``train.optimizer`` (built in: ``adam``, ``adamw``, ``sgd``).

    Call ``register(name, factory)`` where ``factory(param_groups, betas)`` returns a
    ``torch.optim.Optimizer``: ``param_groups`` is a list of dicts, each with ``params`` and ``lr``
    (the recipe's rate, or a head's own); ``betas`` is ``(train.beta1, train.beta2)``. Called once
    for G and once for D. Return value ignored.
    Not ``firstresult``: every plugin registers.
    """


@hookspec
def ganforge_register_run_plugins(register):
    """Register plugins that a recipe switches on with a ``[plugins.<name>]`` table.

    Call ``register(spec)`` with a :class:`ganforge.plugin_spec.PluginSpec`: the table's name,
    ``factory``, its options (type, default, accepted values, what each does: the core checks the
    user's table against them, with the same errors as for its own keys), what it provides to
    other plugins, requires and conflicts with, and whether it keeps state in checkpoints
    (docs/plugin-options.md lists the built-in ones). ``factory(settings)`` receives the checked
    settings and returns an object implementing per-run hooks, which the core registers with the
    run's plugin manager as ``<name>.run``; it raises :class:`ganforge.errors.RecipeError` (with
    ``key``) for what the options cannot say (two settings that contradict each other). The older
    ``register(name, factory, defaults)``, with a dict of default values, still works.
    Return value ignored.
    Not ``firstresult``: every plugin registers.
    """


# ---------------------------------------------------------------------------------------------
# Setup: called once per run, in this order, before the first step.
# ---------------------------------------------------------------------------------------------


@hookspec
def ganforge_generator_inputs(run):
    """Extra named inputs for the generator, concatenated to the noise ``z``.

    Return a list of ``(name, distribution)`` pairs, ``distribution`` a
    :class:`ganforge.latents.LatentDistribution`. The core samples every input each step from the
    run's seeded generator, concatenates them after ``z`` in name order, and hands the sampled
    values to the loss-term hooks as ``ctx.latents[name]``. Names must be unique across plugins.
    Not ``firstresult``: every plugin's inputs are used.
    """


@hookspec
def ganforge_discriminator_heads(run, feature_dim):
    """Extra named heads on the discriminator's shared features.

    Return a list of ``(name, module)`` pairs; ``module`` maps ``(B, feature_dim)`` features to any
    tensor. The core attaches the heads to the discriminator (so the discriminator's optimizer
    trains them and checkpoints hold them) and runs them on every discriminator pass; their outputs
    reach the loss-term hooks as ``ctx.d_fake.heads[name]`` and ``ctx.d_real.heads[name]``.
    Not ``firstresult``: every plugin's heads are attached.
    """


@hookspec
def ganforge_discriminator_networks(run, image_shape):
    """Extra named networks beside the discriminator, reading images rather than D's features
    (InfoGAN-CR's network that tells which code a pair of images shares).

    Return a list of ``(name, module)`` pairs. The core attaches each to the discriminator as
    ``unwrap(run.discriminator).networks[name]``: the discriminator's optimizer trains it (at its
    ``learning_rate`` attribute where it sets one, else ``train.d_lr``) and checkpoints hold it,
    but no discriminator pass runs it: the plugin calls it from its loss terms, on whatever images
    it makes. ``image_shape`` is the data's ``(C, H, W)``.
    Not ``firstresult``: every plugin's networks are attached.
    """


@hookspec
def ganforge_models_built(run):
    """Called once the models and heads exist, before the optimizers are made.

    The place for what changes the networks or how they are trained: spectral normalisation of
    ``run.discriminator`` (or of the generator), an EMA copy of the generator, freezing a part
    (``requires_grad_(False)``: the core keeps that flag and leaves the part out of the optimizer),
    and the optimizer groups: ``run.parameter_groups`` maps ``"G"`` and ``"D"`` to lists of
    ``{"params": [...], "lr": ...}`` dicts that the recipe's optimizer is then built from; edit
    them (another rate for a group, another group). Return value ignored.
    Not ``firstresult``: every implementation runs.
    """


@hookspec
def ganforge_discriminator_steps(run):
    """How many discriminator updates the plugin's objective needs per generator update (WGAN-GP's
    critic: 5), or ``None``. Used when the recipe leaves ``train.d_steps`` at 0 (its default);
    plugins that ask for different numbers are a recipe error naming ``train.d_steps``. Called
    once, after ``ganforge_models_built``.
    Not ``firstresult``: every plugin's answer is compared.
    """


@hookspec
def ganforge_discriminator_transforms(run):
    """Transforms applied to every image the discriminator sees, real and fake, in both phases
    (differentiable augmentation: DiffAugment, ADA).

    Return a list of ``(name, transform)`` pairs; ``transform(images, rng)`` maps a batch in
    [-1, 1] to a batch of the same shape, differentiably (the G phase backpropagates through it),
    drawing only from ``rng``, the run's stream ``transform/<name>`` (on the run's device, kept in
    checkpoints). The core applies them in order of each transform's ``order`` attribute (default
    0), then name: the order is explicit, never install order. ``ctx.real`` and ``ctx.fake`` stay
    untransformed; ``ctx.discriminate(images)`` transforms too.
    Not ``firstresult``: every plugin's transforms are applied.
    """


# ---------------------------------------------------------------------------------------------
# Pictures and metrics: called whenever images are drawn from the generator, during training and
# after it.
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def ganforge_inference_generator(run):
    """The generator that pictures, traversals, ``load_generator`` and metrics use, or ``None``.

    Called each time the core draws images for them (``run.generate``): every sample grid,
    traversal, ``ganforge sample`` batch and metric batch, so return a module the plugin keeps
    rather than one built per call. Return a module with the generator's interface (an
    exponential moving average of ``run.generator``, kept in the plugin's ``state_dict``); the
    first plugin that returns one wins. Training always updates ``run.generator``. ``firstresult``.
    """


# ---------------------------------------------------------------------------------------------
# Per step: called every training step, in this order: the D phase's hooks once per D step, then
# the G phase's.
# ---------------------------------------------------------------------------------------------


@hookspec
def ganforge_real_conditions(run, labels):
    """What discriminator heads that take ``conditions`` see for a real batch (a conditional GAN's
    class, matching the generator input the fakes were drawn with).

    ``labels`` are the dataset's labels of the batch by name. Return a dict of tensors keyed like the
    generator inputs (``{"label": one_hot}``); for fakes, heads receive the sampled latents. Called
    every D step (for each micro-batch with ``train.accumulate``); return ``{}`` when there is nothing to add.
    Not ``firstresult``: the plugins' dicts are merged.
    """


@hookspec
def ganforge_discriminator_views(run, real):
    """Extra views of the real batch for the discriminator to see in the D phase (moved copies
    for a consistency term).

    Called every D step (``run.d_steps`` times per step; for each micro-batch with
    ``train.accumulate``), after ``ganforge_real_conditions``.
    ``real`` is the step's real batch (micro-batch) in [-1, 1], untransformed. Return a list of ``(name,
    images)`` pairs, or of ``(name, images, info)`` triples where the term needs to know how the
    view was made: ``info`` is any object (the random draws behind a moved copy) and reaches the D
    phase's loss-term hooks as ``ctx.view_info[name]``, so the plugin keeps no per-step state
    between the two hooks. Each view goes through the run's transforms and into the same
    discriminator pass as the real and fake batches (one matrix product per layer, batch norm kept
    per batch), sees the real batch's conditions, and leaves D's batch-norm running statistics
    alone. Its output is ``ctx.views[name]`` in the D phase's loss-term hooks; it trains D through
    whatever term uses it. Cheaper than ``ctx.discriminate``, which makes a pass of its own; a term
    that needs gradients with respect to the images themselves (a penalty) still uses that.
    Not ``firstresult``: every plugin's views are used.
    """


@hookspec
def ganforge_discriminator_fake_views(run, fake, latents):
    """Extra views of the generated batch for the discriminator to see in the D phase (moved
    copies of the fakes for a consistency term: the generated half of balanced consistency
    regularisation).

    Called every D step (``run.d_steps`` times per step; for each micro-batch with
    ``train.accumulate``), after ``ganforge_discriminator_views``.
    ``fake`` is the step's generated batch, detached from the generator, untransformed;
    ``latents`` are what it was drawn from. Return a list of ``(name, images)`` pairs or ``(name,
    images, info)`` triples, ``info`` reaching the D phase's loss-term hooks as
    ``ctx.fake_view_info[name]`` (as for ``ganforge_discriminator_views``); names must differ
    across plugins (they need not differ from the real batch's views). Each view goes
    through the run's transforms and into the same discriminator pass as the real and fake
    batches, sees the fakes' latents as conditions, and leaves D's batch-norm running statistics
    alone. Its output is ``ctx.fake_views[name]`` in the D phase's loss-term hooks (empty in the
    G phase); it trains D through whatever term uses it. Not ``firstresult``: every plugin's views
    are used.
    """


@hookspec
def ganforge_discriminator_loss_terms(ctx):
    """Extra terms for the discriminator's objective in this step.

    ``ctx`` is a :class:`ganforge.training.StepContext` for the ``"D"`` phase: real images and
    labels, the sampled latents, the detached fakes, and the discriminator's outputs on both.
    Return a list of :class:`ganforge.losses.LossTerm` (name, value, weight). The core adds
    ``weight * value`` to the adversarial loss, backpropagates the sum once (into D's trainable
    parameters only), and logs each term as ``loss/D/<name>``. D's outputs on the plugins' views
    are ``ctx.views`` (of the real batch) and ``ctx.fake_views`` (of the fakes). A term that needs
    its own pass (a gradient penalty on images with ``requires_grad``) makes it with
    ``ctx.discriminate(images)``, which leaves D's batch-norm statistics alone. With
    ``run.d_steps > 1`` the hook is called once per D step; each term is logged as its mean. With
    ``train.accumulate = k`` it is called for each of the k micro-batches, ``ctx`` holding that
    micro-batch (``ctx.step`` the step's), the sum scaled by ``1 / k``; each term is logged as its
    mean over them.
    Not ``firstresult``: every plugin's terms are added.
    """


@hookspec
def ganforge_generator_loss_terms(ctx):
    """Extra terms for the generator's objective in this step.

    ``ctx`` is a :class:`ganforge.training.StepContext` for the ``"G"`` phase: the fakes still
    attached to the generator's graph and the discriminator's output on them (``ctx.d_fake``);
    reading ``ctx.d_real`` runs D on the real batch. Return a list of
    :class:`ganforge.losses.LossTerm`; logged as ``loss/G/<name>``. The sum is backpropagated
    into G's trainable parameters only. With ``train.accumulate = k``, called for each micro-batch
    of the last D step, as the D phase's hook is.
    Not ``firstresult``: every plugin's terms are added.
    """


# ---------------------------------------------------------------------------------------------
# Events.
# ---------------------------------------------------------------------------------------------


@hookspec
def ganforge_train_start(run):
    """Called once the run is built (models, optimizers, data, plugins), before the first step.

    ``run.step`` is 0 for a new run and the checkpoint's step for a resumed one. A resumed run
    restores each plugin's ``load_state_dict`` *after* this hook, so state a plugin sets up here
    is then overwritten by the checkpoint's; the run's random streams are restored before it.
    Under torchrun it runs on every rank: a plugin that writes files does so only where
    ``run.ranks.primary`` (``ganforge_log`` and ``ganforge_samples`` are called on rank 0 only).
    Not ``firstresult``: every implementation runs; return value ignored.
    """


@hookspec
def ganforge_step_end(run, step, logs):
    """Called after both networks were updated in a step.

    ``step`` counts generator updates, starting at 1. ``logs`` maps names (``loss/D/total``,
    ``loss/G/adv``, ...) to detached scalar tensors for this step; calling ``float`` on them is a
    device sync, so do it only at your own cadence.
    Not ``firstresult``: every implementation runs; return value ignored.
    """


@hookspec
def ganforge_log(run, step, record):
    """Called with every record the core writes to ``metrics.jsonl``: the training figures at the
    log cadence (``loss/D/total``, ``images_per_s``, ...) and the ``[eval]`` figures
    (``eval/fid``, ...). ``record`` maps names to plain numbers and holds ``step`` and ``images``.
    For loggers (TensorBoard, experiment trackers): the values are synced already.
    Not ``firstresult``: every implementation runs; return value ignored.
    """


@hookspec
def ganforge_epoch_end(run, epoch):
    """Called when the data order has been used up; ``epoch`` is the number of finished epochs. Not ``firstresult``: every implementation runs; return value ignored."""


@hookspec
def ganforge_samples(run, step, images, path):
    """Called at the sample cadence and at the end, after the core wrote the sample grid.

    ``images`` are the generator's outputs (in [0, 1]) for the run's fixed latent batch, ``path``
    the PNG the core wrote. Plugins write their own pictures next to it (``path.parent``).
    Not ``firstresult``: every implementation runs; return value ignored.
    """


@hookspec
def ganforge_train_end(run, error):
    """Called when the run ends, always: ``error`` is ``None`` after the last step, else the
    exception that stopped the run (it propagates after this hook returns).
    Not ``firstresult``: every implementation runs; return value ignored.
    """
