import os

import pytest

# Never reach for the network from the test suite.
os.environ.setdefault("SSLREG_OFFLINE", "1")


@pytest.fixture
def registry():
    from sslreg import load_registry

    return load_registry()
