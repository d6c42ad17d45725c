"""`task-sidecar completion bash|zsh`: a shell completion script made from the parser itself,
so it knows every command, option and choice of this version.

    source <(task-sidecar completion bash)        # ~/.bashrc
    source <(task-sidecar completion zsh)         # ~/.zshrc, after compinit

argparse is walked once and the tree written out as tables (no Python runs at completion
time, so completing is instant); a small shell function walks the words typed so far.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

from . import output
from .output import Exit

FUNCTION = "_task_sidecar"
FILE_HINTS = ("FILE", "POLICIES", "EVENTS", "DOC", "DATA_DIR")  # metavars of paths


@dataclass
class Node:
    """One command (the root, `dlq`, `dlq list`, …) as the shell sees it."""

    path: str
    commands: dict[str, str] = field(default_factory=dict)  # word → help
    options: list[str] = field(default_factory=list)
    valued: list[str] = field(default_factory=list)  # options that take a value
    choices: dict[str, list[str]] = field(default_factory=dict)  # option → its choices
    file_options: list[str] = field(default_factory=list)
    files: bool = False  # a positional argument is a path


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script: source <(task-sidecar completion bash)",
    )
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(run=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    nodes = walk(args.root_parser)
    output.write(bash(nodes) if args.shell == "bash" else zsh(nodes))
    return Exit.OK


def walk(parser: argparse.ArgumentParser, path: str = "task-sidecar") -> list[Node]:
    node = Node(path)
    found = [node]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for word, sub in action.choices.items():
                node.commands[word] = helps.get(word, helps.get(sub.prog.split()[-1], ""))
                found += walk(sub, f"{path} {word}")
        elif action.option_strings:
            node.options += action.option_strings
            if action.nargs != 0:
                node.valued += action.option_strings
                if action.choices:
                    for option in action.option_strings:
                        node.choices[option] = [str(c) for c in action.choices]
                elif str(action.metavar or action.dest).upper() in FILE_HINTS:
                    node.file_options += action.option_strings
        elif action.choices and not isinstance(action.choices, dict):
            node.commands.update({str(c): "" for c in action.choices})  # e.g. bash, zsh
        elif str(action.metavar or action.dest).upper() in FILE_HINTS:
            node.files = True
    return found


def _words(items: list[str] | dict[str, str]) -> str:
    return " ".join(items)


def _colon(word: str) -> str:
    return word.replace(":", "\\:")  # _describe splits name:description at the first colon


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def bash(nodes: list[Node]) -> str:
    header = [
        "# bash completion for task-sidecar: source <(task-sidecar completion bash)",
        f"declare -gA {FUNCTION}_commands=() {FUNCTION}_options=() {FUNCTION}_valued=()",
        f"declare -gA {FUNCTION}_choices=() {FUNCTION}_fileopts=() {FUNCTION}_files=()",
    ]

    def entry(table: str, key: str, value: str) -> str:
        return f"{FUNCTION}_{table}[{key}]={value}"

    def commands(n: Node) -> str:
        return _quote(_words(n.commands))

    return _script(header, _tables(nodes, entry, commands), BASH_FUNCTION)


def zsh(nodes: list[Node]) -> str:
    header = [
        "#compdef task-sidecar",
        "# zsh completion for task-sidecar: source <(task-sidecar completion zsh)",
        f"typeset -gA {FUNCTION}_commands {FUNCTION}_options {FUNCTION}_valued",
        f"typeset -gA {FUNCTION}_choices {FUNCTION}_fileopts {FUNCTION}_files",
    ]

    def entry(table: str, key: str, value: str) -> str:
        # zsh keeps quotes in a subscript: append (key value) pairs
        return f"{FUNCTION}_{table}+=({key} {value})"

    def commands(n: Node) -> str:
        return _quote("\n".join(f"{_colon(w)}:{h}" for w, h in n.commands.items()))

    return _script(header, _tables(nodes, entry, commands), ZSH_FUNCTION)


def _tables(
    nodes: list[Node], entry: Callable[[str, str, str], str], commands: Callable[[Node], str]
) -> list[str]:
    """The tables the completion function reads, per command path, in either shell's
    syntax (`entry`); `commands` is how the shell lists a path's subcommands."""
    lines = []
    for n in nodes:
        key = _quote(n.path)
        lines.append(entry("commands", key, commands(n)))
        lines.append(entry("options", key, _quote(_words(n.options))))
        lines.append(entry("valued", key, _quote(_words(n.valued))))
        lines.append(entry("fileopts", key, _quote(_words(n.file_options))))
        lines.append(entry("files", key, str(int(n.files))))
        for option, choices in n.choices.items():
            lines.append(entry("choices", _quote(f"{n.path} {option}"), _quote(_words(choices))))
    return lines


def _script(header: list[str], tables: list[str], function: str) -> str:
    return "\n".join([*header, *tables, function.replace("%F%", FUNCTION)])


# The walk over the words typed so far, the same in both shells: a word that names a
# subcommand of the current path descends; an option that takes a value skips the next
# word; then the candidates are the choices of that option, files, the options of the
# path, or its subcommands.
BASH_FUNCTION = r"""
%F%() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmdpath=task-sidecar word i skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if ((skip)); then skip=0; continue; fi
        if [[ $word == -* ]]; then
            [[ $word != *=* && " ${%F%_valued[$cmdpath]} " == *" $word "* ]] && skip=1
        elif [[ " ${%F%_commands[$cmdpath]} " == *" $word "* ]]; then
            cmdpath="$cmdpath $word"
        fi
    done
    COMPREPLY=()
    if ((skip)); then
        if [[ -n ${%F%_choices["$cmdpath $prev"]} ]]; then
            COMPREPLY=($(compgen -W "${%F%_choices["$cmdpath $prev"]}" -- "$cur"))
        elif [[ " ${%F%_fileopts[$cmdpath]} " == *" $prev "* ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${%F%_options[$cmdpath]}" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "${%F%_commands[$cmdpath]}" -- "$cur"))
        if [[ ${%F%_files[$cmdpath]} == 1 ]]; then
            COMPREPLY+=($(compgen -f -- "$cur"))
        fi
    fi
    return 0
}
complete -o default -F %F% task-sidecar"""

ZSH_FUNCTION = r"""
%F%() {
    local cmdpath=task-sidecar word i skip=0
    local -a names entries
    for ((i = 2; i < CURRENT; i++)); do
        word=${words[i]}
        if ((skip)); then skip=0; continue; fi
        entries=("${(@f)%F%_commands[$cmdpath]}")
        names=("${(@)entries%%:*}")
        if [[ $word == -* ]]; then
            [[ $word != *=* && " ${%F%_valued[$cmdpath]} " == *" $word "* ]] && skip=1
        elif (( ${names[(Ie)$word]} )); then
            cmdpath="$cmdpath $word"
        fi
    done
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]}
    if ((skip)); then
        if [[ -n ${%F%_choices[$cmdpath $prev]} ]]; then
            compadd -- ${=%F%_choices[$cmdpath $prev]}
        elif [[ " ${%F%_fileopts[$cmdpath]} " == *" $prev "* ]]; then
            _files
        fi
        return
    fi
    if [[ $cur == -* ]]; then
        compadd -- ${=%F%_options[$cmdpath]}
        return
    fi
    entries=("${(@f)%F%_commands[$cmdpath]}")
    entries=(${entries:#})
    (( ${#entries} )) && _describe -t commands 'task-sidecar command' entries
    [[ ${%F%_files[$cmdpath]} == 1 ]] && _files
}
if (( $+functions[compdef] )); then
    compdef %F% task-sidecar
fi"""
