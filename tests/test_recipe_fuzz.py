"""Property-based: thousands of malformed recipes fed to ``ganforge check`` and ``ganforge run``.

Every generated recipe is invalid by construction (each mutation alone makes it so), so no case
can start a training run. Each must end with exit code 2 and one line on stderr starting with
``error:``: no traceback, no hang, nothing written. The number of cases is printed at the end of
the pytest run ("recipe fuzzing: N generated cases ran").
"""

from __future__ import annotations

import copy
import datetime
import os
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ganforge.pluginmanager import plugin_specs
from ganforge.recipe import MAX_INT, SCHEMA, dump_toml
from ganforge_plugins.augmentation.images import MOVE_DRAWS, MOVE_PRESETS
from ganforge_plugins.infogan.plugin import DEFAULTS as INFOGAN_DEFAULTS

from .conftest import FUZZ_CASES, assert_one_line_cli_error, invoke, make_host, tiny_recipe

# run.out_dir of every case, which must stay empty; made and removed by the fixture below.
OUT = Path(tempfile.gettempdir()) / f"ganforge-fuzz-{os.getpid()}"
RECIPE = OUT.parent / f"{OUT.name}.toml"
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
COMMANDS = ("check", "run")
BASE = tiny_recipe(OUT, train={"steps": 2, "log_every": 1, "sample_every": 2, "checkpoint_every": 2})
REGISTRY_KEYS = {("model", "name"), ("data", "name"), ("loss", "name"), ("latent", "noise")}
KNOWN_NAMES = {"dcgan", "dcgan-28", "resnet", "hinge", "least-squares", "minimax", "non-saturating", "wasserstein", "shapes",
               "mnist", "fashion-mnist", "cifar10", "image-folder", "normal", "uniform", "gaussian", "categorical",
               "bernoulli", "vonmises"}
# Integers outside each key's allowed range (the schema's checks, and 32 bits for every integer).
BAD_INTS = {
    ("run", "seed"): st.integers(max_value=-1),
    ("data", "image_size"): st.integers(max_value=-1) | st.integers(min_value=4097),
    ("data", "size"): st.integers(max_value=-1) | st.integers(min_value=10_000_001),
    ("latent", "noise_dim"): st.integers(max_value=0) | st.integers(min_value=65_537),
    ("train", "d_steps"): st.integers(max_value=-1) | st.integers(min_value=1001),
    ("train", "keep_checkpoints"): st.integers(max_value=-1),
    ("train", "threads"): st.integers(max_value=-1) | st.integers(min_value=1025),
    **{("train", key): st.integers(max_value=0)
       for key in ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every")},
}
BAD_FLOATS = {
    **{("train", key): st.floats(max_value=0.0) | st.floats(min_value=1.0, exclude_min=True) for key in ("g_lr", "d_lr")},
    **{("train", key): st.floats(max_value=0.0, exclude_max=True) | st.floats(min_value=1.0) for key in ("beta1", "beta2")},
}
DEVICE = re.compile(r"cpu|auto|cuda(:\d{1,4})?|mps")
BAD_STRINGS = {
    ("run", "name"): st.text(min_size=1).filter(lambda name: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name)),
    ("run", "device"): st.text().filter(lambda name: not DEVICE.fullmatch(name)),
    ("run", "out_dir"): st.sampled_from(["", "  ", "runs\0x", "\0"]),
    ("data", "root"): st.text().map(lambda root: root + "\0"),
    ("data", "split"): st.text().filter(lambda split: split not in ("train", "test", "all")),
}
FIELDS = [(section, key) for section, fields in SCHEMA.items() for key in fields]

scalars = st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=True), st.booleans(),
                    st.datetimes(timezones=st.none() | st.just(datetime.UTC)))
toml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=8)
huge_ints = st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1)


def of_another_type(kind: type):
    """A TOML value that validation must refuse for a key of type ``kind`` (an integer is a
    fine float, so not offered there)."""
    def wrong(value) -> bool:
        if kind is float:
            return not isinstance(value, (int, float)) or isinstance(value, bool)
        return type(value) is not kind
    return toml_values.filter(wrong)


# -- mutations: each one alone makes the recipe invalid ---------------------------------------------


def table(recipe: dict, section: str) -> dict:
    """The recipe's ``section``, made a table again if an earlier mutation replaced it."""
    if not isinstance(recipe.get(section), dict):
        recipe[section] = {}
    return recipe[section]


def wrong_type(draw, recipe):
    section, key = draw(st.sampled_from(FIELDS))
    table(recipe, section)[key] = draw(of_another_type(SCHEMA[section][key].kind))


def unknown_key(draw, recipe):
    section = draw(st.sampled_from(sorted(SCHEMA)))
    key = draw(st.text(min_size=1, max_size=30).filter(lambda name: name not in SCHEMA[section]))
    table(recipe, section)[key] = draw(toml_values)


def unknown_section(draw, recipe):
    name = draw(st.text(min_size=1, max_size=30).filter(lambda name: name not in SCHEMA and name != "plugins"))
    recipe[name] = draw(toml_values)


def section_not_a_table(draw, recipe):
    section = draw(st.sampled_from([*SCHEMA, "plugins"]))
    recipe[section] = draw(toml_values.filter(lambda value: not isinstance(value, dict)))


def unknown_name(draw, recipe):
    section, key = draw(st.sampled_from(sorted(REGISTRY_KEYS)))
    table(recipe, section)[key] = draw(st.text(max_size=30).filter(lambda name: name not in KNOWN_NAMES))


def integer_out_of_range(draw, recipe):
    (section, key), values = draw(st.sampled_from(list(BAD_INTS.items())))
    table(recipe, section)[key] = draw(values | st.integers(min_value=MAX_INT + 1) | huge_ints)


def float_out_of_range(draw, recipe):
    (section, key), values = draw(st.sampled_from(list(BAD_FLOATS.items())))
    table(recipe, section)[key] = draw(values | st.sampled_from([float("nan"), float("inf"), float("-inf")]))


def bad_string(draw, recipe):
    (section, key), values = draw(st.sampled_from(list(BAD_STRINGS.items())))
    table(recipe, section)[key] = draw(values)


def huge_integer_anywhere(draw, recipe):
    """An integer TOML cannot hold, also where only a plugin reads it."""
    where = draw(st.sampled_from(["train", "plugins"]))
    if where == "train":
        table(recipe, "train")["steps"] = draw(huge_ints)
    else:
        code = {"name": "c", "dist": draw(st.sampled_from(["uniform", "categorical", "bernoulli"])), "size": 2,
                draw(st.sampled_from(["low", "high", "p", "size", "weight"])): draw(huge_ints)}
        recipe["plugins"] = {"infogan": {"codes": [code]}}


def unknown_plugin_table(draw, recipe):
    name = draw(st.text(min_size=1, max_size=20).filter(lambda name: name != "infogan"))
    recipe["plugins"] = {name: draw(st.dictionaries(st.text(max_size=8), scalars, max_size=2))}


GOOD_CODE = {"name": "digit", "dist": "categorical", "size": 4, "weight": 1.0}
BAD_CODES = st.one_of(
    st.just([]),
    st.lists(scalars, min_size=1, max_size=3),  # codes that are not tables
    st.just([GOOD_CODE, GOOD_CODE]),  # a name twice
    st.fixed_dictionaries({"dist": st.sampled_from(["categorical", "uniform"])}).map(lambda code: [code]),  # no name
    st.fixed_dictionaries({"name": st.just("c")}).map(lambda code: [code]),  # no dist
    st.fixed_dictionaries({"name": scalars.filter(lambda name: not (isinstance(name, str) and name.isidentifier()
                                                                     and name != "z")),
                           "dist": st.just("categorical"), "size": st.just(3)}).map(lambda code: [code]),
    st.fixed_dictionaries({"name": st.just("c"), "dist": st.text(max_size=12).filter(lambda d: d not in KNOWN_NAMES)})
    .map(lambda code: [code]),
    st.fixed_dictionaries({"name": st.just("c"), "dist": st.just("categorical"),
                           "size": st.integers(max_value=1) | st.integers(min_value=4097) | st.floats() | st.text()})
    .map(lambda code: [code]),
    st.fixed_dictionaries({"name": st.just("c"), "dist": st.just("uniform"),
                           "weight": st.floats(max_value=-0.001) | st.just(float("nan")) | st.text() | st.booleans()})
    .map(lambda code: [code]),
    st.fixed_dictionaries({"name": st.just("c"), "dist": st.sampled_from(["uniform", "gaussian", "bernoulli"]),
                           "sigma": st.text(max_size=8).filter(lambda s: s not in ("fixed", "learned")),
                           }).map(lambda code: [code]),
    st.fixed_dictionaries({"name": st.just("c"), "dist": st.sampled_from(["categorical", "uniform"]),
                           "size": st.just(3), "option": toml_values}).map(lambda code: [code]),  # unknown option
    st.fixed_dictionaries({"name": st.just("c"), "dist": st.just("uniform"),
                           "low": st.just(1.0), "high": st.floats(max_value=1.0) | st.text()}).map(lambda code: [code]),
)


def bad_infogan_table(draw, recipe):
    table = {"codes": [GOOD_CODE]}
    problem = draw(st.sampled_from(["codes", "option", "moves", "code_moves", "unknown"]))
    if problem == "moves":  # an unknown preset, an unknown move, or a move out of range
        if draw(st.booleans()):
            table["moves"] = draw(st.text().filter(lambda name: name not in MOVE_PRESETS))
        else:
            table["move_values"] = draw(st.fixed_dictionaries({"shaer": st.floats(0, 1)})
                                        | st.fixed_dictionaries({"flip": st.floats(min_value=1.001) | st.floats(max_value=-0.001)}))
    elif problem == "code_moves":  # a code that is not there, or a move that is not one
        code_name = draw(st.text(min_size=1, max_size=12).filter(lambda name: name != GOOD_CODE["name"]) | st.just(GOOD_CODE["name"]))
        move = draw(st.sampled_from(MOVE_DRAWS)) if code_name != GOOD_CODE["name"] else draw(
            st.text(max_size=12).filter(lambda name: name not in MOVE_DRAWS) | st.integers() | st.booleans())
        table["code_moves"] = {code_name: move}
    elif problem == "codes":
        table["codes"] = draw(BAD_CODES | toml_values.filter(lambda value: not isinstance(value, list)))
    elif problem == "option":
        option = draw(st.sampled_from(["q_hidden", "q_lr", "real_info_weight", "consistency_weight", "code_move_weight",
                                       "moved_fake_weight", "code_move_after", "code_move_trunk", "q_split"]))
        if option == "q_hidden":
            table[option] = draw(st.integers(max_value=0) | st.integers(min_value=65537))
        elif option == "code_move_after":
            table[option] = draw(st.integers(max_value=-1) | st.text() | st.floats())
        elif option in ("code_move_trunk", "q_split"):
            table[option] = draw(st.text() | st.floats() | st.integers())
        else:
            table[option] = draw(st.floats(max_value=-0.001) | st.floats(min_value=1e6) | st.text())
    else:
        table[draw(st.text(min_size=1, max_size=12).filter(lambda key: key not in INFOGAN_DEFAULTS))] = 1
    recipe["plugins"] = {"infogan": table}


# Every checked option of every built-in plugin table, from the specs the core checks them with.
CHECKED_OPTIONS = [(table, key, option) for table, spec in sorted(plugin_specs(make_host()).items())
                   for key, option in spec.options.items() if option.checks()]
VALUES_OF_KIND = {int: st.integers(-(2**40), 2**40), float: st.floats(allow_nan=False, allow_infinity=False),
                  str: st.text(max_size=12), list: st.lists(st.text(max_size=8), max_size=3)}


def refused_by_its_checks(option, value) -> bool:
    return any(check(value) is not None for check in option.checks())


def checked_plugin_option(draw, recipe):
    """A value of the right type that the option's own declared check refuses."""
    table, key, option = draw(st.sampled_from(CHECKED_OPTIONS))
    value = draw(VALUES_OF_KIND[option.kind].filter(lambda value: refused_by_its_checks(option, value)))
    recipe["plugins"] = {table: {key: value}}


MUTATIONS = [wrong_type, unknown_key, unknown_section, section_not_a_table, unknown_name, integer_out_of_range,
             float_out_of_range, bad_string, huge_integer_anywhere, unknown_plugin_table, bad_infogan_table,
             checked_plugin_option]
# Sections that may go missing (their defaults are used). Not [data]: its default is 20,000 sprites.
REMOVABLE = ["run", "model", "latent", "train", "loss"]


@st.composite
def malformed_recipes(draw) -> dict:
    recipe = copy.deepcopy(BASE)
    for section in draw(st.lists(st.sampled_from(REMOVABLE), unique=True, max_size=2)):
        recipe.pop(section, None)
    for mutate in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        mutate(draw, recipe)
    return recipe


# -- running a case --------------------------------------------------------------------------------


def toml_text(recipe: dict) -> str:
    """``dump_toml``, plus TOML's date-times, which a resolved recipe never holds: each is written
    as a marked string, and the marks and quotes are then dropped."""
    def marked(value):
        if isinstance(value, dict):
            return {key: marked(item) for key, item in value.items()}
        if isinstance(value, list):
            return [marked(item) for item in value]
        return f"@@datetime:{value.isoformat()}@@" if isinstance(value, datetime.datetime) else value

    return re.sub(r'"@@datetime:([^@]*)@@"', r"\1", dump_toml(marked(recipe)))


def assert_refused(command: str, recipe_file: Path, overrides: list[str] = ()) -> None:
    result = invoke(command, recipe_file, *[part for item in overrides for part in ("--set", item)])
    FUZZ_CASES[command] = FUZZ_CASES.get(command, 0) + 1
    assert_one_line_cli_error(result, 2)
    assert not any(OUT.iterdir()), f"{command} wrote {list(OUT.iterdir())}"


def refused_by_both(recipe_file: Path, overrides: list[str] = ()) -> None:
    for command in COMMANDS:
        assert_refused(command, recipe_file, overrides)


@pytest.fixture(scope="module", autouse=True)
def empty_output_folder():
    OUT.mkdir()
    yield
    shutil.rmtree(OUT, ignore_errors=True)
    RECIPE.unlink(missing_ok=True)


@settings(FUZZ, max_examples=500)
@given(malformed_recipes())
def test_malformed_recipes_are_one_line_errors(recipe):
    RECIPE.write_text(toml_text(recipe), encoding="utf-8")
    refused_by_both(RECIPE)


# -- files that are not TOML at all ---------------------------------------------------------------

BASE_TEXT = dump_toml(BASE)
BREAKERS = ["[train", "= 1", "steps = ", 'name = "unterminated', "a = [1,", "[[run]]", "x = 1 2", "[train]\nsteps = 3",
            "a = {", "\"key = 1", "1979-05-27 = x", "a = 0x", "a = +nan+"]


def is_toml(data: bytes) -> bool:
    try:
        tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return False
    return True


recipe_files = st.one_of(
    # A valid recipe with a line that breaks it inserted somewhere.
    st.builds(lambda lines, at, breaker: "\n".join(lines[:at] + [breaker] + lines[at:]),
              st.just(BASE_TEXT.splitlines()), st.integers(0, len(BASE_TEXT.splitlines())), st.sampled_from(BREAKERS)
              ).map(str.encode),
    # Truncated, with random text spliced in, or binary garbage: kept when it is no longer TOML.
    st.integers(1, len(BASE_TEXT) - 1).map(lambda end: BASE_TEXT[:end].encode()),
    st.builds(lambda at, text: (BASE_TEXT[:at] + text + BASE_TEXT[at:]).encode(),
              st.integers(0, len(BASE_TEXT)), st.text(min_size=1, max_size=20)),
    st.binary(max_size=200),
    st.binary(max_size=50).map(lambda garbage: BASE_TEXT.encode() + b"\xff" + garbage),  # not UTF-8
    st.integers(1000, 5000).map(lambda depth: f"a = {'[' * depth}{']' * depth}".encode()),  # nested too deeply
)


@settings(FUZZ, max_examples=250)
@given(recipe_files)
def test_files_that_are_not_toml_are_one_line_errors(data):
    assume(not is_toml(data))
    RECIPE.write_bytes(data)
    refused_by_both(RECIPE)


# -- --set ----------------------------------------------------------------------------------------

def is_toml_integer(text: str) -> bool:
    try:
        return type(tomllib.loads(f"value = {text}")["value"]) is int
    except (tomllib.TOMLDecodeError, RecursionError):
        return False


NOT_AN_INT = st.sampled_from(["", "abc", "1.5", "true", "[1]", "{a = 1}", "'1'", "1e400", "nan", "0x", "1979-05-27",
                              "[[[[[[]]]]]]"]) | st.text(max_size=10).filter(lambda text: not is_toml_integer(text))
overrides = st.one_of(
    st.text(max_size=30).filter(lambda text: "=" not in text),  # no =
    st.builds("{}={}".format, st.text(max_size=10).filter(lambda key: "." not in key or ".." in key), st.text(max_size=5)),
    st.builds("{}.{}={}".format, st.sampled_from(sorted(SCHEMA)),
              st.text(min_size=1, max_size=12).filter(lambda key: key.strip() and "." not in key and "=" not in key),
              st.text(max_size=5)).filter(lambda item: item.split("=")[0].split(".")[1].strip() not in
                                          SCHEMA[item.split(".")[0]]),  # unknown key
    st.builds("train.{}={}".format, st.sampled_from(["steps", "batch_size", "log_every"]), NOT_AN_INT),
    st.builds("train.steps.{}={}".format, st.text(min_size=1, max_size=5).filter(lambda key: "=" not in key),
              st.text(max_size=5)),  # a key inside a number
)


@settings(FUZZ, max_examples=150)
@given(st.lists(overrides, min_size=1, max_size=3))
def test_malformed_set_overrides_are_one_line_errors(items):
    RECIPE.write_text(BASE_TEXT)
    refused_by_both(RECIPE, items)


# -- recipes that are well formed but name what the data or the model cannot do --------------------

impossible = st.one_of(
    st.builds(lambda size: {"data": {"image_size": size}}, st.integers(1, 4096).filter(lambda size: size != 28)),
    st.builds(lambda batch: {"train": {"batch_size": batch}}, st.integers(257, MAX_INT)),
    st.just({"model": {"name": "dcgan"}}),  # 32, 64 or 128 px: not the sprites' 28
    st.builds(lambda name, root: {"data": {"name": name, "root": str(OUT.parent / f"absent-{root}"), "size": 0,
                                           "image_size": 0}},
              # Not fashion-mnist: it falls back to a system-wide copy where one is installed.
              st.sampled_from(["mnist", "cifar10", "image-folder"]), st.integers(0, 10**6)),
)


@settings(FUZZ, max_examples=25)
@given(impossible)
def test_what_the_data_or_the_model_cannot_take_is_a_one_line_error(changes):
    recipe = copy.deepcopy(BASE)
    for section, values in changes.items():
        recipe[section].update(values)
    RECIPE.write_text(dump_toml(recipe))
    refused_by_both(RECIPE)


def test_a_key_typed_with_a_control_character_is_quoted_on_one_line(tmp_path):
    # Found by the fuzzing above: "\x1e" (record separator) is a line break to str.splitlines and
    # to terminals, so a message quoting the key as typed took two lines.
    codes = [{"name": "digit", "dist": "categorical", "size": 4, "weight": 1.0}]
    recipe = tiny_recipe(tmp_path, plugins={"infogan": {"codes": codes, "code_moves": {"\x1e": "degrees"}}})
    path = tmp_path / "recipe.toml"
    path.write_text(dump_toml(recipe))
    line = assert_one_line_cli_error(invoke("check", path), 2, "plugins.infogan.code_moves.\\x1e", "no code of that name")
    assert "\x1e" not in line
