"""The README and docs/ hold only commands that parse and links that land.

Every command in a shell code block of README.md and docs/**/*.md that starts a
project entry point (``python -m X``, a ``medimg-*`` command of pyproject.toml,
``python benchmarks/x.py``, the three shell stages, ``bash scripts/...``, the
job scripts and the local launcher, ``make TARGET``) must name something that
exists, and every ``--flag`` after it must appear in that entry point's
``--help`` (each help text is read once, and only for the entry points whose
flags a page uses). Every relative link must
point to an existing file, and an anchor to a heading of it. The README stays a
user's guide: under 250 lines, opening on ``make demo`` and ``make test``.

    .venv/bin/python -m pytest tests/test_docs.py -n 0
"""
import functools
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from helpers import ROOT

PAGES = sorted({os.path.join(ROOT, "README.md"),
                *glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)})
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "do", "then", "else"}
PYTHONS = re.compile(r"^(?:.*/)?python(?:3(?:\.\d+)?)?$")
SHELL_STAGES = {"download_dataset.sh", "extract_images.sh", "write_tfrecords.sh"}
# Job scripts: the trainer named after them gets the flags (train.sbatch chexnet ... -> chexnet.train).
JOB_MODULES = {"train.sbatch": "train", "benchmark.sbatch": "train", "evaluate.sbatch": "evaluate"}
OUTSIDE_TOOLS = {"pytest", "pip", "venv", "tensorboard"}  # python -m of tools, not of the project
FLAG = re.compile(r"(?<![\w-])(--[A-Za-z0-9][\w-]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


# ------------------------------------------------------------------ reading the pages
def code_blocks(text):
    """[(first line number, language, lines)] of the fenced blocks of a Markdown text."""
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if current is None and fence:
            current = (number + 1, fence.group(2).lower(), [])
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def shell_lines(lines):
    """Logical lines of a shell block: continuations joined, here-document bodies left out."""
    logical, pending, heredoc = [], "", None
    for line in lines:
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
        opened = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        heredoc = opened.group(1) if opened else None
    return logical + ([pending] if pending else [])


def simple_commands(line):
    """The token lists of a shell line's simple commands (comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: take the line as words
        tokens = line.split("#", 1)[0].split()
    commands, current = [], []
    for token in tokens:
        if token in SEPARATORS or token.startswith(("&", "|", ";")):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in commands + [current] if c]


def page_commands(path):
    """[(where, tokens)] of every simple command in the page's shell blocks."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = []
    for start, language, lines in code_blocks(text):
        if language not in SHELL_LANGUAGES:
            continue
        for line in shell_lines(lines):
            for tokens in simple_commands(line):
                found.append((f"{os.path.relpath(path, ROOT)} (block at line {start})", tokens))
    return found


# ------------------------------------------------------------------ entry points
def module_file(module):
    """The file ``python -m module`` runs from the project root, or None."""
    base = os.path.join(ROOT, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__main__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def is_project_package(name):
    return os.path.isfile(os.path.join(ROOT, name, "__init__.py"))


@functools.lru_cache(maxsize=None)
def help_flags(command):
    """The flags named by ``COMMAND --help`` (a tuple of words), read once per entry point."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    asks_help = command[-1] in ("--help", "--help-writer")  # the writer's own: a --help after it is the script's
    proc = subprocess.run([*command, *(() if asks_help else ("--help",))], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(command)} --help exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return frozenset(FLAG.findall(proc.stdout + proc.stderr))


@functools.lru_cache(maxsize=None)
def console_scripts():
    """{command: module} of pyproject.toml's [project.scripts] (the medimg-* commands make setup installs)."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        table = f.read().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+):main"', table, re.MULTILINE))


def make_targets():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        return set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", f.read(), re.MULTILINE))


def flags_of(tokens):
    """The ``--flag`` names among ``tokens`` (values after ``=`` dropped), up to a bare ``--``."""
    flags = []
    for token in tokens:
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            flags.append(token.split("=", 1)[0])
    return flags


def python_command(module):
    return (sys.executable, "-m", module)


def check_flags(command, flags, what):
    """Problems: each flag of ``flags`` that ``command --help`` does not name."""
    if not flags:
        return []
    accepted = help_flags(tuple(command))
    name = f"python -m {command[2]}" if command[1:2] == ("-m",) else os.path.relpath(command[-1], ROOT)
    return [f"{what}: {flag} is not a flag of {name}" for flag in flags if flag not in accepted]


def writer_command(dataset):
    return ("bash", os.path.join(ROOT, "write_tfrecords.sh"), "--dataset", dataset, "--help-writer")


def check_write_tfrecords(args, what):
    """write_tfrecords.sh takes --dataset and --out itself and passes the rest to its writer."""
    dataset = args[args.index("--dataset") + 1] if "--dataset" in args[:-1] else "chestxray14"
    own = {"--dataset", "--out", "--help", "--help-writer"}
    rest = [f for f in flags_of(args) if f not in own]
    if not rest:
        return []
    accepted = help_flags(writer_command(dataset))
    return [f"{what}: {flag} is neither write_tfrecords.sh's nor its {dataset} writer's flag"
            for flag in rest if flag not in accepted]


def check_script(script, args, what):
    """Problems with a shell entry point ``script`` (a path as written) given ``args``."""
    path = os.path.normpath(os.path.join(ROOT, script))
    name = os.path.basename(script)
    if not os.path.isfile(path):
        return [f"{what}: {script} does not exist"]
    if name == "write_tfrecords.sh":
        return check_write_tfrecords(args, what)
    if name == "launch.sh":
        # The entry point: the first word naming a project package (else one shaped like a module).
        modules = ([i for i, t in enumerate(args) if is_project_package(t.split(".")[0]) and "." in t]
                   or [i for i, t in enumerate(args) if re.fullmatch(r"[a-z_]+\.[a-z_]+", t) and
                       not t.endswith((".sh", ".txt", ".json"))])
        if not modules:
            return [f"{what}: launch.sh names no entry point module"]
        at = modules[0]
        return (check_flags(("bash", path), flags_of(args[:at]), what)
                + check_module(args[at], args[at + 1:], what))
    if name in JOB_MODULES:
        if not args or not is_project_package(args[0]):
            return [f"{what}: {name} needs a trainer first (chexnet or segmentation)"]
        return check_module(f"{args[0]}.{JOB_MODULES[name]}", args[1:], what)
    if name == "data.sbatch":
        cut = args.index("--") if "--" in args else len(args)
        dataset = args[0] if args else "chestxray14"
        problems = check_flags(("bash", os.path.join(ROOT, "download_dataset.sh")), flags_of(args[1:cut]), what)
        return problems + check_write_tfrecords(["--dataset", dataset, *args[cut + 1:]], what)
    return check_flags(("bash", path), flags_of(args), what)


def check_module(module, args, what):
    top = module.split(".")[0]
    if not is_project_package(top):
        return [] if top in OUTSIDE_TOOLS else [f"{what}: python -m {module}: no such project module"]
    if module_file(module) is None:
        return [f"{what}: python -m {module}: no such module in the project"]
    return check_flags(python_command(module), flags_of(args), what)


def check_command(tokens, what):
    """Problems with one simple command: the project entry point it starts, and its flags."""
    targets = None
    for i, token in enumerate(tokens):
        rest = tokens[i + 1:]
        if token == "make" and all(re.fullmatch(r"\w+=\S*", t) or t in ("sudo", "env") for t in tokens[:i]):
            targets = targets if targets is not None else make_targets()
            goals = [t for t in rest if not t.startswith("-") and "=" not in t]
            return [f"{what}: make {goal}: no such target in the Makefile" for goal in goals if goal not in targets]
        if PYTHONS.match(token) and rest:
            if rest[0] == "-m" and len(rest) > 1:
                return check_module(rest[1], rest[2:], what)
            if rest[0].endswith(".py") and not rest[0].startswith("-"):
                script = os.path.join(ROOT, rest[0])
                if not os.path.isfile(script):
                    return [f"{what}: {rest[0]} does not exist"]
                return check_flags((sys.executable, script), flags_of(rest[1:]), what)
            return []
        if token in console_scripts():
            return check_module(console_scripts()[token], rest, what)
        bare = token[2:] if token.startswith("./") else token
        if bare in SHELL_STAGES or re.fullmatch(r"(scripts|job_submissions)/[\w./-]+\.(sh|sbatch)", bare):
            return check_script(bare, rest, what)
    return []


def command_problems(paths):
    problems = []
    for path in paths:
        for what, tokens in page_commands(path):
            problems += check_command(tokens, what)
    return problems


# ------------------------------------------------------------------ links
def heading_anchors(path):
    """GitHub's anchors of the Markdown headings of ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    anchors, seen = set(), {}
    in_block = False
    for line in text.splitlines():
        if FENCE.match(line) or line.strip() == "```":
            in_block = not in_block
            continue
        heading = None if in_block else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def without_code(text):
    """The text less its fenced blocks and inline code spans (links there are not links)."""
    kept, in_block = [], False
    for line in text.splitlines():
        if FENCE.match(line) or (in_block and line.strip() == "```"):
            in_block = not in_block
            continue
        if not in_block:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def link_problems(paths):
    problems = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = without_code(f.read())
        where = os.path.relpath(path, ROOT)
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(dest):
                problems.append(f"{where}: link {target}: {os.path.relpath(dest, ROOT)} does not exist")
            elif anchor and dest.endswith(".md") and anchor not in heading_anchors(dest):
                problems.append(f"{where}: link {target}: no heading #{anchor} in {os.path.relpath(dest, ROOT)}")
    return problems


# ------------------------------------------------------------------ tests
def test_the_pages_are_found():
    names = {os.path.relpath(p, ROOT) for p in PAGES}
    assert {"README.md", "docs/README.md", "docs/training.md", "docs/RELIABILITY.md"} <= names, names


def test_every_command_shown_names_an_entry_point_that_exists_with_flags_it_accepts():
    problems = command_problems(PAGES)
    assert not problems, "\n".join(problems)


def test_the_pages_show_commands_of_every_kind_the_check_reads():
    """The check is not vacuous: the pages hold python -m, shell-stage, job-script and make commands."""
    starts = set()
    for path in PAGES:
        for _, tokens in page_commands(path):
            starts.update(t for t in tokens if t in ("make", "-m", "./write_tfrecords.sh", "./download_dataset.sh")
                          or t.endswith(".sbatch") or t.endswith("launch.sh"))
    assert {"make", "-m", "./write_tfrecords.sh", "./download_dataset.sh"} <= starts, starts
    assert any(s.endswith(".sbatch") for s in starts) and any(s.endswith("launch.sh") for s in starts), starts


def test_every_relative_link_points_to_a_file_and_heading_that_exist():
    problems = link_problems(PAGES)
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_short_guide_that_opens_on_the_two_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move detail to docs/"
    assert lines[0].startswith("# "), lines[0]
    opening = [line for line in lines[1:8] if line.strip()]
    assert opening[0].startswith("```"), opening
    assert opening[1].split("#")[0].split() == ["make", "demo"], opening
    assert opening[2].split("#")[0].split() == ["make", "test"], opening
    assert "#" in opening[1] and "#" in opening[2], "each command says in one line what it does"
    assert not any("min " in line and "passed" in line for line in lines[:60]), "timing history belongs in docs/"


BROKEN_PAGE = """# A page with mistakes

```bash
python -m chexnet.train --data-dir d --no-such-flag 3      # a flag the trainer lacks
python -m chexnet.trian --epochs 1                         # a module that does not exist
./write_tfrecords.sh --dataset kvasir-seg --out data --split random --val-fraction 0.1   # ChestX-ray14's flag
job_submissions/local/launch.sh --np 2 --hosts h segmentation.train --epochs 1         # launch.sh has no --hosts
sbatch -n 4 job_submissions/slurm/train.sbatch chexnet --epoch 3                        # --epochs, misspelt
make demo-everything
./download_dataset.sh --out data --synthetic 10 --colour   # a stage flag that does not exist
medimg-chexnet-evaluate --run runs/cx --splits val          # --split, misspelt, after an installed command
```

```text
python -m chexnet.train --not-checked-here                  # not a shell block
```

[a missing page](no_such_page.md), [a missing heading](README.md#no-such-heading), [fine](README.md#a-page-with-mistakes)
"""


def test_the_checks_fail_on_a_page_with_broken_commands_and_links(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(BROKEN_PAGE)
    problems = command_problems([str(page)])
    shown = "\n".join(problems)
    for expected in ("--no-such-flag is not a flag", "python -m chexnet.trian", "--val-fraction is neither",
                     "--hosts is not a flag", "--epoch is not a flag", "make demo-everything",
                     "--colour is not a flag", "--splits is not a flag of python -m chexnet.evaluate"):
        assert expected in shown, shown
    assert "--not-checked-here" not in shown
    assert len(problems) == 8, shown
    links = link_problems([str(page)])
    assert len(links) == 2 and "no_such_page.md" in links[0] and "#no-such-heading" in links[1], links


@pytest.mark.parametrize("line, expected", [
    ("horovodrun -np 4 python -m chexnet.train --epochs 10  # ten", [["horovodrun", "-np", "4", "python", "-m",
                                                                     "chexnet.train", "--epochs", "10"]]),
    ("for n in 1 2; do sbatch -n $n x.sbatch chexnet --synthetic-input; done",
     [["for", "n", "in", "1", "2"], ["sbatch", "-n", "$n", "x.sbatch", "chexnet", "--synthetic-input"], ["done"]]),
])
def test_a_shell_line_splits_into_its_simple_commands(line, expected):
    assert simple_commands(line) == expected


def test_continuations_join_and_here_documents_are_skipped():
    lines = ["cat > h.sh <<'SH'", "python -m nothing.here --x", "SH", "a \\", "  --b"]
    assert shell_lines(lines) == ["cat > h.sh <<'SH'", "a    --b"]
