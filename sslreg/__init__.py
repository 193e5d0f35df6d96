"""sslreg: a plugin-based experiment registry for self-supervised learning on images."""

from sslreg.config import EvalConfig, OptimConfig, RunConfig, TrainConfig
from sslreg.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergedError,
    DuplicateNameError,
    PluginError,
    SslregError,
    UnknownNameError,
)
from sslreg.hookspecs import hookimpl
from sslreg.interfaces import Method, Monitor, RunContext, StepOutput, ViewPolicy
from sslreg.plugins import load_registry
from sslreg.specs import (
    BackboneSpec,
    DatasetSpec,
    MethodSpec,
    MonitorSpec,
    ObjectiveSpec,
    ViewSpec,
)

__version__ = "0.1.0"

__all__ = [
    "BackboneSpec",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetSpec",
    "DivergedError",
    "DuplicateNameError",
    "EvalConfig",
    "Method",
    "MethodSpec",
    "Monitor",
    "MonitorSpec",
    "ObjectiveSpec",
    "OptimConfig",
    "PluginError",
    "RunConfig",
    "RunContext",
    "SslregError",
    "StepOutput",
    "TrainConfig",
    "UnknownNameError",
    "ViewPolicy",
    "ViewSpec",
    "hookimpl",
    "load_registry",
    "__version__",
]
