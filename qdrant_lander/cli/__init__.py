"""The ``qdrant-lander`` command: a thin click shell over the library API.

Each command family lives in its own module and only parses options, calls the library, and prints.
Errors derived from :class:`~qdrant_lander.errors.LanderError` become one clear line and their exit code (2 for
bad input, 3 for a collection another writer holds, 4 for a server that does not answer).
"""

from __future__ import annotations

import logging
import sys

import click

from ..errors import LanderError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # noqa: D102 - turns library errors into messages
        try:
            return super().invoke(ctx)
        except LanderError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Learned hierarchical clustering (LANDER) for embeddings and Qdrant collections.

    \b
    Arrays:      train, calibrate, cluster, eval, export
    Collections: import, sync, search, labels, status, demo
    Operations:  config, report
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from . import arrays_cmds, collection_cmds, demo_cmd, ops_cmds  # noqa: F401  (commands attach to ``main``)


_register()
