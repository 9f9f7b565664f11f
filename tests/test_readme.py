"""The README's two quick-start commands are what CI and users run; keep them in one place."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _marked(name: str) -> str:
    match = re.search(rf"^<!-- {name} --> *(.+)$", README, flags=re.M)
    assert match, f"README.md has no '<!-- {name} -->' line"
    return match.group(1).strip()


def _next_code_block(after: str) -> str:
    rest = README[README.index(after) + len(after) :]
    match = re.search(r"```bash\n(.+?)\n```", rest, flags=re.S)
    assert match, f"no bash block after {after!r}"
    return match.group(1).strip()


def test_marked_commands_match_the_shown_blocks():
    for name in ("main-command", "test-command"):
        assert _next_code_block(f"<!-- {name} -->") == _marked(name)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "test-command" in ci
    assert "pytest" in _marked("test-command")


def test_setup_keeps_an_installed_cpu_torch():
    """torch must be a range that 2.13.0 satisfies, and both commands install 2.13.0 first."""
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    spec = re.search(r'"(torch[<>=!~][^"]*)"', text).group(1)
    assert Requirement(spec).specifier.contains("2.13.0")
    for name in ("main-command", "test-command"):
        assert _marked(name).startswith("pip install torch==2.13.0 && ")
