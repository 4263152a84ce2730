"""Every option a command's ``--help`` lists is exercised by a test through the command line,
or exempt below with the reason no such test can or should exist.

Commands: the dispatcher's (``luvnet.cli.COMMANDS``), the consumers registered in
``luvnet.consumers``, and the modules run as ``python -m luvnet.commands.NAME``. Each
parser is built as the dispatcher builds it (``add_arguments`` on a fresh ArgumentParser).

What counts as a test of ``luvnet CMD --opt``, read from the tests' source (no test is run):
a ``test_*`` function whose code — with the helpers, constants and fixtures it names, in its
module, the conftest.py files above it, or a ``tests.*`` module it imports from — runs the
command line (calls ``luvnet.cli.main``, or names ``"luvnet.cli"`` / ``"luvnet.commands.NAME"``
for a subprocess), names the command (the string ``"CMD"``), and names the option as a
string (``"--opt"`` or ``"--opt=..."``). It is a coarse reading: a test that runs two
commands counts its options for both. ``--help`` is exercised for every command by
tests/test_cli_options.py::test_every_command_prints_its_help.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from luvnet.cli import COMMANDS, consumer_commands

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
COMMAND_MODULE = re.compile(r"luvnet\.commands\.\w+")
MODULE_COMMANDS = (
    "decode_speed",
    "demo_model",
    "phantom_speed",
    "soak",
    "stream_parity",
)  # python -m luvnet.commands.NAME

# (command, option) -> why no test runs it through the command line. Keep each reason true:
# what makes a CLI test impossible or pointless here, not where else the code is tested.
_DEMO = (
    "the demo-model recipe writes 1800 phantom videos and trains for up to --max-minutes "
    "(15 by default): many CPU minutes whatever the options, far past a test's budget"
)
EXEMPT: dict[tuple[str, str], str] = {
    ("luvnet.commands.demo_model", option): _DEMO
    for option in ("--work", "--out", "--max-minutes", "--float32", "--cache")
}
# Commands whose parser embeds another's whole: `luvnet overlay` is `luvnet stream` with its
# overlay sink on (stream.add_arguments, then stream.stream on the same parsed arguments), so
# an option the two share is tested once, under the stream.
# test_shared_options_are_the_same_definitions checks the two parsers really agree.
SHARED: dict[str, str] = {"overlay": "stream"}


@dataclass
class Module:
    """One test module's parsed source: its top-level definitions and imported test names."""

    path: Path
    tree: ast.Module
    defs: dict[str, list[ast.AST]] = field(default_factory=dict)  # every binding of a name
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, name)
    cli_mains: set[str] = field(default_factory=set)  # names that are luvnet.cli.main
    cli_modules: set[str] = field(default_factory=set)  # names bound to luvnet.cli
    command_modules: dict[str, str] = field(default_factory=dict)  # alias -> luvnet.commands.X


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


@cache
def load(name: str) -> Module | None:
    """The test module ``tests.a.b`` parsed, or None when it is not a file under tests/."""
    path = REPO.joinpath(*name.split(".")).with_suffix(".py")
    if not path.is_file():
        return None
    tree = ast.parse(path.read_text(), str(path))
    module = Module(path, tree)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            module.defs.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        module.defs.setdefault(name.id, []).append(node)
    for node in ast.walk(tree):  # imports inside functions too
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                bound = alias.asname or alias.name
                if node.module == "luvnet.cli" and alias.name == "main":
                    module.cli_mains.add(bound)
                elif node.module == "luvnet" and alias.name == "cli":
                    module.cli_modules.add(bound)
                elif node.module == "luvnet.commands":
                    module.command_modules[bound] = f"luvnet.commands.{alias.name}"
                elif node.module.startswith("tests"):
                    module.imports[bound] = (node.module, alias.name)
    return module


def _conftests(path: Path) -> Iterator[str]:
    """The conftest.py modules that serve fixtures to a test file at ``path``."""
    folder = path.parent
    while folder == TESTS or TESTS in folder.parents:
        if (folder / "conftest.py").is_file():
            yield _module_name(folder / "conftest.py")
        folder = folder.parent


@dataclass
class Reach:
    """What a test touches: the strings it names and whether it runs the command line."""

    strings: set[str] = field(default_factory=set)
    runs_cli: bool = False


def _collect(module: Module, node: ast.AST, reach: Reach, seen: set[tuple[str, str]]) -> None:
    """Add ``node``'s strings to ``reach``, following the names it uses to their definitions."""
    for item in ast.walk(node):
        if isinstance(item, ast.Constant) and isinstance(item.value, str):
            reach.strings.add(item.value)
            if item.value == "luvnet.cli" or COMMAND_MODULE.fullmatch(item.value):
                reach.runs_cli = True
        elif isinstance(item, ast.Attribute) and item.attr == "main":
            base = item.value
            if isinstance(base, ast.Name) and base.id in module.cli_modules:
                reach.runs_cli = True
            elif isinstance(base, ast.Name) and base.id in module.command_modules:
                reach.runs_cli = True
                reach.strings.add(module.command_modules[base.id])
        names = []
        if isinstance(item, ast.Name):
            names.append(item.id)
        elif isinstance(item, ast.arg):
            names.append(item.arg)  # a fixture parameter
        for name in names:
            if name in module.cli_mains:
                reach.runs_cli = True
            _follow(module, name, reach, seen)


def _follow(module: Module, name: str, reach: Reach, seen: set[tuple[str, str]]) -> None:
    candidates: list[tuple[str, str]] = []
    if name in module.defs:
        candidates.append((_module_name(module.path), name))
    elif name in module.imports:
        candidates.append(module.imports[name])
    else:
        candidates.extend((conftest, name) for conftest in _conftests(module.path))
    for owner, defined in candidates:
        if (owner, defined) in seen:
            continue
        seen.add((owner, defined))
        target = load(owner)
        for definition in target.defs.get(defined, []) if target is not None else []:
            _collect(target, definition, reach, seen)


def _parametrize_cases(node: ast.FunctionDef) -> list[ast.AST]:
    """The parameter sets of ``@pytest.mark.parametrize(names, [case, ...])`` decorators."""
    cases: list[ast.AST] = []
    for decorator in node.decorator_list:
        if (
            isinstance(decorator, ast.Call)
            and ast.unparse(decorator.func).endswith("parametrize")
            and len(decorator.args) >= 2
            and isinstance(decorator.args[1], ast.List | ast.Tuple)
        ):
            cases.extend(decorator.args[1].elts)
    return cases


@cache
def reaches_of_tests() -> list[tuple[str, Reach]]:
    """(test id, reach) of every ``test_*`` function under tests/; one per parameter set
    of a parametrized test, so the options of one case never count for another's command."""
    found = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if path == Path(__file__).resolve():
            continue  # it names every command and option without running one
        name = _module_name(path)
        module = load(name)
        assert module is not None
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            test_id = f"{path.relative_to(REPO)}::{node.name}"
            base = Reach()
            for part in [node.args, *node.body]:
                _collect(module, part, base, {(name, node.name)})
            cases = _parametrize_cases(node)
            for index, case in enumerate(cases):
                reach = Reach(set(base.strings), base.runs_cli)
                _collect(module, case, reach, {(name, node.name)})
                found.append((f"{test_id}[{index}]", reach))
            if not cases:
                found.append((test_id, base))
    return found


@cache
def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, keyed by the name a test uses to run it."""
    modules = {name: module for name, (module, _) in {**COMMANDS, **consumer_commands()}.items()}
    modules |= {f"luvnet.commands.{name}": f"luvnet.commands.{name}" for name in MODULE_COMMANDS}
    parsers = {}
    for name, module_name in modules.items():
        parser = argparse.ArgumentParser(prog=name)
        importlib.import_module(module_name).add_arguments(parser)
        parsers[name] = parser
    return parsers


def options(parser: argparse.ArgumentParser) -> dict[str, tuple[str, ...]]:
    """An option's first long name -> all its names; argparse's own --help left out."""
    return {
        next(o for o in action.option_strings if o.startswith("--")): tuple(action.option_strings)
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    }


def covered(command: str, names: tuple[str, ...]) -> list[str]:
    """The tests that run ``command`` (or the command it shares the option with, SHARED)
    through the command line with one of ``names``."""
    commands = {command}
    if command in SHARED and names[0] in options(command_parsers()[SHARED[command]]):
        commands.add(SHARED[command])
    hits = []
    for test_id, reach in reaches_of_tests():
        if not reach.runs_cli or not commands & reach.strings:
            continue
        named = {s.split("=", 1)[0] for s in reach.strings if s.startswith("-")}
        if named & set(names):
            hits.append(test_id)
    return hits


def test_every_listed_option_is_exercised_through_the_command_line_or_exempt():
    missing = []
    for command, parser in command_parsers().items():
        for option, names in options(parser).items():
            if (command, option) not in EXEMPT and not covered(command, names):
                missing.append(f"{command} {option}")
    assert not missing, (
        "options no test runs through the command line (add a test, e.g. in "
        "tests/test_cli_options.py, or an EXEMPT entry saying why none can exist): "
        + ", ".join(missing)
    )


def test_exemptions_name_real_options_that_still_lack_a_test():
    parsers = command_parsers()
    for (command, option), reason in EXEMPT.items():
        assert command in parsers, f"EXEMPT names an unknown command {command!r}"
        names = options(parsers[command])
        assert option in names, f"EXEMPT names {command} {option}, which the parser lacks"
        assert len(reason) > 30, f"EXEMPT {command} {option}: say why no test can exist"
        hits = covered(command, names[option])
        assert not hits, f"{command} {option} is tested now ({hits[0]}): drop its exemption"


def test_shared_options_are_the_same_definitions():
    parsers = command_parsers()
    for command, base in SHARED.items():
        mine = {a.dest: a for a in parsers[command]._actions if a.option_strings}
        for action in parsers[base]._actions:
            if not action.option_strings:
                continue
            twin = mine.get(action.dest)
            assert twin is not None, f"{command} lacks {base}'s {action.option_strings}"
            for attribute in ("option_strings", "default", "type", "choices", "nargs", "const"):
                assert getattr(twin, attribute) == getattr(action, attribute), (
                    f"{command} {action.option_strings[0]}: {attribute} differs from {base}'s"
                )


def test_the_reading_sees_a_cli_test_and_not_a_parser_only_one():
    """The reading itself: it must find a real CLI test, and not count one that only builds
    a parser (if a test named here is renamed, name another of the same kind)."""
    reaches = dict(reaches_of_tests())
    cli_test = "tests/test_cli_options.py::test_phantom_fps_sets_the_videos_frame_rate"
    parse_only = "tests/engine/training/test_demo.py::test_demo_model_command_keeps_its_options"
    assert cli_test in reaches and parse_only in reaches, "a named test is gone; see docstring"
    assert reaches[cli_test].runs_cli and {"phantom", "--fps"} <= reaches[cli_test].strings
    assert not reaches[parse_only].runs_cli
    assert covered("phantom", ("--fps",)) and not covered("phantom", ("--no-such-option",))


# Every source scheme the README names, and a test file that streams from it through the CLI.
SCHEME_TESTS = {
    "phantom": "tests/streamer/test_first_run.py",
    "file:": "tests/streamer/test_stream.py",
    "device:": "tests/streamer/test_device_source.py",
    "rtsp://": "tests/streamer/test_network_sources.py",
    "http://": "tests/streamer/test_network_sources.py",
    "udp://": "tests/streamer/test_network_sources.py",
}


def test_every_source_scheme_the_readme_names_has_a_cli_test() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sources = readme[readme.index("Sources: ") :].split("\n- ")[0]
    named = set(re.findall(r"`(phantom|[a-z]+:(?://)?)", sources))
    assert named == set(SCHEME_TESTS), (
        f"README names {sorted(named)}; tests map {sorted(SCHEME_TESTS)}"
    )
    for scheme, test_file in SCHEME_TESTS.items():
        text = (REPO / test_file).read_text(encoding="utf-8")
        assert "--source" in text and scheme in text, f"{test_file} streams no {scheme} source"
