"""`make test-fast` must pass with none of the outside programs installed: a test that starts one
is marked `live` (from its fixtures or by hand), and one that is not fails where it starts it.

The inner runs use the project's own conftest.py; the programs they name need not exist, since
the check refuses them before anything is executed.
"""

import sys

import pytest

from .harness import REPO_ROOT, outside_program

pytest_plugins = ["pytester"]

INNER_TESTS = """
import subprocess

import pytest

from registry_admin.tests.harness import live_fixture

PROGRAM = "/nonexistent/bin/skopeo"


def test_unmarked_start():
    subprocess.run([PROGRAM, "--version"])


def test_unmarked_start_swallowed():
    try:
        subprocess.Popen([PROGRAM])
    except BaseException:
        pass


def test_unmarked_python_child():
    subprocess.run([{python!r}, "-c", "pass"], check=True)


@pytest.mark.live
def test_marked_start():
    with pytest.raises(FileNotFoundError):
        subprocess.run([PROGRAM, "--version"])


@live_fixture
def own_server():
    with pytest.raises(FileNotFoundError):
        subprocess.run([PROGRAM, "--version"])


@pytest.fixture
def wrapping(own_server):
    return own_server


def test_through_a_live_fixture(wrapping):
    pass
"""


@pytest.fixture
def inner(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "portal.settings_test")
    pytester.makeini("[pytest]\naddopts = --strict-markers\nmarkers =\n    live\n")
    pytester.makeconftest((REPO_ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_inner=INNER_TESTS.format(python=sys.executable))
    return pytester


def test_a_test_not_marked_live_fails_where_it_starts_an_outside_program(inner):
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(
        [
            "test_inner.py::test_unmarked_start starts skopeo but is not marked live, *",
            "test_inner.py::test_unmarked_start_swallowed starts skopeo but is not marked live, *",
            "FAILED test_inner.py::test_unmarked_start - *",
            "FAILED test_inner.py::test_unmarked_start_swallowed - *",
        ]
    )


def test_the_fast_selection_leaves_out_tests_marked_from_their_fixtures(inner):
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-m", "live", "--co", "-q")
    result.stdout.fnmatch_lines(
        ["test_inner.py::test_marked_start", "test_inner.py::test_through_a_live_fixture"]
    )
    assert "test_unmarked" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "kwargs", "program"),
    [
        pytest.param(
            ["/usr/bin/docker-registry", "serve", "c.yml"], {}, "docker-registry", id="registry"
        ),
        pytest.param(
            [REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"], {}, "azurite-blob", id="azurite"
        ),
        pytest.param(["/x/.venv/bin/gunicorn", "portal.wsgi"], {}, "gunicorn", id="gunicorn"),
        pytest.param(
            [sys.executable, "-m", "gunicorn", "portal.wsgi"],
            {},
            "gunicorn",
            id="python-m-gunicorn",
        ),
        pytest.param("skopeo inspect docker://x", {"shell": True}, "skopeo", id="shell-string"),
        pytest.param(["python", "x"], {"executable": "/usr/bin/node"}, "node", id="executable"),
        pytest.param(
            [str(REPO_ROOT / "scripts" / "with-postgres.sh"), "true"],
            {},
            "scripts/with-postgres.sh",
            id="script",
        ),
        pytest.param(["docker/entrypoint.sh", "web"], {}, "docker/entrypoint.sh", id="entrypoint"),
        pytest.param([sys.executable, "manage.py", "migrate"], {}, None, id="manage-py"),
        pytest.param(["sh", "-c", "python manage.py collectstatic"], {}, None, id="sh-python"),
        pytest.param(["mount", "--bind", "/a", "/a"], {}, None, id="mount"),
    ],
)
def test_outside_programs_are_recognised_by_name_or_place(args, kwargs, program):
    assert outside_program(args, **kwargs) == program
