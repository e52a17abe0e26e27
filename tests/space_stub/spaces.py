"""A stand-in for Hugging Face's ``spaces`` package (ZeroGPU), for tests, that behaves like it where it matters.

* ``spaces.GPU(fn)`` and ``spaces.GPU(duration=...)(fn)``: each call runs ``fn`` in a **forked process**, as the
  real package runs GPU tasks in forked workers, and returns its pickled result (an exception is raised again in
  the caller). So a function that loads something lazily loads it again on every call, and whatever crosses the
  boundary must pickle.
* **No model computes outside a decorated function.** The real package refuses CUDA in the main process (the
  weights placed on CUDA at import are offloaded until a GPU function runs). This machine has no CUDA, so with
  ``SPACES_ZERO_GPU`` set the stub refuses every ``torch.nn.Module`` forward in the main process instead: a
  handler that runs the encoder without ``@spaces.GPU`` fails here as it would fail there.
* ``duration`` is an int or a callable of the call's arguments (the real package's dynamic duration); each call's
  value is logged. ``$SPACES_STUB_LOG`` receives ``decorated NAME``, ``called NAME duration=S pid=P main=M``
  (the caller) and ``ran NAME pid=P main=M`` (the forked worker).
"""

import functools
import os
import pickle

import torch

_MAIN_PID = os.getpid()
_in_worker = False


class ZeroGPUError(RuntimeError):
    """What the stub raises for a model call outside a GPU function."""


def _log(line: str) -> None:
    path = os.environ.get("SPACES_STUB_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def _refuse_outside_gpu(module, args):
    if os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true") and not _in_worker:
        raise ZeroGPUError(f"{type(module).__name__}.forward ran in the main process: on ZeroGPU, CUDA is only "
                           "available inside a function decorated with @spaces.GPU")


torch.nn.modules.module.register_module_forward_pre_hook(_refuse_outside_gpu)


def _run_forked(f, args, kwargs):
    global _in_worker
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        os.close(r)
        _in_worker = True
        torch.set_num_threads(1)  # OpenMP's thread pool does not survive fork(): a parallel region would hang
        _log(f"ran {f.__name__} pid={os.getpid()} main={_MAIN_PID}")
        try:
            payload = pickle.dumps(("ok", f(*args, **kwargs)))
        except BaseException as e:  # everything goes back to the caller
            try:
                payload = pickle.dumps(("err", e))
            except Exception:
                payload = pickle.dumps(("err", RuntimeError(f"{type(e).__name__}: {e}")))
        with os.fdopen(w, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"the GPU worker of {f.__name__} died (status {status})")
    kind, value = pickle.loads(data)
    if kind == "err":
        raise value
    return value


def GPU(fn=None, duration=60):
    def decorate(f):
        _log(f"decorated {f.__name__}")

        @functools.wraps(f)
        def run(*args, **kwargs):
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            _log(f"called {f.__name__} duration={seconds} pid={os.getpid()} main={_MAIN_PID}")
            return _run_forked(f, args, kwargs)

        return run

    return decorate(fn) if callable(fn) else decorate
