"""Identical results on another machine, simulated on this one.

"Another machine" is what differs between two x86-64 computers for the libraries: the CPU
features they dispatch on (here capped at AVX2 through the libraries' own variables, as an
AVX2-only CPU would report them -- this machine has AVX-512), the number of cores (the build runs
pinned to one core) and the thread settings in its environment. A fresh copy of the repository
is built there and every output DVC records must have the hash it has in the build made here.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from curriculum.numerics import KERNEL_CAPS, OPENBLAS_CAP, kernel_caps
from tests.smoke import BIN_DIR, REPO_ROOT, build_smoke_repo, commit

# An AVX2-only, one-core machine whose environment asks for one thread everywhere.
OTHER_MACHINE = {
    **KERNEL_CAPS, **OPENBLAS_CAP,
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
}


def repro_on(root: Path, machine: dict[str, str], cores: set[int] | None) -> None:
    env = {**os.environ, **machine, "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(BIN_DIR / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def recorded_outputs(root: Path) -> dict[tuple[str, str], str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {(stage, out["path"]): out["md5"] for stage, entry in lock.items() for out in entry.get("outs", [])}


def test_kernel_caps_leave_a_machine_without_avx2_runnable():
    assert kernel_caps({"sse4_2"}) == KERNEL_CAPS  # no OpenBLAS core type the CPU cannot execute
    assert kernel_caps({"avx2", "fma", "avx512f"})["OPENBLAS_CORETYPE"] == "Haswell"


def test_stages_cap_the_kernels_before_numpy_loads():
    code = "import stages, torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {key: value for key, value in os.environ.items() if key not in (*KERNEL_CAPS, *OPENBLAS_CAP)}
    out = subprocess.run([str(BIN_DIR / "python"), "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.split()[-1] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


@pytest.mark.slow  # ~8 min on 2 cores: a second smoke build of every project, on one core
def test_another_machine_builds_every_output_identically(built_repo, tmp_path):
    other = build_smoke_repo(tmp_path / "other")
    repro_on(other, OTHER_MACHINE, cores={0})
    here, there = recorded_outputs(built_repo), recorded_outputs(other)
    assert here.keys() == there.keys()
    differ = sorted(f"{stage}: {path}" for (stage, path), md5 in here.items() if there[(stage, path)] != md5)
    assert not differ, "outputs that differ on the other machine:\n" + "\n".join(differ)


@pytest.mark.slow
def test_default_pipelines_are_identical_on_another_machine(tmp_path):
    """Every project at its default size, built here and on the simulated machine (10-15 minutes)."""
    builds = {}
    for name, machine, cores in (("here", {}, None), ("other", OTHER_MACHINE, {0})):
        root = build_smoke_repo(tmp_path / name)
        (root / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
        commit(root, "default params")
        repro_on(root, machine, cores)
        builds[name] = root
    here, there = recorded_outputs(builds["here"]), recorded_outputs(builds["other"])
    differ = sorted(f"{stage}: {path}" for (stage, path), md5 in here.items() if there[(stage, path)] != md5)
    assert not differ, "outputs that differ on the other machine:\n" + "\n".join(differ)
    for metrics in sorted(builds["here"].glob("reports/*/*/metrics.json")):
        relative = metrics.relative_to(builds["here"])
        assert json.loads(metrics.read_text()) == json.loads((builds["other"] / relative).read_text()), relative
