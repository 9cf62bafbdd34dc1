"""What every command gets: the resolved settings, the output channel, the remote, and the
mapping from errors to the documented exit codes (docs/cli.md)."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from coreplane.errors import (
    CommandRejected,
    CoreplaneError,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from coreplane.ops.config import Settings, resolve
from coreplane.ops.output import FORMATS, Out
from coreplane.ops.remote import Remote

__all__ = ["EXIT", "Ctx", "command", "fail", "guarded"]

# The documented exit codes (docs/cli.md): scripts branch on these.
EXIT = {
    "ok": 0,
    "error": 1,  # anything else (a bug, an unexpected answer)
    "usage": 2,  # bad flags or arguments, a bad spec file, no endpoints or token
    "unavailable": 3,  # no endpoint answered, no quorum, deadline passed
    "denied": 4,  # 401/403: token missing, unknown or of the wrong role
    "rejected": 5,  # the cluster refused the change (409) or the thing does not exist
    "unconfirmed": 6,  # blast-radius or production guard: confirmation missing or wrong
    "unhealthy": 7,  # health/diagnose/status found a problem (the output says what)
    "pending": 8,  # plan: changes pending (as kubectl diff exits 1; here 8, 0 = in sync)
    "detached": 130,  # Ctrl-C: the CLI detached; the operation goes on in the cluster
}


class CliExit(click.ClickException):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.exit_code = EXIT[code]

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def fail(message: str, code: str = "error") -> CliExit:
    return CliExit(message, code)


@dataclass
class Ctx:
    endpoints: str | None
    token: str | None
    context: str | None
    output: str
    nodes_pct: int | None
    partitions_pct: int | None
    _settings: Settings | None = None
    _remote: Remote | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Out:
        return Out(self.output)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = resolve(
                endpoints=self.endpoints, token=self.token, context=self.context
            )
        return self._settings

    @property
    def remote(self) -> Remote:
        if self._remote is None:
            s = self.settings
            self._remote = Remote(s.endpoints, s.token)
        return self._remote

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Turn the coreplane error tree into exit codes with a one-line message."""
    try:
        yield
    except click.ClickException:
        raise
    except InvalidArgument as exc:
        raise fail(str(exc), "usage") from None
    except PermissionDenied as exc:
        raise fail(f"permission denied: {exc}", "denied") from None
    except CommandRejected as exc:
        raise fail(f"rejected ({exc.code}): {exc.message}", "rejected") from None
    except Unavailable as exc:
        raise fail(f"unavailable: {exc}", "unavailable") from None
    except CoreplaneError as exc:
        raise fail(str(exc), "error") from None
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT["detached"])


def command(group: click.Group | None, name: str | None = None, **kw: Any) -> Callable[..., Any]:
    """A leaf command (of `group`, or standalone with None): takes ``-o/--output``, gets the
    `Ctx`, maps errors to exit codes."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @(group.command(name, **kw) if group is not None else click.command(name, **kw))
        @click.option(
            "-o",
            "--output",
            "output_",
            type=click.Choice(FORMATS),
            default=None,
            help="table (default), json or yaml",
        )
        @click.pass_obj
        @functools.wraps(fn)
        def run(obj: Ctx, output_: str | None, **args: Any) -> Any:
            if output_:
                obj.output = output_
            try:
                with guarded():
                    return fn(obj, **args)
            finally:
                obj.close()

        return run

    return wrap
