"""The ``mirage`` command line: a Typer app that parses, validates and delegates.

Every user-facing error is a :class:`~mirage_cli.errors.MirageError`; :func:`main` prints it as one
line on stderr and exits with code 2. ``--debug`` (accepted anywhere on the command line) shows the
traceback instead.
"""

from __future__ import annotations

import difflib
import sys
import traceback

import typer
from rich.markup import escape

from .. import __version__
from ..errors import MirageError, allocation_failure, write_failure_reason
from ..interrupts import record_interrupts
from ..threads import ENV_VAR, apply_threads_on_import, parse_threads
from .console import err_console

try:  # typer >= 0.2x vendors click; older versions use click itself
    from typer._click import exceptions as _click
except ImportError:  # pragma: no cover
    import click.exceptions as _click  # type: ignore[no-redef]  # the same module, where typer does not vendor it

app = typer.Typer(
    name="mirage",
    help="Camera-controlled, 3D-consistent video from a single image, with a latent spatial memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mirage {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors (may be given anywhere on the line)."),
    threads: str | None = typer.Option(
        None, "--threads", envvar=ENV_VAR, metavar="N", show_default=False,
        help=f"CPU threads for torch (also ${ENV_VAR}; may be given anywhere on the line) "
             "\\[default: physical cores within the CPU affinity; use 1 on a busy machine]."),
) -> None:
    """mirage: latent spatial memory for camera-controlled video."""
    # Before any command touches torch: more intra-op threads than free cores thrash (see threads.py);
    # applied when torch is imported, so that an argument error does not wait for torch's import.
    apply_threads_on_import(parse_threads(threads))


from . import batch as _batch  # noqa: E402
from . import bench as _bench  # noqa: E402
from . import cache as _cache  # noqa: E402
from . import data as _data  # noqa: E402
from . import eval as _eval  # noqa: E402
from . import explore as _explore  # noqa: E402
from . import export as _export  # noqa: E402
from . import generate as _generate  # noqa: E402
from . import models as _models  # noqa: E402
from . import train as _train  # noqa: E402
from . import traj as _traj  # noqa: E402

app.add_typer(_traj.app, name="traj")
app.add_typer(_cache.app, name="cache")
app.add_typer(_models.app, name="models")
app.add_typer(_eval.app, name="eval")
app.add_typer(_data.app, name="data")
_generate.register(app)
_bench.register(app)
_batch.register(app)
_explore.register(app)
_export.register(app)
_train.register(app)


def plain_switches(command) -> None:
    """Boolean flags show no ``<bool>`` type in ``--help`` (typer labels every option with its type;
    a switch takes no value, so the label only misleads). Walks the whole command tree."""
    for param in command.params:
        if getattr(param, "is_flag", False):  # typer's own option class (not click's) in typer >= 0.20
            param.metavar = ""
    make_help = command.get_help_option  # --help is made per call, outside ``params``

    def help_option(ctx):
        opt = make_help(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        plain_switches(sub)


def hoist_threads(args: list[str]) -> list[str]:
    """Move ``--threads N`` / ``--threads=N`` to the front, so the root callback applies it wherever
    the user typed it (``mirage generate ... --threads 1``). Stops at ``--``."""
    out, front, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i:])
            break
        if a == "--threads" and i + 1 < len(args):
            front += [a, args[i + 1]]
            i += 2
            continue
        if a.startswith("--threads="):
            front.append(a)
        else:
            out.append(a)
        i += 1
    return front + out


def no_such_option_message(e) -> str:
    """``No such option: --frmes (did you mean --frames?)``, naming only options close to the typo.

    click suggests whatever difflib finds at ratio 0.6 over the whole string, and the shared ``--``
    lifts unrelated names past it (``--bogus`` -> ``--out``). Here the names are compared without
    their dashes, at a stricter cutoff, and a prefix counts (``--out-dir`` -> ``--out``)."""
    typed = e.option_name.lstrip("-").split("=")[0]
    close = [p for p in (e.possibilities or [])
             if difflib.SequenceMatcher(None, typed, p.lstrip("-")).ratio() >= 0.75
             or (len(typed) >= 3 and (p.lstrip("-").startswith(typed) or typed.startswith(p.lstrip("-"))))]
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"No such option: {e.option_name}{hint}"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Returns the exit code (0 ok, 2 bad input). ``argv`` None: a
    ``mirage`` process (its Ctrl-C is recorded from now on, see ``interrupts.record_interrupts``;
    not where a program calls ``main([...])``, e.g. the tests)."""
    if argv is None:
        record_interrupts()
    args = list(sys.argv[1:] if argv is None else argv)
    args = _batch.ray_flag_args(args)
    debug = "--debug" in args
    if debug:  # hoist so that the root callback owns it wherever the user typed it
        args = ["--debug"] + [a for a in args if a != "--debug"]
    args = hoist_threads(args)
    try:
        # standalone_mode=False: click's usage errors reach us and are printed as one line, not a box
        command = typer.main.get_command(app)
        plain_switches(command)
        code = command(args=args, prog_name="mirage", standalone_mode=False)
        code = code if isinstance(code, int) else 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except _click.NoArgsIsHelpError:  # `mirage generate` alone: typer printed its help while raising
        code = 2
    except _click.UsageError as e:  # --frames abc, --bogus, a missing value: one line
        if debug:  # the traceback, with the exit code the error has without --debug
            traceback.print_exc()
            return _exit(e.exit_code, argv)
        where = f"{e.ctx.command_path}: " if e.ctx else ""
        message = no_such_option_message(e) if isinstance(e, _click.NoSuchOption) else e.format_message()
        err_console.print(f"[bold red]error:[/] {escape(where + message)}", highlight=False, soft_wrap=True)
        code = e.exit_code
    except _click.ClickException as e:
        e.show()
        code = e.exit_code
    except typer.Abort as e:  # click turns a Ctrl-C it sees (e.g. while torch is imported) into Abort
        if isinstance(e.__cause__ or e.__context__, KeyboardInterrupt):
            err_console.print("[yellow]interrupted[/]")
            code = 130
        else:
            err_console.print("[yellow]aborted[/]")
            code = 1
    except Exception as e:
        user = _user_error(e)
        if user is None:
            raise
        if debug:  # the traceback, with the exit code the error has without --debug
            traceback.print_exc()
            return _exit(user.exit_code, argv)
        err_console.print(f"[bold red]error:[/] {escape(str(user))}", highlight=False, soft_wrap=True)
        code = user.exit_code
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        code = 130
    return _exit(code, argv)


def _exit(code: int, argv: list[str] | None) -> int:
    """Exit with ``code`` as the console script, or return it (``main(argv)`` from Python)."""
    if argv is None:
        sys.exit(code)
    return code


def _user_error(e: Exception) -> MirageError | None:
    """``e`` as the one line a user gets: a MirageError as it is, an allocation failure or an
    I/O failure that no writer turned into one; None for a bug (shown as a traceback)."""
    if isinstance(e, MirageError):
        return e
    if allocation_failure(e):
        return MirageError("out of memory; reduce --width/--height (or --max-pixels), raise --downscale or lower "
                           f"--chunk-frames/--frames ({type(e).__name__})")
    reason = write_failure_reason(e)
    if reason is not None and isinstance(e, OSError):
        return MirageError(f"{e.filename or 'I/O'}: {reason}")
    return None
