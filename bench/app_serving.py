"""The running app: launch time (cold, then warm) and peak memory while it serves a mixed load.

    python bench/app_serving.py [--launches 2] [--rounds 3] [--json OUT]

Starts ``python app.py`` as a separate process (the ``photo`` default: bridge + TIPCap S4 + prompt model; weights
from $ZSC_CHECKPOINTS or checkpoints/) ``--launches`` times and times each one from process start until the server
answers HTTP. The first launch may be cold (bytecode, dequantised LM cache); the later ones are the warm starts
(target < 10 s). The last launch then serves ``--rounds`` rounds of every endpoint through gradio_client, several
requests in flight at once (queued): caption real photos at S=20 and S=64 (photo preset), a scene with the offline-
world preset (loads it: the memory worst case), recaption a photo with a prompt, VQA, the gap analysis on the COCO
photos and on uploaded images, random scenes. The server's peak resident memory (VmHWM, whole process life, children
included) is the figure against the 3 GB target."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from zsc_core import world  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(port: int, log, timeout: float = 300.0) -> tuple[subprocess.Popen, float]:
    """Start app.py (its stderr to the file ``log``: a pipe nobody reads would fill up and stall the server);
    return the process and the seconds until it answered HTTP."""
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"app.py exited with {proc.returncode}: {log.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"app.py did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def running_app():
    """app.py on a free port for one bench, its log in a temporary file: yields (its URL, the process, the seconds
    until it answered HTTP), and stops it afterwards."""
    with tempfile.TemporaryFile("w+") as log:
        port = free_port()
        proc, secs = launch(port, log)
        try:
            yield f"http://127.0.0.1:{port}/", proc, secs
        finally:
            proc.terminate()
            proc.wait()


def report(out: dict, path: str = "") -> dict:
    """Print a bench's figures as JSON and, given a path, write them there."""
    print(json.dumps(out, indent=1))
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
    return out


def rss_split_gb(pid: int) -> dict[str, float]:
    """The process's resident memory now, by kind: private (``RssAnon``: tensors, Python objects) and file-backed
    (``RssFile``: shared libraries such as torch's CUDA build, memory-mapped weights; clean pages the kernel can drop
    and re-read), in GB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = {"RssAnon:": "rss_anon_gb", "RssFile:": "rss_file_gb"}.get(line.split(":")[0] + ":")
                if key:
                    out[key] = round(int(line.split()[1]) * 1024 / 1e9, 2)
    except OSError:
        pass
    return out


def peak_rss_gb(pid: int) -> float:
    """VmHWM of the process plus that of its live children, in GB."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            pass
    return total * 1024 / 1e9


def load(url: str, rounds: int, workdir: str) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Every endpoint, ``rounds`` times, with several requests in flight; seconds per request by endpoint, and
    the error message of each endpoint that failed."""
    from gradio_client import Client, handle_file

    from zsc_core.evaluation import coco_items

    items = coco_items("val-dev")[:4]
    paths = [p for p, _ in items]
    caps = "\n".join(refs[0] for _, refs in items)
    scene = os.path.join(workdir, "scene0.png")
    world.render(world.make_scene(0, "eval", 0), 256).save(scene)
    settings = ["photo", 20, None, None, 1, 0]
    jobs = [
        ("caption S=20", (handle_file(paths[0]), *settings), "/caption"),
        ("caption S=64", (handle_file(paths[1]), "photo", 64, None, None, 1, 0), "/caption"),
        ("caption offline-world", (handle_file(scene), "offline-world", 20, None, None, 1, 0), "/caption"),
        ("recaption", (handle_file(paths[2]), "An image contains motorcycle", *settings), "/recaption"),
        ("answer", (handle_file(paths[3]), "what is on the table?", "photo"), "/answer"),
        ("gap COCO photos", ("photo", "COCO photos", 10, None, ""), "/gap"),
        ("gap uploads", ("photo", "my images and captions", 10, [handle_file(p) for p in paths], caps), "/gap"),
        ("random scene", (0,), "/random_scene"),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in jobs}
    errors: dict[str, str] = {}
    clients = [Client(url, verbose=False, download_files=workdir) for _ in range(3)]

    def run(k: int, job) -> None:
        name, args, api = job
        t = time.perf_counter()
        try:
            clients[k % len(clients)].predict(*args, api_name=api)
        except Exception as e:  # e.g. no prompt model trained yet: the app's message, reported below
            errors[name] = str(e)[:200]
            return
        times[name].append(time.perf_counter() - t)

    for _ in range(rounds):
        with ThreadPoolExecutor(len(clients)) as ex:
            list(ex.map(run, range(len(jobs)), jobs))
    return times, errors


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--launches", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    launches, proc, port = [], None, 0
    with tempfile.TemporaryFile("w+") as log, tempfile.TemporaryDirectory() as d:
        for i in range(args.launches):
            port = free_port()
            proc, secs = launch(port, log)
            launches.append(secs)
            print(f"launch {i + 1}: serving after {secs:.1f} s; resident at start-up "
                  f"{peak_rss_gb(proc.pid):.2f} GB", flush=True)
            if i < args.launches - 1:
                proc.terminate()
                proc.wait()
        assert proc is not None
        try:
            t = time.perf_counter()
            times, errors = load(f"http://127.0.0.1:{port}/", args.rounds, d)
            wall = time.perf_counter() - t
            peak = peak_rss_gb(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
    res = {"launch_s": launches, "warm_start_s": min(launches[1:]) if len(launches) > 1 else None,
           "peak_rss_gb": peak, "load_wall_s": wall, "requests": sum(len(v) for v in times.values()),
           "seconds_per_request": {k: sum(v) / len(v) for k, v in times.items() if v}, "errors": errors,
           "cpu_count": os.cpu_count()}
    print(f"warm start: {res['warm_start_s']} s (target < 10 s)")
    print(f"served {res['requests']} requests in {wall:.1f} s, 3 in flight; peak resident memory "
          f"{peak:.2f} GB (target < 3 GB)")
    for k, v in res["seconds_per_request"].items():
        print(f"  {k:16s} {v:6.2f} s per request (queue wait included)")
    for k, v in errors.items():
        print(f"  {k:16s} FAILED: {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
