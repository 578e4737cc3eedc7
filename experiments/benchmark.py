"""Speed of deepgaze-jax against the same models in PyTorch, on one machine, same shapes and weights.

    PYTHONPATH=. python experiments/benchmark.py            # CPU: batch 1 and 8 (GPU: 1, 8, 32)
    PYTHONPATH=. python experiments/benchmark.py --quick    # smoke run: small images, batch 1, few repeats

Sections (each for DeepGaze I (AlexNet) and DeepGaze II (VGG-19, random weights), 1024x768 images):

- ``inference``: image and center bias -> log density. Ours: ``jax.jit`` of ``DeepGaze.apply``, float32
  and bfloat16 (``dtype`` of the backbone; the head stays float32). PyTorch: ``tests/torch_deepgaze.py``
  (structured as the reference: forward hooks, 1x1 readout, nearest resizes, conv blur, logsumexp),
  channels_last, eager and ``torch.compile``, float32 and bfloat16 (``torch.autocast`` on the backbone).
- ``head``: everything after the backbone (readout, resizes, blur, center bias, logsumexp), float32.
- ``train_cached``: one Adam step on the readout from precomputed features (ours: the
  ``deepgaze_jax.train.Trainer`` step; PyTorch: forward, backward, ``torch.optim.Adam`` step), float32.
- ``train_uncached``: the same step with the frozen backbone's forward pass included (ours: one jit of
  ``DeepGaze.features`` and the Trainer step), float32.

Timing: every configuration is compiled (JAX ahead of time; ``torch.compile`` by its first call) and run
once before timing (warm-up, excluded; ``torch.compile``'s compiling call is that run in groups whose
calls take over ``--heavy-seconds``); then the configurations of one (section, model, batch) group run
interleaved, round after round (the order rotating each round), at least ``--min-rounds`` rounds and
more where calls are short (``--target-seconds``), and each row reports the median and the spread
(quartiles, min, max) of its rounds. Inputs are deterministic (seeded). Model
FLOPs are counted analytically per layer (:func:`model_flops`), checked against XLA's
``cost_analysis``; the peak of the machine is estimated from its cores, clock and vector units
(:func:`cpu_peak`), the assumptions written into the results. Every configuration runs in
``try``/``except``: a failure becomes a row with its error instead of ending the run.

Results: ``--out`` (JSON, default ``experiments/results/benchmark.json``, ``benchmark_gpu.json`` on a GPU;
with ``--quick`` ``.cache/benchmark_quick.json``, not committed) and, except with ``--quick``, the table
inside ``experiments/BENCHMARKS.md`` between the markers of the device (``<!-- results:cpu:start -->``
... ``end``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]

SECTIONS = ("inference", "head", "train_cached", "train_uncached")
MODELS = ("deepgaze1", "deepgaze2_vgg19")  # the default; deepgaze2_vgg16 (the shipped one) on request
KNOWN_MODELS = (*MODELS, "deepgaze2_vgg16")
MODEL_TITLES = {"deepgaze1": "DeepGaze I (AlexNet)", "deepgaze2_vgg19": "DeepGaze II (VGG-19)",
                "deepgaze2_vgg16": "DeepGaze II (VGG-16)"}
# Dense peak FLOP/s of GPUs by name (vendor datasheets; SXM parts): float32 (no tensor cores), TF32
# and bfloat16 tensor cores.
GPU_PEAKS = {
    "H200": {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12},
    "H100": {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12},
    "A100": {"float32": 19.5e12, "tf32": 156e12, "bfloat16": 312e12},
    "L4": {"float32": 30.3e12, "tf32": 60e12, "bfloat16": 121e12},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 192x256 images, batch 1, 2 rounds, no BENCHMARKS.md update")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--device-kind", default=None, help="label of the machine in the results")
    parser.add_argument("--size", default=None, help="image HxW (default 768x1024; --quick 192x256)")
    parser.add_argument("--batches", default=None, help="comma-separated (default CPU 1,8; GPU 1,8,32; --quick 1)")
    parser.add_argument("--train-uncached-batches", default=None,
                        help="batches of the train_uncached section (default as --batches; on a CPU, '1' saves "
                             "2-4 min of VGG-19 forward passes at batch 8)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--conv-impls", default="xla",
                        help="comma-separated backbone convolutions of ours (deepgaze_jax.winograd.IMPLS: xla, "
                             "winograd2, winograd4, auto) in the inference and train_uncached sections; rows "
                             "other than xla have mode jit-<impl>")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU cores for both frameworks (process affinity + torch threads); default all")
    parser.add_argument("--min-rounds", type=int, default=None, help="timed rounds at least (default 3; --quick 2)")
    parser.add_argument("--max-rounds", type=int, default=20)
    parser.add_argument("--heavy-seconds", type=float, default=2.0,
                        help="in groups whose calls take longer, torch.compile's compiling call is its only "
                             "warm-up (otherwise one more call)")
    parser.add_argument("--target-seconds", type=float, default=None,
                        help="timed seconds per configuration that set the rounds of a group "
                             "(default CPU 8, GPU 5; --quick 0)")
    parser.add_argument("--clock-ghz", type=float, default=None,
                        help="CPU clock for the peak (default: measured, else /proc/cpuinfo's)")
    parser.add_argument("--fixations", type=int, default=128, help="fixations per image in the training steps")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--markdown", type=pathlib.Path, default=None,
                        help="file whose result block to replace (default experiments/BENCHMARKS.md; "
                             "--quick: none)")
    return parser.parse_args(argv)


# --- machine ---------------------------------------------------------------------------------


def cpu_peak(cores: int, clock_ghz: float | None = None) -> dict:
    """Peak FLOP/s of ``cores`` cores: cores x clock x FLOPs per cycle, with the assumption in words.

    FLOPs per cycle from the vector flags: two FMA pipes of the widest vector a core executes at full
    rate (float32 lanes x 2 for multiply-add x 2 pipes). AMD Zen 4 (family 25 with AVX-512) runs
    AVX-512 on 256-bit pipes, so 32; AMD Zen 5 (family 26) 64; Intel with AVX-512 64 (two 512-bit FMA
    units; parts with one have half); AVX2+FMA 32. bfloat16: twice float32 where ``avx512_bf16``
    (VDPBF16PS: two products per float32 lane) is present, else the float32 peak. The clock is
    ``clock_ghz``, else measured (:func:`measure_clock_ghz`), else /proc/cpuinfo's (on a VM the nominal
    one, which cores that boost beat).
    """
    from deepgaze_jax.provenance import cpu_info

    info = cpu_info()
    flags, vendor, family = info["flags"], info["vendor"], info["family"]
    if "avx512f" in flags and vendor == "AuthenticAMD":
        if (family or 0) >= 26:
            per_cycle, why = 64, "Zen 5: 2 x 512-bit FMA"
        else:
            per_cycle, why = 32, "Zen 4: AVX-512 on 2 x 256-bit FMA pipes"
    elif "avx512f" in flags:
        per_cycle, why = 64, "AVX-512: 2 x 512-bit FMA units assumed"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, why = 32, "AVX2: 2 x 256-bit FMA units"
    elif "avx" in flags:
        per_cycle, why = 16, "AVX without FMA"
    else:
        per_cycle, why = 8, "SSE"
    measured = None if clock_ghz else measure_clock_ghz(cores)
    if clock_ghz:
        ghz, clock_source = clock_ghz, "given"
    elif measured:
        ghz, clock_source = measured, (f"measured: dependent adds on all cores at once, boost included; "
                                       f"/proc/cpuinfo says {(info['mhz'] or 0) / 1000:.3f}")
    else:
        ghz, clock_source = (info["mhz"] or 0.0) / 1000.0, "/proc/cpuinfo, boost not counted"
    fp32 = cores * ghz * 1e9 * per_cycle
    bf16_factor = 2 if "avx512_bf16" in flags else 1
    return {
        "cpu": info["model_name"],
        "vendor": vendor,
        "family": family,
        "model": info.get("model"),
        "cores": cores,
        "ghz": ghz,
        "cpuinfo_ghz": (info["mhz"] or 0.0) / 1000.0,
        "fp32_flops_per_cycle": per_cycle,
        "float32": fp32,
        "bfloat16": fp32 * bf16_factor,
        "assumption": (f"{cores} cores x {ghz:.3f} GHz ({clock_source}) x {per_cycle} float32 "
                       f"FLOP/cycle ({why}; 2 FLOPs per FMA lane); bfloat16 peak = {bf16_factor} x float32"
                       + (" (avx512_bf16: VDPBF16PS at the FMA rate assumed)" if bf16_factor == 2 else "")),
    }


CLOCK_PROBE = r"""
#include <stdio.h>
#include <time.h>
int main(void) {  /* dependent adds, one per cycle: adds per second of CPU time = the running clock */
  const unsigned long n = 400000000UL;
  double best = 0;
  for (int r = 0; r < 5; r++) {
    struct timespec a, b;
    unsigned long x = 0;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (unsigned long i = 0; i < n; i += 8)
      __asm__ volatile("add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
                       "add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0" : "+r"(x));
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    if (n / s / 1e9 > best) best = n / s / 1e9;
  }
  printf("%.3f\n", best);
  return 0;
}
"""


def measure_clock_ghz(cores: int) -> float | None:
    """The clock the cores run at under load (boost included), in GHz, or None where it can't be measured.

    A chain of dependent integer adds (latency one cycle on x86-64) runs on every core at once, compiled
    with the system's C compiler, timed in CPU time (so other jobs sharing the cores don't slow it); the
    best of five short runs per core, the fastest core. About 1 s.
    """
    import shutil
    import tempfile

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or platform.machine() not in ("x86_64", "AMD64"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = pathlib.Path(tmp) / "clock.c", pathlib.Path(tmp) / "clock"
        source.write_text(CLOCK_PROBE)
        try:
            subprocess.run([cc, "-O1", "-o", str(binary), str(source)], check=True, capture_output=True)
            procs = [subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True) for _ in range(cores)]
            values = [float(p.communicate(timeout=60)[0]) for p in procs]
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
    return max(values) if values else None


def gpu_peak(name: str) -> dict:
    for key, peaks in GPU_PEAKS.items():
        if key in name:
            return {**peaks, "assumption": f"{key} dense datasheet peaks: float32 rows against TF32 (both "
                                           "frameworks run float32 convolutions on TF32 tensor cores by default)"}
    return {"float32": None, "tf32": None, "bfloat16": None, "assumption": f"no peak known for {name}"}


def pin_cores(threads: int | None) -> int:
    """Restrict the process to ``threads`` cores (both frameworks size their pools from it); return the count."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))
    if threads is not None and threads < len(available):
        os.sched_setaffinity(0, available[:threads])
        available = available[:threads]
    return len(available)


# --- FLOPs -----------------------------------------------------------------------------------


def model_flops(model, height: int, width: int) -> dict:
    """Analytic FLOPs of one image (2 per multiply-add), per part, as the reference structure computes them.

    ``backbone``: the convolutions up to the last layer the readout reads (ReLU and pools not counted),
    each at the output size our backbone gives it (from ``jax.eval_shape``, nothing computed);
    ``readout``: the 1x1 convs on the readout grid; ``blur``: the two 1-D Gaussian convs of the
    reference (``2 ceil(3 sigma) + 1`` taps, sigma = initial) on the saliency-map grid; ``head`` =
    readout + blur (resizes, center bias and logsumexp are a few FLOPs per pixel, not counted).
    """
    import jax
    import jax.numpy as jnp

    from deepgaze_jax import backbones

    layers = backbones.ARCHITECTURES[model.backbone]
    last = max(i for i, (name, _, _) in enumerate(layers) if name in model.layers)
    convs = [(name, args) for name, kind, args in layers[: last + 1] if kind == "conv"]
    net = backbones.Backbone(model.backbone, tuple(name for name, _ in convs), ceil_mode=model.ceil_mode)
    images = jax.ShapeDtypeStruct((1, height // model.downsample, width // model.downsample, 3), jnp.float32)
    shapes, _ = jax.eval_shape(lambda x: net.init_with_output(jax.random.PRNGKey(0), x), images)
    channels, flops = 3, 0
    for name, (out, k, _, _) in convs:
        _, h, w, _ = shapes[name].shape
        flops += 2 * k * k * channels * out * h * w
        channels = out
    rh, rw = model.readout_shape(height, width)
    readout, fan_in = 0, model.feature_channels
    for out in model.readout_channels:
        readout += 2 * fan_in * out * rh * rw
        fan_in = out
    taps = 2 * math.ceil(3 * model.initial_sigma) + 1
    blur = 2 * (2 * taps * (height // model.saliency_map_factor) * (width // model.saliency_map_factor))
    return {"backbone": flops, "readout": readout, "blur": blur, "head": readout + blur}


def section_flops(section: str, parts: dict, batch: int) -> float:
    """FLOPs of one call: inference = backbone + head; training counts the head 3x (forward + backward)."""
    per_image = {
        "inference": parts["backbone"] + parts["head"],
        "head": parts["head"],
        "train_cached": 3 * parts["head"],
        "train_uncached": parts["backbone"] + 3 * parts["head"],
    }[section]
    return float(per_image * batch)


# --- cases -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One configuration; ``run`` (set by :class:`Frameworks`) runs it once and waits for the result."""

    section: str
    model: str
    framework: str  # "ours" | "pytorch"
    mode: str  # "jit" | "jit-<conv impl>" (ours, Winograd backbones) | "eager" | "compile"
    dtype: str  # "float32" | "bfloat16"
    batch: int
    run: Callable[[], object] | None = None
    teardown: Callable[[], None] | None = None
    times: list = dataclasses.field(default_factory=list)
    compile_s: float | None = None
    warmup_s: list = dataclasses.field(default_factory=list)
    error: str | None = None
    load: tuple[float, float] | None = None  # 1-minute load average before and after the group


def inputs(batch: int, height: int, width: int, fixations: int, seed: int = 0) -> dict:
    """Deterministic images (uniform 0..255), a center bias (a Gaussian log density) and fixations."""
    import numpy as np

    rng = np.random.RandomState(seed)
    images = rng.uniform(0, 255, (batch, height, width, 3)).astype(np.float32)
    yy, xx = np.mgrid[:height, :width]
    cb = -(((yy - height / 2) / (0.3 * height)) ** 2 + ((xx - width / 2) / (0.3 * width)) ** 2) / 2
    cb = (cb - np.log(np.exp(cb).sum())).astype(np.float32)
    xs = rng.uniform(0, width, (batch, fixations)).astype(np.float32)
    ys = rng.uniform(0, height, (batch, fixations)).astype(np.float32)
    mask = np.ones((batch, fixations), bool)
    mask[:, int(0.8 * fixations):] = False  # padding, as real batches have
    return {"images": images, "centerbias": cb, "xs": xs, "ys": ys, "mask": mask,
            "weight": np.ones(batch, np.float32)}


class Frameworks:
    """Builds the cases of one (section, model, batch) group for both frameworks on one device."""

    def __init__(self, device: str, height: int, width: int, fixations: int):
        import jax
        import torch

        self.jax, self.torch = jax, torch
        self.device = device
        self.torch_device = "cuda" if device == "gpu" else "cpu"
        self.jax_device = jax.devices()[0]
        self.height, self.width, self.fixations = height, width, fixations
        self.built: dict[str, tuple] = {}

    def sync(self):
        if self.torch_device == "cuda":
            self.torch.cuda.synchronize()

    def model(self, name: str):
        """``(our DeepGaze, torch model, our params)`` with the same random weights, built once."""
        if name not in self.built:
            from deepgaze_jax import registry
            from tests.torch_deepgaze import build

            model = registry.build(name)
            torch_model, params = build(model, seed=0, device=self.torch_device)
            params = self.jax.device_put(params, self.jax_device)
            self.built[name] = (model, torch_model, params)
        return self.built[name]

    # ours ----------------------------------------------------------------------------------

    def ours(self, case: Case, data: dict) -> Callable[[], object]:
        import dataclasses as dc

        import optax

        from deepgaze_jax.train import Trainer

        from deepgaze_jax.predict import with_conv_impl

        jax = self.jax
        model, _, params = self.model(case.model)
        conv_impl = case.mode.split("-", 1)[1] if "-" in case.mode else "xla"
        # the filter transform happens once, as when a predictor loads (deepgaze_jax.predict.load_predictor)
        model, backbone = with_conv_impl(dc.replace(model, dtype=case.dtype), conv_impl, params["backbone"])
        params = {**params, "backbone": backbone}
        put = lambda x: jax.device_put(x, self.jax_device)  # noqa: E731
        images = put(data["images"])
        cb_full = put(data["centerbias"])
        cb = put(self._batched_cb(data))
        # xs, ys, mask, weight and the loss weight: the image weight, as fit's default weighting passes it
        batch = [put(data[k]) for k in ("xs", "ys", "mask", "weight", "weight")]

        def aot(fn, *args, **kwargs):
            start = time.perf_counter()
            compiled = jax.jit(fn, **kwargs).lower(*args).compile()
            case.compile_s = time.perf_counter() - start
            return compiled

        if case.section == "inference":
            compiled = aot(model.apply, params, images, cb)
            return lambda: compiled(params, images, cb).block_until_ready()
        if case.section == "head":
            features = model.features(params["backbone"], images).block_until_ready()
            compiled = aot(model.head, params["head"], features, cb)
            return lambda: compiled(params["head"], features, cb).block_until_ready()

        trainer = Trainer(model, optax.adam(1e-3), devices=[self.jax_device])
        # a copy: the step donates its state, and the head params are shared by all cases
        state = {"state": trainer.init_state(jax.tree.map(lambda x: x.copy(), params["head"]))}
        if case.section == "train_cached":
            features = model.features(params["backbone"], images).block_until_ready()
            compiled = aot(trainer.train_step, state["state"], features, cb_full, *batch, donate_argnums=0)
            args = (features, cb_full, *batch)
        else:
            def step(state, backbone, images, cb, xs, ys, mask, weight, loss_weight):
                return trainer.train_step(state, model.features(backbone, images), cb, xs, ys, mask, weight, loss_weight)

            compiled = aot(step, state["state"], params["backbone"], images, cb_full, *batch, donate_argnums=0)
            args = (params["backbone"], images, cb_full, *batch)

        def run():
            state["state"], loss = compiled(state["state"], *args)
            return loss.block_until_ready()

        return run

    @staticmethod
    def _batched_cb(data: dict):
        import numpy as np

        return np.broadcast_to(data["centerbias"], data["images"].shape[:3]).copy()

    # pytorch -------------------------------------------------------------------------------

    def pytorch(self, case: Case, data: dict) -> Callable[[], object]:
        torch = self.torch
        _, torch_model, _ = self.model(case.model)
        dev = self.torch_device
        backbone_dtype = torch.bfloat16 if case.dtype == "bfloat16" else None
        net = torch_model.with_backbone_dtype(backbone_dtype)
        images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous().to(dev)
        cb = torch.from_numpy(self._batched_cb(data)).to(dev)
        xs, ys, mask = (torch.from_numpy(data[k]).to(dev) for k in ("xs", "ys", "mask"))
        compile_fn = (lambda f: torch.compile(f, dynamic=False)) if case.mode == "compile" else (lambda f: f)

        if case.section in ("inference", "head"):
            if case.section == "inference":
                fn, args = compile_fn(net), (images, cb)
            else:
                with torch.inference_mode():
                    features = [f.clone() for f in net.features(images)]
                fn, args = compile_fn(net.head), (features, cb)

            def run():
                with torch.inference_mode():
                    out = fn(*args)
                self.sync()
                return out

            return run

        head_params = list(net.readout.parameters()) + list(net.finalizer.parameters())
        initial = [p.detach().clone() for p in head_params]
        optimizer = torch.optim.Adam(head_params, lr=1e-3)
        height, width = self.height, self.width
        log_area = math.log(height * width)

        def loss_fn(features, cb, xs, ys, mask):
            log_density = net.head(features, cb)
            rows = torch.arange(log_density.shape[0], device=log_density.device)[:, None]
            values = log_density[rows, ys.long(), xs.long()]
            bits = (values + log_area) / math.log(2.0) * mask
            per_image = bits.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            return -per_image.mean()

        loss_fn = compile_fn(loss_fn)
        features_fn = compile_fn(net.features)
        if case.section == "train_cached":
            with torch.no_grad():
                cached = [f.clone() for f in net.features(images)]

        def run():
            if case.section == "train_cached":
                features = cached
            else:
                with torch.no_grad():
                    features = features_fn(images)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(features, cb, xs, ys, mask.float())
            loss.backward()
            optimizer.step()
            self.sync()
            return loss

        def restore():  # the torch model is shared by all cases: leave its head as it was
            with torch.no_grad():
                for p, p0 in zip(head_params, initial):
                    p.copy_(p0)

        case.teardown = restore
        return run

    def cases(self, section: str, model: str, batch: int, conv_impls: tuple[str, ...] = ("xla",)) -> list[Case]:
        """Ours first (one row per backbone convolution in sections that run the backbone), then
        PyTorch; the configurations of the issue (head: float32 only)."""
        dtypes = ("float32", "bfloat16") if section == "inference" else ("float32",)
        impls = conv_impls if section in ("inference", "train_uncached") else ("xla",)
        out = []
        for dtype in dtypes:
            for impl in impls:
                out.append(Case(section, model, "ours", "jit" if impl == "xla" else f"jit-{impl}", dtype, batch))
        for mode in ("eager", "compile"):
            for dtype in dtypes:
                out.append(Case(section, model, "pytorch", mode, dtype, batch))
        return out


# --- timing ----------------------------------------------------------------------------------


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def run_group(fw: Frameworks, section: str, model: str, batch: int, args, log) -> list[Case]:
    """Build, warm up and time the cases of one group, interleaved; return them with their times."""
    data = inputs(batch, fw.height, fw.width, args.fixations)
    cases = fw.cases(section, model, batch, tuple(args.conv_impls.split(",")))
    load_before = os.getloadavg()[0]
    for case in cases:
        try:
            case.run = (fw.ours if case.framework == "ours" else fw.pytorch)(case, data)
            if case.mode == "compile":
                first = time.perf_counter()
                case.run()  # torch.compile compiles on the first call, which is its warm-up
                case.compile_s = time.perf_counter() - first
                estimate = max((c.warmup_s[-1] for c in cases if c.warmup_s), default=0.0)
                if estimate > args.heavy_seconds:
                    continue
            t = time.perf_counter()
            case.run()
            case.warmup_s.append(time.perf_counter() - t)
        except Exception as exc:  # noqa: BLE001 - a failing configuration becomes a row
            case.error = short_error(exc)
            case.run = None
            log(f"  FAILED {describe(case)}: {case.error}")
            log("".join(traceback.format_exception(exc))[-2000:])
    alive = [c for c in cases if c.run is not None]
    if not alive:
        return cases
    slowest = max((c.warmup_s[-1] for c in alive if c.warmup_s), default=0.0)
    rounds = args.min_rounds if slowest <= 0 else int(round(args.target_seconds / slowest))
    rounds = max(args.min_rounds, min(args.max_rounds, rounds))
    log(f"  {section} {model} batch {batch}: {len(alive)} configurations, {rounds} rounds of <= {slowest:.3f} s")
    for r in range(rounds):
        order = alive[r % len(alive):] + alive[: r % len(alive)]
        for case in order:
            if case.run is None:
                continue
            try:
                t = time.perf_counter()
                case.run()
                case.times.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001
                case.error = short_error(exc)
                case.run = None
                log(f"  FAILED in round {r} {describe(case)}: {case.error}")
    load = (load_before, os.getloadavg()[0])
    for case in cases:
        if case.teardown is not None:
            case.teardown()
        case.run = case.teardown = None
        case.load = load
    return cases


def describe(case: Case) -> str:
    return f"{case.section}/{case.model}/{case.framework}-{case.mode}/{case.dtype}/b{case.batch}"


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def row(case: Case, flops: float, peak: dict) -> dict:
    out = {
        "section": case.section, "model": case.model, "framework": case.framework, "mode": case.mode,
        "dtype": case.dtype, "batch": case.batch, "times_s": case.times, "compile_s": case.compile_s,
        "warmup_s": case.warmup_s, "flops": flops, "error": case.error, "load_average": case.load,
    }
    if case.times:
        med = statistics.median(case.times)
        q1, q3 = quartiles(case.times)
        peak_value = peak.get("bfloat16" if case.dtype == "bfloat16" else peak.get("float32_key", "float32"))
        out.update({
            "rounds": len(case.times), "median_s": med, "q1_s": q1, "q3_s": q3,
            "min_s": min(case.times), "max_s": max(case.times),
            "flop_per_s": flops / med,
            "peak_fraction": (flops / med / peak_value) if peak_value else None,
        })
    return out


# --- parity ----------------------------------------------------------------------------------


def parity(fw: Frameworks, model_name: str) -> dict:
    """Max |ours - PyTorch| of the log density (nats) and of the backbone features (relative to their
    largest value), float32, batch 1, on the benchmark's inputs (under
    ``jax.default_matmul_precision("highest")`` and without TF32 in PyTorch: parity only)."""
    import numpy as np

    torch, jax = fw.torch, fw.jax
    model, torch_model, params = fw.model(model_name)
    data = inputs(1, fw.height, fw.width, 8)
    cb = fw._batched_cb(data)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            ours = np.asarray(jax.jit(model.apply)(params, data["images"], cb))
            ours_features = np.asarray(model.features(params["backbone"], data["images"]))
        images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous().to(fw.torch_device)
        with torch.inference_mode():
            theirs = torch_model(images, torch.from_numpy(cb).to(fw.torch_device)).cpu().numpy()
            features = torch.cat(torch_model.features(images), dim=1).permute(0, 2, 3, 1).cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    return {"max_abs_diff_nats": float(np.abs(ours - theirs).max()),
            "log_density_range_nats": [float(theirs.min()), float(theirs.max())],
            "features_max_rel_diff": float(np.abs(ours_features - features).max() / np.abs(features).max())}


def xla_flops(fw: Frameworks, model_name: str, batch: int) -> float | None:
    """XLA's own FLOP count of our compiled float32 inference (cross-check of :func:`model_flops`)."""
    model, _, params = fw.model(model_name)
    images = fw.jax.ShapeDtypeStruct((batch, fw.height, fw.width, 3), "float32")
    cb = fw.jax.ShapeDtypeStruct((batch, fw.height, fw.width), "float32")
    cost = fw.jax.jit(model.apply).lower(params, images, cb).compile().cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost["flops"]) if cost and "flops" in cost else None


# --- report ----------------------------------------------------------------------------------


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def markdown_table(results: dict) -> str:
    rows = results["rows"]
    lines = [
        "| section | model | batch | framework | mode | dtype | median ms | IQR ms | min-max ms | rounds "
        "| ms/image | GFLOP/s | % peak | vs PyTorch eager / compile | compile s |",
        "| --- | --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    index = {(r["section"], r["model"], r["batch"], r["framework"], r["mode"], r["dtype"]): r for r in rows}
    for r in rows:
        title = MODEL_TITLES.get(r["model"], r["model"])
        key = (r["section"], title, r["batch"], r["framework"], r["mode"], r["dtype"])
        compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else ""
        if r.get("error") and not r.get("times_s"):
            lines.append("| " + " | ".join(str(k) for k in key) + f" | failed: {r['error'][:120]} | | | | | | | | "
                         + compile_s + " |")
            continue
        ratio = ""
        if r["framework"] == "ours":
            parts = []
            for mode in ("eager", "compile"):
                other = index.get((r["section"], r["model"], r["batch"], "pytorch", mode, r["dtype"]))
                parts.append(f"{other['median_s'] / r['median_s']:.2f}x" if other and other.get("median_s") else "-")
            ratio = " / ".join(parts)
        peak = f"{100 * r['peak_fraction']:.1f}" if r.get("peak_fraction") is not None else ""
        lines.append(
            "| " + " | ".join(str(k) for k in key)
            + f" | {fmt_ms(r['median_s'])} | {fmt_ms(r['q1_s'])}-{fmt_ms(r['q3_s'])}"
            + f" | {fmt_ms(r['min_s'])}-{fmt_ms(r['max_s'])} | {r['rounds']}"
            + f" | {fmt_ms(r['median_s'] / r['batch'])} | {r['flop_per_s'] / 1e9:.1f} | {peak} | {ratio}"
            + f" | {compile_s} |"
        )
    return "\n".join(lines)


def markdown_block(results: dict) -> str:
    from deepgaze_jax import provenance

    m = results["machine_details"]
    flops = results["flops_per_image"]
    lines = [
        provenance.markdown_line(results),
        "",
        f"Measured on **{results['device_kind']}** ({m['device_name']}); "
        f"{results['height']}x{results['width']} images (W x H = {results['width']}x{results['height']}); "
        f"threads: {results['threads']}; {results['wall_s'] / 60:.1f} min.",
        "",
        f"Peak: {results['peak']['assumption']}: float32 {fmt_flops(results['peak'].get('float32'))}, "
        f"bfloat16 {fmt_flops(results['peak'].get('bfloat16'))}.",
        "",
        "Model FLOPs per image (analytic, 2 per multiply-add; XLA's `cost_analysis` of our float32 inference "
        "in brackets): " + "; ".join(
            f"{MODEL_TITLES.get(k, k)}: backbone {v['backbone'] / 1e9:.2f} G, readout {v['readout'] / 1e6:.1f} M, "
            f"blur (reference conv) {v['blur'] / 1e6:.1f} M [XLA {v['xla'] / 1e9:.2f} G]"
            if v.get("xla") else
            f"{MODEL_TITLES.get(k, k)}: backbone {v['backbone'] / 1e9:.2f} G, readout {v['readout'] / 1e6:.1f} M, "
            f"blur (reference conv) {v['blur'] / 1e6:.1f} M"
            for k, v in flops.items()) + ".",
        "",
        "Parity (float32, batch 1, max |ours - PyTorch|, log density and backbone features): " + "; ".join(
            f"{MODEL_TITLES.get(k, k)} {v['max_abs_diff_nats']:.2e} nats (features: {v['features_max_rel_diff']:.1e} "
            "of their largest value)" if "max_abs_diff_nats" in v
            else f"{MODEL_TITLES.get(k, k)} failed: {v.get('error')}" for k, v in results["parity"].items()) + ".",
        "",
        markdown_table(results),
    ]
    return "\n".join(lines)


def fmt_flops(value: float | None) -> str:
    return f"{value / 1e9:.1f} GFLOP/s" if value else "unknown"


def update_markdown(path: pathlib.Path, device: str, block: str) -> None:
    start, end = f"<!-- results:{device}:start -->", f"<!-- results:{device}:end -->"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in text or end not in text:
        text = text.rstrip() + f"\n\n{start}\n{end}\n"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{start}\n{block}\n{end}{after}")


# --- main ------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    from deepgaze_jax import provenance

    commit = provenance.git_commit()  # the code this run started from
    wall = time.perf_counter()
    threads = pin_cores(args.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # both frameworks share the GPU: JAX must not take 75 % of its memory up front
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import torch

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    torch.set_num_threads(threads)
    has_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    device = ("gpu" if has_gpu else "cpu") if args.device == "auto" else args.device
    if device == "gpu" and not has_gpu:
        log("--device gpu: no GPU visible to both JAX and PyTorch")
        return 2
    size = args.size or ("192x256" if args.quick else "768x1024")
    height, width = (int(v) for v in size.lower().split("x"))
    default_batches = "1" if args.quick else ("1,8,32" if device == "gpu" else "1,8")
    batches = [int(b) for b in (args.batches or default_batches).split(",")]
    uncached_batches = ([int(b) for b in args.train_uncached_batches.split(",")] if args.train_uncached_batches
                        else batches)
    args.min_rounds = args.min_rounds or (2 if args.quick else 3)
    if args.target_seconds is None:
        args.target_seconds = 0.0 if args.quick else (5.0 if device == "gpu" else 8.0)
    sections = [s for s in args.sections.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    from deepgaze_jax.winograd import IMPLS

    conv_impls = [c for c in args.conv_impls.split(",") if c]
    for name, chosen, known in (("section", sections, SECTIONS), ("model", models, KNOWN_MODELS),
                                ("conv impl", conv_impls, IMPLS)):
        if unknown := [c for c in chosen if c not in known]:
            log(f"unknown {name}(s) {unknown}; known: {list(known)}")
            return 2

    if device == "gpu":
        name = torch.cuda.get_device_name(0)
        peak = gpu_peak(name)
        peak["float32_key"] = "tf32"
    else:
        peak = cpu_peak(threads, args.clock_ghz)
        name = peak["cpu"]
    suffix = "_gpu" if device == "gpu" else ""
    out = args.out or (REPO / ".cache" / f"benchmark_quick{suffix}.json" if args.quick
                       else REPO / "experiments" / "results" / f"benchmark{suffix}.json")
    markdown = args.markdown or (None if args.quick else REPO / "experiments" / "BENCHMARKS.md")

    fw = Frameworks(device, height, width, args.fixations)
    results = {
        **provenance.stamp(provenance.command("experiments/benchmark.py", argv), commit),
        "device": device,
        "device_kind": args.device_kind or (f"{device.upper()}: {name}"),
        "machine_details": {"device_name": name, "platform": platform.platform(), "python": platform.python_version(),
                            "jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
                            "torch": torch.__version__,
                            "jax_devices": [str(d) for d in jax.devices()],
                            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                            "load_average_at_start": os.getloadavg(),
                            "torch_matmul_tf32": torch.backends.cuda.matmul.allow_tf32},
        "threads": (f"{threads} cores (process affinity); torch.set_num_threads({threads}); XLA:CPU sizes its "
                    "intra-op pool from the cores it may use" if device == "cpu" else "GPU"),
        "height": height, "width": width, "batches": batches,
        "train_uncached_batches": uncached_batches, "quick": args.quick,
        "rounds": {"min": args.min_rounds, "max": args.max_rounds, "target_seconds": args.target_seconds},
        "peak": {k: v for k, v in peak.items() if k != "float32_key"},
        "flops_per_image": {}, "parity": {}, "rows": [],
    }
    from deepgaze_jax import registry

    for m in models:
        description = registry.build(m)
        results["flops_per_image"][m] = model_flops(description, height, width)
        try:
            results["flops_per_image"][m]["xla"] = xla_flops(fw, m, 1)
            results["parity"][m] = parity(fw, m)
        except Exception as exc:  # noqa: BLE001
            results["parity"][m] = {"error": short_error(exc)}
        log(f"{m}: FLOPs {results['flops_per_image'][m]}, parity {results['parity'][m]}")

    for section in sections:
        for m in models:
            for batch in uncached_batches if section == "train_uncached" else batches:
                log(f"{section} {m} batch {batch} ...")
                cases = run_group(fw, section, m, batch, args, log)
                for case in cases:
                    r = row(case, section_flops(section, results["flops_per_image"][m], batch), peak)
                    results["rows"].append(r)
                    if r.get("median_s") is not None:
                        log(f"    {describe(case)}: median {r['median_s'] * 1e3:.1f} ms "
                            f"[{r['min_s'] * 1e3:.1f}, {r['max_s'] * 1e3:.1f}] x{r['rounds']}")
                torch._dynamo.reset()
                gc.collect()
                if device == "gpu":
                    torch.cuda.empty_cache()
                results["wall_s"] = time.perf_counter() - wall
                write_json(out, results)

    results["wall_s"] = time.perf_counter() - wall
    write_json(out, results)
    table = markdown_block(results)
    print(table)
    if markdown is not None:
        update_markdown(markdown, device, table)
        log(f"wrote {out} and the {device} block of {markdown}")
    else:
        log(f"wrote {out}")
    return 0


def write_json(path: pathlib.Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    sys.exit(main())
