"""Gradient mode, as torch's: `no_grad()`, `enable_grad()`, `set_grad_enabled(mode)`,
`is_grad_enabled()`.

The mode is per thread (a new thread starts with gradients enabled). With it off, modules
push no forward records, whatever their train/eval mode: a forward in training mode still
applies dropout but keeps nothing for backward. Each object works as a context manager and
as a function decorator (`@no_grad()` or `@no_grad`; generator functions too).
"""
import functools
import inspect
import threading

_state = threading.local()


def is_grad_enabled():
    """Whether forward calls in this thread record what backward needs."""
    return getattr(_state, "enabled", True)


def _set(mode):
    _state.enabled = bool(mode)


class _GradModeContext:
    """Sets the mode on entry and restores the previous one on exit; decorates functions."""

    mode = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        _set(self.mode)

    def __exit__(self, exc_type, exc_value, traceback):
        _set(self._prev)
        return False

    def clone(self):
        return type(self)()

    def __call__(self, func):
        if not callable(func):
            raise TypeError(f"{type(self).__name__} decorates a function, got "
                            f"{type(func).__name__}")
        make = self.clone
        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def generator(*args, **kwargs):
                gen = func(*args, **kwargs)
                resume, arg = gen.send, None
                while True:
                    try:
                        with make():  # each resumption of the generator runs in the mode
                            value = resume(arg)
                    except StopIteration as stop:
                        return stop.value
                    try:
                        resume, arg = gen.send, (yield value)
                    except GeneratorExit:
                        with make():
                            gen.close()
                        raise
                    except BaseException as exc:
                        resume, arg = gen.throw, exc
            return generator

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with make():
                return func(*args, **kwargs)
        return wrapper


class _NoParamDecorator(_GradModeContext):
    """Also usable as a bare decorator (`@no_grad` without parentheses), as torch's."""

    def __new__(cls, orig_func=None):
        if orig_func is None:
            return super().__new__(cls)
        return cls()(orig_func)


class no_grad(_NoParamDecorator):
    """Context manager and decorator in which modules record nothing for backward:

        with rnnx.no_grad():
            out = model(x)   # no records, even in training mode
    """

    mode = False


class enable_grad(_NoParamDecorator):
    """Context manager and decorator that turns recording back on (e.g. inside no_grad)."""

    mode = True


class set_grad_enabled(_GradModeContext):
    """set_grad_enabled(mode): sets the mode at once (as a plain call) and, used as a context
    manager or decorator, restores the previous mode on exit."""

    def __init__(self, mode):
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled() expects a bool, got {type(mode).__name__}")
        self._prev = is_grad_enabled()
        self.mode = mode
        _set(mode)

    def __enter__(self):
        _set(self.mode)

    def clone(self):
        return type(self)(self.mode)

    def __call__(self, func):
        _set(self._prev)  # used as a decorator: the call that made it must not change the mode
        return super().__call__(func)
