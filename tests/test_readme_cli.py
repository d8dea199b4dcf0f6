"""The README's command tables agree with the CLI: every command has a row, every option a row
shows exists (aliases included), every option a command has is shown, and every single default a
row states as ``[--opt VALUE]`` is the command's default. The tables cannot drift from ``--help``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import typer

from cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
#: a token of a row's command cell: a bracket, an alternatives bar (``\|`` in the table) or a word
_TOKEN = re.compile(r"\[|\]|\\\||[^\s\[\]\\]+")
_OPTION = re.compile(r"^--?[a-zA-Z][\w-]*(?:/--?[a-zA-Z][\w-]*)?$")


# ----------------------------------------------------------------------------- the app
def leaf_commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(``"supernet train"``, click command) for every runnable command under ``command``."""
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from leaf_commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def options_of(command: Any) -> list[Any]:
    """The command's options (click Option objects), ``--help`` excluded."""
    return [p for p in command.params if p.param_type_name == "option" and "--help" not in p.opts]


def names_of(option: Any) -> list[str]:
    """Every spelling of an option: ``-o``, ``--output``; ``--prune``, ``--no-prune``."""
    return [*option.opts, *option.secondary_opts]


# ----------------------------------------------------------------------------- the README
def readme_rows(text: str) -> list[tuple[bool, list[str], list[list[str]]]]:
    """Each table row beginning ``| `y7nas``: (whether its table is a command table, headed
    ``| command |``, rather than an example such as a benchmark's invocation; the words after
    ``y7nas`` in its first code span; the tokens of every code span of its first cell). ``\\|``
    stays one token (alternatives)."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]
        if header is None:
            header = cells[1]
        if not line.startswith("| `y7nas "):
            continue
        spans = [_TOKEN.findall(span) for span in re.findall(r"`([^`]*)`", cells[1])]
        rows.append((header == "command", spans[0][1:], spans))
    return rows


def resolve(root: Any, words: list[str]) -> tuple[str, Any] | None:
    """The command a row's words name (walking groups: ``supernet train``), or None."""
    command, path = root, []
    for word in words:
        subcommands = getattr(command, "commands", None)
        if not subcommands or word not in subcommands:
            break
        command, path = subcommands[word], [*path, word]
    if not path or getattr(command, "commands", None):
        return None
    return " ".join(path), command


def shown_options(spans: list[list[str]]) -> set[str]:
    """Every option spelling a row shows (``--prune/--no-prune`` gives both)."""
    return {name for tokens in spans for token in tokens if _OPTION.match(token) for name in token.split("/")}


def stated_defaults(spans: list[list[str]]) -> Iterator[tuple[str, str]]:
    """(option, value) for each ``[--opt VALUE]`` with one concrete value: the option inside a
    bracket, a value after it, no alternative (``\\|``) around it, the value not a placeholder
    in capitals (N, FILE, MS, SUPERNET.pt ...)."""
    for tokens in spans:
        depth = 0
        for i, token in enumerate(tokens):
            depth += {"[": 1, "]": -1}.get(token, 0)
            if depth == 0 or not _OPTION.match(token) or i + 1 >= len(tokens):
                continue
            value = tokens[i + 1]
            after = tokens[i + 2] if i + 2 < len(tokens) else "]"
            if value in ("[", "]", "\\|") or _OPTION.match(value) or after == "\\|" or tokens[i - 1] == "\\|":
                continue
            if any(c.isupper() for c in value):
                continue
            yield token, value


def default_matches(option: Any, value: str) -> bool:
    """Whether a README value is the option's default. A default of None is settled at run time:
    the value must then be the one its help names (``(default 0,1,2,3)``)."""
    default = option.default
    if default is None:
        return re.search(rf"default:? {re.escape(value)}(?![\w,.])", option.help or "") is not None
    if isinstance(default, bool):
        return False
    if isinstance(default, (int, float)):
        try:
            return float(value) == float(default)
        except ValueError:
            return False
    return str(default) == value


# ----------------------------------------------------------------------------- the checks
def readme_problems(text: str, root: Any) -> list[str]:
    """Every disagreement between the README's command tables and the app, one line each."""
    problems: list[str] = []
    shown: dict[str, set[str]] = {}
    commands = dict(leaf_commands(root))
    for documents, words, spans in readme_rows(text):
        found = resolve(root, words)
        if found is None:
            problems.append(f"README row `y7nas {words[0] if words else ''}`: no such command")
            continue
        name, command = found
        options = {n: o for o in options_of(command) for n in names_of(o)}
        row = shown_options(spans)
        for option in sorted(row - set(options)):
            problems.append(f"`y7nas {name}`: the README shows {option}, which the command does not have")
        if not documents:
            continue                    # an example invocation: its options must exist, that is all
        shown.setdefault(name, set()).update(row)
        for option, value in stated_defaults(spans):
            if option in options and not default_matches(options[option], value):
                problems.append(f"`y7nas {name}`: the README shows [{option} {value}], "
                                f"the command's default is {options[option].default!r}")
    for name, command in commands.items():
        if getattr(command, "hidden", False):
            continue
        if name not in shown:
            problems.append(f"`y7nas {name}`: no README row")
            continue
        for option in options_of(command):
            if not option.hidden and not set(names_of(option)) & shown[name]:
                problems.append(f"`y7nas {name}`: {'/'.join(names_of(option))} is not in its README row")
    return problems


@pytest.fixture(scope="module")
def root():
    return typer.main.get_command(app)


def test_readme_command_tables_match_the_cli(root):
    problems = readme_problems(README.read_text(encoding="utf-8"), root)
    assert not problems, "README.md and the CLI disagree:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- the checker itself
def _fake_app():
    """A small app the checker is tried on, so that these tests do not follow the real CLI."""
    fake = typer.Typer()
    sub = typer.Typer()
    fake.add_typer(sub, name="data")

    @fake.command()
    def show(study: str = typer.Option(..., "--study"),
             results_dir: Path = typer.Option(Path("results"), "--results-dir"),
             storage: Optional[str] = typer.Option(None, "--storage"),
             phi: Optional[str] = typer.Option(None, "--phi", help="Exponents (default 0,1,2,3)."),
             sampler: Optional[str] = typer.Option(None, "--sampler", help="nsga2 (default for two)."),
             output: Optional[Path] = typer.Option(None, "-o", "--output"),
             prune: bool = typer.Option(True, "--prune/--no-prune"),
             secret: int = typer.Option(0, "--secret", hidden=True)) -> None:
        pass

    @fake.command()
    def presets() -> None:
        pass

    @fake.command(hidden=True)
    def internal() -> None:
        pass

    @sub.command("synth")
    def synth(seed: int = typer.Option(0, "--seed"), scale: float = typer.Option(1.5, "--scale")) -> None:
        pass

    return typer.main.get_command(fake)


_FAKE = """\
| command | what it does |
|---|---|
| `y7nas show --study NAME [--results-dir elsewhere] [--colour red] [--phi 0,1,2,3] [--sampler nsga2]` | \\| `--bogus` |
| `y7nas nonsense --x` | no such command |
| `y7nas data synth [--seed 0] [--scale 1.50]` | all there, a float default written otherwise |

| script | what | figure |
|---|---|---|
| `y7nas show --study x --unknown` | an example: its options must exist | 1 |
| `y7nas presets --json` | an example: it documents nothing | 2 |
"""


def test_the_checker_names_each_command_and_option_it_finds_wrong():
    problems = readme_problems(_FAKE, _fake_app())
    assert sorted(problems) == sorted([
        "`y7nas show`: the README shows --colour, which the command does not have",
        "`y7nas show`: the README shows [--results-dir elsewhere], the command's default is PosixPath('results')",
        "`y7nas show`: the README shows [--sampler nsga2], the command's default is None",
        "`y7nas show`: --storage is not in its README row",
        "`y7nas show`: -o/--output is not in its README row",
        "`y7nas show`: --prune/--no-prune is not in its README row",
        "README row `y7nas nonsense`: no such command",
        "`y7nas show`: the README shows --unknown, which the command does not have",
        "`y7nas presets`: the README shows --json, which the command does not have",
        "`y7nas presets`: no README row",
    ])


def test_an_option_is_shown_by_any_of_its_spellings_and_rows_add_up():
    text = ("| command | what |\n|---|---|\n"
            "| `y7nas show --study S [-o FILE] [--no-prune]` | one row |\n"
            "| `y7nas show --storage URL [--results-dir results] [--phi N] [--sampler tpe\\|nsga2]` | another |\n"
            "| `y7nas presets` | x |\n| `y7nas data synth [--seed N] [--scale 1.5]` | x |\n")
    assert readme_problems(text, _fake_app()) == []


def test_defaults_are_read_only_where_the_row_states_one_value():
    spans = [_TOKEN.findall("y7nas x [--a 1] [--b N] [--c x\\|y] [--d 0.85,1.0\\|none] --e 5 "
                            "[--f 1.2 --g 1.1] [--h [--i 3]] [--j FILE.pt]")]
    assert list(stated_defaults(spans)) == [("--a", "1"), ("--f", "1.2"), ("--g", "1.1"), ("--i", "3")]
