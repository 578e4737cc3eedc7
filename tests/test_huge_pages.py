"""When `huge_pages.reexec` restarts a process, and with which environment."""

import os
import subprocess
import sys

import pytest

from deepgaze_jax import huge_pages


def test_wanted_only_on_glibc_2_35_with_huge_pages_and_not_yet_set():
    yes = {"glibc": (2, 36), "mode": "madvise"}
    assert huge_pages.wanted({}, **yes)
    assert huge_pages.wanted({}, glibc=(2, 36), mode="always")
    assert not huge_pages.wanted({}, glibc=(2, 34), mode="madvise")  # the tunable is newer
    assert not huge_pages.wanted({}, glibc=(2, 36), mode="never")
    assert not huge_pages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, **yes)  # the user chose
    assert not huge_pages.wanted({"DEEPGAZE_HUGE_PAGES": "off"}, **yes)
    assert not huge_pages.wanted({"DEEPGAZE_HUGE_PAGES_RESTARTED": "1"}, **yes)  # never a restart loop


def test_environment_keeps_other_tunables(tmp_path):
    env = huge_pages.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "PATH": "/bin"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert env["PATH"] == "/bin" and env["DEEPGAZE_HUGE_PAGES_RESTARTED"] == "1"
    assert huge_pages.environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    thp = tmp_path / "enabled"
    thp.write_text("always [madvise] never\n")
    assert huge_pages.kernel_mode(thp) == "madvise"
    assert huge_pages.kernel_mode(tmp_path / "missing") is None


def test_reexec_restarts_the_process_with_the_tunable_once():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", huge_pages.ENV)}
    if not huge_pages.wanted(env):
        pytest.skip("this machine's glibc or kernel gives no huge pages on request")
    code = ("import os\nfrom deepgaze_jax import huge_pages\nprint('start', flush=True)\nhuge_pages.reexec()\n"
            "print(os.environ.get('GLIBC_TUNABLES', '-'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["start", "start", "glibc.malloc.hugetlb=1"]  # restarted once, then ran on
    off = subprocess.run([sys.executable, "-c", code], env={**env, huge_pages.ENV: "off"}, capture_output=True,
                         text=True).stdout
    assert off.split() == ["start", "-"]  # not restarted
