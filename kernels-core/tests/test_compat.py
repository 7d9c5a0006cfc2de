"""Version ranges that method packages declare against kernels-core."""

import importlib.metadata

import pytest

import kernels_core
from kernels_core import compat


@pytest.mark.parametrize(
    ("version", "spec", "ok"),
    [
        ("0.1.0", ">=0.1,<0.2", True),
        ("0.1.7", ">=0.1,<0.2", True),
        ("0.2.0", ">=0.1,<0.2", False),
        ("0.0.9", ">=0.1,<0.2", False),
        ("0.1.0", "==0.1.*", True),
        ("0.10.0", "==0.1.*", False),
        ("1.4.9", "~=1.4.5", True),
        ("1.5.0", "~=1.4.5", False),
        ("0.9", "~=0.1", True),
        ("1.0", "~=0.1", False),
        ("0.1.0+cpu", "==0.1.0", True),
        ("0.1.0", "!=0.1.0", False),
        ("0.1.0", "", True),
    ],
)
def test_version_satisfies(version, spec, ok):
    assert compat.version_satisfies(version, spec) is ok


def test_bad_specifier():
    with pytest.raises(ValueError, match="unsupported version specifier"):
        compat.version_satisfies("0.1.0", "=>0.1")


def _fake_requires(requirements):
    def requires(distribution):
        if distribution == "some-method":
            return requirements
        raise importlib.metadata.PackageNotFoundError(distribution)

    return requires


def test_mismatch_gives_clear_import_error(monkeypatch):
    monkeypatch.setattr(
        importlib.metadata, "requires", _fake_requires(["torch>=2.4", "kernels-core<0.3,>=0.2"])
    )
    assert compat.required_range("some-method") == "<0.3,>=0.2"
    with pytest.raises(ImportError) as excinfo:
        kernels_core.check_compatibility("some-method")
    message = str(excinfo.value)
    assert (
        f"some-method requires kernels-core<0.3,>=0.2, but kernels-core {kernels_core.__version__}" in message
    )
    assert "pip install 'kernels-core<0.3,>=0.2'" in message


def test_match_and_unknown_distribution_pass(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "requires", _fake_requires(["kernels_core (>=0.1,<0.2)"]))
    kernels_core.check_compatibility("some-method")  # in range
    kernels_core.check_compatibility("not-installed")  # source checkout: nothing to compare


def test_extra_only_requirement_is_ignored(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "requires", _fake_requires(["kernels-core>=9; extra == 'gpu'"]))
    assert compat.required_range("some-method") is None
