"""The command line: one module per ``luvnet`` command, and the only layer that parses arguments.

A command module has ``HELP`` (its one-line usage), ``add_arguments(parser)`` and
``run(args) -> int``. ``run`` turns the parsed arguments into typed values and calls library
functions in :mod:`luvnet.engine`, :mod:`luvnet.streamer`, :mod:`luvnet.plugins` and
:mod:`luvnet.bench`, which take typed arguments and never see ``argparse``. Shared pieces:
:mod:`~luvnet.commands.options` (argument types), :mod:`~luvnet.commands.logs` (the one log
format) and :mod:`~luvnet.commands.signals` (SIGINT/SIGTERM as a stop request).

Score consumers are commands too, registered in the ``luvnet.consumers`` entry-point group;
a third-party consumer registers its own command module there the same way.
"""
