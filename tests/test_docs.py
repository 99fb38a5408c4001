"""README and docs/ cannot go stale: every `python tools/...` command line they show parses with
its tool's own argument parser, and the config page documents exactly FCOSConfig's fields."""
import glob
import os
import re
import shlex

import pytest

from official.vision.detection.models import FCOSConfig

from conftest import PROJECT_ROOT, load_tool

PAGES = ["README.md"] + sorted(os.path.relpath(path, PROJECT_ROOT) for path in glob.glob(
    os.path.join(PROJECT_ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)


def tool_commands(page):
    """(tool script, argument list) of each `python tools/<script>.py ...` line of the code
    blocks of ``page``, backslash continuations joined and comments dropped."""
    with open(os.path.join(PROJECT_ROOT, page)) as f:
        blocks = FENCE.findall(f.read())
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if re.match(r"\s*python\S* tools/", line):
                words = shlex.split(line, comments=True)
                commands.append((os.path.basename(words[1]), words[2:]))
    return commands


COMMANDS = [(page, script, args) for page in PAGES for script, args in tool_commands(page)]


def test_the_pages_show_commands_of_every_tool():
    shown = {script for _, script, _ in COMMANDS}
    tools = {os.path.basename(path) for path in glob.glob(os.path.join(PROJECT_ROOT, "tools",
                                                                         "*.py"))}
    assert shown == tools


@pytest.mark.parametrize("page, script, args", COMMANDS,
                         ids=["{}:{}".format(page, script) for page, script, _ in COMMANDS])
def test_every_command_line_of_the_docs_parses(page, script, args):
    try:
        load_tool(script).parse_args(args)
    except SystemExit as exit_:  # argparse's way of refusing a command line
        pytest.fail("{} shows a command tools/{} refuses ({}): {}".format(
            page, script, exit_.code, " ".join(args)))


def test_the_config_page_documents_every_field_of_fcosconfig():
    with open(os.path.join(PROJECT_ROOT, "docs", "config.md")) as f:
        documented = re.findall(r"^\| `(\w+)` \|", f.read(), re.M)
    assert documented == list(vars(FCOSConfig()))
