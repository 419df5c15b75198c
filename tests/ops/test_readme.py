"""What the README promises a newcomer holds: its tables render whole, its prerequisites and troubleshooting name
what people hit, and the torch install it documents is the Makefile's."""

import re
import subprocess
from pathlib import Path

from learning_pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^##+ {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def _table_rows(section: str) -> list[list[str]]:
    """The rows of the section's first table as Markdown renders it: it ends at the first line not starting with |."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_assets_table_renders_a_row_for_every_asset():
    """A row for every asset Dagster materializes; the app's external assets (defs/app_boundary.py) named in the
    README where it explains the lineage."""
    named = {re.match(r"`([^`]+)`", row[0]).group(1) for row in _table_rows(_section("Assets"))}
    graph = defs().get_repository_def().asset_graph
    keys = {key.to_user_string(): graph.get(key).is_materializable for key in graph.get_all_asset_keys()}
    materialized = {name for name, materializable in keys.items() if materializable}
    assert materialized <= named, f"missing from the rendered table: {sorted(materialized - named)}"
    external = set(keys) - materialized
    assert external and all(f"`{name}`" in README for name in external)


def test_prerequisites_name_the_system_packages_and_services_and_how_to_point_at_yours():
    prerequisites = _section("Prerequisites")
    for needed in ("prometheus", "postgresql-client", "chromium", "PostgreSQL", "RabbitMQ",
                   "LEARNING_PIPELINES_TEST_DATABASE_URL", "LEARNING_PIPELINES_TEST_BROKER", "TORCH_INSTALL"):
        assert needed in prerequisites, needed


def test_the_documented_torch_choice_is_what_the_makefile_installs(tmp_path):
    cpu = "torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu"
    assert f'TORCH_INSTALL="{cpu}"' in _section("Prerequisites")
    dry_run = subprocess.run(["make", "-n", "-B", "install", f"TORCH_INSTALL={cpu}"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert f"pip install -q -c requirements.lock {cpu}" in dry_run.stdout, dry_run.stdout + dry_run.stderr
    default = subprocess.run(["make", "-n", "-B", "install"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "pip install -q -c requirements.lock torch==2.13.0\n" in default.stdout


def test_troubleshooting_covers_what_newcomers_hit():
    troubleshooting = _section("Troubleshooting")
    for topic in ("Port 3000 in use", "PostgreSQL not reachable", "make clean-demo", "numba"):
        assert topic in troubleshooting, topic


def test_make_screenshots_retakes_every_picture_the_readme_shows(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "docs"))  # as `python docs/render_dashboard.py` runs: beside its helpers

    def script(name: str):
        spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    taken = set(script("take_screenshots").PAGES) | {script("render_dashboard").PICTURE}
    shown = set(re.findall(r"\(docs/([\w-]+\.png)\)", README))
    assert shown and shown == taken, "a README picture make screenshots does not retake, or one it takes that the "\
                                     "README does not show"
    assert "docs/render_dashboard.py" in (ROOT / "Makefile").read_text()
    assert all((ROOT / "docs" / name).is_file() for name in shown)
