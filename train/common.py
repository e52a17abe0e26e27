"""What every train/ script shares: command-line overrides of a config dataclass, logging, threads."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import typing
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def _convert(value: str, typ: Any, current: Any) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool or isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if origin is tuple or isinstance(current, tuple):
        inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
        return tuple(_convert(v, inner, inner()) for v in value.split(",") if v)
    if typ is int or isinstance(current, int):
        return int(value)
    if typ is float or isinstance(current, float):
        return float(value)
    if value.lower() == "none":
        return None
    return value


def _nested(cfg: Any) -> dict[str, str]:
    """Field name -> the nested config dataclass field that holds it (e.g. ``n_cr`` -> ``adaptor``)."""
    out = {}
    for f in dataclasses.fields(cfg):
        sub = getattr(cfg, f.name)
        if dataclasses.is_dataclass(sub):
            out.update({g.name: f.name for g in dataclasses.fields(sub)})
    return out


def parse_overrides(cfg: T, argv: list[str]) -> T:
    """Return ``cfg`` with ``field=value`` arguments applied; an unknown field or bad value is a clear error.

    A field of a nested config (a training config holds its adaptor's config as ``adaptor``) is set by its own
    name (``n_cr=1``) or dotted (``adaptor.n_cr=1``); the training config's own fields come first."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    nested = _nested(cfg)
    if any(a in ("-h", "--help") for a in argv):
        print(type(cfg).__doc__ or "")
        for f in fields.values():
            print(f"  {f.name}={getattr(cfg, f.name)!r}")
        raise SystemExit(0)
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("-").replace("-", "_")
        owner, _, key = key.rpartition(".") if "." in key else ("", "", key)
        if not owner and key not in fields and key in nested:
            owner = nested[key]
        target = getattr(cfg, owner) if owner in fields and dataclasses.is_dataclass(getattr(cfg, owner)) else \
            (cfg if not owner else None)
        if not sep or target is None or key not in {f.name for f in dataclasses.fields(target)}:
            raise SystemExit(f"unknown argument {arg!r}; expected field=value with a field of "
                             f"{type(cfg).__name__}: {', '.join(list(fields) + list(nested))}")
        try:
            value = _convert(value, typing.get_type_hints(type(target)).get(key, str), getattr(target, key))
        except ValueError as e:
            raise SystemExit(f"bad value for {key}: {e}") from e
        new = dataclasses.replace(target, **{key: value})
        cfg = dataclasses.replace(cfg, **{owner: new}) if owner else new  # type: ignore[type-var]
    return cfg


def load_state(path: str, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Restore a run's model and optimiser from ``path`` if it exists; returns the step to continue from."""
    if not os.path.exists(path):
        return 0
    st = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["optim"])
    return int(st["step"])


def save_state(path: str, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    """Write a run's resumable state atomically (a kill mid-write leaves the previous state intact)."""
    torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step}, path + ".tmp")
    os.replace(path + ".tmp", path)


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a kill mid-write leaves the previous file intact)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)


def set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


class RunLogger:
    """Log lines to a file and stderr, and make tqdm progress bars that write to stderr."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.logger = logging.getLogger(f"zsc.train.{os.path.abspath(path)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        if not self.logger.handlers:
            fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
            for h in (logging.FileHandler(path), logging.StreamHandler(sys.stderr)):
                h.setFormatter(fmt)
                self.logger.addHandler(h)

    def info(self, msg: str) -> None:
        self.logger.info(msg)

    def progress(self, **kw):
        from tqdm.auto import tqdm

        return tqdm(file=sys.stderr, dynamic_ncols=True, mininterval=5.0, **kw)


def save_report(out: str, report: dict, markdown: str) -> None:
    """Write ``out.json`` (the report) and ``out.md`` (its Markdown), each atomically: an interrupted run leaves the
    last complete pair, never half a file."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    for path, text in ((out + ".json", json.dumps(report, indent=1)), (out + ".md", markdown)):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
