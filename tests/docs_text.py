"""The docs as tests read them: their pages, headings, links, tables, and the commands
of their code blocks split as a shell would split them."""
import glob
import os
import re
import shlex

from conftest import ROOT

RUNNERS = ("python", "python3", "torchrun", "bash", "sbatch")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SPLITTERS = {";", "&&", "||", "|", "&", "do", "done", "then", "fi", "else"}


def pages():
    """Every page a reader is sent to: the README, docs/ and the results' own."""
    found = ["README.md", *sorted(glob.glob("docs/*.md", root_dir=ROOT)), "results/README.md"]
    return {page: read(page) for page in found}


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def prose(text):
    """The page without its code blocks, where a '#' is a comment, not a heading."""
    return FENCE.sub("", text)


def slug(heading):
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces
    to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text):
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", prose(text), re.M)}


def links(text):
    """(target, anchor) of every relative link; anchor '' where there is none."""
    for m in re.finditer(r"\]\(([^)\s]+)\)", prose(text)):
        if not re.match(r"\w+:", m.group(1)):
            target, _, anchor = m.group(1).partition("#")
            yield target, anchor


def section(text, heading):
    """The text under `## heading`, up to the next heading of that level."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"no section '## {heading}'"
    return m.group(1)


def tables(text):
    """Every table of the page as (its offset in the page, rows of stripped cells), the
    header first, the |---| line left out."""
    fenced = [m.span() for m in FENCE.finditer(text)]
    for m in re.finditer(r"(?:^\|.*\|\n)+", text, re.M):
        if any(start <= m.start() < end for start, end in fenced):
            continue
        rows = [[c.strip() for c in line.strip()[1:-1].split("|")]
                for line in m.group().splitlines() if not re.match(r"\|[-|: ]+\|$", line)]
        yield m.start(), rows


def code_blocks(text):
    """(language, body) of every fenced block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def inline_commands(text):
    """Commands written inline (`python -m common.bench --only engine`): the spans that
    start with a runner, optional [parts] taken as given."""
    for span in re.findall(r"`([^`]+)`", prose(text)):
        span = re.sub(r"\[([^\]]*)\]", r"\1", " ".join(span.split()))
        words = span.split()
        while words and re.match(r"[A-Z_]+=", words[0]):
            words.pop(0)
        if words and words[0] in RUNNERS and len(words) > 1:
            yield span


def commands(script):
    """Each simple command of a shell script as (environment, words): lines joined at
    a trailing backslash, comments dropped, split at ; && | and the words of loops,
    $NAME put in from the block's own assignments (a loop variable takes its first
    value), as a shell would run the block."""
    names, found = {}, []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        for words in _simple(list(lexer)):
            if words[0] == "for" and len(words) > 3 and words[2] == "in":
                names[words[1]] = words[3]
                continue
            env = {}
            while words and re.match(r"[A-Za-z_]\w*=", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = _expand(value, names)
            if not words:
                names.update(env)
                continue
            found.append((env, [w for word in words for w in _expand(word, names).split()]))
    return found


def _simple(tokens):
    words = []
    for token in [*tokens, ";"]:
        if token in SPLITTERS:
            if words:
                yield words
            words = []
        else:
            words.append(token)


def _expand(word, names):
    return re.sub(r"\$\{?(\w+)\}?", lambda m: names.get(m.group(1), m.group()), word)
