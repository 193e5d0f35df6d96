import os

import pytest

# Never reach for the network from the test suite.
os.environ.setdefault("SSLREG_OFFLINE", "1")


@pytest.fixture
def registry():
    from sslreg import load_registry

    return load_registry()


@pytest.fixture
def interrupt_second_epoch(monkeypatch):
    """A context manager: inside it, training stops with Ctrl-C as the second epoch
    begins (after the first epoch's checkpoint); outside it, training runs normally."""
    import contextlib

    from sslreg.engine import trainer as trainer_module

    original = trainer_module.run_epoch

    def interrupted(trainer, epoch, writer, bar):
        if epoch == 1:
            raise KeyboardInterrupt
        original(trainer, epoch, writer, bar)

    @contextlib.contextmanager
    def interrupting():
        monkeypatch.setattr(trainer_module, "run_epoch", interrupted)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(trainer_module, "run_epoch", original)

    return interrupting
