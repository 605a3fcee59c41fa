"""The shape of the code: small modules and classes, plugins that find each other by capability,
a Python API without the command line, hooks that say how their results combine, and an
architecture page that lists every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from ganforge import hookspecs
from ganforge.pluginmanager import HOOK_NAMES, plugin_specs

from .conftest import REPO, make_host

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 150
SOURCES = sorted([*(REPO / "ganforge").glob("*.py"), *(REPO / "plugins").rglob("*.py")])


def test_no_module_or_class_is_too_long_to_read_in_one_sitting():
    long_modules, long_classes = [], []
    for path in SOURCES:
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long_classes.append(f"{path.relative_to(REPO)}:{node.name} ({node.end_lineno - node.lineno + 1})")
    assert long_modules == [] and long_classes == []


def test_no_plugin_looks_another_up_by_name_and_the_core_names_no_plugin_key():
    tables = sorted(plugin_specs(make_host()))
    by_name = re.compile(r"run\.plugins(\.get\(|\[)[\"']")
    offenders = [str(path.relative_to(REPO)) for path in SOURCES if by_name.search(path.read_text())]
    assert offenders == []
    core_keys = re.compile(r"[\"']plugins\.(" + "|".join(map(re.escape, tables)) + r")\b")
    core = [path for path in SOURCES if path.parent.name == "ganforge"]
    assert [str(path.relative_to(REPO)) for path in core if core_keys.search(path.read_text())] == []


def test_the_python_api_imports_neither_the_command_line_nor_rich():
    probe = ("import sys, ganforge, ganforge.api, ganforge.loading; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'typer')"
             " or m in ('ganforge.cli', 'ganforge.launch', 'ganforge.training')))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"


def test_every_hook_says_whether_it_is_firstresult_and_means_it():
    for name in HOOK_NAMES:
        function = getattr(hookspecs, name)
        first = getattr(function, f"{hookspecs.PROJECT}_spec")["firstresult"]
        doc = " ".join(function.__doc__.split())
        assert ("Not ``firstresult``" in doc) != first and "firstresult" in doc, name


def test_the_architecture_page_lists_every_module():
    page = (REPO / "docs" / "architecture.md").read_text()
    table = page[page.index("## Modules"):page.index("## From recipe to run")]
    listed = set(re.findall(r"`(\w+\.py)`", table))
    assert sorted(path.name for path in (REPO / "ganforge").glob("*.py") if path.name not in listed) == []
