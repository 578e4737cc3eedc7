"""The web service over real HTTP on loopback: the API, bad uploads, a bounded load test, the page in
headless Chromium."""

import base64
import collections
import concurrent.futures
import contextlib
import gc
import importlib.util
import io
import logging
import os
import pathlib
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import weakref

import numpy as np
import pytest
import scipy.special
from PIL import Image

from deepgaze_jax.cli import sample_image
from deepgaze_jax.images import load_image
from deepgaze_jax.predict import load_predictor
from deepgaze_jax.serve import BackgroundServer, CompiledModel, batch_sizes, create_app, overlay_png, summarize
from tests import image_cases
from tests.conftest import REPO_ROOT

httpx = pytest.importorskip("httpx")

MAX_UPLOAD = 2 * 2**20


@pytest.fixture(scope="module")
def server(predictor_file):
    app = create_app(load_predictor(path=predictor_file), name="test-heads", max_upload_bytes=MAX_UPLOAD,
                     warmup_shapes=[image_cases.SIZE])
    with BackgroundServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def jpeg(size=image_cases.SIZE, seed=0) -> bytes:
    return image_cases.encode(Image.fromarray(image_cases.photo(size, seed)), "JPEG")


def decode_density(b64: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(b64)), allow_pickle=False)


def test_summary_figures_of_a_hand_made_density():
    p = np.array([[0.5, 0.25], [0.125, 0.125]])
    s = summarize(np.log(p))
    assert s["shape"] == [2, 2] and s["peak"] == {"x": 0, "y": 0, "log_density": pytest.approx(np.log(0.5))}
    assert s["entropy_bits"] == pytest.approx(1.75) and s["uniform_entropy_bits"] == pytest.approx(2.0)
    assert s["mass_in_top_10_percent"] == pytest.approx(0.5)


def test_the_overlay_shows_the_heat_map_and_lines_around_the_mass():
    height, width, sigma = 120, 160, 12.0
    yy, xx = np.mgrid[:height, :width] + 0.5  # pixel centres
    log_density = -((yy - 60) ** 2 + (xx - 80) ** 2) / (2 * sigma**2)
    log_density -= scipy.special.logsumexp(log_density)
    gray = np.full((height, width, 3), 128, np.uint8)
    picture = np.asarray(Image.open(io.BytesIO(overlay_png(gray, log_density, max_side=None)))).astype(int)
    assert picture.shape == (height, width, 3)
    assert (picture[:5, :5] == 128).all() and (picture[60, 80] != 128).any()  # tinted at the peak only
    # An isotropic Gaussian holds mass m within radius sigma * sqrt(-2 ln(1 - m)): 9.1, 14.1, 20.0 px.
    white = np.flatnonzero((picture[60] >= 250).all(axis=1)) + 0.5
    for mass in (0.25, 0.5, 0.75):
        radius = sigma * np.sqrt(-2 * np.log(1 - mass))
        assert np.abs(np.abs(white - 80) - radius).min() < 1.5, (mass, white)
    assert Image.open(io.BytesIO(overlay_png(gray, log_density, max_side=80))).size == (80, 60)
    flat = np.full((height, width), -np.log(height * width))
    assert Image.open(io.BytesIO(overlay_png(gray, flat, max_side=None))).size == (width, height)


def test_it_binds_to_loopback_and_answers_health(server, client):
    assert server.url.startswith("http://127.0.0.1:")
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "test-heads" and health["members"] == 2


def test_the_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and 'id="overlay"' in page.text
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text


def test_predict_a_photograph(client, mit1003_dir):
    path = sorted((mit1003_dir / "STIMULI").glob("*.jpeg"))[0]
    answer = client.post("/predict", files={"image": (path.name, path.read_bytes(), "image/jpeg")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    with Image.open(path) as photo:
        shape = [photo.height, photo.width]
    assert body["summary"]["shape"] == shape
    density = decode_density(body["log_density_npy_b64"])
    assert density.shape == tuple(shape) and density.dtype == np.float32
    assert abs(float(scipy.special.logsumexp(density))) < 1e-3
    assert 0 < body["summary"]["entropy_bits"] <= body["summary"]["uniform_entropy_bits"] + 1e-6
    with Image.open(io.BytesIO(base64.b64decode(body["overlay_png_b64"]))) as overlay:
        assert overlay.format == "PNG" and max(overlay.size) == 1024  # shrunk for display
    # The raw .npy endpoint answers the same density for the same bytes (raw body this time).
    raw = client.post("/predict.npy", content=path.read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200
    np.testing.assert_allclose(np.load(io.BytesIO(raw.content)), density, atol=1e-5)


def test_odd_images_are_converted(client):
    for name, data in image_cases.odd_but_valid().items():
        answer = client.post("/predict?include_density=false&overlay=false", files={"image": (name, data, "image/png")})
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["summary"]["shape"] == list(image_cases.SIZE)
        assert "log_density_npy_b64" not in answer.json() and "overlay_png_b64" not in answer.json()


def test_bad_uploads_get_a_4xx_with_a_reason_and_the_service_keeps_serving(client):
    cases = [(name, {"files": {"image": (name, data, "image/jpeg")}}, 413 if "bomb" in name else 422, reason)
             for name, (data, reason) in image_cases.bad().items()]
    cases += [
        ("empty file", {"files": {"image": ("empty.png", b"", "image/png")}}, 400, "empty"),
        ("empty body", {"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty"),
        ("text body", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
        ("json body", {"json": {"image": "x"}}, 415, "application/json"),
        ("text file", {"files": {"image": ("a.txt", b"hello", "text/plain")}}, 415, "a.txt"),
        ("another field name", {"files": {"picture": ("a.jpg", jpeg(), "image/jpeg")}}, 200, None),
        ("form without a file", {"content": b'--B\r\nContent-Disposition: form-data; name="image"\r\n\r\nx\r\n--B--\r\n',
                                 "headers": {"content-type": "multipart/form-data; boundary=B"}}, 400, "no file"),
        ("malformed form", {"content": b"junk", "headers": {"content-type": "multipart/form-data"}}, 400, None),
        ("too large", {"content": b"\0" * (MAX_UPLOAD + 1), "headers": {"content-type": "image/png"}}, 413, "limit"),
    ]
    for label, request, status, reason in cases:
        answer = client.post("/predict", **request)
        assert answer.status_code == status, (label, answer.status_code, answer.text)
        if status != 200:
            detail = answer.json()["detail"]
            assert isinstance(detail, str) and (reason is None or reason in detail), (label, detail)
    assert client.get("/health").json()["status"] == "ok"
    good = client.post("/predict", files={"image": ("good.jpg", jpeg(), "image/jpeg")})
    assert good.status_code == 200 and good.json()["summary"]["shape"] == list(image_cases.SIZE)


def test_the_pixel_limit_answers_413(predictor_file):
    app = create_app(load_predictor(path=predictor_file), max_pixels=image_cases.SIZE[0] * image_cases.SIZE[1] - 1,
                     warmup_shapes=[])
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        answer = client.post("/predict", files={"image": ("big.jpg", jpeg(), "image/jpeg")})
    assert answer.status_code == 413 and "exceeds the limit" in answer.json()["detail"]


class HeldPredictor:
    """A predictor whose center bias waits until released: the first request of an image size, which
    compiles the model (and so evaluates the center bias) on the model thread, is held there."""

    def __init__(self, predictor):
        self.predictor, self.release = predictor, threading.Event()

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def centerbias(self, shape):
        assert self.release.wait(timeout=120)
        return self.predictor.centerbias(shape)


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_full_line_is_answered_503_at_once(predictor_file):
    held = HeldPredictor(load_predictor(path=predictor_file))
    app = create_app(held, max_waiting=1, warmup_shapes=[])
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as client, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/predict", files={"image": ("a.jpg", jpeg(), "image/jpeg")})
        wait_for(lambda: client.get("/health").json()["requests_in_line"] >= 1)
        second = client.post("/predict", files={"image": ("b.jpg", jpeg(), "image/jpeg")})
        assert second.status_code == 503 and "busy" in second.json()["detail"]
        held.release.set()
        assert first.result(timeout=120).status_code == 200


SLOW_HEAD = (b"POST /predict.npy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
             b"Content-Length: 100000\r\n\r\n\xff\xd8")  # 2 bytes of a declared 100 kB body


def status_of(sock: socket.socket) -> int:
    return int(sock.recv(4096).split(b" ", 2)[1])


def test_slow_uploads_neither_lock_the_service_nor_stay_open(predictor_file):
    # 64 uploads from 127.0.0.1 that send their headers and 2 bytes; a real request from 127.0.0.2
    # (also loopback) must be answered while they hang, and they must be closed in bounded time.
    app = create_app(load_predictor(path=predictor_file), warmup_shapes=[image_cases.SIZE],
                     body_timeout_s=6, max_uploads_per_client=8, max_waiting=4)
    with BackgroundServer(app) as server, contextlib.ExitStack() as stack:
        port = int(server.url.rsplit(":", 1)[1])
        slow = []
        for _ in range(64):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
            sock.sendall(SLOW_HEAD)
            slow.append(sock)
        wait_for(lambda: len(select.select(slow, [], [], 0)[0]) == 56, timeout=30)  # 429 at once
        refused = select.select(slow, [], [], 0)[0]
        assert collections.Counter(status_of(sock) for sock in refused) == {429: 56}
        hanging = [sock for sock in slow if sock not in refused]
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=server.url, timeout=60, transport=other) as client:
            assert client.get("/health").json()["uploads_receiving"] == 8
            answer = client.post("/predict.npy", content=jpeg(), headers={"content-type": "image/jpeg"})
            assert answer.status_code == 200, answer.text
            assert np.load(io.BytesIO(answer.content)).shape == image_cases.SIZE
            assert select.select(hanging, [], [], 0)[0] == []  # answered while the 8 still hang
        assert [status_of(sock) for sock in hanging] == [408] * 8


SLOW_HEADERS = b"POST /predict.npy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ima"


def test_slowly_sent_headers_are_cut_off_and_never_lock_the_service(predictor_file):
    # 64 connections trickle a request's headers one byte a second (uvicorn's keep-alive timer restarts
    # on every byte, so only the header deadline ends them); 8 more open and send nothing. A real
    # request is answered meanwhile; every slow one is closed within the deadline, with a 408 if it
    # had started a request.
    app = create_app(load_predictor(path=predictor_file), warmup_shapes=[image_cases.SIZE],
                     header_timeout_s=3)
    with BackgroundServer(app) as server, contextlib.ExitStack() as stack:
        port = int(server.url.rsplit(":", 1)[1])
        opened = time.monotonic()
        slow = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30)) for _ in range(64)]
        silent = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30)) for _ in range(8)]
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answer = client.post("/predict.npy", content=jpeg(), headers={"content-type": "image/jpeg"})
            assert answer.status_code == 200, answer.text
        answers: dict[socket.socket, bytes] = {}
        for i in range(60):
            for sock in slow:
                if sock not in answers:
                    with contextlib.suppress(OSError):
                        sock.sendall(SLOW_HEADERS[i % len(SLOW_HEADERS):][:1])
            for sock in select.select([s for s in slow + silent if s not in answers], [], [], 1.0)[0]:
                answers[sock] = sock.recv(4096)
            if len(answers) == len(slow) + len(silent):
                break
        took = time.monotonic() - opened
        assert len(answers) == 72, f"{72 - len(answers)} slow connections still open after {took:.0f} s"
        assert took < 20
        assert {answers[sock].split(b" ", 2)[1] for sock in slow} == {b"408"}
        assert b"did not arrive within 3 s" in answers[slow[0]]
        assert [answers[sock] for sock in silent] == [b""] * 8  # closed without a word


@pytest.mark.parametrize("key", ["body_timeout_s", "header_timeout_s"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_timeouts_must_be_positive_and_finite(predictor_file, key, value):
    with pytest.raises(ValueError, match=f"{key} must be a positive number of seconds"):
        create_app(load_predictor(path=predictor_file), warmup_shapes=[], **{key: value})


def test_a_client_that_disconnects_mid_upload_is_one_log_line(server, client, caplog):
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)  # where uvicorn logs an app's traceback; it does not propagate
    try:
        with caplog.at_level(logging.INFO):
            port = int(server.url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(SLOW_HEAD)
                wait_for(lambda: client.get("/health").json()["uploads_receiving"] == 1)
            wait_for(lambda: client.get("/health").json()["uploads_receiving"] == 0)
            wait_for(lambda: any("disconnected" in r.getMessage() for r in caplog.records), timeout=10)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "127.0.0.1" in lines[0], lines
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_batch_sizes_are_powers_of_two_at_most_the_largest():
    assert batch_sizes(7, 8) == [4, 2, 1] and batch_sizes(8, 8) == [8] and batch_sizes(11, 8) == [8, 2, 1]
    assert batch_sizes(5, 6) == [4, 1] and batch_sizes(3, 1) == [1, 1, 1] and batch_sizes(0, 8) == []


def test_the_compile_cache_keeps_only_the_most_recently_used_sizes(predictor_file):
    model = CompiledModel(load_predictor(path=predictor_file), capacity=2)
    sizes = [(72, 96), (80, 96), (88, 96)]  # N + 1 = 3 sizes
    executables = []
    for height, width in sizes:
        assert model(np.zeros((1, height, width, 3), np.uint8)).shape == (1, height, width)
        executables.append(weakref.ref(model.executable((1, height, width))))
    assert model.held() == [(1, 80, 96), (1, 88, 96)] and model.compiles == 3
    gc.collect()
    assert executables[0]() is None and executables[1]() is not None  # the evicted one is freed
    model(np.zeros((1, 80, 96, 3), np.uint8))  # a held size: used again, not compiled again
    assert model.compiles == 3 and model.held() == [(1, 88, 96), (1, 80, 96)]
    model(np.zeros((1, 72, 96, 3), np.uint8))
    assert model.compiles == 4 and model.held() == [(1, 80, 96), (1, 72, 96)]


def test_the_service_holds_at_most_max_compiled_executables(predictor_file):
    app = create_app(load_predictor(path=predictor_file), warmup_shapes=[], max_compiled=2)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        for size in [(72, 96), (80, 96), (88, 96)]:
            answer = client.post("/predict.npy", content=jpeg(size), headers={"content-type": "image/jpeg"})
            assert answer.status_code == 200
        assert client.get("/health").json()["compiled"] == [[1, 80, 96], [1, 88, 96]]


def test_requests_of_one_size_are_batched_and_equal_single_predictions(predictor_file):
    predictor = load_predictor(path=predictor_file)
    other = (image_cases.SIZE[0] + 8, image_cases.SIZE[1] + 16)
    # A long window: the 4 requests of one size fill a batch at once, the 2 of another wait for it.
    app = create_app(predictor, warmup_shapes=[image_cases.SIZE, other], batch_window_ms=3000, max_batch=4)
    uploads = [jpeg(seed=i) for i in range(4)] + [jpeg(other, seed=10 + i) for i in range(2)]
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as client, \
            concurrent.futures.ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(lambda data: client.post("/predict.npy", content=data,
                                                         headers={"content-type": "image/jpeg"}), uploads))
        batches = client.get("/health").json()["batches"]
    assert sorted((tuple(b["shape"]), b["size"]) for b in batches) == [(image_cases.SIZE, 4), (other, 2)]
    for i, (data, answer) in enumerate(zip(uploads, answers)):
        assert answer.status_code == 200 and answer.headers["x-batch-size"] == ("4" if i < 4 else "2")
        # float32: XLA:CPU orders the convolutions' sums differently per batch size, and the center
        # bias is fused into the served program; about 4e-6 nats apart on 768x1024 photographs.
        np.testing.assert_allclose(np.load(io.BytesIO(answer.content)), predictor.predict(load_image(data)),
                                   rtol=0, atol=5e-5)


def load_script():
    spec = importlib.util.spec_from_file_location("serve_load", REPO_ROOT / "experiments" / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_concurrent_load_on_loopback(server):
    script = load_script()
    # Fewer requests than the committed run (experiments/results/serve_load.json: 200, 8 at a time).
    result = script.run_load(server.url, requests=64, concurrency=8, size=image_cases.SIZE)
    assert result["errors"] == 0, result["first_errors"]
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]


def test_the_serve_command_serves_until_stopped(predictor_file):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "deepgaze_jax.cli", "serve", "--heads", str(predictor_file),
                                "--port", "0", "--header-timeout", "7"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline, url = time.monotonic() + 240, None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", process.stdout.readline())
            url = found and found.group(1)
        assert url, f"no 'serving on' line; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        health = httpx.get(url + "health", timeout=60).json()
        assert health["status"] == "ok" and health["model"] == str(predictor_file)
        assert health["header_timeout_s"] == 7 and health["body_timeout_s"] == 30
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_serve_command_on_a_taken_port_exits_1_with_one_line(predictor_file):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "deepgaze_jax.cli", "serve", "--heads", str(predictor_file),
                               "--port", str(port)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"deepgaze: error: cannot serve on 127.0.0.1:{port} (Address already in use)"


# --- the page in a real browser ------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    # Never let Selenium Manager download a browser or a driver: both paths are given explicitly.
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,1300",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_shows_the_overlay_after_an_upload(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "grace_hopper.jpg"
    shutil.copy(sample_image(), photo)
    browser.get(server.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "overlay").get_attribute("data-done") or d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    overlay = browser.find_element(By.ID, "overlay")
    assert overlay.is_displayed()
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 512
    assert "entropy" in browser.find_element(By.ID, "summary").text
    screenshot = pathlib.Path(os.environ.get("DEEPGAZE_SCREENSHOT", tmp_path / "page.png"))
    browser.save_screenshot(str(screenshot))

    # An upload the service refuses shows its reason on the page.
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not an image")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text)
    assert "not an image" in browser.find_element(By.ID, "error").text


def test_a_phone_photo_is_predicted_upright_as_its_exif_orientation_says(client):
    tagged, plain = image_cases.exif_oriented_jpeg(8)
    turned = image_cases.encode(Image.open(io.BytesIO(plain)).transpose(Image.Transpose.ROTATE_90))
    densities = []
    for data, kind in ((tagged, "image/jpeg"), (turned, "image/png")):
        answer = client.post("/predict.npy", content=data, headers={"content-type": kind})
        assert answer.status_code == 200, answer.text
        densities.append(np.load(io.BytesIO(answer.content)))
    assert densities[0].shape == image_cases.SIZE[::-1]
    np.testing.assert_array_equal(densities[0], densities[1])
