"""What the documentation says is true (issue #24, section 6): the pages agree with each other and with the tree.

- docs/status.md and the README give the same `make test` count;
- docs/design.md names every module of every folder installed as d4rt.<name> (pyproject's package-dir);
- no tracked file names a repository file or a d4rt module that does not exist;
- the README says, where a newcomer reads it, that the bundled model is synthetic-only and what to use instead.
"""

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
WINGS = sorted({d.split("/")[0] for d in PACKAGE_DIRS.values()} | {"scripts", "tests", "benchmarks", "docs", "cpp"})


def tracked(*suffixes: str) -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / n for n in names if n.endswith(suffixes) and (ROOT / n).is_file()]


def test_status_and_readme_give_the_same_test_count():
    readme = re.search(r"`make test` [^(]*\((\d+) tests", (ROOT / "README.md").read_text())
    status = re.search(r"`make test`[^\n]*?(\d+) passed", (ROOT / "docs" / "status.md").read_text())
    assert readme and status, "both pages state the `make test` count"
    assert readme.group(1) == status.group(1), (readme.group(0), status.group(0))


def test_design_names_every_module():
    design = (ROOT / "docs" / "design.md").read_text()
    missing = []
    for package, folder in PACKAGE_DIRS.items():
        for module in sorted((ROOT / folder).glob("*.py")):
            if module.stem != "__init__" and not re.search(rf"\b{re.escape(module.stem)}(\.py)?\b", design):
                missing.append(str(module.relative_to(ROOT)))
    assert not missing, f"docs/design.md does not name {missing}: add them to its layout"


PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(WINGS)})/[\w/.-]+\.(?:py|md|sh|hpp|cpp))\b")
MODULE = re.compile(r"(?<![\w.])d4rt(?:\.[a-z_][a-z0-9_]*)+")
# graph metadata keys (ONNX / AOTInductor), and the kernels' torch.ops.d4rt.* ops
NOT_MODULES = {"d4rt.export_id", "d4rt.precision", "d4rt.graph", "d4rt.attention", "d4rt.attention_backward"}


def module_exists(name: str) -> bool:
    """d4rt.a.b.c: a package / module file under pyproject's package-dir, then (if anything is left) a name that
    the module's source mentions."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in PACKAGE_DIRS:
            folder, rest = ROOT / PACKAGE_DIRS[".".join(parts[:i])], parts[i:]
            break
    else:
        return False
    source = folder / "__init__.py"
    while rest:
        if (folder / rest[0]).is_dir() and (folder / rest[0] / "__init__.py").is_file():
            folder, rest, source = folder / rest[0], rest[1:], folder / rest[0] / "__init__.py"
        elif (folder / f"{rest[0]}.py").is_file():
            source, rest = folder / f"{rest[0]}.py", rest[1:]
            break
        else:
            break
    return not rest or bool(re.search(rf"\b{re.escape(rest[0])}\b", source.read_text()))


def test_no_file_names_a_module_that_does_not_exist():
    wrong = []
    for path in tracked(".py", ".md", ".sh", ".toml"):
        text = path.read_text(errors="ignore")
        where = path.relative_to(ROOT)
        for m in PATH.finditer(text):
            before = text[max(0, m.start() - 40): m.start()]
            exists = (ROOT / m.group(1)).exists() or (ROOT / "cpp" / "include" / m.group(1)).exists()  # C++ headers
            if not exists and "onnx-tensorrt" not in before:  # that repository's own file
                wrong.append(f"{where}: {m.group(1)}")
        for m in MODULE.finditer(text):
            name = m.group(0)
            if ".".join(name.split(".")[:2]) not in NOT_MODULES and ".__" not in name and not module_exists(name):
                wrong.append(f"{where}: {name}")
    assert not wrong, f"names of files or modules that do not exist: {sorted(set(wrong))}"


def test_readme_says_what_the_bundled_model_is_for():
    readme = (ROOT / "README.md").read_text()
    first_screen = readme[: readme.index("## Install")]  # what a newcomer reads before installing anything
    for words in ("synthetic scenes only", "not meaningful", "jump at the boundaries between windows",
                  "OpenD4RT weights", "docs/opend4rt.md"):
        assert words in first_screen, words
