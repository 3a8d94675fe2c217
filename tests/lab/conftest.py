"""One deployed instance for the whole lab suite (the first real `pulumi up` of the lab's stack),
torn down afterwards even when a test fails, and before the lab cloud's own tests build theirs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.world import Lab, down
from tests.lab.helpers import Kernel


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    lab_dir = Path(__file__).parent
    for item in items:
        if lab_dir in Path(item.fspath).parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="package")
def lab() -> Iterator[Lab]:
    assert os.geteuid() == 0, "the lab builds network namespaces and boots a machine: run the tests as root"
    world = Lab()
    try:
        # The first `pulumi up` of the stack, on the stock machine; a failure here fails every test.
        world.up()
        yield world
    finally:
        world.close()
        down(world.state_dir)


@pytest.fixture
def kernel_log() -> Kernel:
    return Kernel()


@pytest.fixture(scope="session")
def stranger_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key the VPS has never heard of."""
    path = tmp_path_factory.mktemp("keys") / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def customer_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "customer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "customer", "-f", str(path)], check=True)
    return path


@pytest.fixture
def restore_settings(lab: Lab) -> Iterator[None]:
    """Whatever a test deploys, the next one starts from the default stack again."""
    yield
    lab.deploy(lab.default_settings(), type(lab.policy)())
