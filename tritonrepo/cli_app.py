"""The CLI's typer app class: every command's platform error (TritonRepoError) ends as one red ``error: ...`` line
on stderr and exit status 1; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import functools

import typer

from .errors import TritonRepoError


# `--url` of the commands that use a running server or start one (server.served)
URL_OPT = typer.Option(None, help="Use a running server (default: start one).")


def console():
    from rich.console import Console

    return Console(width=150)  # tables stay readable when stdout is a pipe or a CI log


def fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


class App(typer.Typer):
    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(f):
            @functools.wraps(f)
            def run(*a, **kw):
                try:
                    return f(*a, **kw)
                except TritonRepoError as e:
                    fail(e)

            register(run)
            return f

        return decorator
