"""A stand-in for Hugging Face's ``spaces`` package (ZeroGPU), for tests: ``spaces.GPU`` records which handlers
it decorated and each call, as lines in $SPACES_STUB_LOG, and runs the handler unchanged (as on CPU)."""

import functools
import os


def _log(line: str) -> None:
    path = os.environ.get("SPACES_STUB_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def GPU(fn=None, duration=60):
    def decorate(f):
        _log(f"decorated {f.__name__} duration={duration}")

        @functools.wraps(f)
        def run(*args, **kwargs):
            _log(f"called {f.__name__}")
            return f(*args, **kwargs)

        return run

    return decorate(fn) if callable(fn) else decorate
