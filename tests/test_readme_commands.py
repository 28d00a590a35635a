"""Every command the README shows works as written.

Each `dvc exp run`, `dvc repro`, `python -m pipeline...` and `mlflow ...` command found in
README.md (fenced shell blocks, inline code spans, `&&`/`;`/`|` chains, `\\` continuations)
becomes one test, checked as cheaply as proves it works:

- `dvc exp run ...`: DVC's own argument parser accepts it; its `-S` overrides are composed
  with Hydra exactly as DVC composes them (dvc.utils.hydra.compose_and_dump, the settings of
  `[hydra]` in .dvc/config; sweeps expanded as `--queue` would), the result passes the
  params schema (pipeline.common.params.validate), and `dvc repro --dry` with that params.yaml
  (and the command's targets and repro flags) is accepted in a git copy of the project.
- `python -m pipeline.compose ...`: the same composition and validation (params.yaml of the
  project is never written).
- `dvc repro ...`: DVC's parser accepts it and `dvc repro --dry` accepts it in the git copy.
- `mlflow ui ...` / `mlflow server ...`: the exact command runs (only its port is replaced by
  a free one and $PWD by a temporary folder) and serves HTTP 200 on / within 120 s. The
  README's mlflow commands are started side by side, each with one uvicorn worker
  (MLFLOW_WORKERS=1 in its environment, unless the command sets it: the same app, not four
  copies importing it at once), and each is reported by its own test.
- Any other command of those families fails, saying how to cover it: a README edit cannot
  add an unchecked command.

Set LIGHTCNN_README to check another file (e.g. a draft of the README).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README_ENV = "LIGHTCNN_README"
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "zsh", "console", "shell-session"}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}
MLFLOW_START_TIMEOUT_S = 120  # the README's servers start side by side on a shared machine
DRY_REPRO_TIMEOUT_S = 300
# `dvc exp run` options that `dvc repro` does not take: (takes a value?)
EXP_RUN_ONLY_OPTIONS = {"-n": True, "--name": True, "-S": True, "--set-param": True, "-j": True, "--jobs": True,
                        "-C": True, "--copy-paths": True, "-m": True, "--message": True, "-M": True,
                        "--queue": False, "--run-all": False, "--temp": False, "--no-hydra": False}


class CommandCheckFailed(Exception):
    """A README command that would not work as written; the message says why and what to do."""


@dataclass(frozen=True)
class ReadmeCommand:
    """One simple command of the README (a chain is split into its commands)."""

    text: str                 # as a shell would see it: tokens joined, quoting normalised
    argv: tuple[str, ...]     # without leading NAME=value assignments
    line: int                 # 1-based line of the README where it starts
    env: tuple[tuple[str, str], ...] = ()

    @property
    def family(self) -> str | None:
        """`dvc exp run`, `dvc repro`, `python -m pipeline.<module>`, `mlflow <sub>`, or None (not ours)."""
        argv = self.argv
        if not argv:
            return None
        if argv[0] == "dvc":
            if argv[1:3] in (("exp", "run"), ("experiments", "run")):
                return "dvc exp run"
            return "dvc repro" if argv[1:2] == ("repro",) else None
        if re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", argv[0]) and argv[1:2] == ("-m",) and len(argv) > 2 \
                and (argv[2] == "pipeline" or argv[2].startswith("pipeline.")):
            return f"python -m {argv[2]}"
        if argv[0] == "mlflow":
            return f"mlflow {argv[1]}" if len(argv) > 1 else "mlflow"
        return None

    def where(self, readme: Path) -> str:
        return f"{readme.name} line {self.line}: `{self.text}`"


# -- extraction ------------------------------------------------------------------------------

def readme_path() -> Path:
    """README.md of the project, or the file named by LIGHTCNN_README."""
    return Path(os.environ.get(README_ENV) or ROOT / "README.md")


def _strip_comment(line: str) -> str:
    """Drop a shell comment: `#` at the start of a word, outside quotes (as bash does)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_snippets(markdown: str) -> list[tuple[int, str]]:
    """(line number, shell text) of every logical line of a shell code block, and every inline code span.

    Fenced blocks count when their language is a shell's or none; `\\` continuations are joined;
    in `console` blocks only the lines after a `$ ` prompt are commands.
    """
    snippets: list[tuple[int, str]] = []
    fence: str | None = None
    language = ""
    pending: tuple[int, str] | None = None  # a line ending in `\`, waiting for the rest
    for number, raw in enumerate(markdown.splitlines(), start=1):
        stripped = raw.strip()
        opening = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
        if fence is None:
            if opening:
                fence, language = opening.group(1), opening.group(2).lower()
                continue
            snippets += [(number, span) for _, span in re.findall(r"(`+)(.+?)\1", raw)]
            continue
        if stripped.startswith(fence) and stripped.strip("`~") == "":
            fence, pending = None, None
            continue
        if language not in SHELL_LANGUAGES:
            continue
        text = stripped
        if language in ("console", "shell-session") and pending is None:
            if not text.startswith("$ "):
                continue
            text = text[2:]
        start = number
        if pending is not None:
            start, text = pending[0], pending[1] + " " + text
            pending = None
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        snippets.append((start, text))
    return snippets


def split_commands(line: int, text: str) -> list[ReadmeCommand]:
    """The simple commands of one shell line (split at &&, ||, ;, |), comments dropped."""
    lexer = shlex.shlex(_strip_comment(text), posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: not a command we can read (prose in backticks)
        return []
    commands, current = [], []
    for token in [*tokens, ";"]:
        if token in SHELL_OPERATORS:
            if current:
                env = []
                while current and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                    name, _, value = current.pop(0).partition("=")
                    env.append((name, value))
                if current:
                    commands.append(ReadmeCommand(shlex.join(current), tuple(current), line, tuple(env)))
            current = []
        else:
            current.append(token)
    return commands


def readme_commands(path: Path) -> list[ReadmeCommand]:
    """Every command of the checked families in a Markdown file, first occurrence of each kept."""
    found: dict[str, ReadmeCommand] = {}
    for line, text in shell_snippets(path.read_text(encoding="utf-8")):
        for command in split_commands(line, text):
            if command.family is not None and command.text not in found:
                found[command.text] = command
    return list(found.values())


# -- checking --------------------------------------------------------------------------------

@dataclass
class CheckContext:
    """What the checks share within a module: a scratch folder and a git copy of the project (made once)."""

    scratch: Callable[[str], Path]            # tmp_path_factory.mktemp, behind a lock
    readme: Path
    _project_copy: Path | None = field(default=None, init=False)

    @property
    def project_copy(self) -> Path:
        """A git repository holding the project's tracked and untracked-not-ignored files, committed."""
        if self._project_copy is None:
            self._project_copy = _make_project_copy(self.scratch("project"))
        return self._project_copy


def _make_project_copy(target: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # listed but deleted in the working tree: not part of it
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git = ["git", "-c", "user.name=readme-test", "-c", "user.email=readme-test@localhost",
           "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "project copy"]):
        subprocess.run([*git, *args], cwd=target, check=True, capture_output=True)
    return target


def _dvc_args(command: ReadmeCommand, argv: list[str]):
    """The command's arguments as DVC's own CLI parser reads them; refuse what it refuses."""
    from dvc.cli import DvcParserError, parse_args

    class Collect(logging.Handler):  # DVC's parser logs its reason, then raises a bare "parser error"
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collect = Collect()
    parser_logger = logging.getLogger("dvc.cli.parser")
    parser_logger.addHandler(collect)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return parse_args(argv)  # (its usage text would only clutter the failure)
    except (DvcParserError, SystemExit):
        reason = "; ".join(collect.messages) or "no reason given"
        raise CommandCheckFailed(f"{command.text}: DVC's command line parser refuses it: {reason} "
                                 f"(see `dvc {' '.join(argv[:2])} --help`)") from None
    finally:
        parser_logger.removeHandler(collect)


def compose_params(command: ReadmeCommand, overrides: list[str], out_dir: Path) -> str:
    """params.yaml as `dvc exp run` composes it for these overrides, validated; its text."""
    from dvc.config import Config
    from dvc.utils.hydra import compose_and_dump

    hydra = Config(dvc_dir=str(ROOT / ".dvc"))["hydra"]
    if not hydra.get("enabled"):
        raise CommandCheckFailed(".dvc/config does not enable Hydra; this test composes params.yaml as "
                                 "DVC does with `[hydra] enabled = true`: update it to what DVC does now")
    if hydra.get("config_module"):
        raise CommandCheckFailed("Hydra config_module is not covered by this test: compose from config_dir")
    output = out_dir / "params.yaml"
    try:
        compose_and_dump(output, str(ROOT / hydra.get("config_dir", "conf")), None,
                         hydra.get("config_name", "config"), os.path.join(ROOT, hydra.get("plugins_path", "")),
                         overrides)
    except Exception as exc:  # noqa: BLE001 - Hydra and OmegaConf raise many kinds; all mean "refused"
        reasons = []
        while exc is not None and len(reasons) < 4:
            reasons.append(f"{type(exc).__name__}: {exc}")
            exc = exc.__cause__ or exc.__context__
        raise CommandCheckFailed(f"{command.text}: Hydra cannot compose conf/ with overrides {overrides}:\n  "
                                 + "\n  ".join(reasons)) from None
    text = output.read_text(encoding="utf-8")
    try:
        from pipeline.common.errors import ParamsError
        from pipeline.common.params import validate
    except ImportError as exc:
        raise CommandCheckFailed(f"cannot import the params schema (pipeline.common.params.validate): {exc}; "
                                 "point this test at the project's validator") from exc
    try:
        validate(yaml.safe_load(text), f"params.yaml composed for `{command.text}`")
    except ParamsError as exc:
        raise CommandCheckFailed(str(exc)) from None
    return text


def dry_repro(command: ReadmeCommand, context: CheckContext, repro_args: list[str],
              params_text: str | None = None) -> None:
    """`dvc repro --dry <repro_args>` in the project copy (with params_text as params.yaml, if given).

    --ignore-errors: a dry run cannot produce outputs, so a stage whose dependency is an
    upstream stage's output (data/raw on a fresh clone) would fail for that alone. A command
    DVC refuses (unknown stage or flag, a dvc.yaml that does not resolve with these params)
    still fails, before any stage.
    """
    copy = context.project_copy
    params_file = copy / "params.yaml"
    original = params_file.read_bytes()
    argv = ["repro", *repro_args, "--dry", "--ignore-errors"]
    try:
        if params_text is not None:
            params_file.write_text(params_text, encoding="utf-8")
        if _dvc_in_this_process(argv, copy) == 0:
            return
        # Refused: again in a process of its own, for DVC's message as a user sees it.
        env = {key: value for key, value in os.environ.items() if not key.startswith("DVC_")}
        result = subprocess.run([sys.executable, "-m", "dvc", *argv], cwd=copy, capture_output=True, text=True,
                                timeout=DRY_REPRO_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    finally:
        params_file.write_bytes(original)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise CommandCheckFailed(f"{command.text}: `dvc repro --dry {' '.join(repro_args)}` fails in a fresh git "
                                 f"copy of the project (exit {result.returncode}):\n" + "\n".join(output[-15:]))


def _dvc_in_this_process(argv: list[str], cwd: Path) -> int:
    """DVC's command line run in this process from `cwd`, without the environment's DVC_*
    variables; its exit status. About 0.3 s of CPU a call against 1.1 s for a new interpreter,
    for the twenty-odd dry runs of the README's commands."""
    from dvc.cli import main

    previous_cwd, hidden = os.getcwd(), {key: os.environ.pop(key) for key in list(os.environ)
                                         if key.startswith("DVC_")}
    os.chdir(cwd)
    try:
        return main(argv)
    finally:
        os.chdir(previous_cwd)
        os.environ.update(hidden)


def check_exp_run(command: ReadmeCommand, context: CheckContext) -> None:
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps, to_hydra_overrides

    run_index = 3  # dvc exp run <args>
    args = _dvc_args(command, ["exp", "run", *command.argv[run_index:]])
    if args.no_hydra:
        raise CommandCheckFailed(f"{command.text}: --no-hydra is not covered by this test (it edits params.yaml "
                                 "in place instead of composing conf/): add a checker for it")
    path_overrides = to_path_overrides(args.set_param)
    other_files = sorted(set(path_overrides) - {"params.yaml"})
    if other_files:
        raise CommandCheckFailed(f"{command.text}: overrides of {other_files}; the project's settings are "
                                 "params.yaml, composed from conf/")
    overrides = path_overrides.get("params.yaml", [])
    try:
        sweep = any(override.is_sweep_override() for override in to_hydra_overrides(overrides))
    except Exception as exc:  # noqa: BLE001 - Hydra's OverrideParseException and kin
        raise CommandCheckFailed(f"{command.text}: Hydra cannot parse the overrides {overrides}: {exc}") from None
    if sweep and not args.queue:
        raise CommandCheckFailed(f"{command.text}: DVC refuses sweep overrides without --queue")
    combinations = get_hydra_sweeps({"params.yaml": overrides}) if sweep else [{"params.yaml": overrides}]
    repro_args = _repro_args_of_exp_run(list(command.argv[run_index:]))
    for number, combination in enumerate(combinations):
        out_dir = context.scratch(f"exp-run-{number}")
        params_text = compose_params(command, list(combination["params.yaml"]), out_dir)
        dry_repro(command, context, repro_args, params_text)


def _repro_args_of_exp_run(argv: list[str]) -> list[str]:
    """The arguments of `dvc exp run` that `dvc repro` takes too (targets and repro flags)."""
    kept: list[str] = []
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
            continue
        name = token.split("=", 1)[0]
        if name in EXP_RUN_ONLY_OPTIONS:
            skip_value = EXP_RUN_ONLY_OPTIONS[name] and "=" not in token and not (
                len(token) > 2 and not token.startswith("--"))  # -Sx=1 carries its value
            continue
        kept.append(token)
    return kept


def check_repro(command: ReadmeCommand, context: CheckContext) -> None:
    repro_args = list(command.argv[2:])
    _dvc_args(command, ["repro", *repro_args])
    dry_repro(command, context, repro_args)


def check_compose(command: ReadmeCommand, context: CheckContext) -> None:
    compose_params(command, list(command.argv[3:]), context.scratch("compose"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _option_value(argv: list[str], names: tuple[str, ...]) -> str | None:
    for i, token in enumerate(argv):
        if token in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and token.startswith(name + "="):
                return token.split("=", 1)[1]
    return None


def mlflow_argv(argv: list[str], port: int, workdir: Path) -> list[str]:
    """The README's mlflow command with its port replaced (added when absent) and $PWD made workdir."""
    out = [re.sub(r"\$\{PWD\}|\$PWD\b", str(workdir), token) for token in argv]
    for i, token in enumerate(out):
        if token in ("--port", "-p") and i + 1 < len(out):
            out[i + 1] = str(port)
            return out
        if token.startswith("--port="):
            out[i] = f"--port={port}"
            return out
    return [*out, "--port", str(port)]


def check_mlflow_server(command: ReadmeCommand, context: CheckContext) -> None:
    workdir = context.scratch("mlflow")
    port = _free_port()
    argv = mlflow_argv(list(command.argv), port, workdir)
    if any("$" in token for token in argv):
        raise CommandCheckFailed(f"{command.text}: uses shell variables other than $PWD, which this test cannot "
                                 "substitute: write the command without them, or teach mlflow_argv() about them")
    host = _option_value(argv, ("--host", "-h")) or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    venv_bin = str(Path(sys.executable).parent)
    # One worker: what is checked (the command's options are accepted, the app serves /) does
    # not depend on how many identical workers uvicorn forks; the default four import it 4x.
    env = {**os.environ, "MLFLOW_WORKERS": "1", **dict(command.env),
           "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
    executable = shutil.which(argv[0], path=env["PATH"])
    if executable is None:
        raise CommandCheckFailed(f"{command.text}: `{argv[0]}` is not installed (pip install mlflow)")
    log_path = workdir / "server.log"
    url = f"http://{host}:{port}/"
    with open(log_path, "wb") as log:
        # Its own session, so that stopping it also stops the workers it forks (and nothing else).
        server = subprocess.Popen([executable, *argv[1:]], cwd=workdir, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
        status, error = None, "no answer"
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    status = response.status
                    if status == 200:
                        return
            except urllib.error.HTTPError as exc:
                status, error = exc.code, str(exc)
            except (OSError, urllib.error.URLError) as exc:
                error = str(exc)
            time.sleep(1)
        log_tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        state = f"exited with {server.returncode}" if server.poll() is not None else \
            f"gave no HTTP 200 on {url} within {MLFLOW_START_TIMEOUT_S} s (last: {status or error})"
        raise CommandCheckFailed(f"{command.text} (run as `{shlex.join(argv)}`) {state}; its output:\n{log_tail}")
    finally:
        _stop(server)


def _stop(process: subprocess.Popen) -> None:
    """Terminate the process group started for `process`, then kill what is left of it."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            try:
                os.killpg(process.pid, 0)  # workers of the group still alive?
            except ProcessLookupError:
                break
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout=10)


CHECKERS: dict[str, Callable[[ReadmeCommand, CheckContext], None]] = {
    "dvc exp run": check_exp_run,
    "dvc repro": check_repro,
    "python -m pipeline.compose": check_compose,
    "mlflow ui": check_mlflow_server,
    "mlflow server": check_mlflow_server,
}


def check_command(command: ReadmeCommand, context: CheckContext) -> None:
    """Raise CommandCheckFailed, saying why and what to do, unless the command works as written."""
    if re.search(r"<[^<>]*>|\.\.\.|…", command.text):
        raise CommandCheckFailed(f"{command.where(context.readme)} has a placeholder or a redirection; README "
                                 "commands must run as written: give a concrete example")
    checker = CHECKERS.get(command.family or "")
    if checker is None:
        raise CommandCheckFailed(
            f"{command.where(context.readme)} is a `{command.family}` command, which no checker covers. Add one to "
            f"CHECKERS in {Path(__file__).relative_to(ROOT)} (compose it, dry-run it, or run it on tiny inputs), "
            f"or write the README with the covered forms: {', '.join(CHECKERS)}")
    try:
        checker(command, context)
    except CommandCheckFailed as exc:
        raise CommandCheckFailed(f"{context.readme.name} line {command.line}: {exc}") from None


# -- tests -----------------------------------------------------------------------------------

def _test_id(command: ReadmeCommand) -> str:
    text = command.text
    return text if len(text) <= 70 else text[:67] + "..."


README_COMMANDS = readme_commands(readme_path())


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> CheckContext:
    lock = threading.Lock()

    def scratch(name: str) -> Path:
        # pytest's mktemp is not thread-safe, and served_failures checks from threads: three
        # concurrent mktemp("mlflow") calls failed with "mlflow is not a normalized and relative path".
        with lock:
            return tmp_path_factory.mktemp(name)

    return CheckContext(scratch=scratch, readme=readme_path())


def _failure(command: ReadmeCommand, context: CheckContext) -> str | None:
    """Why `command` does not work as written, or None when it does."""
    try:
        check_command(command, context)
        return None
    except CommandCheckFailed as exc:
        return str(exc)


def _served(command: ReadmeCommand) -> bool:
    return CHECKERS.get(command.family or "") is check_mlflow_server


@pytest.fixture(scope="module")
def served_failures(context: CheckContext) -> dict[ReadmeCommand, str | None]:
    """Every README mlflow command checked at once, each in its own thread and server process."""
    served = list(dict.fromkeys(c for c in README_COMMANDS if _served(c)))
    with ThreadPoolExecutor(max_workers=max(1, len(served))) as pool:
        return dict(zip(served, pool.map(lambda command: _failure(command, context), served)))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", README_COMMANDS, ids=[_test_id(c) for c in README_COMMANDS])
def test_readme_command_works_as_written(command: ReadmeCommand, context: CheckContext,
                                         request: pytest.FixtureRequest) -> None:
    if _served(command):
        failure = request.getfixturevalue("served_failures")[command]
    else:
        failure = _failure(command, context)
    if failure is not None:
        pytest.fail(failure, pytrace=False)  # the reason alone, not a chain of tracebacks


def test_the_readme_shows_commands_of_each_checked_kind() -> None:
    """Guards the extraction: a README whose commands are not found would pass vacuously."""
    families = {command.family for command in README_COMMANDS}
    for needed in ("dvc exp run", "dvc repro"):
        assert needed in families, f"no `{needed}` command found in {readme_path()}: is the extraction broken?"
    assert any(f and f.startswith("mlflow ") for f in families), f"no `mlflow` command found in {readme_path()}"


def test_extraction_reads_chains_continuations_comments_and_inline_code(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("\n".join([
        "Run `python -m pipeline.compose model=our_small && dvc repro` or `dvc exp show`.",
        "```bash",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && dvc repro",
        "dvc exp run -n quick -S data.max_per_class=10 \\",
        "    -S 'train.epochs=1'   # one epoch",
        "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 dvc exp run --queue -S train.seeds=[1,2]; dvc queue start -j 2",
        "mlflow server --host 127.0.0.1 --port 5000 &",
        "```",
        "```python",
        "subprocess.run('dvc repro nothing')",
        "```",
        "  ```console",
        "  $ dvc repro report",
        "  dvc repro printed-output-is-not-a-command",
        "  ```",
    ]) + "\n", encoding="utf-8")
    commands = readme_commands(readme)
    assert [c.text for c in commands] == [
        "python -m pipeline.compose model=our_small",
        "dvc repro",
        "dvc exp run -n quick -S data.max_per_class=10 -S train.epochs=1",
        "dvc exp run --queue -S 'train.seeds=[1,2]'",
        "mlflow server --host 127.0.0.1 --port 5000",
        "dvc repro report",
    ]
    assert [c.line for c in commands] == [1, 1, 4, 6, 7, 13]
    assert commands[3].env == (("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),)


# A README line that must be refused -> a pattern of the reason (each names the real refusal,
# not just the command's text).
BROKEN_COMMANDS = {
    "dvc exp run -S train.epoch=5": r"Could not override 'train\.epoch'",       # a key conf/ does not declare
    "dvc exp run -S train.epochs=0": r"is invalid:[\s\S]*epochs",                # declared; the schema refuses 0
    "dvc exp run -S model=our_huge": r"Could not find 'model/our_huge'",          # no such config group option
    "dvc exp run -S train.seeds=1,2": r"refuses sweep overrides without --queue",
    "dvc exp run --nosuch-flag": r"unrecognized arguments: --nosuch-flag",
    "dvc repro train@nosuch-42": r"Stage 'train@nosuch-42' not found",
    "python -m pipeline.compose data.dataset=imagenet": r"is invalid:[\s\S]*imagenet",
    "dvc exp run -S per_model.<model>.epochs=3": r"has a placeholder",
    "mlflow gc --backend-store-uri sqlite:///mlflow.db": r"`mlflow gc` command, which no checker covers",
    "python -m pipeline.train our_small 42": r"`python -m pipeline\.train` command, which no checker covers",
    "mlflow ui --port 5000 --no-such-option": r"exited with [1-9]",
}


@pytest.mark.timeout(600)
def test_a_broken_readme_fails(tmp_path: Path, context: CheckContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker on a README whose every command is broken: each is refused, naming the problem."""
    readme = tmp_path / "README.md"
    readme.write_text("# Broken\n\n```bash\n" + "\n".join(BROKEN_COMMANDS) + "\n```\n", encoding="utf-8")
    monkeypatch.setenv(README_ENV, str(readme))
    commands = readme_commands(readme_path())
    assert [c.text for c in commands] == [shlex.join(shlex.split(text)) for text in BROKEN_COMMANDS]
    broken_context = CheckContext(scratch=context.scratch, readme=readme)
    broken_context._project_copy = context.project_copy  # the same copy: it is made once per module
    for command, reason in zip(commands, BROKEN_COMMANDS.values()):
        with pytest.raises(CommandCheckFailed, match=reason):
            check_command(command, broken_context)
