"""Inspect a user's model class once into frozen data the runner dispatches on.

Nothing is re-inspected per request: whether a method is async or a generator, which
``__init__`` arguments it wants, its input and output types and its endpoints are all read
here, at load time, and a bad signature fails fast with the signature in the message.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, create_model
from starlette.requests import Request

from .context import RequestContext
from .errors import NotFound, PackageError
from .media import media_kind

INIT_ARGS = ("config", "data_dir", "secrets", "environment")
_RAW_NAMES = {"model_input", "inputs", "input", "request", "payload", "data", "body"}
_CONTEXT_NAMES = {"context", "ctx", "contexts"}
_SCALARS = (str, int, float, bool, bytes)
# Model methods served beside predict at the OpenAI-style routes (/v1/chat/completions...);
# they run outside the model's predict slots, as they do under Truss.
OPENAI_METHODS = ("chat_completions", "completions", "embeddings", "messages", "responses")
HOOKS = ("is_healthy", "setup_environment", "websocket")


@dataclass(frozen=True)
class EndpointOptions:
    """What ``@impasto.endpoint`` records on a method."""

    name: str | None = None
    route: str | None = None
    batchable: bool = False
    batch_key: Callable[[Any], Hashable] | None = None
    batch_cost: Callable[[Any], tuple[int, int]] | None = None
    description: str | None = None
    batches_itself: bool = False


def endpoint(
    func: Callable | None = None,
    *,
    name: str | None = None,
    route: str | None = None,
    batchable: bool = False,
    batch_key: Callable[[Any], Hashable] | None = None,
    batch_cost: Callable[[Any], tuple[int, int]] | None = None,
    description: str | None = None,
    batches_itself: bool = False,
) -> Any:
    """Expose a model method as its own route (``POST /<name>``).

    A ``batchable`` method takes a list of inputs and returns a list of outputs of the same
    length. ``batch_key(input)`` says which inputs may share a call; ``batch_cost(input)``
    returns ``(items, pixels)`` counted against ``batching.max_batch_size`` and
    ``batching.max_batch_pixels``. A method that ``batches_itself`` takes one input but
    merges concurrent calls on its own (continuous batching): the runner lets up to
    ``batching.max_batch_size`` of them into the model per slot, as it does for a batch.
    """
    opts = EndpointOptions(
        name, route, batchable, batch_key, batch_cost, description, batches_itself
    )

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
    request_param: str | None = None  # annotated starlette/FastAPI ``Request``: gets it
    takes_input: bool = True  # False: called with no input (only the request, or nothing)

    def bind(self, model: Any, value: Any, ctx: RequestContext | None) -> Callable[[], Any]:
        """A zero-argument callable running the method on ``value`` (already validated)."""
        fn = getattr(model, self.attr)
        kwargs: dict[str, Any] = {}
        if self.context_param:
            kwargs[self.context_param] = ctx
        if self.request_param:
            kwargs[self.request_param] = getattr(ctx, "request", None)
        if not self.takes_input:
            return lambda: fn(**kwargs)
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
    slotted: bool = True  # False: runs beside predictions, outside the predict slots
    batches_itself: bool = False  # one input per call; the model merges concurrent calls

    def __post_init__(self) -> None:
        object.__setattr__(self, "has_media", _has_media(self.input_model))

    @property
    def reads_body(self) -> bool:
        """False when the first stage takes only the HTTP request: the body is the model's
        to read (``await request.body()``), never parsed for it."""
        first = self.preprocess or self.call
        return first.takes_input or first.request_param is None


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
    # optional model methods beside the endpoints (``is_healthy``, ``setup_environment``,
    # ``websocket``): name -> whether it is async
    hooks: dict[str, bool] = field(default_factory=dict)

    @property
    def default_endpoint(self) -> EndpointSpec:
        """What ``/predict`` runs: ``predict``, else the class's ``impasto_default_endpoint``,
        else the first endpoint declared."""
        name = "predict" if "predict" in self.endpoints else self.default
        found = self.endpoints.get(name or "") or next(iter(self.endpoints.values()), None)
        if found is None:
            raise NotFound(
                f"{self.cls.__name__} has no predict endpoint; it serves a websocket at "
                "/v1/websocket"
            )
        return found


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


def _is_request_type(tp: Any) -> bool:
    """starlette's ``Request`` (FastAPI's is the same class) or a subclass of it."""
    return isinstance(tp, type) and issubclass(tp, Request)


def _field_like(tp: Any) -> bool:
    """Whether one parameter annotated ``tp`` is an input field (``count: int``,
    ``image: Image``, ``mode: Literal[...]``): impasto's convenience. Any other single
    parameter of a model stage (none, ``Any``, ``Dict``, ``dict[str, Any]``, a dataclass...)
    receives the whole value."""
    if tp in _SCALARS or media_kind(tp) is not None:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return True
    if origin is typing.Annotated:
        return _field_like(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return bool(args) and all(_field_like(a) for a in args)
    return False


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


def inspect_call(
    cls: type,
    attr: str,
    *,
    input_name: str,
    list_input: bool = False,
    stage: str | None = None,
) -> CallSpec:
    """Read one method's signature into a :class:`CallSpec` (raises PackageError if unusable).

    ``stage`` marks the model's own stages (``preprocess``, ``predict``, ``postprocess``,
    the OpenAI-style methods): ``"first"`` for the one that receives the request body,
    ``"later"`` for those that receive the previous stage's value. A stage with one data
    parameter receives its value whole, however it is named or annotated, except a
    pydantic model on the first stage (the body is validated into it) and impasto's
    single-field convenience (``count: int``, ``image: Image``) there. A stage may also
    take no input (only the request, or nothing)."""
    fn = getattr(cls, attr)
    sig = inspect.signature(fn)
    where = f"{cls.__name__}.{attr}{sig}"
    hints = _hints(fn, where)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    context_param = request_param = None
    data_params = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = hints.get(p.name, inspect.Parameter.empty)
        if _is_request_type(annotation):
            request_param = p.name
        elif _is_context_param(p.name, annotation):
            context_param = p.name
        else:
            data_params.append(p)
    if not data_params and not stage:
        raise PackageError(f"{where} must take an input argument")
    ret = hints.get("return")
    if list_input and typing.get_origin(ret) is list and typing.get_args(ret):
        ret = typing.get_args(ret)[0]  # a batch method returns one output per input
    output_model = ret if _is_model_type(ret) else None
    style, input_model = "raw", None
    if not data_params:
        pass
    elif list_input:
        if len(data_params) > 1:
            raise PackageError(f"{where}: a batch method takes one list of inputs")
        ann = hints.get(data_params[0].name)
        args = typing.get_args(ann) if typing.get_origin(ann) in (list, typing.List) else ()  # noqa: UP006
        if args and _is_model_type(args[0]):
            input_model = args[0]
    elif len(data_params) == 1 and stage == "later":
        pass  # the previous stage's value, whole
    elif len(data_params) == 1 and stage == "first":
        p = data_params[0]
        ann = hints.get(p.name, inspect.Parameter.empty)
        if _is_model_type(ann):
            style, input_model = "model", ann
        elif p.name not in _RAW_NAMES and _field_like(ann):
            style = "fields"
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
        request_param=request_param,
        takes_input=bool(data_params),
    )


def _endpoint(
    cls: type,
    attr: str,
    opts: EndpointOptions,
    *,
    batch_attr: str | None = None,
    stage: str | None = None,
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
        call = inspect_call(cls, attr, input_name=name, stage=stage)
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
        batches_itself=opts.batches_itself and not opts.batchable,
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
    hooks = _hooks(cls)
    model_shaped = callable(getattr(cls, "predict", None)) or "websocket" in hooks
    if callable(getattr(cls, "predict", None)):
        batch_attr = "predict_batch" if callable(getattr(cls, "predict_batch", None)) else None
        has_pre = callable(getattr(cls, "preprocess", None))
        predict = _endpoint(
            cls,
            "predict",
            EndpointOptions(),
            batch_attr=batch_attr,
            stage="later" if has_pre else "first",
        )
        endpoints["predict"] = _with_hooks(cls, predict)
    for attr in OPENAI_METHODS if model_shaped else ():
        method = getattr(cls, attr, None)
        if callable(method) and not hasattr(method, "__impasto_endpoint__"):
            spec = _endpoint(cls, attr, EndpointOptions(), stage="first")
            _add(endpoints, replace(spec, slotted=False), cls)
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
    if not endpoints and "websocket" not in hooks:
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
        hooks=hooks,
    )


def _hooks(cls: type) -> dict[str, bool]:
    """The optional model methods beside the endpoints, checked as their callers need them."""
    found: dict[str, bool] = {}
    for name in HOOKS:
        fn = getattr(cls, name, None)
        if not callable(fn):
            continue
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        where = f"{cls.__name__}.{name}{inspect.signature(fn)}"
        is_async = inspect.iscoroutinefunction(fn)
        if name == "is_healthy" and params:
            raise PackageError(f"{where}: is_healthy takes no argument besides self")
        if name == "setup_environment" and len(params) != 1:
            raise PackageError(f"{where}: setup_environment takes one argument, the environment")
        if name == "websocket":
            if len(params) != 1 or not is_async:
                raise PackageError(f"{where}: websocket must be `async def websocket(self, ws)`")
            stages = [s for s in ("predict", "preprocess", "postprocess") if hasattr(cls, s)]
            if stages:
                raise PackageError(
                    f"{cls.__name__} has websocket() and {', '.join(stages)}(); a model serves "
                    "either a websocket or predictions"
                )
        found[name] = is_async
    return found


def _declared(cls: type) -> list[str]:
    """Attribute names in declaration order, base classes first (dir() would sort them)."""
    seen: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for attr in vars(klass):
            seen.setdefault(attr, None)
    return list(seen)


def _with_hooks(cls: type, spec: EndpointSpec) -> EndpointSpec:
    """Attach preprocess/postprocess (predict only), re-deriving the input schema.

    A streaming predict with a postprocess loads; each call of it answers 412 (the
    postprocess cannot run on a stream), as a Truss server does."""
    pre = (
        inspect_call(cls, "preprocess", input_name="predict", stage="first")
        if callable(getattr(cls, "preprocess", None))
        else None
    )
    post = (
        inspect_call(cls, "postprocess", input_name="predict", stage="later")
        if callable(getattr(cls, "postprocess", None))
        else None
    )
    if pre is not None and not spec.call.takes_input and spec.call.request_param:
        raise PackageError(
            f"{spec.call.signature}: with a preprocess, predict must take an input (what "
            "preprocess returns), not only the request"
        )
    if post is not None and not post.takes_input:
        raise PackageError(
            f"{post.signature}: postprocess must take an input (what predict returns)"
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
