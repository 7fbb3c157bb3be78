"""The docs stay true to the repository: relative links resolve (files and heading anchors), and every
`tritonrepo ...` command they show exists in the CLI with the options shown."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SPAN = re.compile(r"(`+)(.+?)\1", re.S)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
# `tritonrepo` as a command word: not a path (`tritonrepo/...`) or a module (`tritonrepo.clients`)
COMMAND = re.compile(r"(?:^|(?<=[\s/(\[]))tritonrepo(?=\s|$)")
OPTION = re.compile(r"^--[A-Za-z0-9][A-Za-z0-9-]*")
PLACEHOLDERS = {"...", "…"}


def split_page(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines inside fenced code blocks, lines outside them), each as (1-based line number, text)."""
    code, prose, fenced = [], [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append((number, line))
    return code, prose


def paragraphs(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Runs of non-blank lines (where inline code spans live), as (first line number, joined text)."""
    out, start, buf, last = [], None, [], None
    for number, line in lines:
        if not line.strip() or (last is not None and number != last + 1):
            if buf:
                out.append((start, "\n".join(buf)))
            start, buf = None, []
        if line.strip():
            start = number if start is None else start
            buf.append(line)
        last = number
    if buf:
        out.append((start, "\n".join(buf)))
    return out


def without_spans(text: str) -> str:
    return SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's heading anchor: markup and punctuation dropped (hyphens and spaces kept), lowercase, spaces -> -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    _, prose = split_page(path.read_text(encoding="utf-8"))
    for _, line in prose:
        m = HEADING.match(line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    problems = []
    _, prose = split_page(page.read_text(encoding="utf-8"))
    for start, para in paragraphs(prose):
        for m in LINK.finditer(without_spans(para)):
            target = m.group(1)
            line = start + para[: m.start()].count("\n")
            where = f"{page.relative_to(ROOT)}:{line}: {m.group(0)}"
            if re.match(r"^(https?:|mailto:)", target, re.I):
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            if not dest.is_relative_to(ROOT):
                problems.append(f"{where} (outside the repository)")
            elif not dest.exists():
                problems.append(f"{where} ({path_part} does not exist)")
            elif anchor and (dest.is_dir() or dest.suffix != ".md"):
                problems.append(f"{where} (an anchor into a file that is not markdown)")
            elif anchor and anchor not in anchors(dest):
                problems.append(f"{where} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    return problems


def shown_commands(page: Path) -> list[tuple[int, str]]:
    """Every `tritonrepo ...` in a code block line (continuations joined, comments dropped) or an inline code span,
    as (line number, the text from `tritonrepo` on)."""
    code, prose = split_page(page.read_text(encoding="utf-8"))
    texts: list[tuple[int, str]] = []
    joined, first = "", None
    for number, line in code:
        first = number if first is None else first
        joined += line
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        texts.append((first, re.split(r"\s#\s", joined, maxsplit=1)[0]))
        joined, first = "", None
    if joined:
        texts.append((first, joined))
    for start, para in paragraphs(prose):
        for m in SPAN.finditer(para):
            texts.append((start + para[: m.start()].count("\n"), m.group(2).replace("\n", " ")))
    found = []
    for number, text in texts:
        for m in COMMAND.finditer(text):
            found.append((number, text[m.start():].strip()))
    return found


def option_names(command) -> set[str]:
    names = {o for p in command.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}
    return names | {"--help"}  # click's own, not among the params


def option_problem(command, word: str) -> str | None:
    m = OPTION.match(word.strip("[]()|,;`'\""))
    names = option_names(command)
    if m and m.group(0) not in names:
        return f"no option {m.group(0)} (options: {', '.join(sorted(n for n in names if n.startswith('--')))})"
    return None


def command_problem(root, text: str) -> str | None:
    """Why `tritonrepo WORDS...` is not a command path of the CLI with those options (None: it is). Subcommand
    groups are walked by the words after `tritonrepo` (a group's own options may come first) down to a leaf command;
    every `--option` after it must be one of that command's; a placeholder (`...`) ends the check."""
    words = text.split()[1:]
    command, i = root, 0
    while hasattr(command, "commands") and i < len(words):
        word = words[i]
        if word in PLACEHOLDERS:
            return None
        if word.startswith("-"):
            problem = option_problem(command, word)
            if problem:
                return problem
        elif word in command.commands:
            command = command.commands[word]
        else:
            return f"no command {word!r} (commands: {', '.join(sorted(command.commands))})"
        i += 1
    for word in words[i:]:
        problem = option_problem(command, word)
        if problem:
            return problem
    return None


def test_every_relative_link_resolves():
    problems = [problem for page in PAGES for problem in broken_links(page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_command_shown_exists_with_its_options():
    import typer

    from tritonrepo.cli import app

    root = typer.main.get_command(app)
    problems = []
    for page in PAGES:
        for number, text in shown_commands(page):
            problem = command_problem(root, text)
            if problem:
                problems.append(f"{page.relative_to(ROOT)}:{number}: {text}: {problem}")
    assert not problems, "commands the CLI does not have:\n" + "\n".join(problems)


def test_the_checks_find_what_they_look_for():
    import typer

    from tritonrepo.cli import app

    assert slug("Evaluation: `tritonrepo eval search`") == "evaluation-tritonrepo-eval-search"
    assert slug("Bad input (tested against the real server)") == "bad-input-tested-against-the-real-server"
    code, prose = split_page("a `tritonrepo perf sweep ner --only x` and\n```\ntritonrepo ingest run M \\\n"
                             "  --store s  # c --no\n```\n")
    assert [line for _, line in code] == ["tritonrepo ingest run M \\", "  --store s  # c --no"]
    assert paragraphs(prose) == [(1, "a `tritonrepo perf sweep ner --only x` and")]
    assert not COMMAND.search("tritonrepo/specs.py tritonrepo.clients")
    assert COMMAND.search(".venv/bin/tritonrepo build")
    root = typer.main.get_command(app)
    assert command_problem(root, "tritonrepo perf sweep ner_int8 --only untuned [--apply]") is None
    assert command_problem(root, "tritonrepo ingest ...") is None
    assert command_problem(root, "tritonrepo --verbose build --force") is None
    assert "no command 'biuld'" in command_problem(root, "tritonrepo --verbose biuld")
    assert "no option --bogus" in command_problem(root, "tritonrepo perf sweep ner_int8 --bogus=1")
    assert "no command 'sweeep'" in command_problem(root, "tritonrepo perf sweeep ner_int8")
