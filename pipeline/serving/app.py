"""The HTTP API and the try-it page over the exported models (FastAPI on onnxruntime).

Routes: ``GET /`` (the page), ``/health``, ``/ready``, ``/v1/models`` (and ``/v1/models/{name}``),
``POST /v1/models/{name}/predict`` (JSON), ``POST /v1/models/{name}/predict/upload`` (files, for
models that take images), ``POST /v1/reload``; OpenAPI docs at ``/docs``. Each model's route
validates its body with the pydantic model its project generates from the model's card, so a bad
request is a 422 naming the field and the rule. No deep-learning framework is imported here.
"""
from __future__ import annotations

import asyncio
import copy
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.routing import Route

from curriculum.serving import InputError
from pipeline.serving import ServeSettings
from pipeline.serving.batching import MicroBatcher
from pipeline.serving.models import LoadFailure, Registry, ServedModel

PAGE = Path(__file__).with_name("page.html")
INLINE_BODY_BYTES = 64 * 1024  # bodies up to this size are read on the event loop (a hop to a thread costs more)
log = logging.getLogger("pipeline.serving")


class Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 -- declared (Content-Length) or counted
    as it streams in (chunked), before any of it is parsed or written to disk (uploads)."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await Json({"detail": f"request body is {int(declared)} bytes; at most {self.limit}"},
                              status_code=413)(scope, receive, send)
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, f"request body is over {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


class Server:
    """The registry, the scoring threads and a micro-batcher per batchable model."""

    def __init__(self, registry: Registry, settings: ServeSettings):
        self.registry = registry
        self.settings = settings
        self.executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="score")
        self.batchers: dict[str, tuple[ServedModel, MicroBatcher]] = {}
        self.closing: set[asyncio.Task] = set()
        self.load_error: str | None = None
        self.reloading = asyncio.Lock()

    def model(self, name: str) -> ServedModel:
        model = self.registry.models.get(name)
        if model is None:
            if not self.registry.loaded:
                raise HTTPException(503, f"model {name} is still loading; GET /ready says when all are loaded")
            raise HTTPException(404, f"no model {name!r}; GET /v1/models lists them")
        if isinstance(model, LoadFailure):
            raise HTTPException(503, f"model {name} failed to load: {model.error}")
        return model

    async def score(self, model: ServedModel, inputs: Any) -> dict[str, Any]:
        if model.card["batchable"] and self.settings.micro_batch > 1:
            current = self.batchers.get(model.name)
            if current is None or current[0] is not model:  # first use, or the model was reloaded
                if current is not None:  # the old version's queue is answered, then its batcher stops
                    closing = asyncio.get_running_loop().create_task(current[1].close())
                    self.closing.add(closing)
                    closing.add_done_callback(self.closing.discard)
                current = (model, MicroBatcher(model.score, self.executor, max_examples=self.settings.micro_batch,
                                               max_wait=self.settings.max_wait_ms / 1000,
                                               in_flight=self.settings.workers))
                self.batchers[model.name] = current
            return await current[1](inputs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, model.score, inputs)

    def read_request(self, model: ServedModel, body: bytes) -> tuple[Any, Any]:
        """The validated request and the graph's input (422 naming the field and the rule if not)."""
        try:
            request = model.request_model.model_validate_json(body)
        except ValidationError as error:
            raise RequestValidationError([
                {**detail, "loc": ("body", *detail["loc"])}
                for detail in error.errors(include_url=False, include_context=False, include_input=False)
            ]) from None
        try:
            return request, model.interface.model_inputs(request, model.card, model.prepared)
        except InputError as error:
            raise RequestValidationError([{"loc": ("body", *error.loc), "msg": error.message,
                                           "type": "value_error"}]) from None

    async def predict(self, name: str, body: bytes) -> Response:
        model = self.model(name)
        if len(body) <= INLINE_BODY_BYTES:
            request, inputs = self.read_request(model, body)
        else:  # parsing or decoding a big body (images, long reviews) must not stall every other request
            request, inputs = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.read_request, model, body)
        outputs = await self.score(model, inputs)
        answers = model.interface.answers(model.task, request, outputs, model.card, model.prepared)
        return Json({"model": name, "predictions": answers})

    def describe(self) -> list[dict[str, Any]]:
        described = []
        for name, model in sorted(self.registry.models.items()):
            entry = model.describe()
            if name in self.batchers and self.batchers[name][0] is model:
                entry["micro_batching"] = self.batchers[name][1].stats()
            described.append(entry)
        return described

    async def reload(self, explicit: bool = True) -> dict[str, list[str]]:
        async with self.reloading:
            outcome = await asyncio.get_running_loop().run_in_executor(None, self.registry.load, explicit)
            if outcome["loaded"]:
                settle_garbage_collector()
        log.info("reload: %s", {key: len(value) for key, value in outcome.items()})
        return outcome

    async def close(self) -> None:
        for _, batcher in self.batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=True)


def settle_garbage_collector() -> None:
    """Free what the models just replaced held, then move every object alive now (the loaded models:
    tokenizers, schemas, series) out of the collector's sight. Otherwise each full collection walks
    them all: pauses of about 100 ms that were the server's p99 under load."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def create_app(registry: Registry, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The app for one registry. Models load in the background: ``/health`` answers at once,
    ``/ready`` once every model is loaded or has failed."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server = Server(registry, settings)
        app.state.server = server
        tasks = [asyncio.create_task(initial_load(server))]
        if settings.watch_s and registry.source.rev is None:
            tasks.append(asyncio.create_task(watch(server, settings.watch_s)))
        yield
        for task in tasks:
            task.cancel()
        await server.close()
        log.info("stopped: every queued request was answered")

    app = FastAPI(title="dl-curriculum models", lifespan=lifespan, default_response_class=Json,
                  description="Every exported model of the curriculum's DVC pipeline, on onnxruntime. "
                              "Try them at `/`.")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health", summary="The process answers")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Every model loaded (or failed); 503 while loading or if none serves")
    def ready(request: Request) -> Response:
        server: Server = request.app.state.server
        models = registry.models
        ready_names = sorted(name for name, model in models.items() if isinstance(model, ServedModel))
        failed = {name: model.error for name, model in sorted(models.items()) if isinstance(model, LoadFailure)}
        is_ready = registry.loaded and bool(ready_names)
        body = {"ready": is_ready, "loading": not registry.loaded, "models": ready_names, "failed": failed,
                **({"error": server.load_error} if server.load_error else {})}
        return Json(body, status_code=200 if is_ready else 503)

    @app.get("/v1/models", summary="Every served model: schema, provenance (DVC hash, git commit), test metrics")
    def list_models(request: Request) -> dict[str, Any]:
        return {"models": request.app.state.server.describe()}

    @app.get("/v1/models/{name}", summary="One served model")
    def get_model(name: str, request: Request) -> dict[str, Any]:
        server: Server = request.app.state.server
        model = registry.models.get(name)
        if model is None:
            raise HTTPException(404, f"no model {name!r}; GET /v1/models lists them")
        return next(entry for entry in server.describe() if entry["name"] == name)

    async def predict(request: Request) -> Response:
        """The hot path, as a plain Starlette route: FastAPI's parameter handling would only parse
        ``name``; the body is validated by the model's own request model (documented by openapi())."""
        return await request.app.state.server.predict(request.path_params["name"], await request.body())

    app.router.routes.append(Route("/v1/models/{name}/predict", predict, methods=["POST"]))

    @app.post("/v1/models/{name}/predict/upload", tags=["upload"],
              summary="Predict from uploaded image files (models that take images)")
    async def predict_upload(name: str, request: Request, files: list[UploadFile] = File(...)) -> Response:
        server: Server = request.app.state.server
        model = server.model(name)
        if len(files) > settings.max_request_examples:
            raise RequestValidationError([{"loc": ("body", "files"), "type": "too_long",
                                           "msg": f"at most {settings.max_request_examples} files, not {len(files)}"}])
        contents = [await upload.read() for upload in files]
        try:
            body = model.interface.files_request(contents, model.card)
        except InputError as error:
            raise RequestValidationError([{"loc": ("body", *error.loc), "msg": error.message,
                                           "type": "value_error"}]) from None
        return await server.predict(name, orjson.dumps(body))

    @app.post("/v1/reload", summary="Reload the models whose export changed (after `dvc repro`)")
    async def reload(request: Request) -> dict[str, Any]:
        return await request.app.state.server.reload()

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus one ``predict`` path per loaded model with its own request schema
        and example (models load after the app starts, and a reload may change a schema)."""
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in sorted(registry.models.items()):
            if not isinstance(model, ServedModel):
                continue
            body = model.request_model.model_json_schema(ref_template=f"#/components/schemas/{name}.{{model}}")
            components.update({f"{name}.{key}": value for key, value in body.pop("$defs", {}).items()})
            schema["paths"][f"/v1/models/{name}/predict"] = {"post": {
                "tags": ["predict"], "summary": f"Predict with {name} ({model.card['widget']} input)",
                "operationId": f"predict_{name}",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": body, "example": model.interface.example(model.card)}}},
                "responses": {"200": {"description": "one answer per example"},
                              "422": {"description": "the field and the rule a request broke"},
                              "503": {"description": "the model failed to load"}}}}
        return schema

    app.openapi = openapi
    return app


async def initial_load(server: Server) -> None:
    try:
        await server.reload()
        log.info("served models:\n%s", served_table(server.registry))
    except Exception as error:  # noqa: BLE001 -- e.g. no params.yaml: /ready reports it
        server.load_error = f"{type(error).__name__}: {error}"
        server.registry.loaded = True
        log.exception("loading the models failed")


def served_table(registry: Registry) -> str:
    """One line per model, readable in a log: status, test headline metric, DVC hash, or the load error."""
    lines = [f"  {'model':34} {'status':7} {'test metric':>20}  dvc md5 / error"]
    for name, model in sorted(registry.models.items()):
        if isinstance(model, LoadFailure):
            lines.append(f"  {name:34} {'failed':7} {'':>20}  {model.error}")
            continue
        headline = model.task.headline
        value = model.metrics.get(headline)
        scored = f"{headline} {value:.4f}" if isinstance(value, float) else "-"
        lines.append(f"  {name:34} {'ready':7} {scored:>20}  {str(model.provenance['dvc_md5'])[:12]}")
    return "\n".join(lines)


async def watch(server: Server, every_s: float) -> None:
    """Reload when ``dvc.lock`` or ``params.yaml`` has changed and then stayed the same for one
    interval (DVC rewrites dvc.lock in place after each stage: a file still being written is not
    read): only the models whose export has a new DVC hash there, whose files are then complete."""
    registry, settling = server.registry, None
    while True:
        await asyncio.sleep(every_s)
        try:
            signature = registry.source.signature()
            if not registry.loaded or signature == registry.signature:
                settling = None
            elif signature != settling:
                settling = signature  # changed since the last look: give it an interval to settle
            else:
                await server.reload(explicit=False)
        except Exception:  # noqa: BLE001 -- a half-written params.yaml, a file gone mid-checkout: try again later
            log.exception("watching the workspace failed; retrying in %s s", every_s)


def serve(repo: Path, rev: str | None, settings: ServeSettings, *, host: str, port: int, access_log: bool) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests are answered before it exits."""
    import uvicorn

    from pipeline.serving.models import Revision, Workspace

    source = Workspace(repo) if rev is None else Revision(repo, rev)
    registry = Registry(source, max_batch=settings.max_request_examples, threads=settings.threads)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # uvicorn's, with this module's logger beside it
    log_config["loggers"][log.name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(create_app(registry, settings), host=host, port=port, loop="uvloop", http="httptools",
                access_log=access_log, timeout_graceful_shutdown=30, log_config=log_config)
