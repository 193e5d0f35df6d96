"""sslreg: a plugin-based experiment registry for self-supervised learning on images.

The Python API (``sslreg.api``, re-exported here): :func:`pretrain`, :func:`evaluate`,
:func:`load_run`, :func:`load_backbone`, :func:`export`, :func:`read_index`,
:func:`run_suite`, :func:`leaderboard` and :func:`render_leaderboard`.
"""

from sslreg import fields
from sslreg.api import (
    Run,
    configure,
    evaluate,
    export,
    leaderboard,
    load_backbone,
    load_run,
    pretrain,
    read_index,
    render_leaderboard,
    run_suite,
)
from sslreg.config import EvalConfig, OptimConfig, RunConfig, TrainConfig
from sslreg.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergedError,
    DuplicateNameError,
    PluginError,
    RunInterrupted,
    SslregError,
    UnknownNameError,
    WriteError,
)
from sslreg.hookspecs import hookimpl
from sslreg.interfaces import Clock, Method, Monitor, RunContext, StepOutput, ViewPolicy
from sslreg.plugins import load_registry
from sslreg.schedules import Schedule
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
    "Clock",
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
    "Run",
    "RunConfig",
    "RunContext",
    "RunInterrupted",
    "Schedule",
    "SslregError",
    "StepOutput",
    "TrainConfig",
    "UnknownNameError",
    "ViewPolicy",
    "ViewSpec",
    "WriteError",
    "configure",
    "evaluate",
    "export",
    "fields",
    "hookimpl",
    "leaderboard",
    "load_backbone",
    "load_registry",
    "load_run",
    "pretrain",
    "read_index",
    "render_leaderboard",
    "run_suite",
    "__version__",
]
