"""Command-line programs as ranks of a data-parallel job (rnnx-mnist --distributed)."""
import sys

from . import (_abort_on_uncaught_exception, abort, broadcast_object_list,
               destroy_process_group, get_rank, get_world_size, init_process_group,
               is_initialized)


class NullStream:
    """A text stream that drops everything (the output of ranks other than 0)."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def run(parser, main):
    """init_process_group, then main() (which returns an exit code); returns that code. A
    non-zero exit on any rank (an error return, sys.exit, parser.error, an exception) ends every
    rank of the job with it, since the others would wait for that rank forever. An ImportError
    of init_process_group becomes parser.error. The standard output of ranks other than 0 is
    dropped (rank 0 reports the job's results; stderr stays, for errors)."""
    try:
        init_process_group()
    except ImportError as exc:
        parser.error(str(exc))
    if get_rank() != 0:
        sys.stdout = NullStream()
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        if get_world_size() > 1:
            _abort_on_uncaught_exception(*sys.exc_info())
        destroy_process_group()
        raise
    if code and get_world_size() > 1:
        abort(code, f"rank {get_rank()} of {get_world_size()} exits with code {code}; ending "
                    f"the job")
    destroy_process_group()
    return code or 0


def on_rank_0(fn):
    """fn() called on rank 0 only and its result broadcast to every rank (fn() without a
    process group), e.g. reading a checkpoint that only rank 0's file system may hold."""
    if not is_initialized():
        return fn()
    result = [fn() if get_rank() == 0 else None]
    broadcast_object_list(result)
    return result[0]


def is_main_process():
    """Whether this process reports for the job: rank 0, or any process without a group."""
    return not is_initialized() or get_rank() == 0
