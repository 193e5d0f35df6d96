import os

import pytest

# Never reach for the network: every model here is built with pretrained=False.
os.environ.setdefault("SSLREG_OFFLINE", "1")


@pytest.fixture(scope="module")
def registry():
    """The registry with this plugin: through its entry point where it is installed, else
    registered in-process for the module's tests (and unregistered after them, so other
    test files see the registry they expect)."""
    import sslreg_timm

    from sslreg.plugins import load_plugins, load_registry, pm

    load_plugins()
    if pm.get_plugin("timm") is not None:
        yield load_registry()
        return
    pm.register(sslreg_timm, name="timm")
    try:
        yield load_registry()
    finally:
        pm.unregister(name="timm")
