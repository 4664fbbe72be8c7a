"""Form widgets from field views, and the request payload from what the user entered.

Each :class:`~impasto.ui.describe.FieldView` becomes one Gradio component (a seed becomes a
number, a "random" box and a "reuse last" button; an image with a mask becomes one image
editor whose brush strokes are the mask). :func:`payload_from` turns the values back into
the JSON request impasto's API takes, leaving out what equals the schema's default so the
request shown on the page is the short one a person would write.
"""

from __future__ import annotations

import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .describe import EndpointView, FieldView
from .snippets import Upload

DEFAULT_CHOICE = "(default)"
MAX_RANDOM_SEED = 2**32 - 1


class FormError(Exception):
    """A value the page cannot send, named by its field (shown inline, nothing is sent)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-").lower() or "x"


@dataclass
class SeedWidgets:
    number: Any
    random: Any
    reuse: Any


@dataclass
class Form:
    """The input components of one endpoint, in the order their values arrive."""

    view: EndpointView
    inputs: list[Any] = field(default_factory=list)
    readers: list[tuple[FieldView | None, str]] = field(default_factory=list)  # (field, role)
    seed: SeedWidgets | None = None
    components: dict[str, Any] = field(default_factory=dict)  # by field name


def _order(f: FieldView) -> int:
    if f.kind == "prompt":
        return 0
    if f.media:
        return 1
    return 3 if f.kind == "seed" else 2


def build_form(gr: Any, view: EndpointView, prefix: str) -> Form:
    """Create the components of ``view`` inside the current Gradio layout."""
    form = Form(view)
    if view.raw:
        code = gr.Code(
            value="{}",
            language="json",
            label="Request body (JSON)",
            elem_id=f"{prefix}-body",
            interactive=True,
        )
        form.inputs.append(code)
        form.readers.append((None, "body"))
        return form
    pair = view.mask_pair
    main = sorted((f for f in view.fields if not f.advanced), key=_order)
    advanced = [f for f in view.fields if f.advanced]
    for f in main:
        _component(gr, form, f, prefix, pair)
    if advanced:
        with gr.Accordion("Advanced", open=False, elem_id=f"{prefix}-advanced"):
            for f in advanced:
                _component(gr, form, f, prefix, pair)
    return form


def _component(
    gr: Any, form: Form, f: FieldView, prefix: str, pair: tuple[FieldView, FieldView] | None
) -> None:
    eid = f"{prefix}-{slug(f.name)}"
    info = f.description or None
    label = f.label + ("" if f.required or f.kind in ("seed", "bool") else " (optional)")
    if pair is not None and f is pair[1]:
        return  # painted on the image's editor
    if pair is not None and f is pair[0]:
        comp = gr.ImageEditor(
            label=f"{f.label}: paint the area to repaint ({pair[1].name}: white repaints)",
            type="pil",
            image_mode="RGBA",
            sources=["upload", "clipboard"],
            brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=12),
            layers=False,
            transforms=(),
            elem_id=eid,
        )
        form.readers.append((f, "editor"))
    elif f.kind == "seed":
        with gr.Row(equal_height=True):
            number = gr.Number(
                value=f.default,
                label=f.label,
                info=info,
                precision=0,
                elem_id=eid,
                scale=3,
            )
            rand = gr.Checkbox(
                value=f.default is None, label="random", elem_id=f"{eid}-random", scale=1
            )
            reuse = gr.Button("♻ reuse last", elem_id=f"{eid}-reuse", scale=1, size="sm")
        form.seed = SeedWidgets(number, rand, reuse)
        form.inputs += [number, rand]
        form.readers += [(f, "seed"), (f, "seed-random")]
        form.components[f.name] = number
        return
    elif f.kind in ("prompt", "text"):
        lines = 1 if f.kind == "text" else (2 if "negative" in f.name else 3)
        comp = gr.Textbox(value=f.default or "", label=label, info=info, lines=lines, elem_id=eid)
        form.readers.append((f, "text"))
    elif f.kind == "slider":
        value = f.default if f.default is not None else f.minimum
        comp = gr.Slider(
            minimum=f.minimum,
            maximum=f.maximum,
            step=f.step,
            value=value,
            label=label,
            info=info,
            elem_id=eid,
        )
        form.readers.append((f, "number"))
    elif f.kind in ("integer", "number") and f.default is None:
        comp = gr.Textbox(  # empty means the schema's default (a number box cannot be empty)
            value="", label=label, info=_bounds(info, f), placeholder="default", elem_id=eid
        )
        form.readers.append((f, "numtext"))
    elif f.kind in ("integer", "number"):
        # no minimum/maximum here: impasto checks the bounds and names the field inline
        comp = gr.Number(
            value=f.default,
            label=label,
            info=_bounds(info, f),
            precision=0 if f.integer else None,
            elem_id=eid,
        )
        form.readers.append((f, "number"))
    elif f.kind == "choice":
        choices = [*([DEFAULT_CHOICE] if f.nullable or f.default is None else []), *f.choices]
        value = f.default if f.default is not None else choices[0]
        comp = gr.Dropdown(choices=choices, value=value, label=label, info=info, elem_id=eid)
        form.readers.append((f, "choice"))
    elif f.kind == "bool":
        comp = gr.Checkbox(value=bool(f.default), label=label, info=info, elem_id=eid)
        form.readers.append((f, "bool"))
    elif f.kind in ("image", "mask"):
        comp = gr.Image(type="filepath", label=label, sources=["upload", "clipboard"], elem_id=eid)
        form.readers.append((f, "file"))
    elif f.kind == "video":
        comp = gr.Video(label=label, sources=["upload"], elem_id=eid)
        form.readers.append((f, "file"))
    elif f.kind == "audio":
        comp = gr.Audio(type="filepath", label=label, sources=["upload"], elem_id=eid)
        form.readers.append((f, "file"))
    elif f.kind in ("file", "files"):
        many = f.kind == "files"
        comp = gr.File(
            label=label, file_count="multiple" if many else "single", type="filepath", elem_id=eid
        )
        form.readers.append((f, "files" if many else "file"))
    else:
        text = "" if f.default in (None, [], {}) else json.dumps(f.default)
        comp = gr.Code(
            value=text, language="json", label=f"{label}: JSON", elem_id=eid, interactive=True
        )
        form.readers.append((f, "json"))
    form.inputs.append(comp)
    form.components[f.name] = comp


def _bounds(info: str | None, f: FieldView) -> str | None:
    if f.minimum is None and f.maximum is None:
        return info
    low = "" if f.minimum is None else f"{f.minimum:g}"
    high = "" if f.maximum is None else f"{f.maximum:g}"
    return f"{info or ''} [{low}..{high}]".strip()


# values -> payload -----------------------------------------------------------------------------
def payload_from(form: Form, values: list[Any]) -> Any:
    """The request body for the values of ``form.inputs`` (raises :class:`FormError`)."""
    if form.view.raw:
        text = (values[0] or "").strip()
        try:
            return json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise FormError("body", f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    payload: dict[str, Any] = {}
    pair = form.view.mask_pair
    it = iter(zip(form.readers, values, strict=True))
    for (f, role), value in it:
        assert f is not None
        if role == "seed":
            ((_, rand),) = [next(it)]
            payload[f.name] = _seed(f, value, rand)
            continue
        if role == "editor":
            assert pair is not None
            image, mask = _editor(value, pair)
            payload[pair[0].name] = image
            payload[pair[1].name] = mask
            continue
        out = _value(f, role, value)
        if out is _OMIT or (not f.required and out == f.default):
            continue
        payload[f.name] = out
    return payload


_OMIT = object()


def _value(f: FieldView, role: str, value: Any) -> Any:
    if role == "text":
        return value if value or f.required else _OMIT
    if role == "number":
        if value is None:
            return _OMIT
        return round(value) if f.integer else float(value)
    if role == "numtext":
        text = (value or "").strip()
        if not text:
            return _OMIT
        try:
            number = float(text)
        except ValueError:
            raise FormError(f.name, f"{text!r} is not a number") from None
        if f.integer and not number.is_integer():
            raise FormError(f.name, f"{text!r} is not a whole number")
        return int(number) if f.integer else number
    if role == "choice":
        return _OMIT if value in (None, DEFAULT_CHOICE) else value
    if role == "bool":
        return bool(value)
    if role == "file":
        return _upload(value) if value else _OMIT
    if role == "files":
        return [_upload(v) for v in value] if value else _OMIT
    text = (value or "").strip()
    if not text:
        return _OMIT
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormError(f.name, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _seed(f: FieldView, value: Any, rand: bool) -> int:
    if rand or value is None:
        high = int(min(f.maximum if f.maximum is not None else MAX_RANDOM_SEED, MAX_RANDOM_SEED))
        low = int(f.minimum or 0)
        return random.randint(low, high)
    return int(value)


def _upload(value: Any) -> Upload:
    path = Path(getattr(value, "name", value))
    return Upload(path.name, path.read_bytes(), _content_type(path))


def _content_type(path: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _editor(value: Any, pair: tuple[FieldView, FieldView]) -> tuple[Upload, Upload]:
    """The editor's background as the image and its brush strokes as the mask (white: the
    painted pixels, which the model repaints; black: the rest)."""
    image_field, mask_field = pair
    background = (value or {}).get("background") if isinstance(value, dict) else None
    if background is None:
        raise FormError(image_field.name, "upload an image, then paint the area to repaint")
    from PIL import Image

    mask = Image.new("L", background.size, 0)
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != background.size:
            alpha = alpha.resize(background.size)
        mask.paste(255, mask=alpha.point(lambda a: 255 if a > 0 else 0))
    if mask.getbbox() is None:
        raise FormError(mask_field.name, "paint the area to repaint with the brush (white)")
    return (
        Upload(f"{image_field.name}.png", _png(background.convert("RGB")), "image/png"),
        Upload(f"{mask_field.name}.png", _png(mask), "image/png"),
    )
