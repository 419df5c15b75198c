"""A newcomer's first hour (issue 29): every command a message suggests runs, one rule for finding the Dagster
instance, rejects that can be listed, a stack that says how to load it, and no noise from our own files."""

import ast
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from learning_pipelines import cli
from learning_pipelines.db import engine as engine_module
from learning_pipelines.db import migrate
from learning_pipelines.deploy.topology import Stack

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "learning_pipelines"
BIN = Path(sys.executable).parent
CLI = str(BIN / "learning-pipelines")
HEADER = "card_id,review_rating,review_time,review_duration,user_id"
GOOD = ["10,3,2024-05-01T10:00:00Z,5000,1", "11,4,2024-05-02T10:00:00Z,4000,1"]
BAD = ["10,9,2024-05-03T10:00:00Z,5000,1", "11,3,not-a-time,5000,1", "12,3,2024-05-04T10:00:00Z,-5,1"]
_COMMAND = re.compile(r"learning-pipelines ([a-z][^`)'\"\n]*)")


def _suggested_commands() -> dict[str, list[str]]:
    """Every `learning-pipelines ...` command in a string of the package that is not a docstring (messages, remedies,
    notes), as `learning-pipelines WORDS`, with where it stands. A placeholder an f-string fills is FILE."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        before_a_value = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                          for part, after in zip(node.values, node.values[1:]) if isinstance(after, ast.FormattedValue)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for match in _COMMAND.finditer(node.value):
                    words = match.group(1).split()
                    if id(node) in before_a_value and match.end() == len(node.value) and words[-1].startswith("--"):
                        words.append("FILE")  # the option's value is the f-string's next part
                    command = "learning-pipelines " + " ".join(words).rstrip(".,;:")
                    found.setdefault(command, []).append(str(path.relative_to(ROOT)))
    return found


# How each suggested command is tried: run (exit 0 expected) against a migrated SQLite warehouse, served (a server:
# started, seen listening, stopped) or, for what needs PostgreSQL and RabbitMQ, parsed here and run by the stack's
# own tests (tests/ops/test_celery_stack.py).
HOW = {
    "learning-pipelines db backup FILE": "run",
    "learning-pipelines db upgrade": "run",
    "learning-pipelines db verify": "run",
    "learning-pipelines demo --no-materialize": "run",
    "learning-pipelines import FILE": "run",
    "learning-pipelines import FILE --register-unknown": "run",
    "learning-pipelines rejects --file FILE": "run",
    "learning-pipelines stack stop": "run",
    "learning-pipelines metrics": "serve",
    "learning-pipelines metrics --port <port>": "serve",
    "learning-pipelines stack start": "parse",
}
def test_every_suggested_command_is_tried_below():
    assert sorted(_suggested_commands()) == sorted(HOW)


@pytest.fixture
def newcomer(tmp_path, monkeypatch):
    """A migrated SQLite warehouse, a Dagster instance, and a review file with good and bad lines."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    migrate.upgrade(url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("\n".join([HEADER, *GOOD, *BAD]) + "\n")
    env = {**os.environ, "LEARNING_PIPELINES_DATABASE_URL": url, "DAGSTER_HOME": str(home)}
    return {"url": url, "home": home, "reviews": reviews, "env": env, "cwd": tmp_path}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(HOW))
def test_a_suggested_command_does_what_it_says(command, newcomer, tmp_path):
    argv = shlex.split(command)[1:]
    file = tmp_path / "backup.db" if argv[:2] == ["db", "backup"] else newcomer["reviews"]
    argv = [str(file) if word == "FILE" else "0" if word == "<port>" else word for word in argv]
    if HOW[command] == "parse":
        cli.build_parser().parse_args(argv)
        return
    if argv[0] in ("import", "rejects"):  # the file's learners registered (and its rejects recorded) first
        subprocess.run([CLI, "import", str(newcomer["reviews"]), "--register-unknown"], env=newcomer["env"],
                       cwd=newcomer["cwd"], check=True, capture_output=True, timeout=300)
    if argv[0] == "demo":
        argv += ["--learners", "20"]  # the stack's line loads 1,000; the same command
    if HOW[command] == "serve":
        argv += [] if "--port" in argv else ["--port", "0"]
        # Started with SIGTERM ignored, as a runner or supervisor may leave it (an ignored signal survives exec):
        # the server still stops on it.
        server = subprocess.Popen([CLI, *argv], env=newcomer["env"], cwd=newcomer["cwd"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
        try:
            assert "serving Prometheus metrics on http://" in server.stdout.readline(), server.stderr.read()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        return
    result = subprocess.run([CLI, *argv], env=newcomer["env"], cwd=newcomer["cwd"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


# --- 4: one rule for the Dagster instance: $DAGSTER_HOME, else the repository's dagster_home/ ---

def _import_in_process(monkeypatch, capsys, newcomer, project_root: Path) -> tuple[int, str, str]:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("LEARNING_PIPELINES_DATABASE_URL", newcomer["url"])
    monkeypatch.setattr(engine_module, "PROJECT_ROOT", project_root)
    status = cli.main(["import", str(newcomer["reviews"]), "--register-unknown"])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_import_without_dagster_home_reports_to_the_repositorys_instance_as_every_command(monkeypatch, capsys,
                                                                                          newcomer, tmp_path):
    project = tmp_path / "project"
    (project / "dagster_home").mkdir(parents=True)
    status, out, err = _import_in_process(monkeypatch, capsys, newcomer, project)
    assert status == 0, err
    assert f"reported to Dagster: review_logs 2024-05 (instance {project / 'dagster_home'})" in out
    assert engine_module.dagster_home() == project / "dagster_home"  # as recommend, metrics and the demo find it
    with dg.DagsterInstance.from_config(str(project / "dagster_home")) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("review_logs")) == {"2024-05-01"}


def test_import_without_any_instance_says_what_is_true_in_development_and_production(monkeypatch, capsys, newcomer,
                                                                                     tmp_path):
    status, out, err = _import_in_process(monkeypatch, capsys, newcomer, tmp_path / "installed")
    assert status == 0
    assert f"no Dagster instance at {tmp_path / 'installed' / 'dagster_home'}" in err
    assert "where it runs" in err and "LEARNING_PIPELINES_AUTOMATION=on" in err and "will notice" not in err


# --- 5: rejects listed; usage errors are no rejected rows ---

def test_rejects_lists_a_files_rejected_lines_and_a_usage_error_adds_none(newcomer):
    def run(*argv):
        return subprocess.run([CLI, *argv], env=newcomer["env"], cwd=newcomer["cwd"], capture_output=True, text=True,
                              timeout=300)

    no_user = newcomer["cwd"] / "no_user.csv"
    no_user.write_text("card_id,review_rating,review_time,review_duration\n10,3,2024-05-01T10:00:00Z,5000\n")
    no_column = newcomer["cwd"] / "no_column.csv"
    no_column.write_text("card_id,review_rating,review_time\n10,3,2024-05-01T10:00:00Z\n")
    for refused in (no_user, no_column):
        assert run("import", str(refused)).returncode == 2
    assert run("rejects").stdout == "no rejected rows in the warehouse\n"

    imported = run("import", str(newcomer["reviews"]), "--register-unknown")
    assert imported.returncode == 0, imported.stderr
    assert "    line 4: review_rating 9 outside 1..4" in imported.stdout
    assert "    line 5: review_time 'not-a-time' is not an ISO-8601 timestamp" in imported.stdout
    assert "…" not in imported.stdout
    listed = run("rejects", "--file", str(newcomer["reviews"]), "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"{newcomer['reviews']}: line 4: review_rating 9 outside 1..4"
    assert lines[1].startswith('    raw: {"card_id": "10", "review_rating": "9"')
    assert lines[2].startswith(f"{newcomer['reviews']}: line 5: ")
    assert len(lines) == 4 and "2 of 3 rejected rows shown" in listed.stderr
    by_name = run("rejects", "--file", "reviews.csv")
    assert f"rejects were recorded for {newcomer['reviews']}" in by_name.stdout


# --- 3: the stack says how to load its empty warehouse, and where a launched run is ---

def test_the_stacks_next_steps_load_learners_with_a_command_that_runs(newcomer, tmp_path):
    stack = Stack(run_dir=tmp_path / ".stack", postgres="postgresql://postgres:secret@127.0.0.1:5432/postgres",
                  workers=2, automation=False)
    lines = cli.stack.next_steps(stack)
    text = "\n".join(lines)
    assert "secret" not in text and "PGPASSWORD" in text
    assert f"the run is under Runs in the UI, {stack.webserver_url}/runs" in text
    load = shlex.split(lines[1])
    env = dict(word.split("=", 1) for word in load if re.fullmatch(r"[A-Z_]+=.*", word))
    assert env == {"DAGSTER_HOME": str(stack.dagster_home),
                   "LEARNING_PIPELINES_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/warehouse"}
    argv = [word for word in load if word not in {f"{k}={v}" for k, v in env.items()}]
    assert argv[:3] == [".venv/bin/learning-pipelines", "demo", "--no-materialize"]
    # The same command into a SQLite warehouse (no PostgreSQL here), fewer learners.
    result = subprocess.run([CLI, *argv[1:], "--learners", "5"], env=newcomer["env"], cwd=newcomer["cwd"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "loaded simulated platform" in result.stdout


# --- 8 and 9: no noise; the UI opens uncovered ---

def test_make_dev_marks_the_community_dialog_seen_before_the_ui_starts(tmp_path):
    recipe = subprocess.run(["make", "-n", "dev"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    line = next(line for line in recipe.splitlines() if "set_nux_seen" in line)
    assert recipe.index("set_nux_seen") < recipe.index("dagster dev")
    subprocess.run(line, shell=True, cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, check=True)
    assert (tmp_path / ".nux" / "nux.yaml").is_file()


def test_bandit_reads_our_nosec_comments_without_warnings():
    result = subprocess.run([str(BIN / "bandit"), "-r", "learning_pipelines", "-ll", "-ii", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "WARNING" not in result.stderr, result.stderr


def test_the_readme_runs_dagster_commands_under_the_workspaces_location_name():
    """`-m learning_pipelines.definitions` names the location after the module, and every definition load warns
    that it differs from [tool.dg.project]'s; the workspace names it as the project does."""
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"`(dagster [^`]*)`", readme)
    assert commands
    assert [c for c in commands if "-m learning_pipelines.definitions" in c and "--location-name" not in c] == []


def test_git_ignores_what_dagster_dev_leaves_without_dagster_home(tmp_path):
    leftover = ROOT / ".tmp_dagster_home_test29"
    leftover.mkdir()
    try:
        (leftover / "x").write_text("")
        ignored = subprocess.run(["git", "check-ignore", "-q", str(leftover / "x")], cwd=ROOT)
        assert ignored.returncode == 0
    finally:
        shutil.rmtree(leftover)
