"""pyproject.toml: this checkout installed as `make setup` installs it (editable, --no-deps, --no-build-isolation),
into a throwaway venv that borrows this venv's packages through a .pth line; then, from an empty folder without
PYTHONPATH, every medimg-* command and `python -m` answer --help, and a python without the project (helpers'
without_project, tests/export_client.py's) still cannot import it beside the editable install.
"""
import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, without_project
from test_entry_points import python_entry_points

# Modules with a __main__ block that are tools of the launchers, not commands of the user's.
NOT_COMMANDS = {"runtime.stderr_filter", "runtime.trace"}
PACKAGES = ("chexnet", "segmentation", "training", "runtime", "dataprep", "smoke")


def python_in(venv):
    return os.path.join(venv, "bin", "python")


def run_from(folder, cmd, env):
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, empty folder, env): this checkout installed editable into a fresh venv, as make setup does."""
    venv = str(tmp_path_factory.mktemp("venv"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    # This venv's site-packages as a path line: its packages importable, its own .pth files not run.
    site = subprocess.run([python_in(venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    borrowed = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    with open(os.path.join(site, "borrowed.pth"), "w") as fh:
        fh.write("\n".join(borrowed) + "\n")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = run_from(elsewhere, [python_in(venv), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                "--no-index", "--no-cache-dir", "--no-deps", "--no-build-isolation", "-e", ROOT], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv, elsewhere, env


def commands(venv):
    """{command: module} of the medimg dist's console scripts, as the venv's metadata lists them."""
    code = ("import importlib.metadata as m\n"
            "for e in m.distribution('medimg').entry_points:\n"
            "    print(e.group, e.name, e.value)\n")
    out = subprocess.run([python_in(venv), "-I", "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    found = {}
    for line in out.splitlines():
        group, name, value = line.split()
        assert group == "console_scripts" and value.endswith(":main"), line
        found[name] = value.removesuffix(":main")
    return found


def test_every_user_entry_point_has_a_medimg_command(installed):
    venv, _, _ = installed
    modules = {cmd[2] for cmd in python_entry_points().values() if cmd[1] == "-m" and cmd[2].split(".")[0] in PACKAGES}
    found = commands(venv)
    assert set(found.values()) == modules - NOT_COMMANDS
    assert all(name.startswith("medimg-") for name in found), sorted(found)


def test_commands_and_python_m_answer_help_from_another_folder(installed):
    venv, elsewhere, env = installed
    runs = {name: [os.path.join(venv, "bin", name), "--help"] for name in commands(venv)}
    runs.update({f"-m {m}": [python_in(venv), "-m", m, "--help"] for m in ("chexnet.train", "segmentation.train")})
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = {what: pool.submit(run_from, elsewhere, cmd, env) for what, cmd in runs.items()}
    for what, future in done.items():
        proc = future.result()
        shown = (what, proc.stdout[-2000:], proc.stderr[-2000:])
        assert proc.returncode == 0 and proc.stdout.startswith("usage: "), shown
        assert "Traceback" not in proc.stderr, (what, proc.stderr[-2000:])
    assert os.listdir(elsewhere) == []
    where = run_from(elsewhere, [python_in(venv), "-c", "import chexnet; print(chexnet.__file__)"], env)
    assert where.stdout.strip() == os.path.join(ROOT, "chexnet", "__init__.py"), where.stdout + where.stderr


def test_a_python_without_the_project_cannot_import_it_beside_the_editable_install(installed):
    """-I alone (what tests/export_client.py once ran under) still runs the editable install's .pth."""
    venv, elsewhere, env = installed
    probe = ["-c", "import importlib.util as u, json, sys; "
                   "print(json.dumps([n for n in sys.argv[1:] if u.find_spec(n)]))", *PACKAGES, "tensorflow"]
    isolated = run_from(elsewhere, [python_in(venv), "-I", *probe], env)
    assert isolated.returncode == 0 and json.loads(isolated.stdout) == [*PACKAGES, "tensorflow"], isolated.stderr
    python, bare_env = without_project(python_in(venv))
    bare = run_from(elsewhere, [*python, *probe], bare_env)
    assert bare.returncode == 0 and json.loads(bare.stdout) == ["tensorflow"], bare.stderr
