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
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from curriculum.projects import get_project
from curriculum.serving import InputError
from pipeline.serving import ServeSettings
from pipeline.serving.batching import MicroBatcher
from pipeline.serving.models import LoadFailure, Registry, ServedModel

PAGE = Path(__file__).with_name("page.html")
log = logging.getLogger("pipeline.serving")


class Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def unprocessable(loc: tuple, message: str, kind: str = "value_error") -> JSONResponse:
    return Json({"detail": [{"loc": list(loc), "msg": message, "type": kind}]}, status_code=422)


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

    async def predict(self, name: str, body: bytes) -> Response:
        model = self.model(name)
        if len(body) > self.settings.max_body_bytes:
            raise HTTPException(413, f"request body is {len(body)} bytes; at most {self.settings.max_body_bytes}")
        try:
            request = model.request_model.model_validate_json(body)
        except ValidationError as error:
            raise RequestValidationError([
                {**detail, "loc": ("body", *detail["loc"])}
                for detail in error.errors(include_url=False, include_context=False, include_input=False)
            ]) from None
        try:
            inputs = model.interface.model_inputs(request, model.card, model.prepared)
        except InputError as error:
            return unprocessable(("body", *error.loc), error.message)
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

    async def reload(self) -> dict[str, list[str]]:
        async with self.reloading:
            outcome = await asyncio.get_running_loop().run_in_executor(None, self.registry.load)
        log.info("reload: %s", {key: len(value) for key, value in outcome.items()})
        return outcome

    async def close(self) -> None:
        for _, batcher in self.batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=True)


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

    for name, (project, _, _) in registry.names().items():
        add_predict_routes(app, name, takes_files=get_project(project).serving.takes_files)

    @app.post("/v1/reload", summary="Reload the models whose export changed (after `dvc repro`)")
    async def reload(request: Request) -> dict[str, Any]:
        return await request.app.state.server.reload()

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, with each predict route's body as its model's current request schema
        (the models load after the routes exist, and a reload may change a schema)."""
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for name, model in registry.models.items():
            operation = schema["paths"].get(f"/v1/models/{name}/predict", {}).get("post")
            if operation is not None and isinstance(model, ServedModel):
                body = model.request_model.model_json_schema(ref_template=f"#/components/schemas/{name}.{{model}}")
                components = schema.setdefault("components", {}).setdefault("schemas", {})
                components.update({f"{name}.{key}": value for key, value in body.pop("$defs", {}).items()})
                operation["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": body, "example": model.interface.example(model.card)}}}
        return schema

    app.openapi = openapi
    return app


def add_predict_routes(app: FastAPI, name: str, takes_files: bool) -> None:
    """``predict`` for one served name (and ``predict/upload`` where its interface takes files)."""

    async def predict(request: Request) -> Response:
        server: Server = request.app.state.server
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > server.settings.max_body_bytes:  # refused before it is read
            raise HTTPException(413, f"request body is {declared} bytes; at most {server.settings.max_body_bytes}")
        return await server.predict(name, await request.body())

    async def predict_upload(request: Request, files: list[UploadFile] = File(...)) -> Response:
        server: Server = request.app.state.server
        current = server.model(name)
        contents = [await upload.read() for upload in files]
        try:
            body = current.interface.files_request(contents, current.card)
        except InputError as error:
            return unprocessable(("body", *error.loc), error.message)
        return await server.predict(name, orjson.dumps(body))

    app.add_api_route(f"/v1/models/{name}/predict", predict, methods=["POST"], tags=["predict"],
                      summary=f"Predict with {name}")
    if takes_files:
        app.add_api_route(f"/v1/models/{name}/predict/upload", predict_upload, methods=["POST"], tags=["upload"],
                          summary=f"Predict with {name} from uploaded image files")


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
    """Reload when ``dvc.lock`` or ``params.yaml`` changes (a ``dvc repro`` finished a stage)."""
    while True:
        await asyncio.sleep(every_s)
        if server.registry.loaded and server.registry.stale():
            await server.reload()


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
