"""The core's default plugins: one module per kind, registering the built-in backbones,
view policies, objectives, collapse monitors and datasets through the same hooks a
third-party plugin implements.

:mod:`sslreg.plugins` registers each module by its dotted name (``sslreg.builtins.views``
and so on) before the entry points. Importing a module registers nothing; the library
code it names lives in :mod:`sslreg.backbones`, :mod:`sslreg.views`,
:mod:`sslreg.objectives`, :mod:`sslreg.monitors` and :mod:`sslreg.data`, which hold no
hook implementations.
"""
