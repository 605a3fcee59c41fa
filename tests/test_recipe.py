"""Recipe validation: every mistake is one RecipeError naming the file and the key."""

from __future__ import annotations

import tomllib

import pytest

from ganforge.errors import RecipeError
from ganforge.launch import read_recipe
from ganforge.recipe import SCHEMA, dump_toml

from .conftest import REPO, make_host, tiny_recipe, write_recipe


def recipe_error(tmp_path, values=None, overrides=(), text=None) -> str:
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    else:
        write_recipe(path, values)
    with pytest.raises(RecipeError) as caught:
        read_recipe(path, list(overrides), make_host())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(("values", "expected"), [
    ({"train": {"stepz": 3}}, "train.stepz: unknown key; did you mean 'steps'? allowed: steps,"),
    ({"trian": {}}, "trian: unknown key; did you mean 'train'?"),
    ({"train": {"steps": "10"}}, "train.steps: must be an integer, got '10'"),
    ({"train": {"steps": 1.5}}, "train.steps: must be an integer, got 1.5"),
    ({"train": {"steps": True}}, "train.steps: must be an integer, got True"),
    ({"train": {"steps": 0}}, "train.steps: must be greater than 0, got 0"),
    ({"train": {"batch_size": -4}}, "train.batch_size: must be greater than 0, got -4"),
    ({"train": {"steps": 10**12}}, "train.steps: 1000000000000 is out of range"),
    ({"train": {"g_lr": "fast"}}, "train.g_lr: must be a number, got 'fast'"),
    ({"train": {"beta1": 1.5}}, "train.beta1: must be in [0, 1), got 1.5"),
    ({"data": {"name": "mnits"}}, "data.name: unknown name 'mnits'; did you mean 'mnist'? known: cifar10,"),
    ({"data": {"split": "training"}}, "data.split: must be one of 'train', 'test', 'all'; did you mean 'train'?"),
    ({"model": {"name": "dcgn"}}, "model.name: unknown name 'dcgn'; did you mean 'dcgan'?"),
    ({"loss": {"name": "hinje"}}, "loss.name: unknown name 'hinje'; did you mean 'hinge'?"),
    ({"latent": {"noise": "gauss"}}, "latent.noise: unknown name 'gauss';"),
    ({"run": {"name": "a/b"}}, "run.name: must be a folder name"),
    ({"run": {"device": "gpu"}}, "run.device: must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"),
    ({"train": [1, 2]}, "train: must be a table ([train]), got an array"),
    ({"plugins": {"infogn": {}}}, "plugins.infogn: no plugin takes this table; did you mean 'infogan'?"),
    ({"plugins": {"infogan": {"q_hiden": 3}}}, "plugins.infogan.q_hiden: unknown key; did you mean 'q_hidden'?"),
    ({"plugins": {"infogan": {"codes": "digit"}}}, "plugins.infogan.codes: must be an array"),
])
def test_a_bad_value_names_the_key_and_what_would_be_right(tmp_path, values, expected):
    recipe = tiny_recipe(tmp_path)
    for section, table in values.items():
        recipe[section] = {**recipe[section], **table} if isinstance(table, dict) and section in recipe else table
    assert expected in recipe_error(tmp_path, recipe)


def test_invalid_toml_names_the_file_and_the_line(tmp_path):
    assert "invalid TOML" in recipe_error(tmp_path, text="[train]\nsteps = = 3\n")


def test_binary_garbage_is_not_a_traceback(tmp_path):
    assert "is not UTF-8 text" in recipe_error(tmp_path, text=b"\x89PNG\r\n\x1a\n\x00\xff")


def test_a_missing_recipe_file_is_one_line(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        read_recipe(tmp_path / "absent.toml", [], make_host())


def test_missing_sections_take_their_defaults(tmp_path):
    path = write_recipe(tmp_path / "minimal.toml", {"data": {"name": "shapes"}})
    recipe = read_recipe(path, [], make_host())
    assert recipe.run.name == "minimal"  # the file's stem
    assert recipe.train.steps == SCHEMA["train"]["steps"].default
    assert recipe.loss.name == "non-saturating"


def test_set_overrides_are_typed_as_the_recipes_values(tmp_path):
    path = write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path))
    recipe = read_recipe(path, ["train.steps=7", "train.g_lr=1e-3", "data.download=true", "run.name=other",
                                "data.root=/some/where", "train.d_lr=1"], make_host())
    assert recipe.train.steps == 7 and recipe.train.g_lr == 1e-3 and recipe.data.download is True
    assert recipe.run.name == "other" and recipe.data.root == "/some/where"
    assert isinstance(recipe.train.d_lr, float)


@pytest.mark.parametrize(("override", "expected"), [
    ("train.steps=ten", "value 'ten' is not an integer"),
    ("train.stepz=3", "unknown key; did you mean 'steps'?"),
    ("train.steps=0", "must be greater than 0, got 0"),
    ("train.steps.x=1", "cannot set a key inside an integer"),
    ("steps=3", "expected SECTION.KEY=VALUE"),
    ("train.steps", "expected SECTION.KEY=VALUE"),
])
def test_bad_overrides_are_one_line_errors_naming_the_set_not_the_file(tmp_path, override, expected):
    path = write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path))
    with pytest.raises(RecipeError) as caught:
        read_recipe(path, ["train.log_every=1", override], make_host())
    assert str(caught.value).startswith(f"--set {override}: {expected}"), str(caught.value)


def test_a_mistake_in_the_file_still_names_the_file_whatever_is_set(tmp_path):
    values = tiny_recipe(tmp_path)
    values["train"]["log_evry"] = 1
    message = recipe_error(tmp_path, values, overrides=["train.steps=3", "plugins.ema.decay=0.9"])
    assert message.startswith(f"{tmp_path / 'bad.toml'}: train.log_evry: unknown key")


def test_the_resolved_recipe_round_trips_through_toml(tmp_path):
    recipe = read_recipe(write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path)), [], make_host())
    assert tomllib.loads(recipe.to_toml()) == recipe.to_dict()


def test_toml_writer_handles_nested_plugin_tables_and_odd_strings():
    values = {"a": {"text": 'quote " and \\ and \n', "list": [1, 2.5, True]},
              "plugins": {"infogan": {"codes": [{"name": "digit", "size": 10}], "weight": 1.0}}}
    assert tomllib.loads(dump_toml(values)) == values


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe):
    assert read_recipe(recipe, [], make_host()).run.name == recipe.stem
