"""Evaluation figures that can be compared: the real images chosen by the seed and cached by what
chose them, provenance that says which images were compared and how they were prepared, real and
generated images on the same 8-bit grid, and a warning where FID has too few images."""

from __future__ import annotations

import json

import pytest
import torch

from ganforge import inception
from ganforge.evaluation import EvalSettings, fid_count_warning, recipe_warnings
from ganforge.evaluator import FEATURE_DIM, PREPARATION, as_8bit, default_path, home, load_evaluator, train_evaluator
from ganforge.launch import evaluate_run, read_recipe
from ganforge_plugins.data.shapes import generate_shapes

from .conftest import invoke, make_host, run_tiny, tiny_recipe, write_recipe

# Converting a uint8 level to [-1, 1] and back is exact up to a few float32 roundings of values
# of magnitude <= 255.
GRID_TOLERANCE = 4 * 255 * torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def sprites():
    return generate_shapes(400, image_size=28, seed=5)


@pytest.fixture(scope="module")
def sprite_network(sprites, tmp_path_factory):
    path = tmp_path_factory.mktemp("network") / "shapes.pt"
    return train_evaluator(sprites, "shapes", "train", 100, epochs=1, out=path, log=lambda line: None)


def cached_real_features(sprite_network, sprites, seed: int) -> torch.Tensor:
    settings = EvalSettings(n=100, seed=seed)
    settings._evaluator, settings._split = sprite_network, "all"
    return settings.real_features(sprites)


def test_the_real_subset_follows_the_seed_whichever_evaluation_ran_first(sprite_network, sprites, tmp_path,
                                                                          monkeypatch):
    def chosen(seed):  # the 100 of 400 images a seed picks, in the dataset's order
        return torch.randperm(400, generator=torch.Generator().manual_seed(seed))[:100].sort().values

    expected = {seed: sprite_network.features(sprites.images[chosen(seed)]) for seed in (0, 1)}
    assert not torch.equal(expected[0], expected[1])
    for order in ((0, 1), (1, 0)):
        monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / f"home-{order[0]}{order[1]}"))
        for seed in order:
            assert torch.equal(cached_real_features(sprite_network, sprites, seed), expected[seed]), (order, seed)
        files = sorted((home() / "features").glob("*.pt"))
        assert len(files) == 2
        # The same settings again read their file: nothing is computed or written.
        written = [file.stat().st_mtime_ns for file in files]
        assert torch.equal(cached_real_features(sprite_network, sprites, order[0]), expected[order[0]])
        assert [file.stat().st_mtime_ns for file in files] == written
        assert len(list((home() / "features").glob("*.pt"))) == 2


def test_the_cache_key_holds_what_chose_and_prepared_the_real_images(sprite_network, sprites, tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / "home"))
    cached_real_features(sprite_network, sprites, 3)
    key = json.loads(torch.load(next((home() / "features").glob("*.pt")), weights_only=True)["key"])
    assert key == {"seed": 3, "count": 100, "source": sprites.source, "split": "all", "part": "train",
                   "image_shape": [1, 28, 28], "sha256": sprite_network.sha256, "layer": "pooled-128",
                   "preparation": PREPARATION}


def test_provenance_gives_the_split_the_true_counts_and_how_images_were_prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / "home"))
    run = run_tiny(tmp_path, data={"holdout": 56})
    trained_on = run.data  # 256 sprites less the 56 held out
    train_evaluator(trained_on, "shapes", "train", 50, epochs=1, out=default_path("shapes", trained_on.image_shape),
                    log=lambda line: None)
    settings = EvalSettings(n=500)  # more than either part holds
    evaluate_run(run.directory, metrics=["fid", "kid", "precision-recall"], settings=settings, host=make_host())
    for metric in ("fid", "kid", "precision-recall"):
        facts = settings.provenance[metric]
        assert facts["real_images"] == facts["generated_images"] == 200, metric
        assert facts["n_requested"] == 500 and facts["real_split"] == "train" and facts["real_part"] == "train"
        assert facts["preparation"] == "as stored, 8-bit" and "train part (200 of 256)" in facts["real_source"]
    held = EvalSettings(n=500)
    evaluate_run(run.directory, metrics=["fid"], part="holdout", settings=held, host=make_host())
    assert held.provenance["fid"]["real_images"] == held.provenance["fid"]["generated_images"] == 56
    assert held.provenance["fid"]["real_part"] == "holdout"


def test_real_and_generated_images_reach_the_feature_network_on_the_8_bit_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / "home"))
    run = run_tiny(tmp_path)
    path = default_path("shapes", run.data.image_shape)
    train_evaluator(run.data, "shapes", "train", 56, epochs=1, out=path, log=lambda line: None)
    network = load_evaluator(path)
    inputs = []
    network.net.body.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    settings = EvalSettings(n=100)
    settings._evaluator = network
    _, loaded, _ = evaluate_run(run.directory, metrics=["fid"], settings=settings, host=make_host())
    real, generated = inputs  # the real features were not cached yet: first the real batch, then the generated
    generated_floats = settings.generated_images(loaded, 100)
    assert generated_floats.unique().numel() > 256  # the generator's floats lie between the levels
    for name, batch in (("real", real), ("generated", generated)):
        levels = batch.add(1).mul(127.5)
        assert (levels - levels.round()).abs().max() <= GRID_TOLERANCE, name
        assert batch.min() >= -1 and batch.max() <= 1, name
    # The generated batch is the generator's images rounded, not other images.
    torch.testing.assert_close(generated, generated_floats.add(1).mul(127.5).round().div(127.5).sub(1),
                               rtol=0, atol=GRID_TOLERANCE / 127.5)


def test_as_8bit_rounds_floats_to_the_levels_real_images_are_stored_on():
    stored = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert as_8bit(stored) is stored
    assert torch.equal(as_8bit(stored.float() / 127.5 - 1), stored)  # real images survive the round trip
    floats = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 0.99, 1.0, 1.5])
    # 127.5 rounds half to even (128); 0.5 -> 191.25 -> 191; 0.99 -> 254.2 -> 254; outside [-1, 1] clamped.
    assert as_8bit(floats).tolist() == [0, 0, 0, 128, 191, 254, 255, 255]
    assert "8-bit" in inception.PREPARATION and "299x299 bilinear" in inception.PREPARATION


def test_fid_warns_at_or_below_as_many_images_as_features():
    assert fid_count_warning(2049, 2048, inception.LAYER) is None
    warning = fid_count_warning(2048, 2048, inception.LAYER)
    assert "rank at most 2047" in warning and "at least 2049 images" in warning and "\n" not in warning
    assert fid_count_warning(128, FEATURE_DIM, "pooled-128") and not fid_count_warning(129, FEATURE_DIM, "pooled-128")


def recipe_with(tmp_path, **eval_keys):
    path = write_recipe(tmp_path / "eval.toml", tiny_recipe(tmp_path / "runs", eval={"every": 2, **eval_keys}))
    return path, read_recipe(path, [], make_host())


def test_recipe_warnings_compare_eval_n_with_the_feature_network_s_width(tmp_path):
    path, recipe = recipe_with(tmp_path, evaluator="inception", n=2048)
    assert recipe_warnings(recipe) == [f"{path}: eval.n = 2048: {fid_count_warning(2048, 2048, inception.LAYER)}"]
    assert recipe_warnings(recipe_with(tmp_path, evaluator="inception", n=2049)[1]) == []
    assert recipe_warnings(recipe_with(tmp_path, evaluator="inception", metrics=["kid"])[1]) == []  # no FID
    assert recipe_warnings(recipe_with(tmp_path, evaluator="inception", every=0)[1]) == []  # nothing scored
    # The own network: its design's 128 features before it is trained, its record's width after.
    assert "in 128 features" in recipe_warnings(recipe_with(tmp_path, n=128)[1], (1, 28, 28))[0]
    assert recipe_warnings(recipe_with(tmp_path, n=129)[1], (1, 28, 28)) == []
    named = tmp_path / "wide.pt"
    named.with_suffix(".json").write_text(json.dumps({"feature_dim": 512}))
    assert "in 512 features" in recipe_warnings(recipe_with(tmp_path, n=300, evaluator=str(named))[1])[0]


def test_check_and_eval_print_the_fid_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / "home"))
    path, _ = recipe_with(tmp_path / "check", evaluator="inception")
    checked = invoke("check", path)
    assert checked.exit_code == 0, checked.output
    assert f"warning: {path}: eval.n = 1000: FID from 1000 images in 2048 features" in checked.stdout
    run = run_tiny(tmp_path)
    train_evaluator(run.data, "shapes", "train", 56, epochs=1, out=default_path("shapes", run.data.image_shape),
                    log=lambda line: None)
    few = invoke("eval", run.directory, "--metrics", "fid", "--n", "100", "--json")
    assert few.exit_code == 0, few.stderr
    assert f"warning: {fid_count_warning(100, FEATURE_DIM, 'pooled-128')}" in few.stderr.splitlines()
    assert json.loads(few.stdout)["provenance"]["fid"]["warning"].startswith("FID from 100 images")
    enough = invoke("eval", run.directory, "--metrics", "fid", "--n", "200")
    assert enough.exit_code == 0 and "warning" not in enough.stderr
