"""A small web service: a page to upload an image and see the prediction, and a JSON API.

Endpoints (see :func:`create_app`):

- ``GET /``: the page (plain HTML and a little JavaScript; nothing loaded from elsewhere).
- ``POST /predict``: an image as ``multipart/form-data`` (field ``image``) or as the raw body with an
  ``image/*`` or ``application/octet-stream`` content type. Answers JSON: ``summary`` (shape, entropy
  in bits, peak, ...), ``overlay_png_b64`` (the picture the page shows) and ``log_density_npy_b64``
  (the ``(H, W)`` float32 log density in nats as ``.npy`` bytes, base64; leave it out with
  ``?include_density=false``).
- ``POST /predict.npy``: the same input; answers the raw ``.npy`` bytes (nothing is drawn).
- ``GET /health``.

Errors answer ``{"detail": reason}``: 413 for a body or an image over the limits (decompression bombs
included), 415 for a content type that is not an image, 400 for an empty or malformed upload, 422 for
data that does not decode as an image (or is too small for the model), 408 for a body that does not
arrive within ``body_timeout_s``, 429 for a client address with ``max_uploads_per_client`` uploads
already in progress, 503 when ``max_waiting`` fully received requests are already in line. A connection
whose request line and headers do not arrive within ``header_timeout_s`` (counted from the connection,
or from the previous response on a kept-alive one) is answered 408 and closed by the server itself
(:func:`uvicorn_config`): uvicorn has no such limit, and its keep-alive timer restarts on every byte.

The model runs on one thread (:class:`Batcher`): requests for images of one size that arrive within
``batch_window_ms`` of each other are predicted in one call of up to ``max_batch`` images. Decoding,
summaries and ``.npy`` encoding run on a small thread pool, and drawing the overlay (:func:`overlay_png`)
on a thread of its own, so neither holds up the model. Executables are compiled ahead of time per (batch, height, width)
and the ``max_compiled`` most recently used are kept (:class:`CompiledModel`).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import dataclasses
import html
import io
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from deepgaze_jax import plotting
from deepgaze_jax.images import ImageError, ImageTooLargeError, load_image

if TYPE_CHECKING:
    import jax

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
DEFAULT_MAX_PIXELS = 16_000_000
#: Image size compiled at start, (height, width); a new size compiles on its first request (about a second).
DEFAULT_WARMUP_SHAPES = ((768, 1024),)
#: Seconds a client has to send its whole request body (answered 408 after that).
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Uploads one client address may be sending at once (bodies being received); more answer 429.
DEFAULT_MAX_UPLOADS_PER_CLIENT = 8
#: Fully received requests in line (decoding, waiting for or in the model, encoding); more answer 503.
DEFAULT_MAX_WAITING = 32
#: Compiled executables kept, one per (batch, height, width); a DeepGaze I one for 768x1024 holds 12-15 MB.
DEFAULT_MAX_COMPILED = 32
DEFAULT_BATCH_WINDOW_MS = 10.0
DEFAULT_MAX_BATCH = 8


def summarize(log_density: np.ndarray) -> dict:
    """Summary figures of an ``(H, W)`` log density in nats (logsumexp 0)."""
    log_density = np.asarray(log_density, np.float64)
    height, width = log_density.shape
    p = np.exp(log_density)
    y, x = np.unravel_index(int(np.argmax(log_density)), log_density.shape)
    top = np.sort(p.ravel())[::-1][: max(1, round(0.1 * p.size))]
    return {
        "shape": [height, width],
        "units": "nats",
        "entropy_bits": float(-(p * log_density).sum() / np.log(2)),
        "uniform_entropy_bits": float(np.log2(height * width)),
        "peak": {"x": int(x), "y": int(y), "log_density": float(log_density[y, x])},
        "min_log_density": float(log_density.min()),
        "max_log_density": float(log_density.max()),
        "mass_in_top_10_percent": float(top.sum() / p.sum()),
    }


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32), allow_pickle=False)
    return buffer.getvalue()


def overlay_png(image: np.ndarray, log_density: np.ndarray, max_side: int | None = 1024,
                masses: Sequence[float] = plotting.MASSES, heat_alpha: float = 0.55, cmap: str = "inferno") -> bytes:
    """PNG bytes of the page's picture: ``image`` ``(H, W, 3)`` (0..255) with the ``(H, W)`` log density
    (nats) as a translucent heat map and white lines enclosing ``masses`` of the probability, shrunk so
    that the longer side is at most ``max_side`` pixels.

    The look of :func:`deepgaze_jax.plotting.overlay_png`, drawn with PIL and contourpy (matplotlib's
    contouring library) instead of a matplotlib figure: 0.3 s for a 1024x768 photograph against 0.8 s
    (the busy 2-core CPU), which matters where drawing bounds the service's throughput."""
    import contourpy
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    log_density = np.asarray(log_density, np.float32)
    height, width = log_density.shape
    if np.shape(image)[:2] != (height, width):
        raise ValueError(f"image of shape {np.shape(image)} does not match density of shape {log_density.shape}")
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    photo = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8)).convert("RGBA")
    density = Image.fromarray(np.exp(log_density - log_density.max()), "F")  # 1 at the peak
    if size != (width, height):
        photo, density = photo.resize(size, Image.Resampling.LANCZOS), density.resize(size, Image.Resampling.BILINEAR)
    density = np.clip(np.asarray(density), 0.0, 1.0)
    heat = colormaps[cmap](density, bytes=True)
    # Opacity grows with the square root of the density so that broad, low regions still show.
    heat[..., 3] = np.round(255 * heat_alpha * np.sqrt(density)).astype(np.uint8)
    photo.alpha_composite(Image.fromarray(heat, "RGBA"))
    picture = photo.convert("RGB")
    levels = plotting.mass_thresholds(log_density, masses)
    if len(np.unique(levels)) == len(levels) and np.ptp(log_density) > 0:  # a flat map has no lines
        draw = ImageDraw.Draw(picture)
        generator = contourpy.contour_generator(z=log_density)
        for level, mass in zip(levels, masses):
            # contourpy's (x, y) are array indices; pixel (i, j) covers [j, j + 1) x [i, i + 1) in PIL.
            lines = [[((x + 0.5) * scale, (y + 0.5) * scale) for x, y in line] for line in generator.lines(level)]
            for colour, line_width in (("black", 4), ("white", 2)):
                for line in lines:
                    draw.line(line, fill=colour, width=line_width, joint="curve")
            if lines:
                x, y = max(lines, key=len)[0]
                draw.text((x, y), f"{round(100 * mass)}%", fill="white", stroke_width=2, stroke_fill="black",
                          anchor="mm")
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", compress_level=3)
    return buffer.getvalue()


def batch_sizes(count: int, max_batch: int) -> list[int]:
    """Split ``count`` images into calls of powers of two at most ``max_batch`` (largest first), so that
    a size needs at most ``log2(max_batch) + 1`` executables: 7 -> ``[4, 2, 1]``, 8 -> ``[8]``."""
    largest = 1 << (max(1, max_batch).bit_length() - 1)
    sizes = []
    while count > 0:
        size = min(largest, 1 << (count.bit_length() - 1))
        sizes.append(size)
        count -= size
    return sizes


class CompiledModel:
    """The predictor's forward pass, compiled ahead of time per ``(batch, height, width)`` with the
    center bias inside; the ``capacity`` most recently used executables are kept (least recently used
    evicted), so memory for executables is bounded whatever image sizes arrive.

    Each executable belongs to its own ``jax.jit`` of a fresh function, so that evicting it leaves no
    executable in JAX's caches. Call it from one thread at a time.
    """

    def __init__(self, predictor, capacity: int = DEFAULT_MAX_COMPILED):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.predictor, self.capacity = predictor, capacity
        self._executables: collections.OrderedDict[tuple[int, int, int], jax.stages.Compiled] = \
            collections.OrderedDict()
        self.compiles = 0

    def held(self) -> list[tuple[int, int, int]]:
        """The ``(batch, height, width)`` keys of the executables held, least recently used first."""
        return list(self._executables)

    def executable(self, key: tuple[int, int, int]) -> jax.stages.Compiled:
        """The executable for ``key = (batch, height, width)``, compiled if it is not held."""
        if key in self._executables:
            self._executables.move_to_end(key)
            return self._executables[key]
        import jax  # here, not at the top: `deepgaze --help` imports this module
        import jax.numpy as jnp

        predictor = self.predictor

        def forward(backbone, heads, images):
            cb = jnp.broadcast_to(predictor.centerbias(images.shape[1:3]), images.shape[:3])
            if predictor.ensemble:
                return predictor.model.apply_ensemble(backbone, heads, images, cb)
            return predictor.model.apply({"backbone": backbone, "head": heads}, images, cb)

        spec = jax.ShapeDtypeStruct((*key, 3), jnp.float32)
        compiled = jax.jit(forward).lower(predictor.backbone, predictor.heads, spec).compile()
        self.compiles += 1
        self._executables[key] = compiled
        while len(self._executables) > self.capacity:
            self._executables.popitem(last=False)
        return compiled

    def __call__(self, images: np.ndarray, max_batch: int = 1) -> np.ndarray:
        """``(B, H, W, 3)`` images (0..255) -> ``(B, H, W)`` float32 log densities in nats, in calls of
        :func:`batch_sizes` images."""
        images = np.asarray(images, np.float32)
        out, start = [], 0
        for size in batch_sizes(len(images), max_batch):
            chunk = images[start : start + size]
            run = self.executable(chunk.shape[:3])
            out.append(np.asarray(run(self.predictor.backbone, self.predictor.heads, chunk)))
            start += size
        return np.concatenate(out)


@dataclasses.dataclass
class _Job:
    image: np.ndarray
    future: concurrent.futures.Future
    arrival: float


class Batcher:
    """The model's thread: predicts submitted images in batches of one image size.

    The oldest waiting image opens a window of ``window_s`` seconds; when it closes (or ``max_batch``
    images of its size are waiting) those images, oldest first, run in one call. Images of other sizes
    wait for their own batch. ``log`` keeps the last 1000 batches as ``((height, width), size)``;
    ``busy_s`` is the time spent predicting (seconds, all batches).
    """

    def __init__(self, model: CompiledModel, window_s: float = DEFAULT_BATCH_WINDOW_MS / 1e3,
                 max_batch: int = DEFAULT_MAX_BATCH):
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"need max_batch >= 1 and window_s >= 0, got {max_batch} and {window_s}")
        self.model, self.window_s, self.max_batch = model, window_s, max_batch
        self.log: collections.deque[tuple[tuple[int, int], int]] = collections.deque(maxlen=1000)
        self.busy_s = 0.0
        self._pending: dict[tuple[int, int], list[_Job]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="deepgaze-model", daemon=True)
        self._thread.start()

    def submit(self, image: np.ndarray) -> concurrent.futures.Future:
        """Queue an ``(H, W, 3)`` image; the future gives its ``(H, W)`` float32 log density (nats) and
        the size of the batch it ran in."""
        job = _Job(image, concurrent.futures.Future(), time.monotonic())
        with self._cond:
            if self._closed:
                raise RuntimeError("the model thread has stopped")
            self._pending.setdefault(image.shape[:2], []).append(job)
            self._cond.notify()
        return job.future

    def close(self) -> None:
        """Finish the queued work and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=120)

    def _take(self) -> tuple[tuple[int, int], list[_Job]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            key = min(self._pending, key=lambda k: self._pending[k][0].arrival)
            deadline = self._pending[key][0].arrival + self.window_s
            while (len(self._pending[key]) < self.max_batch and not self._closed
                   and (left := deadline - time.monotonic()) > 0):
                self._cond.wait(left)
            jobs, rest = self._pending[key][: self.max_batch], self._pending[key][self.max_batch :]
            if rest:
                self._pending[key] = rest
            else:
                del self._pending[key]
        return key, [job for job in jobs if job.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            key, jobs = taken
            if not jobs:
                continue
            start = time.perf_counter()
            try:
                densities = self.model(np.stack([job.image for job in jobs]), self.max_batch)
                self.busy_s += time.perf_counter() - start
                self.log.append((key, len(jobs)))
                for job, density in zip(jobs, densities):
                    job.future.set_result((density, len(jobs)))
            except Exception as e:  # the requests answer it; the thread goes on
                self.busy_s += time.perf_counter() - start
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)


def create_app(predictor, *, name: str = "deepgaze", max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS,
               warmup_shapes: Sequence[tuple[int, int]] = DEFAULT_WARMUP_SHAPES,
               overlay_max_side: int = 1024, max_waiting: int = DEFAULT_MAX_WAITING,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
               header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
               max_uploads_per_client: int = DEFAULT_MAX_UPLOADS_PER_CLIENT,
               max_compiled: int = DEFAULT_MAX_COMPILED, batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
               max_batch: int = DEFAULT_MAX_BATCH) -> FastAPI:
    """The FastAPI app serving ``predictor`` (a :class:`~deepgaze_jax.predict.Predictor`).

    The model is compiled for ``warmup_shapes`` ((height, width) pairs, every batch size of
    :func:`batch_sizes`) before this returns. Limits: ``max_upload_bytes`` bounds the request body and
    ``max_pixels`` the decoded image (both 413); a body must arrive within ``body_timeout_s`` seconds
    (408), and a request's line and headers within ``header_timeout_s`` (408, then the connection is
    closed; enforced by the server that :func:`uvicorn_config` builds); one client address has at most ``max_uploads_per_client`` uploads in progress (429); with
    ``max_waiting`` fully received requests in line, another is answered 503 at once. At most
    ``max_compiled`` executables are kept. Requests of one image size arriving within
    ``batch_window_ms`` milliseconds run as one batch of at most ``max_batch`` (window 0 and batch 1:
    one at a time). ``overlay_max_side`` caps the overlay picture's longer side (pixels).
    """
    for key, seconds in (("body_timeout_s", body_timeout_s), ("header_timeout_s", header_timeout_s)):
        if not (isinstance(seconds, (int, float)) and 0 < seconds < float("inf")):
            raise ValueError(f"{key} must be a positive number of seconds, got {seconds!r}")
    model = CompiledModel(predictor, max_compiled)
    batcher = Batcher(model, batch_window_ms / 1e3, max_batch)
    cpu = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="deepgaze-cpu")
    draw = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepgaze-draw")
    members = _members(predictor)
    # Counters change on the event loop thread only: no lock needed.
    stats = {"predicted": 0, "refused": 0, "in_line": 0, "receiving": 0}
    uploads: collections.Counter[str] = collections.Counter()

    def warm() -> None:
        for height, width in warmup_shapes:
            for size in sorted(set(batch_sizes(2 * max_batch - 1, max_batch))):
                model.executable((size, height, width))

    warm()  # before any request: the model thread is idle

    def decode(data: bytes, filename: str) -> np.ndarray:
        try:
            return load_image(data, max_pixels=max_pixels)
        except ImageTooLargeError as e:
            raise HTTPException(413, str(e).replace("<bytes>", filename, 1)) from None
        except ImageError as e:
            raise HTTPException(422, str(e).replace("<bytes>", filename, 1)) from None

    def describe(density: np.ndarray, include_density: bool) -> dict:
        result = {"model": name, "summary": summarize(density)}
        if include_density:
            result["log_density_npy_b64"] = base64.b64encode(_npy_bytes(density)).decode("ascii")
        return result

    def overlay_b64(image: np.ndarray, density: np.ndarray) -> str:
        return base64.b64encode(overlay_png(image, density, max_side=overlay_max_side)).decode("ascii")

    async def receive(request: Request) -> tuple[bytes, str]:
        client = request.client.host if request.client else "unknown"
        if uploads[client] >= max_uploads_per_client:
            raise HTTPException(429, f"{client} has {uploads[client]} uploads in progress, the limit; "
                                     "wait for them to finish", headers={"Connection": "close"})
        uploads[client] += 1
        stats["receiving"] += 1
        try:
            async with asyncio.timeout(body_timeout_s):
                return await _image_bytes(request, max_upload_bytes)
        except TimeoutError:
            raise HTTPException(408, f"the request body did not arrive within {body_timeout_s:g} s",
                                headers={"Connection": "close"}) from None
        finally:
            stats["receiving"] -= 1
            uploads[client] -= 1
            if not uploads[client]:
                del uploads[client]

    async def run(request: Request, include_density: bool, draw_overlay: bool, npy: bool):
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            data, filename = await receive(request)
            if stats["in_line"] >= max_waiting:
                raise HTTPException(503, f"busy: {stats['in_line']} requests are waiting; try again shortly")
        except HTTPException:
            stats["refused"] += 1
            raise
        except ClientDisconnect:
            client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            log.warning("%s disconnected before its upload was complete (%s %s)", client, request.method,
                        request.url.path)
            stats["refused"] += 1
            return None
        stats["in_line"] += 1
        try:
            received = time.perf_counter()
            image = await loop.run_in_executor(cpu, decode, data, filename)
            decoded = time.perf_counter()
            try:
                density, batch = await asyncio.wrap_future(batcher.submit(image))
            except ValueError as e:  # smaller than the backbone's receptive field
                raise HTTPException(422, f"{filename}: {e}") from None
            predicted = time.perf_counter()
            if npy:
                answer = await loop.run_in_executor(cpu, _npy_bytes, density)
            else:
                pending = loop.run_in_executor(draw, overlay_b64, image, density) if draw_overlay else None
                answer = await loop.run_in_executor(cpu, describe, density, include_density)
                if pending is not None:
                    answer["overlay_png_b64"] = await pending
            timings = {"receive": received - start, "decode": decoded - received,
                       "queue_and_predict": predicted - decoded, "encode_and_draw": time.perf_counter() - predicted}
        except HTTPException:
            stats["refused"] += 1
            raise
        finally:
            stats["in_line"] -= 1
        stats["predicted"] += 1
        return answer, batch, {k: round(1e3 * v, 2) for k, v in timings.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()
        cpu.shutdown(wait=True)
        draw.shutdown(wait=True)

    app = FastAPI(title="deepgaze-jax", summary="Predict where people look in an image.", lifespan=lifespan)
    app.state.model, app.state.batcher = model, batcher
    app.state.header_timeout_s = header_timeout_s

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.replace("{{name}}", html.escape(name)).replace("{{max_mb}}", f"{max_upload_bytes / 2**20:g}")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": name, "members": members, "images_predicted": stats["predicted"],
                "uploads_refused": stats["refused"], "requests_in_line": stats["in_line"],
                "uploads_receiving": stats["receiving"], "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels, "body_timeout_s": body_timeout_s, "header_timeout_s": header_timeout_s,
                "max_uploads_per_client": max_uploads_per_client, "max_waiting": max_waiting,
                "max_compiled": max_compiled, "compiled": [list(k) for k in model.held()],
                "batch_window_ms": batch_window_ms, "max_batch": max_batch,
                "model_busy_s": round(batcher.busy_s, 3),
                "batches": [{"shape": list(shape), "size": size} for shape, size in list(batcher.log)[-100:]]}

    @app.post("/predict")
    async def predict(request: Request, include_density: bool = True, overlay: bool = True) -> Response:
        """Predict one uploaded image; JSON with the summary, overlay PNG and log density (base64)."""
        done = await run(request, include_density, overlay, npy=False)
        if done is None:
            return Response(status_code=400)  # nobody reads it: the client has gone
        result, batch, timings = done
        return JSONResponse({**result, "batch_size": batch, "timings_ms": timings})

    @app.post("/predict.npy")
    async def predict_npy(request: Request) -> Response:
        """Predict one uploaded image; the ``(H, W)`` float32 log density in nats as ``.npy`` bytes."""
        done = await run(request, include_density=False, draw_overlay=False, npy=True)
        if done is None:
            return Response(status_code=400)  # nobody reads it: the client has gone
        data, batch, _ = done
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="log_density.npy"',
                                 "X-Batch-Size": str(batch)})

    return app


def _members(predictor) -> int:
    if not predictor.ensemble:
        return 1
    import jax

    return int(jax.tree.leaves(predictor.heads)[0].shape[0])


def _acceptable(content_type: str) -> bool:
    return content_type.startswith("image/") or content_type == "application/octet-stream"


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, f"bad Content-Length header {declared!r}")
        if int(declared) > limit:
            raise HTTPException(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
    return bytes(body)

async def _image_bytes(request: Request, limit: int) -> tuple[bytes, str]:
    """The uploaded file's bytes and name (``upload`` for a raw body), from a multipart form (field
    ``image``) or a raw image body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data" and not _acceptable(content_type):
        raise HTTPException(415, f"content type {content_type or '(none)'!r} is not accepted: send "
                                 "multipart/form-data with an 'image' file, or an image/* body")
    body = await _read_body(request, limit)
    if content_type != "multipart/form-data":
        if not body:
            raise HTTPException(400, "empty upload (the request body has no bytes)")
        return body, "upload"

    async def replay() -> dict:  # the body was read (within the limit) above; parse it from memory
        return {"type": "http.request", "body": body, "more_body": False}

    async with Request(request.scope, replay).form(max_files=1, max_fields=8) as form:
        upload = form.get("image")
        if upload is None:
            upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, "no file in the form: send the image in a field named 'image'")
        declared = (upload.content_type or "").split(";")[0].strip().lower()
        if declared and not _acceptable(declared):
            raise HTTPException(415, f"uploaded file {upload.filename!r} has content type {declared!r}, "
                                     "not an image")
        data = await upload.read()
    if not data:
        raise HTTPException(400, f"empty upload ({upload.filename!r} has no bytes)")
    return data, upload.filename or "upload"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one); raises OSError if that fails.

    It listens at once, so clients that connect before the server loop starts wait instead of
    being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


_HEADER_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                            b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


def header_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol with a deadline for the request line and headers.

    The deadline starts when the connection opens and again after each response; it is cancelled once
    a request's headers are parsed (the body has its own limit in the app). On expiry the connection is
    closed, however slowly the client was still sending: with a 408 if part of a request had arrived,
    silently if none had (an idle kept-alive connection, as uvicorn's keep-alive timeout does).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = b'{"detail":"the request headers did not arrive within %g s"}' % seconds

    class HeaderDeadlineProtocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None
        _started = False  # bytes of a request arrived since the deadline was armed

        def _arm(self) -> None:
            self._disarm()
            self._started = False
            self._header_deadline = self.loop.call_later(seconds, self._headers_overdue)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_overdue(self) -> None:
            self._header_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._started:
                    self.transport.write(_HEADER_TIMEOUT_RESPONSE % (len(body), body))
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            self._started = self._started or bool(data)
            super().data_received(data)

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


def uvicorn_config(app):
    """The uvicorn configuration serving ``app`` (from :func:`create_app`): quiet logs, and the header
    deadline of ``app.state.header_timeout_s`` (:func:`header_deadline_protocol`)."""
    import uvicorn

    seconds = getattr(app.state, "header_timeout_s", DEFAULT_HEADER_TIMEOUT_S)
    return uvicorn.Config(app, log_level="warning", http=header_deadline_protocol(seconds))


def run(app, sock: socket.socket) -> None:
    """Serve ``app`` with uvicorn on a bound socket until interrupted."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app)).run(sockets=[sock])


class BackgroundServer:
    """Run an app with uvicorn on a thread, on a free port of ``host`` (for tests and benchmarks).

    Use as a context manager, or call :meth:`stop`. ``url`` is ``http://host:port``.
    """

    def __init__(self, app, host: str = "127.0.0.1", timeout: float = 60.0):
        import uvicorn

        sock = bind(host, 0)
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(app))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DeepGaze: where do people look?</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  #drop { border: 2px dashed #999; border-radius: 8px; padding: 1.2rem; text-align: center; }
  #drop.over { background: #eef; }
  #status { color: #555; min-height: 1.3em; }
  #error { color: #b00020; font-weight: 600; min-height: 1.3em; }
  #overlay { max-width: 100%; display: block; margin-top: 1rem; border-radius: 4px; }
  table { border-collapse: collapse; margin-top: 1rem; }
  td { padding: 0.15rem 0.8rem 0.15rem 0; }
  td:first-child { color: #555; }
</style>
</head>
<body>
<h1>DeepGaze: where do people look?</h1>
<p>Upload a photograph (up to {{max_mb}} MiB). The model <code>{{name}}</code> predicts a probability density
of where people fixate; the lines enclose 25, 50 and 75&nbsp;% of it. Nothing leaves this machine.</p>
<div id="drop">
  <input type="file" id="file" accept="image/*">
  <div>or drop an image here</div>
</div>
<p id="status"></p>
<p id="error" role="alert"></p>
<img id="overlay" alt="prediction overlay" hidden>
<table id="summary" hidden></table>
<script>
const file = document.getElementById("file"), drop = document.getElementById("drop");
const statusLine = document.getElementById("status"), errorLine = document.getElementById("error");
const overlay = document.getElementById("overlay"), summary = document.getElementById("summary");

function row(name, value) {
  const tr = summary.insertRow(), a = tr.insertCell(), b = tr.insertCell();
  a.textContent = name; b.textContent = value;
}

async function upload(f) {
  errorLine.textContent = ""; statusLine.textContent = "predicting " + f.name + " ...";
  overlay.hidden = true; summary.hidden = true; overlay.removeAttribute("data-done");
  const form = new FormData(); form.append("image", f, f.name);
  const t0 = performance.now();
  let answer, body;
  try {
    answer = await fetch("predict?include_density=false", { method: "POST", body: form });
    body = await answer.json();
  } catch (e) {
    statusLine.textContent = ""; errorLine.textContent = "request failed: " + e; return;
  }
  if (!answer.ok) {
    statusLine.textContent = ""; errorLine.textContent = f.name + ": " + (body.detail || answer.statusText); return;
  }
  const s = body.summary;
  overlay.onload = () => overlay.setAttribute("data-done", "1");
  overlay.src = "data:image/png;base64," + body.overlay_png_b64;
  overlay.hidden = false;
  summary.innerHTML = "";
  row("image", s.shape[1] + " x " + s.shape[0] + " px");
  row("entropy", s.entropy_bits.toFixed(2) + " bits (uniform: " + s.uniform_entropy_bits.toFixed(2) + ")");
  row("peak", "x " + s.peak.x + ", y " + s.peak.y);
  row("mass in the top 10 % of pixels", (100 * s.mass_in_top_10_percent).toFixed(1) + " %");
  summary.hidden = false;
  statusLine.textContent = f.name + ": done in " + ((performance.now() - t0) / 1000).toFixed(2) + " s";
}

file.addEventListener("change", () => { if (file.files.length) upload(file.files[0]); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
