"""Gateway throughput and latency with wrk: upstream, nginx, an aiohttp proxy and qanat.

Run (after ``bash benchmarks/gateway/setup.sh``)::

    .venv/bin/python benchmarks/gateway/run.py                  # -t2 -c64 -d10s, 1 round
    .venv/bin/python benchmarks/gateway/run.py -c 64 -d 10 --rounds 3 --out result.md

One run starts, on free ports of 127.0.0.1, one fast upstream
(``benchmarks/upstream.py``) and four proxies in front of it: nginx
(``worker_processes 1``, upstream keepalive), the aiohttp reference proxy
(``aiohttp_proxy.py``), and the qanat gateway (``gateway_target.py``: a
plain route, and the full stack), each twice: the compiled build a wheel
install gives (``scripts/build_wheel.sh``; ``--build DIR`` reuses one, else
it is built into the run's temporary directory, about a minute) and the pure
Python of the editable tree (the ``(pure)`` rows). wrk drives each target in turn; with
``--rounds N`` the targets are interleaved N times and each keeps its best
round (noise on a shared machine only ever makes a round slower). Every
child is stopped at the end, also on failure or Ctrl-C.

Pinning (default on a machine with 2+ CPUs; ``--no-pin`` to turn off): the
proxy under test gets CPU 1 to itself, wrk and the upstream share CPU 0. So
each proxy, nginx's single worker or the gateway's single process, gets
exactly one core, and the load generator never steals from it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procs import Procs, free_port, pinned, wait_connectable  # noqa: E402
from wrk import WrkResult, markdown_table, parse_wrk  # noqa: E402

ROOT = HERE.parent.parent
PY = sys.executable
TARGETS = ("upstream", "nginx", "aiohttp proxy", "qanat plain", "qanat full",
           "qanat plain (pure)", "qanat full (pure)")

NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream backend {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def start_nginx(procs: Procs, workdir: str, upstream: str, cpus: str | None) -> str:
    port = free_port()
    conf = Path(workdir, "nginx.conf")
    conf.write_text(NGINX_CONF.format(dir=workdir, upstream=upstream, port=port))
    argv = ["nginx", "-p", workdir, "-e", f"{workdir}/nginx-error.log", "-c", str(conf),
            "-g", "daemon off;"]
    procs.start("nginx", pinned(argv, cpus), ready_line=False)
    try:
        wait_connectable("127.0.0.1", port)
    except TimeoutError:
        log = Path(workdir, "nginx-error.log")
        raise RuntimeError(f"nginx did not start: {log.read_text() if log.exists() else ''}"
                           f"{procs.log('nginx')}") from None
    return f"127.0.0.1:{port}"


def run_wrk(url: str, args: argparse.Namespace, seconds: int, headers: list[str],
            cpus: str | None) -> WrkResult:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(pinned([*argv, url], cpus), capture_output=True, text=True,
                         timeout=seconds + 30, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
    return parse_wrk(out.stdout)


def compiled_site(args: argparse.Namespace, workdir: str) -> str:
    """``DIR/site`` of a compiled build: ``--build DIR``, or one built now into ``workdir``."""
    build = args.build
    if build is None:
        build = str(Path(workdir, "build"))
        print("  building the compiled wheel (scripts/build_wheel.sh) ...", file=sys.stderr,
              flush=True)
        subprocess.run(["bash", str(ROOT / "scripts/build_wheel.sh"), build], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "PYTHON": PY})
    site = Path(build, "site")
    if not site.is_dir():
        raise SystemExit(f"--build {build}: no site/ in it (make one with "
                         f"bash scripts/build_wheel.sh {build})")
    return str(site)


def start_all(procs: Procs, workdir: str, args: argparse.Namespace,
              pin: tuple[str | None, str | None]) -> dict[str, tuple[str, list[str]]]:
    """Start the upstream and every proxy; return ``{target: (host:port, wrk headers)}``."""
    load_cpu, proxy_cpu = pin
    up = procs.start("upstream", pinned([PY, str(ROOT / "benchmarks/upstream.py"), "--port", "0",
                                         "--body-size", str(args.body_size)], load_cpu))
    wanted = set(args.targets)
    addrs: dict[str, tuple[str, list[str]]] = {"upstream": (up, [])}
    if "nginx" in wanted:
        addrs["nginx"] = (start_nginx(procs, workdir, up, proxy_cpu), [])
    if "aiohttp proxy" in wanted:
        argv = [PY, str(HERE / "aiohttp_proxy.py"), "--port", "0", "--upstream", up]
        addrs["aiohttp proxy"] = (procs.start("aiohttp", pinned(argv, proxy_cpu)), [])
    site = None
    if {"qanat plain", "qanat full"} & wanted:
        site = compiled_site(args, workdir)
    for stack, build in (("plain", "compiled"), ("full", "compiled"), ("plain", "pure"),
                         ("full", "pure")):
        name = f"qanat {stack}" + (" (pure)" if build == "pure" else "")
        if name in wanted:
            argv = [PY, str(HERE / "gateway_target.py"), "--port", "0", "--upstream", up,
                    "--stack", stack]
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            if build == "compiled":
                env["PYTHONPATH"] = str(site)
            addr = procs.start(name, pinned(argv, proxy_cpu), env=env)
            info = procs.info.get(name, [])
            if f"info build {build}" not in info:
                raise RuntimeError(f"{name}: expected the {build} build, the target said "
                                   f"{[ln for ln in info if ln.startswith('info build')]}")
            headers = [ln.removeprefix("info header ") for ln in info
                       if ln.startswith("info header ")]
            addrs[name] = (addr, headers)
    return addrs


def report(args: argparse.Namespace, results: dict[str, WrkResult], notes: list[str],
           load: tuple[tuple[float, ...], tuple[float, ...]], pinning: str) -> str:
    rows = [(t, results[t]) for t in TARGETS if t in results]
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    lines = [
        f"Gateway benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
        f"- command: `{' '.join(shlex.quote(a) for a in [Path(PY).name, *sys.argv])}`",
        f"- wrk: `-t{args.threads} -c{args.connections} -d{args.duration}s --latency`, "
        f"{args.rounds} round(s), best round kept; {args.warmup}s warm-up per target",
        f"- load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load[0])}, "
        f"after: {'/'.join(f'{x:.2f}' for x in load[1])}; {os.cpu_count()} CPUs; {pinning}",
        f"- {nginx_v.stderr.strip()}; {(wrk_v.stdout or wrk_v.stderr).splitlines()[0]}; "
        f"Python {platform.python_version()}; upstream body {args.body_size} bytes",
        "- qanat rows: the compiled build (the wheel `pip install .` makes, "
        "scripts/build_wheel.sh); `(pure)` rows: the same code interpreted (editable tree)",
        *[f"- {n}" for n in notes],
        "",
        markdown_table(rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("-d", "--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--warmup", type=int, default=2, help="seconds of wrk before measuring")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--body-size", type=int, default=13)
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS),
                   metavar="TARGET", help=f"any of: {', '.join(TARGETS)}")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--build", metavar="DIR",
                   help="a compiled build made by scripts/build_wheel.sh DIR (default: build one)")
    p.add_argument("--out", help="also write the Markdown report to this file")
    args = p.parse_args(argv)
    pin_ok = not args.no_pin and (os.cpu_count() or 1) >= 2
    pin = ("0", "1") if pin_ok else (None, None)
    pinning = ("pinned: proxy on CPU 1, wrk + upstream on CPU 0" if pin_ok else "not pinned")
    load_before = os.getloadavg()
    results: dict[str, WrkResult] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qanat-gwbench-") as workdir, Procs(workdir) as procs:
        addrs = start_all(procs, workdir, args, pin)
        for name in ("qanat full", "qanat full (pure)"):
            if name in procs.info:
                found = [ln.removeprefix("info stack ") for ln in procs.info[name]
                         if ln.startswith("info stack ")]
                notes.append(f"{name}: {found[0] if found else '-'}")
        for name in args.targets:
            addr, headers = addrs[name]
            if args.warmup > 0:
                run_wrk(f"http://{addr}/", args, args.warmup, headers, pin[0])
        for _ in range(args.rounds):
            for name in args.targets:
                addr, headers = addrs[name]
                r = run_wrk(f"http://{addr}/", args, args.duration, headers, pin[0])
                print(f"  {name:14} {r.rps:>10,.0f} req/s  p50 {r.p50_ms:.2f} ms  "
                      f"p99 {r.p99_ms:.2f} ms  errors {r.errors}", file=sys.stderr, flush=True)
                if name not in results or r.rps > results[name].rps:
                    results[name] = r
    text = report(args, results, notes, (load_before, os.getloadavg()), pinning)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
