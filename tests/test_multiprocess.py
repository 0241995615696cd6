"""A real multi-process run of the harness: 2 processes of 4 CPU devices against 1 of 8.

Every run is a subprocess (``python -m tests.multiprocess_worker``, see there) that trains
``sls``, ``salsa``, ``pal`` and ``labpal_sgd`` for 6 steps of a global batch of 32 digits with
:func:`train.train.run`. The 2-process runs go through the harness's multi-host path as on a
cluster: ``OPTAX_LS_DISTRIBUTED=1`` with ``JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT``,
``JAX_NUM_PROCESSES=2`` and ``JAX_PROCESS_ID``, so that
:func:`train.train.maybe_initialize_distributed` calls :func:`jax.distributed.initialize` (a
local coordinator in process 0), the mesh spans the 8 devices of both processes and each
process feeds its 16 rows of every global batch; cross-process collectives on CPU are gloo's.

What is compared, and why so:

* **2 processes = 1 process of 8 devices under the same runtime, bit for bit.** The reference
  runs the same program in one process with ``JAX_NUM_PROCESSES=1``: the same 8-device mesh,
  the same gloo all-reduces, the whole batch fed by one process. Every array of every final
  state (parameters, optimizer state with the step sizes, step counter, dropout key) and every
  record (losses, step sizes, evaluations per step, test metrics) must be equal. The two runs
  differ only in where the devices live and who feeds which rows, neither of which may change
  a single bit; and PAL's and LABPAL's step rules amplify a one-ulp change of a loss far above
  any tolerance one could justify (below), so exact equality is the test that can tell for
  them.
* **2 processes = a plain 1-process run of 8 devices within 1e-6 relative** (``rtol``
  below). A plain run (no distributed runtime) all-reduces with XLA's in-process collectives,
  which sum the 8 devices' partial sums in another order than gloo: the loss, the gradient and
  every trial loss may differ by a few float32 ulps (eps = 1.2e-7; the sum of 8 float32 terms
  in any two orders differs by at most about 7 eps relative for the loss's positive terms, and
  by one or two ulps in practice). The Armijo searches of SLS and SaLSa take the same
  backtracking decisions (checked exactly) and their step sizes are products of fixed factors,
  so they carry that rounding without amplifying it: their parameters (relative norm of the
  difference per array), step sizes and losses stay within 1e-6 (measured on this machine: at
  most 1.4e-7 on the parameters, step sizes equal). PAL's parabola and LABPAL's fit at measuring
  steps of 1e-4 and 1e-2 divide loss differences by small squares and turn such ulps into
  visibly different step sizes (measured: PAL's step sizes 1e-5 to 1.5e-4 relative apart,
  LABPAL's first fitted one 1.12 against 1.44), so for them only the first step's loss and
  gradient norm (the same parameters and batch, before any step rule acts) are held to 1e-6.
* **A checkpoint written by 2 processes resumes** in 2 processes and in 1 process (8 devices,
  under the distributed runtime and plain): a 2-process run stopped after 3 steps
  (``checkpoint_every=3``) is resumed to 6 steps. The resumed runs restore step 3 (checked), and
  the 2-process and the 1-process runtime continue bit for bit as the uninterrupted 2-process
  run (arrays and records); the plain 1-process run continues within the tolerance above
  (SLS, SaLSa) and, for every method, its first step after the resume starts from the
  checkpoint's parameters (its loss within 1e-6 of the uninterrupted run's at step 4).

Every subprocess has a timeout (:data:`TIMEOUT_S` per phase) and a failing one shows its
stderr. A CPU jaxlib without gloo makes the worker exit with code 77 and the test skip.

Run with ``python -m pytest -m slow tests/test_multiprocess.py`` (about 1.5 minutes on 2 CPU
cores beside a benchmark).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.multiprocess_worker import BATCH_SIZE, OPTIMIZERS, SKIP_EXIT

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 6  # the length of every run
STOP = 3  # the interrupted run's last step and checkpoint
TIMEOUT_S = 300  # for each phase of concurrent runs (measured: 30-55 s each on 2 busy cores)
RTOL = 1e-6  # plain 1-process run against 2 processes (see the module's docstring)
WELL_CONDITIONED = ("sls", "salsa")  # Armijo searches: rounding is not amplified
TIMINGS = ("images_per_s", "seconds")  # the only fields of the records that may differ


@dataclasses.dataclass
class Result:
  """What one process of a run wrote: its final states' arrays and its run's facts."""

  arrays: dict[str, np.ndarray]
  info: dict


@dataclasses.dataclass
class _Run:
  name: str
  processes: list[tuple[subprocess.Popen, pathlib.Path]]  # by process id, with its log
  result: pathlib.Path


_PORTS: set[int] = set()  # handed out already: the coordinators bind them only later


def _free_port() -> int:
  """A port free now on 127.0.0.1 and not given to another run of this session."""
  while True:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    if port not in _PORTS:
      _PORTS.add(port)
      return port


def _environment(devices: int, *, distributed: bool, num_processes: int = 1,
                 process_id: int = 0, port: int = 0) -> dict[str, str]:
  """This process's environment with ``devices`` CPU devices and, if asked, a coordinator."""
  env = dict(os.environ)
  flags = [flag for flag in env.get("XLA_FLAGS", "").split()
           if not flag.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  # jax 0.10's default for cross-process collectives on CPU, named so that it stays the one.
  env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
  for name in ("OPTAX_LS_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
               "JAX_PROCESS_ID"):
    env.pop(name, None)
  if distributed:
    env.update(OPTAX_LS_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(process_id))
  return env


def _start(tmp_path: pathlib.Path, name: str, *, processes: int, distributed: bool,
           out: pathlib.Path | None = None, checkpoint_every: int = 0, resume: bool = False,
           steps: int = STEPS) -> _Run:
  """Starts a run of ``processes`` processes sharing 8 CPU devices evenly."""
  result = tmp_path / name
  command = [sys.executable, "-m", "tests.multiprocess_worker", str(result), "--steps",
             str(steps), "--checkpoint-every", str(checkpoint_every)]
  if out is not None:
    command += ["--out", str(out)]
  if resume:
    command.append("--resume")
  port = _free_port() if distributed else 0
  started = []
  for process_id in range(processes):
    log = tmp_path / f"{name}.{process_id}.log"
    env = _environment(8 // processes, distributed=distributed, num_processes=processes,
                       process_id=process_id, port=port)
    with open(log, "wb") as stream:
      started.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=stream,
                                       stderr=subprocess.STDOUT), log))
  return _Run(name, started, result)


def _tail(log: pathlib.Path) -> str:
  """The end of a process's output, without gloo's connection lines."""
  lines = log.read_text(errors="replace").splitlines()
  return "\n".join(line for line in lines if not line.startswith("[Gloo]"))[-6000:] or "(empty)"


def _finish(*runs: _Run) -> dict[str, list[Result]]:
  """Waits for ``runs`` (each process within :data:`TIMEOUT_S`); their results per process.

  A process that fails, or a phase that outlasts the timeout, ends every process still running
  (a peer of a failed process would wait for it until the coordinator's heartbeat timed out)
  and fails the test with the output of the failed processes.
  """
  deadline = time.monotonic() + TIMEOUT_S
  everything = [(run, i, process, log) for run in runs
                for i, (process, log) in enumerate(run.processes)]

  timed_out, killed = False, set()
  try:
    while any(process.poll() is None for _, _, process, _ in everything):
      failed = any(process.poll() not in (None, 0) for _, _, process, _ in everything)
      timed_out = time.monotonic() > deadline
      if failed or timed_out:
        time.sleep(2)  # the failure's peers may fail too and say more
        break
      time.sleep(0.2)
  finally:  # whatever ends the wait (a failure, the timeout, an interrupt): none is left running
    for run, i, process, _ in everything:
      if process.poll() is None:
        process.kill()
        process.wait()
        killed.add((run.name, i))
  skipped = [log for _, _, process, log in everything if process.returncode == SKIP_EXIT]
  if skipped:
    # The worker's last line: "CPU cross-process collectives (gloo) unavailable: ...".
    pytest.skip([line for line in _tail(skipped[0]).splitlines() if line.strip()][-1])
  bad = [(run, i, process, log) for run, i, process, log in everything if process.returncode]
  if bad:
    report = "\n\n".join(
        f"--- {run.name}, process {i} "
        f"({'killed' if (run.name, i) in killed else f'exit code {process.returncode}'}) ---\n"
        f"{_tail(log)}"
        for run, i, process, log in bad)
    pytest.fail((f"timed out after {TIMEOUT_S} s" if timed_out else "a run failed")
                + f":\n{report}", pytrace=False)
  results = {}
  for run in runs:
    results[run.name] = []
    for i in range(len(run.processes)):
      with np.load(f"{run.result}.{i}.npz") as stored:
        arrays = {k: stored[k] for k in stored.files if k != "info"}
        results[run.name].append(Result(arrays, json.loads(str(stored["info"]))))
  return results


def _records(result: Result) -> dict:
  """The run's records without their timings."""
  return {name: {kind: [{f: v for f, v in r.items() if f not in TIMINGS} for r in records]
                 for kind, records in kinds.items()}
          for name, kinds in result.info["history"].items()}


def _assert_identical(a: Result, b: Result, what: str) -> None:
  assert sorted(a.arrays) == sorted(b.arrays), what
  different = [k for k in a.arrays if not np.array_equal(a.arrays[k], b.arrays[k])]
  assert not different, f"{what}: arrays differ: {different}"
  assert _records(a) == _records(b), f"{what}: records differ"


def _relative(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(np.float32).tiny))


def _assert_close_well_conditioned(a: Result, b: Result, what: str) -> None:
  """Parameters, step sizes and losses within :data:`RTOL`, the searches' decisions equal."""
  for name in WELL_CONDITIONED:
    params = [k for k in b.arrays if k.startswith(f"{name}[1]")]  # the state's params
    assert params
    for key in params:
      assert _relative(a.arrays[key], b.arrays[key]) <= RTOL, (what, key)
    records_a, records_b = _records(a)[name]["train"], _records(b)[name]["train"]
    assert [r["step"] for r in records_a] == [r["step"] for r in records_b]
    assert [r["evals_per_step"] for r in records_a] == [r["evals_per_step"] for r in records_b]
    for field in ("learning_rate", "loss"):
      np.testing.assert_allclose([r[field] for r in records_a], [r[field] for r in records_b],
                                 rtol=RTOL, err_msg=f"{what}: {name} {field}")


def _train(result: Result, name: str, step: int) -> dict:
  (record,) = [r for r in result.info["history"][name]["train"] if r["step"] == step]
  return record


def test_two_processes_train_and_resume_like_one(tmp_path):
  names = [name for name, _ in OPTIMIZERS]
  stopped = tmp_path / "stopped"
  # Phase 1: the uninterrupted runs, and a 2-process run stopped at step 3 with its checkpoint.
  phase1 = _finish(
      _start(tmp_path, "two", processes=2, distributed=True),
      _start(tmp_path, "one", processes=1, distributed=True),
      _start(tmp_path, "plain", processes=1, distributed=False),
      _start(tmp_path, "stopped", processes=2, distributed=True, out=stopped,
             checkpoint_every=STOP, steps=STOP),
  )
  (two0, two1), (one,), (plain,) = phase1["two"], phase1["one"], phase1["plain"]

  # The runs are what they claim: 2 processes of 4 devices, 1 of 8; gloo across processes;
  # each process holds its half of the global batch, device d rows 4d to 4d + 3.
  for process, result in enumerate((two0, two1)):
    info = result.info
    assert (info["process_index"], info["process_count"]) == (process, 2)
    assert (info["device_count"], info["local_device_count"]) == (8, 4)
    assert info["cpu_collectives"] == "gloo"
    half = BATCH_SIZE // 2
    assert info["local_rows"] == [[start, start + 4, True]
                                  for start in range(process * half, (process + 1) * half, 4)]
  for result in (one, plain):
    assert (result.info["process_count"], result.info["device_count"]) == (1, 8)
    assert result.info["local_rows"] == [[s, s + 4, True] for s in range(0, BATCH_SIZE, 4)]
  for result in (two0, two1, one, plain):
    assert sorted(result.info["history"]) == sorted(names)
    assert result.info["restored_steps"] == []
    for name in names:
      assert [r["step"] for r in result.info["history"][name]["train"]] == list(
          range(1, STEPS + 1))
      assert int(result.arrays[f"{name}[0]"]) == STEPS  # the state's step counter

  # The runs train: every method steps (a positive step size, finite losses), the searches
  # search (several trials somewhere) and the methods' final parameters all differ.
  for name in names:
    train = two0.info["history"][name]["train"]
    assert train[-1]["learning_rate"] > 0, name
    assert all(np.isfinite(r["loss"]) for r in train), name
  assert any(r["evals_per_step"] > 1 for n in ("sls", "salsa")
             for r in two0.info["history"][n]["train"])
  kernels = [two0.arrays[f"{name}[1]['Dense_0']['kernel']"] for name in names]
  assert all(not np.array_equal(a, b) for i, a in enumerate(kernels) for b in kernels[i + 1:])

  # Both processes hold the same replicated state and write the same records.
  _assert_identical(two1, two0, "process 1 against process 0")
  # 2 processes = 1 process of 8 devices under the same runtime (gloo), bit for bit.
  _assert_identical(two0, one, "2 processes against 1 process (distributed runtime)")
  # ... and a plain 1-process run within float32 rounding where the method does not amplify it.
  _assert_close_well_conditioned(two0, plain, "2 processes against a plain 1-process run")
  for name in names:  # the first step: same parameters and batch, before any step rule acts
    for field in ("loss", "grad_norm"):
      np.testing.assert_allclose(_train(two0, name, 1)[field], _train(plain, name, 1)[field],
                                 rtol=RTOL, err_msg=f"{name} {field}")

  # The stopped run saved step 3 of every optimizer, written by both processes.
  for name in names:
    directory = stopped / "checkpoints" / name
    assert sorted(os.listdir(directory)) == [str(STOP)], name
    assert sorted(p.name for p in (directory / str(STOP) / "state").glob("ocdbt.process_*")) == [
        "ocdbt.process_0", "ocdbt.process_1"]
  for copy in ("resume_two", "resume_one", "resume_plain"):
    shutil.copytree(stopped, tmp_path / copy)

  # Phase 2: resume the 2-process checkpoint in 2 processes and in 1 (runtime, and plain).
  phase2 = _finish(
      _start(tmp_path, "resumed_two", processes=2, distributed=True,
             out=tmp_path / "resume_two", checkpoint_every=STOP, resume=True),
      _start(tmp_path, "resumed_one", processes=1, distributed=True,
             out=tmp_path / "resume_one", checkpoint_every=STOP, resume=True),
      _start(tmp_path, "resumed_plain", processes=1, distributed=False,
             out=tmp_path / "resume_plain", checkpoint_every=STOP, resume=True),
  )
  (resumed_two0, resumed_two1), (resumed_one,), (resumed_plain,) = (
      phase2["resumed_two"], phase2["resumed_one"], phase2["resumed_plain"])
  for result in (resumed_two0, resumed_two1, resumed_one, resumed_plain):
    assert result.info["restored_steps"] == [STOP] * len(names)  # resumed, not started afresh
  _assert_identical(resumed_two0, two0, "resumed in 2 processes against uninterrupted")
  _assert_identical(resumed_two1, two0, "resumed in 2 processes (process 1) against uninterrupted")
  _assert_identical(resumed_one, two0, "resumed in 1 process against uninterrupted")
  # The plain run: the records up to the checkpoint are the checkpoint's, its first step after
  # it starts from the checkpoint's parameters, and it continues within float32 rounding.
  for name in names:
    assert _records(resumed_plain)[name]["train"][:STOP] == _records(two0)[name]["train"][:STOP]
    np.testing.assert_allclose(_train(resumed_plain, name, STOP + 1)["loss"],
                               _train(two0, name, STOP + 1)["loss"], rtol=RTOL, err_msg=name)
  _assert_close_well_conditioned(resumed_plain, two0, "resumed in a plain 1-process run")
