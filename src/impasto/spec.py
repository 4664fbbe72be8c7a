"""Inspect a user's model class once into frozen data the runner dispatches on.

Nothing is re-inspected per request: whether a method is async or a generator, which
``__init__`` arguments it wants, its input and output types and its endpoints are all read
here, at load time, and a bad signature fails fast with the signature in the message.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, create_model

from .context import RequestContext
from .errors import PackageError
from .media import media_kind

INIT_ARGS = ("config", "data_dir", "secrets", "environment")
_RAW_NAMES = {"model_input", "inputs", "input", "request", "payload", "data", "body"}
_CONTEXT_NAMES = {"context", "ctx", "contexts"}


@dataclass(frozen=True)
class EndpointOptions:
    """What ``@impasto.endpoint`` records on a method."""

    name: str | None = None
    route: str | None = None
    batchable: bool = False
    batch_key: Callable[[Any], Hashable] | None = None
    batch_cost: Callable[[Any], tuple[int, int]] | None = None
    description: str | None = None


def endpoint(
    func: Callable | None = None,
    *,
    name: str | None = None,
    route: str | None = None,
    batchable: bool = False,
    batch_key: Callable[[Any], Hashable] | None = None,
    batch_cost: Callable[[Any], tuple[int, int]] | None = None,
    description: str | None = None,
) -> Any:
    """Expose a model method as its own route (``POST /<name>``).

    A ``batchable`` method takes a list of inputs and returns a list of outputs of the same
    length. ``batch_key(input)`` says which inputs may share a call; ``batch_cost(input)``
    returns ``(items, pixels)`` counted against ``batching.max_batch_size`` and
    ``batching.max_batch_pixels``.
    """
    opts = EndpointOptions(name, route, batchable, batch_key, batch_cost, description)

    def mark(fn: Callable) -> Callable:
        fn.__impasto_endpoint__ = opts  # type: ignore[attr-defined]
        return fn

    return mark(func) if func is not None else mark


@dataclass(frozen=True)
class CallSpec:
    """How to call one user method: its flavour and how arguments are passed."""

    attr: str
    is_async: bool
    is_generator: bool
    style: str  # "raw" (one positional), "model" (one pydantic model), "fields" (kwargs)
    context_param: str | None
    input_model: type[BaseModel] | None
    output_model: type[BaseModel] | None
    signature: str

    def bind(self, model: Any, value: Any, ctx: RequestContext | None) -> Callable[[], Any]:
        """A zero-argument callable running the method on ``value`` (already validated)."""
        fn = getattr(model, self.attr)
        kwargs: dict[str, Any] = {}
        if self.context_param:
            kwargs[self.context_param] = ctx
        if self.style == "fields":
            fields = dict(value) if isinstance(value, BaseModel) else dict(value or {})
            return lambda: fn(**fields, **kwargs)
        return lambda: fn(value, **kwargs)


@dataclass(frozen=True)
class EndpointSpec:
    """One route into the model: name, schemas, flavour and batching, as plain frozen data."""

    name: str
    route: str
    call: CallSpec
    input_model: type[BaseModel] | None
    output_model: type[BaseModel] | None
    streams: bool
    batch_call: CallSpec | None = None
    batch_key: Callable[[Any], Hashable] | None = None
    batch_cost: Callable[[Any], tuple[int, int]] | None = None
    description: str | None = None
    preprocess: CallSpec | None = None
    postprocess: CallSpec | None = None
    has_media: bool = False  # its input decodes media: validated in the input pool

    def __post_init__(self) -> None:
        object.__setattr__(self, "has_media", _has_media(self.input_model))


@dataclass(frozen=True)
class ModelSpec:
    """Everything impasto needs to know about a model class."""

    cls: type
    init_args: tuple[str, ...]
    init_kwargs: bool
    has_load: bool
    load_is_async: bool
    endpoints: dict[str, EndpointSpec] = field(default_factory=dict)

    default: str | None = None

    @property
    def default_endpoint(self) -> EndpointSpec:
        """What ``/predict`` runs: ``predict``, else the class's ``impasto_default_endpoint``,
        else the first endpoint declared."""
        name = "predict" if "predict" in self.endpoints else self.default
        return self.endpoints.get(name or "") or next(iter(self.endpoints.values()))


def _hints(fn: Callable, where: str) -> dict[str, Any]:
    """The resolved annotations of ``fn``. A parameter annotation that cannot be resolved (a
    class defined inside a function, under ``from __future__ import annotations``) fails
    here, naming it: read as plain text it would silently skip validation."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        text = annotation
        try:
            for _ in range(2):  # "'Prompt'": a quoted name under postponed annotations
                if isinstance(annotation, str):
                    annotation = eval(annotation, getattr(fn, "__globals__", {}))  # as typing
        except Exception:
            if name == "return":
                continue
            raise PackageError(
                f"{where}: cannot resolve the annotation {text!r} of `{name}`; "
                "define or import that type at the top level of the module"
            ) from None
        hints[name] = annotation
    return hints


def _is_model_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_context_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, RequestContext)


def _is_context_param(name: str, annotation: Any) -> bool:
    """A parameter gets the request context when it is annotated ``RequestContext`` (or
    ``list[RequestContext]``), or named ``context``/``ctx``/``contexts`` without a data
    annotation: ``context: str`` is an input field like any other."""
    if _is_context_type(annotation):
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, typing.List) and args:  # noqa: UP006
        return _is_context_type(args[0])
    return name in _CONTEXT_NAMES and annotation in (inspect.Parameter.empty, Any, None)


def _has_media(tp: Any, seen: set[Any] | None = None) -> bool:
    """Whether values of ``tp`` (an input model, a field annotation) hold media to decode."""
    if tp is None:
        return False
    if media_kind(tp) is not None:
        return True
    seen = set() if seen is None else seen
    if _is_model_type(tp):
        if tp in seen:
            return False
        seen.add(tp)
        return any(_has_media(f.annotation, seen) for f in tp.model_fields.values())
    return any(_has_media(arg, seen) for arg in typing.get_args(tp) if not isinstance(arg, str))


def inspect_call(cls: type, attr: str, *, input_name: str, list_input: bool = False) -> CallSpec:
    """Read one method's signature into a :class:`CallSpec` (raises PackageError if unusable)."""
    fn = getattr(cls, attr)
    sig = inspect.signature(fn)
    where = f"{cls.__name__}.{attr}{sig}"
    hints = _hints(fn, where)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    context_param = None
    data_params = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if _is_context_param(p.name, hints.get(p.name, inspect.Parameter.empty)):
            context_param = p.name
        else:
            data_params.append(p)
    if not data_params:
        raise PackageError(f"{where} must take an input argument")
    ret = hints.get("return")
    if list_input and typing.get_origin(ret) is list and typing.get_args(ret):
        ret = typing.get_args(ret)[0]  # a batch method returns one output per input
    output_model = ret if _is_model_type(ret) else None
    style, input_model = "raw", None
    if list_input:
        if len(data_params) > 1:
            raise PackageError(f"{where}: a batch method takes one list of inputs")
        ann = hints.get(data_params[0].name)
        args = typing.get_args(ann) if typing.get_origin(ann) in (list, typing.List) else ()  # noqa: UP006
        if args and _is_model_type(args[0]):
            input_model = args[0]
    elif len(data_params) == 1:
        p = data_params[0]
        ann = hints.get(p.name, inspect.Parameter.empty)
        if _is_model_type(ann):
            style, input_model = "model", ann
        elif ann in (inspect.Parameter.empty, Any, dict, list, object) or p.name in _RAW_NAMES:
            style = "raw"
        else:
            style = "fields"
    else:
        style = "fields"
    if style == "fields":
        defs: dict[str, Any] = {}
        for p in data_params:
            ann = hints.get(p.name, Any)
            default = ... if p.default is inspect.Parameter.empty else p.default
            defs[p.name] = (ann, default)
        name = "".join(part.title() for part in input_name.split("_")) + "Input"
        try:
            input_model = create_model(name, __config__={"arbitrary_types_allowed": True}, **defs)
        except Exception as exc:
            raise PackageError(f"{where}: cannot build an input schema: {exc}") from None
    return CallSpec(
        attr=attr,
        is_async=inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn),
        is_generator=inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn),
        style=style,
        context_param=context_param,
        input_model=input_model,
        output_model=output_model,
        signature=where,
    )


def _endpoint(
    cls: type, attr: str, opts: EndpointOptions, *, batch_attr: str | None = None
) -> EndpointSpec:
    """Describe one endpoint; a ``batchable`` method is the batch call itself (list in, out)."""
    name = opts.name or attr
    if not name.replace("_", "").replace("-", "").isalnum():
        raise PackageError(f"{cls.__name__}.{attr}: endpoint name {name!r} must be alphanumeric")
    if opts.route is not None and not opts.route.startswith("/"):
        raise PackageError(f"{cls.__name__}.{attr}: route {opts.route!r} must start with '/'")
    if opts.batchable:
        call = batch_call = inspect_call(cls, attr, input_name=name, list_input=True)
    else:
        call = inspect_call(cls, attr, input_name=name)
        batch_call = (
            inspect_call(cls, batch_attr, input_name=name, list_input=True) if batch_attr else None
        )
    return EndpointSpec(
        name=name,
        route=opts.route or f"/{name}",
        call=call,
        input_model=call.input_model,
        output_model=call.output_model,
        streams=call.is_generator and not opts.batchable,
        batch_call=batch_call,
        batch_key=opts.batch_key,
        batch_cost=opts.batch_cost,
        description=opts.description or inspect.getdoc(getattr(cls, attr)),
    )


def inspect_model(cls: type, extra_endpoints: list[Any] | None = None) -> ModelSpec:
    """Build the :class:`ModelSpec` of a model class.

    ``extra_endpoints`` are ``config.yaml`` ``endpoints:`` entries (method, name, route,
    batchable) for methods not decorated with ``@impasto.endpoint``.
    """
    if not isinstance(cls, type):
        raise PackageError(f"{cls!r} is not a class")
    init = inspect.signature(cls.__init__)
    init_params = [p for p in init.parameters.values() if p.name != "self"]
    if cls.__init__ is object.__init__:  # no __init__ of its own: takes nothing
        init_params = []
    unknown = [
        p.name
        for p in init_params
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and p.name not in INIT_ARGS
        and p.default is inspect.Parameter.empty
    ]
    if unknown:
        raise PackageError(
            f"{cls.__name__}.__init__{init} asks for {', '.join(unknown)}; "
            f"it may take any of {', '.join(INIT_ARGS)} or **kwargs"
        )
    init_args = tuple(p.name for p in init_params if p.name in INIT_ARGS)
    init_kwargs = any(p.kind == p.VAR_KEYWORD for p in init_params)

    endpoints: dict[str, EndpointSpec] = {}
    if callable(getattr(cls, "predict", None)):
        batch_attr = "predict_batch" if callable(getattr(cls, "predict_batch", None)) else None
        predict = _endpoint(cls, "predict", EndpointOptions(), batch_attr=batch_attr)
        endpoints["predict"] = _with_hooks(cls, predict)
    for attr in _declared(cls):
        opts = getattr(getattr(cls, attr, None), "__impasto_endpoint__", None)
        if isinstance(opts, EndpointOptions) and attr != "predict":
            spec = _endpoint(cls, attr, opts)
            _add(endpoints, spec, cls)
    for entry in extra_endpoints or []:
        if not callable(getattr(cls, entry.method, None)):
            raise PackageError(
                f"config.yaml endpoints: {cls.__name__} has no method {entry.method!r}"
            )
        opts = EndpointOptions(name=entry.name, route=entry.route, batchable=entry.batchable)
        _add(endpoints, _endpoint(cls, entry.method, opts), cls)
    if not endpoints:
        raise PackageError(
            f"{cls.__name__} has no predict() method and no @impasto.endpoint methods; "
            "define `def predict(self, model_input): ...`"
        )
    load = getattr(cls, "load", None)
    return ModelSpec(
        cls=cls,
        init_args=init_args,
        init_kwargs=init_kwargs,
        has_load=callable(load),
        load_is_async=inspect.iscoroutinefunction(load),
        endpoints=endpoints,
        default=getattr(cls, "impasto_default_endpoint", None),
    )


def _declared(cls: type) -> list[str]:
    """Attribute names in declaration order, base classes first (dir() would sort them)."""
    seen: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for attr in vars(klass):
            seen.setdefault(attr, None)
    return list(seen)


def _with_hooks(cls: type, spec: EndpointSpec) -> EndpointSpec:
    """Attach preprocess/postprocess (predict only), re-deriving the input schema."""
    pre = (
        inspect_call(cls, "preprocess", input_name="predict")
        if callable(getattr(cls, "preprocess", None))
        else None
    )
    post = (
        inspect_call(cls, "postprocess", input_name="predict")
        if callable(getattr(cls, "postprocess", None))
        else None
    )
    if spec.streams and post is not None:
        raise PackageError(
            f"{spec.call.signature}: postprocess cannot be combined with a streaming predict"
        )
    return replace(
        spec,
        preprocess=pre,
        postprocess=post,
        input_model=(pre or spec.call).input_model,
        output_model=(post or spec.call).output_model,
    )


def _add(endpoints: dict[str, EndpointSpec], spec: EndpointSpec, cls: type) -> None:
    if spec.name in endpoints:
        raise PackageError(f"{cls.__name__}: two endpoints are named {spec.name!r}")
    routes = {e.route for e in endpoints.values()}
    if spec.route in routes:
        raise PackageError(f"{cls.__name__}: two endpoints use route {spec.route!r}")
    endpoints[spec.name] = spec
