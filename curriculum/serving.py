"""What a person gives a served model and gets back: the project's side of serving.

A project's :class:`Interface` says which input a user gives its exported models (raw feature
rows, an image, a review's text, a date), how a request body is validated (a pydantic model
generated from the model's *card*), how it becomes the exported graph's input, and how the
graph's outputs read as an answer. The export stage writes the card -- ``serving.json``, the
facts the interface needs (class names, feature ranges, image geometry, the series to forecast
from), taken from the processed data -- beside the model files, so a model and the contract to
call it are versioned together. The server (:mod:`pipeline.serving`) is generic: it never knows
which project it serves.
"""
from __future__ import annotations

import base64
import binascii
import io
from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from curriculum.layout import ProcessedData

CARD_FILE = "serving.json"


class InputError(ValueError):
    """A request that passed its schema but cannot be read (a file that is not an image...): the
    server answers 422 naming ``loc`` (the field's path in the body) and the rule broken."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


class Strict(BaseModel):
    """Request bodies refuse fields they do not declare (a misspelt key is a 422, not ignored)."""

    model_config = ConfigDict(extra="forbid")


def batch_of(item: Any, max_batch: int, description: str) -> Any:
    """A list of 1..``max_batch`` items: every request is a batch, the limit bounds its cost."""
    return Annotated[list[item], Field(min_length=1, max_length=max_batch, description=description)]


class Interface(ABC):
    """How a user calls one project's exported models; see the module docstring.

    ``widget`` names the form the try-it page shows (``features``, ``image``, ``text``,
    ``forecast``); ``batchable``: requests may be scored together in one onnxruntime call
    (micro-batching pays where one example's work is worth sharing out: images).
    """

    widget: ClassVar[str]
    batchable: ClassVar[bool] = False
    takes_files: ClassVar[bool] = False  # has :meth:`files_request` (a ``predict/upload`` route)

    @abstractmethod
    def card(self, data: ProcessedData, config: Any, model: str) -> dict[str, Any]:
        """The JSON facts this interface needs at serving time, from the processed data."""

    @abstractmethod
    def request_model(self, card: Mapping[str, Any], max_batch: int) -> type[BaseModel]:
        """The pydantic model of a request body (shapes, dtypes, ranges, at most ``max_batch`` examples)."""

    def prepare(self, card: Mapping[str, Any], artifacts: Mapping[str, Any]) -> Any:
        """What :meth:`model_inputs` reads requests with, made once per loaded model from the JSON
        files export wrote beside it (by stem: ``tokenizer``); the artifacts themselves by default."""
        return artifacts

    @abstractmethod
    def model_inputs(self, request: BaseModel, card: Mapping[str, Any], prepared: Any) -> np.ndarray:
        """The exported graph's input batch for a validated request (``prepared``: from
        :meth:`prepare`); :class:`InputError` if it cannot be read."""

    @abstractmethod
    def example(self, card: Mapping[str, Any]) -> dict[str, Any]:
        """A valid request body: the API docs' example, the page's starting point, the benchmark's load."""

    def answers(self, task: Any, request: BaseModel, predictions: Mapping[str, np.ndarray],
                card: Mapping[str, Any], prepared: Any) -> list[dict[str, Any]]:
        """One answer per example; the task's reading of its outputs by default."""
        return task.answers(predictions, card)

    def files_request(self, files: list[bytes], card: Mapping[str, Any]) -> dict[str, Any]:
        """A request body from uploaded files (``predict/upload``); only file-taking interfaces have one."""
        raise InputError(("files",), f"this model takes {self.widget} input, not uploaded files")


# --------------------------------------------------------------------------- images

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # Pillow's openers (JPEG's also opens cameras' MPO files)
MAX_UPLOAD_PIXELS = 2048 * 2048  # larger images are refused before decoding (decompression bombs)


def decode_image(content: bytes, height: int, width: int, channels: int, loc: tuple[str | int, ...]) -> np.ndarray:
    """An uploaded image file as a ``(height, width, channels)`` uint8 array: turned upright (EXIF),
    grey or RGB as the model takes, centre-cropped to the model's aspect and resized (a photo of any
    size). Anything Pillow cannot read is an :class:`InputError`, never a server error."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.init()  # registers every format plugin (WEBP...), once
    try:
        image = Image.open(io.BytesIO(content), formats=IMAGE_FORMATS)
        if image.width * image.height > MAX_UPLOAD_PIXELS:
            raise InputError(loc, f"image is {image.width}x{image.height} pixels; at most {MAX_UPLOAD_PIXELS} "
                                  f"({int(MAX_UPLOAD_PIXELS ** 0.5)} squared) are accepted")
        image = ImageOps.exif_transpose(image).convert("L" if channels == 1 else "RGB")
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(loc, f"not an image file (expected one of {', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError:
        raise InputError(loc, f"image is larger than {MAX_UPLOAD_PIXELS} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # not an image, truncated, corrupt
        raise InputError(loc, f"the image file cannot be read: {error}") from None
    if image.size != (width, height):
        image = ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


# MNIST's own recipe (LeCun et al.): white ink on black, the ink's bounding box scaled to fit
# ``box`` x ``box`` pixels keeping its aspect, then moved so its centre of mass is the image's centre.
MNIST_DRAWING = {"ink": "white", "background": "black", "box": 20, "centre": "mass"}


class ImageInput(Interface):
    """An image as its pixels (0-255, ``height x width`` lists, ``x channels`` for colour) or as
    base64 PNG/JPEG files; the model takes ``pixels / divide_by`` (what preprocess fed it).
    ``drawing``: data source -> how a drawing on the page becomes an image like the source's (see
    :data:`MNIST_DRAWING`); a source without one gets no drawing pad, only uploads."""

    widget = "image"
    batchable = True
    takes_files = True

    def __init__(self, divide_by: float = 255.0, drawing: Mapping[str, Mapping[str, Any]] | None = None):
        self.divide_by = divide_by
        self.drawing = drawing or {}

    def card(self, data: ProcessedData, config: Any, model: str) -> dict[str, Any]:
        height, width, channels = (int(n) for n in data.split("train")["x"].shape[1:])
        return {"height": height, "width": width, "channels": channels, "pixel_range": [0, 255],
                "drawing": self.drawing.get(config.download.source)}

    def request_model(self, card: Mapping[str, Any], max_batch: int) -> type[BaseModel]:
        height, width, channels = card["height"], card["width"], card["channels"]
        value = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]
        pixel = value if channels == 1 else Annotated[list[value], Field(min_length=channels, max_length=channels)]
        row = Annotated[list[pixel], Field(min_length=width, max_length=width)]
        image = Annotated[list[row], Field(min_length=height, max_length=height)]
        shape = f"{height}x{width}" + (f"x{channels}" if channels > 1 else "")

        def exactly_one(request: BaseModel) -> BaseModel:
            if (request.images is None) == (request.files is None):
                raise ValueError("give exactly one of `images` (pixel arrays) or `files` (base64 image files)")
            return request

        return create_model(
            "ImageRequest", __base__=Strict,
            images=(batch_of(image, max_batch, f"images as {shape} pixel values 0-255") | None, None),
            files=(batch_of(str, max_batch, "base64-encoded PNG or JPEG files, any size (centre-cropped and "
                                            "resized)") | None, None),
            __validators__={"exactly_one": model_validator(mode="after")(exactly_one)},
        )

    def model_inputs(self, request: BaseModel, card: Mapping[str, Any], prepared: Any) -> np.ndarray:
        shape = (card["height"], card["width"], card["channels"])
        if request.images is not None:
            pixels = np.asarray(request.images, dtype=np.float32).reshape(-1, *shape)
        else:
            pixels = np.stack([decode_image(base64_bytes(text, ("files", i)), *shape, ("files", i))
                               for i, text in enumerate(request.files)]).astype(np.float32)
        return pixels / np.float32(self.divide_by)

    def files_request(self, files: list[bytes], card: Mapping[str, Any]) -> dict[str, Any]:
        return {"files": [base64.b64encode(content).decode("ascii") for content in files]}

    def example(self, card: Mapping[str, Any]) -> dict[str, Any]:
        """A mid-grey square on black: valid, not meant to mean anything."""
        height, width, channels = card["height"], card["width"], card["channels"]
        image = np.zeros((height, width, channels), dtype=np.int64)
        image[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 128
        return {"images": [image[..., 0].tolist() if channels == 1 else image.tolist()]}


def base64_bytes(text: str, loc: tuple[str | int, ...]) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(loc, "not valid base64") from None
