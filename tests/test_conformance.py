"""The conformance suite from sslreg.testing, over every registered method."""

import pytest

from sslreg import testing


@pytest.mark.parametrize("method", testing.method_names())
def test_method_conforms(method):
    testing.check_method(method)


def test_every_builtin_method_is_covered():
    assert {"simclr", "byol"} <= set(testing.method_names())
