"""How much of a CPU step goes to page faults, and what huge pages (``deepgaze_jax/huge_pages.py``) save.

    PYTHONPATH=. python experiments/allocator_speed.py [--rounds 2] [--steps 6] [--workloads dg3_step,...]

Each workload runs in a fresh process (a glibc tunable is read at start), alternately without and with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, round after round; each process reports the median time of
``--steps`` calls after a warm-up, and per call the minor page faults and the user and system CPU
seconds (``getrusage``), and a checksum of its result, which must be the same both ways. Workloads, on
random parameters and inputs of the real shapes (768x1024 images, VGG-16):

- ``dg3_step``: a DeepGaze III scanpath-phase train step (loss and gradient; 4 images x 64 fixations
  with 4-fixation histories, the ``experiments/configs/deepgaze3_vgg16.json`` batch);
- ``dg2_step``: a DeepGaze II (IIE readout) train step from cached features (8 images x 64 fixations);
- ``dg2_predict``: DeepGaze II inference, backbone included, batch 1 (``conv_impl="auto"``).

Prints a markdown table under the run's stamp (command, date, machine, commit); ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepgaze_jax import huge_pages  # noqa: E402  (light: no jax)

WORKLOADS = ("dg3_step", "dg2_step", "dg2_predict")
H, W = 768, 1024


def _workload(name: str):
    """``(function, args)`` of one workload, jitted; the function returns a pytree."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from deepgaze_jax import deepgaze3, model
    from deepgaze_jax.predict import with_conv_impl

    rng = np.random.default_rng(0)
    cb = lambda b: jnp.full((b, H, W), -np.log(H * W), jnp.float32)  # noqa: E731
    coords = lambda b, n: (jnp.asarray(rng.uniform(0, W, (b, n)), jnp.float32),  # noqa: E731
                           jnp.asarray(rng.uniform(0, H, (b, n)), jnp.float32))
    if name == "dg3_step":
        m = deepgaze3.deepgaze3("vgg16")
        b, n = 4, 64
        feats = jnp.asarray(rng.standard_normal((b, 24, 32, m.feature_channels)), jnp.float32)
        hist = rng.uniform(0, 700, (b, n, 4, 2)).astype(np.float32)
        hist[:, ::3, 2:] = np.nan  # some histories shorter than 4
        xs, ys = coords(b, n)
        loss = lambda h: -m.log_density_at(h, feats, cb(b), xs, ys, jnp.asarray(hist)).mean()  # noqa: E731
        return jax.jit(jax.value_and_grad(loss)), (m.init_head(jax.random.PRNGKey(0)),)
    if name == "dg2_step":
        m = model.deepgaze2("vgg16", readout="iie")
        b, n = 8, 64
        feats = jnp.asarray(rng.standard_normal((b, 24, 32, m.feature_channels)), jnp.float32)
        xs, ys = coords(b, n)
        loss = lambda h: -m.log_density_at(h, feats, cb(b), xs, ys).mean()  # noqa: E731
        return jax.jit(jax.value_and_grad(loss)), (m.init_head(jax.random.PRNGKey(0)),)
    if name == "dg2_predict":
        m = model.deepgaze2("vgg16", readout="iie")
        params = m.init(jax.random.PRNGKey(0))
        m, backbone = with_conv_impl(m, "auto", params["backbone"])
        images = jnp.asarray(rng.uniform(0, 255, (1, H, W, 3)), jnp.float32)
        return m.apply, ({"backbone": backbone, "head": params["head"]}, images, cb(1))
    raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")


def worker(name: str, steps: int) -> dict:
    """Time one workload in this process."""
    import jax
    import numpy as np

    f, args = _workload(name)
    out = jax.block_until_ready(f(*args))
    checksum = float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree_util.tree_leaves(out)))
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"ms": float(np.median(times)) * 1e3, "faults": (after.ru_minflt - before.ru_minflt) / steps,
            "user_s": (after.ru_utime - before.ru_utime) / steps, "sys_s": (after.ru_stime - before.ru_stime) / steps,
            "checksum": checksum}


def _run(name: str, steps: int, huge: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env = huge_pages.environment(env) if huge else env
    env[huge_pages.ENV] = "off"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(steps)], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} worker failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--out", type=pathlib.Path, help="also write the table here (markdown)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps)))
        return
    from deepgaze_jax import provenance
    import numpy as np

    lines = [provenance.markdown_line(provenance.stamp(provenance.command("experiments/allocator_speed.py"))), "",
             f"Medians over {args.rounds} interleaved rounds of the per-process medians of {args.steps} calls.", "",
             "| workload | ms (4 kB pages) | ms (huge pages) | speed-up | page faults / call | system s / call | "
             "user s / call | same result |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name in args.workloads.split(","):
        runs = {False: [], True: []}
        for _ in range(args.rounds):
            for huge in (False, True):
                runs[huge].append(_run(name, args.steps, huge))
        med = {h: {k: float(np.median([r[k] for r in rs])) for k in ("ms", "faults", "sys_s", "user_s")}
               for h, rs in runs.items()}
        same = len({r["checksum"] for rs in runs.values() for r in rs}) == 1
        a, b = med[False], med[True]
        lines.append(f"| {name} | {a['ms']:.0f} | {b['ms']:.0f} | {a['ms'] / b['ms']:.2f}x | "
                     f"{a['faults']:.0f} -> {b['faults']:.0f} | {a['sys_s']:.2f} -> {b['sys_s']:.2f} | "
                     f"{a['user_s']:.2f} -> {b['user_s']:.2f} | {'yes' if same else 'NO'} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
