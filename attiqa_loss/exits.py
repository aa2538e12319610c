"""Exit statuses of the command-line tools, and the one line an I/O error ends a command with
(no torch import here).

Every command (``attiqa-score``, ``attiqa-enhance``, ``attiqa-pretrain``) exits with

- :data:`EXIT_OK` (0): done;
- :data:`EXIT_FAILED` (1): some input files failed (unreadable, out of memory, non-finite
  scores; each is named and the others were processed);
- :data:`EXIT_USAGE` (2): a bad option or config value, a missing input, a model that
  cannot be loaded (one line names the option, key or file);
- :data:`EXIT_IO` (3): a file or folder could not be written or read: a read-only
  folder, a full disk, a closed or full standard output (one line names the path, see
  :func:`io_error_line`).

(``attiqa-pretrain verdict`` uses 1 for a FAIL verdict.)

Commands that print results on the standard output (:data:`PRINTS_RESULTS`, run through
:func:`run_reporting_io_errors` with ``prints_results=True``) refuse to start without one
(``>&-``): one line naming :data:`STDOUT`, :data:`EXIT_IO`; a full standard output is the
same line with its reason. A closed pipe (``attiqa-score photos | head -1``: the reader
stopped reading, ``EPIPE``) is not an error of the command: it ends quietly, no message,
with :data:`EXIT_PIPE` (141 = 128 + SIGPIPE, the status a shell reports for a command
that a closed pipe stopped, as for ``yes | head -1``).
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_IO", "EXIT_PIPE", "EXIT_STATUS_HELP", "STDOUT", "UsageExit",
           "io_error_line", "report_io_error", "run_reporting_io_errors", "stdout_closed", "write_stdout",
           "flush_stdout", "closed_stdout_error"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_IO = 3
#: A closed pipe on the standard output (the reader stopped): no message (128 + SIGPIPE).
EXIT_PIPE = 141

#: How the ``--help`` epilogs state :data:`EXIT_IO`.
EXIT_STATUS_HELP = (f"{EXIT_IO} if a file or folder could not be written or read (a read-only folder, a full disk,\n"
                    "a closed standard output): one line names the path.")

#: The name :func:`io_error_line` gives the standard output.
STDOUT = "<standard output>"


def io_error_line(prog: str, exc: OSError) -> str:
    """``"<prog>: I/O error on <path>: <reason>"`` for ``exc`` (one line): the path is the
    error's ``filename`` (``"<path> -> <path2>"`` for a rename), the reason its ``strerror``."""
    path = exc.filename if exc.filename is not None else None
    if path is not None and exc.filename2 is not None:
        path = f"{path} -> {exc.filename2}"
    reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = f" on {os.fsdecode(path) if isinstance(path, bytes) else path}" if path is not None else ""
    return f"{prog}: I/O error{where}: {reason}"


def _silence_stdout() -> None:
    # After a failed write the interpreter would flush the same buffer again at exit and
    # print "Exception ignored ... OSError"; point the real descriptor at the null device.
    stream = sys.stdout
    if stream is None or stream is not sys.__stdout__:
        return
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


def report_io_error(prog: str, exc: OSError) -> int:
    """Print :func:`io_error_line` on stderr (when there is one) and return :data:`EXIT_IO`."""
    if exc.filename == STDOUT:
        _silence_stdout()
    if sys.stderr is not None:
        try:
            print(io_error_line(prog, exc), file=sys.stderr)
        except (OSError, ValueError):
            pass
    return EXIT_IO


class UsageExit(SystemExit):
    """``SystemExit`` with status :data:`EXIT_USAGE` whose ``str()`` is its message (the
    message is printed on stderr where it is raised by :func:`run_reporting_io_errors`)."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _NamedStdout:
    """The standard output during :func:`run_reporting_io_errors`: a failed ``write`` or
    ``flush`` (a full disk, a closed pipe) raises its ``OSError`` again naming
    :data:`STDOUT`, whichever code printed; everything else is the stream's own."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise _on_stdout(exc) from None

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _on_stdout(exc) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def closed_stdout_error() -> OSError:
    """The error of a command started with its standard output closed (``>&-``)."""
    return OSError(None, "it is closed; redirect it to a file or a pipe", STDOUT)


def run_reporting_io_errors(prog: str, main: Callable[[], int], *, prints_results: bool = False) -> int:
    """``main()`` with the standard output flushed after it; an ``OSError`` (a read-only
    ``--out``, a full disk, a full standard output) becomes :func:`report_io_error`'s one
    line and :data:`EXIT_IO`; a closed pipe on the standard output ends quietly with
    :data:`EXIT_PIPE`. Whatever ``main`` prints, a failed write to the standard output
    names :data:`STDOUT`.

    ``prints_results``: the command's results go to the standard output, so it does not
    start when there is none (``>&-``): :func:`closed_stdout_error`'s line, :data:`EXIT_IO`.

    The commands say a bad option, config value or input with ``raise SystemExit("...")``;
    that message is printed on stderr here and the exit status becomes :data:`EXIT_USAGE`
    (a plain ``SystemExit`` with a message would exit 1, the status for failed files):
    :class:`UsageExit` is raised in its place."""
    if prints_results and stdout_closed():  # the results would go nowhere: say so rather than exit 0
        return report_io_error(prog, closed_stdout_error())
    real = sys.stdout
    try:
        try:
            if real is not None:
                sys.stdout = _NamedStdout(real)
            code = main()
            flush_stdout()
            return code
        finally:
            if isinstance(sys.stdout, _NamedStdout) and sys.stdout._stream is real:
                sys.stdout = real
    except OSError as exc:
        if exc.filename == STDOUT and exc.errno == errno.EPIPE:  # the reader stopped reading: not an error
            _silence_stdout()
            return EXIT_PIPE
        return report_io_error(prog, exc)
    except SystemExit as exc:
        if isinstance(exc, UsageExit) or not isinstance(exc.code, str):
            raise
        if sys.stderr is not None:
            try:
                print(exc.code, file=sys.stderr)
            except (OSError, ValueError):
                pass
        raise UsageExit(exc.code) from None


def stdout_closed() -> bool:
    """True when the process has no standard output (started with it closed, ``>&-``)."""
    stream = sys.stdout
    return stream is None or getattr(stream, "closed", False)


def write_stdout(text: str, *, flush: bool = True) -> None:
    """``print(text)`` to the standard output, flushed; an ``OSError`` (a full disk, a
    closed pipe) is raised again with ``filename`` :data:`STDOUT`."""
    try:
        print(text)
        if flush:
            sys.stdout.flush()
    except OSError as exc:
        raise _on_stdout(exc) from None


def flush_stdout() -> None:
    """Flush the standard output; an ``OSError`` is raised again naming :data:`STDOUT`."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except OSError as exc:
        raise _on_stdout(exc) from None


def _on_stdout(exc: OSError) -> OSError:
    return type(exc)(exc.errno, exc.strerror or str(exc), STDOUT) if exc.errno is not None else \
        OSError(None, str(exc) or type(exc).__name__, STDOUT)
