"""Validation of a chapter's papermill parameters.

Every chapter starts with a ``parameters`` cell and then calls :func:`validate` with the values and a
spec. A wrong name, type or value stops the chapter before any work, with a message that lists what
is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


class ParameterError(ValueError):
    """A chapter parameter is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Param:
    """Spec of one parameter: its type(s) and optional allowed values / bounds / element type."""

    type: type | tuple[type, ...]
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    #: for list parameters: type of each element
    item: type | tuple[type, ...] | None = None
    #: allow None
    optional: bool = False
    help: str = ""

    def describe(self) -> str:
        t = self.type if isinstance(self.type, tuple) else (self.type,)
        s = "/".join(x.__name__ for x in t)
        if self.item is not None:
            it = self.item if isinstance(self.item, tuple) else (self.item,)
            s += "[" + "/".join(x.__name__ for x in it) + "]"
        if self.choices is not None:
            s += f" in {list(self.choices)}"
        if self.min is not None or self.max is not None:
            s += f" in [{self.min if self.min is not None else '-inf'}, {self.max if self.max is not None else 'inf'}]"
        if self.optional:
            s += " or None"
        return s + (f": {self.help}" if self.help else "")


def _check_one(name: str, value: Any, p: Param) -> Any:
    if value is None:
        if p.optional:
            return None
        raise ParameterError(f"parameter {name!r} may not be None; expected {p.describe()}")
    types = p.type if isinstance(p.type, tuple) else (p.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in types:
        raise ParameterError(f"parameter {name!r}={value!r} has type bool; expected {p.describe()}")
    if tuple in types and isinstance(value, list):
        value = tuple(value)
    if list in types and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, types):
        raise ParameterError(f"parameter {name!r}={value!r} has type {type(value).__name__}; expected {p.describe()}")
    items: Iterable = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if p.item is not None and isinstance(value, (list, tuple)):
            it = p.item if isinstance(p.item, tuple) else (p.item,)
            if isinstance(v, bool) or not isinstance(v, it):
                raise ParameterError(f"parameter {name!r} element {v!r} is not {'/'.join(x.__name__ for x in it)}; expected {p.describe()}")
        if p.choices is not None and v not in p.choices:
            raise ParameterError(f"parameter {name!r}={v!r} is not allowed; expected {p.describe()}")
        if p.min is not None and isinstance(v, (int, float)) and v < p.min:
            raise ParameterError(f"parameter {name!r}={v!r} is below {p.min}; expected {p.describe()}")
        if p.max is not None and isinstance(v, (int, float)) and v > p.max:
            raise ParameterError(f"parameter {name!r}={v!r} is above {p.max}; expected {p.describe()}")
    if isinstance(value, (list, tuple)) and len(value) == 0:
        raise ParameterError(f"parameter {name!r} is empty; expected {p.describe()}")
    return value


def validate(values: dict[str, Any], spec: dict[str, Param]) -> dict[str, Any]:
    """Check ``values`` against ``spec``; return the (lightly coerced) values or raise ``ParameterError``.

    ``values`` is typically ``{k: v for k, v in globals().items() if k in spec or k in injected}``:
    use :func:`chapter_params` in notebooks, which also catches misspelt injected names.
    """
    unknown = sorted(set(values) - set(spec))
    if unknown:
        allowed = "\n".join(f"  {k}: {p.describe()}" for k, p in sorted(spec.items()))
        raise ParameterError(f"unknown parameter(s) {unknown}. Allowed parameters:\n{allowed}")
    return {k: _check_one(k, v, spec[k]) for k, v in values.items()}


def chapter_params(namespace: dict[str, Any], spec: dict[str, Param]) -> dict[str, Any]:
    """Validate a notebook's parameters, including names injected by papermill that the chapter lacks.

    papermill writes injected values into a cell tagged ``injected-parameters`` and records them in
    the notebook metadata; inside the kernel we detect them as globals that are not Python builtins,
    modules or the chapter's own names. The chapter passes ``globals()``; names starting with ``_`` and
    modules/functions/classes are ignored.
    """
    import inspect

    candidates = {}
    for k, v in namespace.items():
        if k.startswith("_") or k in {"In", "Out", "get_ipython", "exit", "quit"}:
            continue
        if inspect.ismodule(v) or inspect.isfunction(v) or inspect.isclass(v) or callable(v):
            continue
        candidates[k] = v
    return validate(candidates, spec)
