#!/usr/bin/env python3
"""Token-check benchmark: the added latency of `[auth] mode = "tokens"` on `GET /catalog`, measured
on two real `lake serve` processes (embedded default: SQLite + ./lake-data, each in its own temporary
directory, on a kernel-chosen 127.0.0.1 port), one with `LAKE_AUTH__MODE=off` and one with
`LAKE_AUTH__MODE=tokens`, driven over HTTP on loopback under the same open-loop load.

    python3 host/benches/auth.py --lake target/release/lake \
        [--rate 500] [--seconds 20] [--warmup 3] [--datasets 200] [--rounds 4] [--workers 16]

Set-up, per server: `lake admin bootstrap` issues the first admin token and `lake token create
--owner bench --role reader --name bench` a reader token (both run before `lake serve`, with the
same working directory and environment, so against the same lake-data/catalog.db); the server
starts and `GET /health` answers 200; the bundled plugins finish loading (their compiled cache is
shared in ~/.cache/lake/bench-plugin-cache, so only a first run compiles them); `--datasets`
datasets are registered with `POST /catalog` (with the admin token where tokens are enforced), so
`GET /catalog` returns a full default page (50 items).

Load: open-loop at `--rate` requests/s. Request i is due at start + i/rate; a pool of `--workers`
threads, each with its own keep-alive `http.client` connection, takes the next due request, sleeps
until its time and sends it. Latency is measured from the *scheduled* time to the end of the
response body, so a slow server cannot hide its queueing by slowing the generator (no coordinated
omission: a request that waits for a free worker counts its wait). Both servers receive the same
bytes, the reader token in `Authorization: Bearer`; the server with auth off ignores it, so the
difference is the token check alone. After `--warmup` s on each (discarded), the measured
`--seconds` are split into `--rounds` interleaved rounds (off, tokens, then tokens, off, ...), so
machine noise falls on both alike.

Prints a JSON record (per server: requests, errors by status, achieved rate, p50/p90/p99/max of the
latency, plus the service time from the actual send and the generator's send lag as a check on the
generator; and the added p50/p99, tokens minus off, against the 1 ms p99 target) and a Markdown
table. Only the processes it starts are stopped, by handle.
"""
import argparse
import collections
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TARGET_ADDED_P99_MS = 1.0


def percentile(sorted_ms, p):
    """Nearest-rank on the sorted sample, as host/benches/api.rs computes it."""
    if not sorted_ms:
        return float("nan")
    i = round(p / 100 * (len(sorted_ms) - 1))
    return sorted_ms[min(i, len(sorted_ms) - 1)]


class Lake:
    """One `lake serve` in its own temporary directory, with its tokens."""

    def __init__(self, binary, name, mode, plugin_cache):
        self.binary, self.name, self.mode = binary, name, mode
        self.work = tempfile.mkdtemp(prefix=f"lake-auth-bench-{name}-")
        # Only the settings named here: a LAKE_* variable of the caller's shell (a PostgreSQL URL,
        # LAKE_TOKEN, LAKE_CONFIG...) would make the two servers differ from the embedded default.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}
        env.update({
            "LAKE_LOG": os.environ.get("LAKE_BENCH_LOG", "warn"),
            "LAKE_AUTH__MODE": mode,
            # The per-token limit runs (its cost is part of the check) but never refuses here:
            # one reader token asks 500 times a second.
            "LAKE_AUTH__REQUESTS_PER_MINUTE": "100000000",
            "LAKE_SERVER__LISTEN": "127.0.0.1:0",
            "LAKE_PLUGINS__CACHE_DIR": plugin_cache,
        })
        self.env = env
        self.proc = None
        self.admin_token = self.reader_token = None

    def cli(self, *args):
        """Runs `lake ARGS` against this lake's directory; returns its stdout as JSON."""
        r = subprocess.run([self.binary, *args], cwd=self.work, env=self.env,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit(f"[{self.name}] lake {' '.join(args)} exited {r.returncode}:\n"
                             f"{r.stdout}{r.stderr}")
        return json.loads(r.stdout)

    def issue_tokens(self):
        self.admin_token = self.cli("admin", "bootstrap")["token"]
        self.cli("user", "add", "bench", "--role", "reader", "--service")
        self.reader_token = self.cli("token", "create", "--owner", "bench", "--role", "reader",
                                     "--name", "bench")["token"]

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "serve"], cwd=self.work, env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen = []
        for line in self.proc.stderr:
            if line.startswith("lake listening on "):
                url = line.split()[3]
                break
            seen.append(line)
        else:
            self.proc.wait()
            raise SystemExit(f"[{self.name}] lake serve exited before listening: {''.join(seen)}")
        show = "LAKE_BENCH_LOG" in os.environ
        threading.Thread(target=lambda: [sys.stderr.write(f"[{self.name}] {l}") if show else None
                                         for l in self.proc.stderr], daemon=True).start()
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"[{self.name}] GET /health did not answer 200")
            time.sleep(0.1)

    def auth(self, token):
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method, path, body=None, token=None, conn=None):
        c = conn or http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            headers = self.auth(token)
            if body is not None:
                body = json.dumps(body)
                headers["Content-Type"] = "application/json"
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            try:
                v = json.loads(data)
            except ValueError:
                v = data.decode(errors="replace")
            return r.status, v, len(data)
        finally:
            if conn is None:
                c.close()

    def wait_plugins(self, limit_s):
        """`lake serve` loads its components in the background (a cold cache compiles them, which
        takes the CPU): wait, so the load runs on a quiet server."""
        t0 = time.monotonic()
        last = t0
        while True:
            s, v, _ = self.request("GET", "/plugins", token=self.admin_token)
            if s != 200:
                raise SystemExit(f"[{self.name}] GET /plugins: {s} {v}")
            loading = v.get("loading", {}) if isinstance(v, dict) else {}
            if loading.get("done", True):
                return round(time.monotonic() - t0, 1)
            now = time.monotonic()
            if now - t0 > limit_s:
                raise SystemExit(f"[{self.name}] plugins still loading after {limit_s} s: {loading}")
            if now - last > 30:
                print(f"[{self.name}] plugins loading: {loading.get('loaded')}/"
                      f"{loading.get('total')}", file=sys.stderr)
                last = now
            time.sleep(0.5)

    def seed(self, n):
        sources = ["geo", "uniprot", "pubmed", "upload"]
        organisms = ["Homo sapiens", "Mus musculus", "Rattus norvegicus", "Danio rerio"]
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            for i in range(n):
                src = sources[i % len(sources)]
                body = {
                    "name": f"{src.upper()} series {1000 + i}: expression profiling of sample set {i}",
                    "source": src,
                    "external_id": f"GSE{1000 + i}" if src == "geo" else f"{src.upper()}{1000 + i}",
                    # Processed: a reader sees it (raw data is hidden from roles that may not
                    # download it), so both servers answer with the same page.
                    "layer": "processed",
                    "metadata": {
                        "organism": organisms[i % len(organisms)],
                        "platform": f"GPL{570 + i % 7}",
                        "samples": 6 + i % 42,
                        "submitted": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
                        "description": "Bulk RNA-seq of tissue samples, paired tumour and normal, "
                                       "with clinical annotations.",
                    },
                    "tags": [src, "bench", ["rna-seq", "proteomics", "clinical"][i % 3]],
                }
                s, v, _ = self.request("POST", "/catalog", body=body, token=self.admin_token,
                                       conn=conn)
                if s not in (200, 201):
                    raise SystemExit(f"[{self.name}] POST /catalog: {s} {v}")
        finally:
            conn.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


class Driver:
    """Open-loop load on one server from a pool of threads with kept-alive connections (kept across
    rounds, so a round does not pay for connecting)."""

    def __init__(self, lake, path, headers, workers):
        self.lake, self.path, self.headers = lake, path, headers
        self.conns = [None] * workers
        self.latency, self.service, self.lag = [], [], []
        self.statuses = collections.Counter()
        self.requests = 0
        self.busy_s = 0.0

    def run(self, rate, seconds, record=True):
        n = max(1, int(rate * seconds))
        lat, svc, lag, st = [0.0] * n, [0.0] * n, [0.0] * n, [None] * n
        ends = [0.0] * len(self.conns)
        nxt = [0]
        lock = threading.Lock()
        start = time.perf_counter() + 0.05

        def worker(k):
            conn = self.conns[k]
            while True:
                with lock:
                    i = nxt[0]
                    if i >= n:
                        break
                    nxt[0] = i + 1
                due = start + i / rate
                d = due - time.perf_counter()
                if d > 0:
                    time.sleep(d)
                sent = time.perf_counter()
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(self.lake.host, self.lake.port,
                                                          timeout=30)
                        conn.connect()
                        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.request("GET", self.path, headers=self.headers)
                    r = conn.getresponse()
                    r.read()
                    status = r.status
                    if r.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as e:
                    status = type(e).__name__
                    if conn is not None:
                        conn.close()
                    conn = None
                done = time.perf_counter()
                lat[i], svc[i], lag[i], st[i] = ((done - due) * 1e3, (done - sent) * 1e3,
                                                 (sent - due) * 1e3, status)
                ends[k] = max(ends[k], done)
            self.conns[k] = conn

        threads = [threading.Thread(target=worker, args=(k,), daemon=True)
                   for k in range(len(self.conns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if record:
            self.latency += lat
            self.service += svc
            self.lag += lag
            self.statuses.update(str(s) for s in st)
            self.requests += n
            self.busy_s += max(ends) - start

    def close(self):
        for c in self.conns:
            if c is not None:
                c.close()
        self.conns = [None] * len(self.conns)

    def summary(self):
        lat, svc, lag = sorted(self.latency), sorted(self.service), sorted(self.lag)
        r2 = lambda x: round(x, 3)
        return {
            "requests": self.requests,
            "errors": sum(v for k, v in self.statuses.items() if k != "200"),
            "errors_by_status": {k: v for k, v in sorted(self.statuses.items()) if k != "200"},
            "achieved_rps": round(self.requests / self.busy_s, 1) if self.busy_s else None,
            "p50_ms": r2(percentile(lat, 50)), "p90_ms": r2(percentile(lat, 90)),
            "p99_ms": r2(percentile(lat, 99)), "max_ms": r2(percentile(lat, 100)),
            "service_p50_ms": r2(percentile(svc, 50)), "service_p99_ms": r2(percentile(svc, 99)),
            "send_lag_p99_ms": r2(percentile(lag, 99)), "send_lag_max_ms": r2(percentile(lag, 100)),
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "lake"))
    ap.add_argument("--rate", type=float, default=500.0, help="requests/s, open-loop")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per server")
    ap.add_argument("--warmup", type=float, default=3.0, help="discarded seconds per server")
    ap.add_argument("--datasets", type=int, default=200, help="datasets registered on each")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds of seconds/rounds")
    ap.add_argument("--workers", type=int, default=16, help="sender threads (connections)")
    ap.add_argument("--path", default="/catalog", help="the GET request measured")
    ap.add_argument("--plugin-wait", type=float, default=1800.0,
                    help="seconds to wait for the bundled plugins to load")
    a = ap.parse_args()
    # The servers and the CLI run in their own directories: the binary is named absolutely.
    a.lake = os.path.abspath(a.lake)
    if not os.access(a.lake, os.X_OK):
        raise SystemExit(f"no lake binary at {a.lake} (cargo build --release -p lake-host)")

    plugin_cache = os.path.join(os.path.expanduser("~"), ".cache", "lake", "bench-plugin-cache")
    rec = {"path": a.path, "rate": a.rate, "seconds": a.seconds, "warmup": a.warmup,
           "rounds": a.rounds, "workers": a.workers, "datasets": a.datasets,
           "lake": os.path.abspath(a.lake),
           "machine": {"cpus": os.cpu_count(), "loadavg1": os.getloadavg()[0]},
           "servers": {}}
    lakes = {"off": Lake(a.lake, "off", "off", plugin_cache),
             "tokens": Lake(a.lake, "tokens", "tokens", plugin_cache)}
    drivers = {}
    try:
        for name, lake in lakes.items():
            # Tokens go in before the server starts (the CLI opens, and migrates, the same
            # lake-data/catalog.db); both servers get them, only one asks for them.
            lake.issue_tokens()
            lake.start()
            # One server at a time: the first run compiles the plugins into the shared cache.
            plugins_s = lake.wait_plugins(a.plugin_wait)
            t = time.perf_counter()
            lake.seed(a.datasets)
            seed_s = time.perf_counter() - t
            s, page, size = lake.request("GET", a.path, token=lake.reader_token)
            if s != 200:
                raise SystemExit(f"[{name}] GET {a.path}: {s} {page}")
            anon = lake.request("GET", a.path)[0]
            rec["servers"][name] = {
                "auth_mode": lake.mode, "plugins_loaded_s": plugins_s,
                "seed_s": round(seed_s, 2),
                "page_items": len(page.get("items", [])) if isinstance(page, dict) else None,
                "page_bytes": size, "status_without_token": anon}
            print(f"[{name}] ready: {json.dumps(rec['servers'][name])}", file=sys.stderr)
            drivers[name] = Driver(lake, a.path, lake.auth(lake.reader_token), a.workers)
        pages = {n: (v["page_items"], v["page_bytes"]) for n, v in rec["servers"].items()}
        if len(set(pages.values())) != 1:
            raise SystemExit(f"the two servers answer different pages, so their latencies do not compare: {pages}")
        if rec["servers"]["tokens"]["status_without_token"] != 401:
            raise SystemExit("the tokens server answered without a token: auth is not enforced")
        if rec["servers"]["off"]["status_without_token"] != 200:
            raise SystemExit("the off server asked for a token")

        for name in lakes:
            drivers[name].run(a.rate, a.warmup, record=False)
        order = list(lakes)
        per_round = a.seconds / a.rounds
        for r in range(a.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                drivers[name].run(a.rate, per_round)
                print(f"round {r + 1}/{a.rounds} {name}: {drivers[name].requests} requests so far",
                      file=sys.stderr)
        for name, d in drivers.items():
            d.close()
            rec["servers"][name].update(d.summary())
    finally:
        for d in drivers.values():
            d.close()
        for lake in lakes.values():
            lake.stop()

    off, tok = rec["servers"]["off"], rec["servers"]["tokens"]
    added = {k: round(tok[f"{k}_ms"] - off[f"{k}_ms"], 3) for k in ("p50", "p90", "p99", "max")}
    rec["added_ms"] = added
    rec["target_added_p99_ms"] = TARGET_ADDED_P99_MS
    rec["met"] = added["p99"] < TARGET_ADDED_P99_MS and off["errors"] == 0 and tok["errors"] == 0
    print(json.dumps(rec, indent=1))
    print()
    print(f"`GET {a.path}` open-loop at {a.rate:g} req/s, {a.seconds:g} s per server in "
          f"{a.rounds} interleaved rounds, {a.datasets} datasets "
          f"({off['page_items']} items, {off['page_bytes']} bytes a page):")
    print()
    print("| auth | requests | errors | achieved req/s | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in rec["servers"].items():
        errs = str(s["errors"]) + (f" ({', '.join(f'{k}: {v}' for k, v in s['errors_by_status'].items())})"
                                   if s["errors"] else "")
        print(f"| {name} | {s['requests']} | {errs} | {s['achieved_rps']} | {s['p50_ms']:.2f} | "
              f"{s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['max_ms']:.2f} |")
    print(f"| **added (tokens - off)** | | | | {added['p50']:+.2f} | {added['p90']:+.2f} | "
          f"{added['p99']:+.2f} | {added['max']:+.2f} |")
    print()
    print(f"Added at p99: {added['p99']:+.2f} ms (target < {TARGET_ADDED_P99_MS:g} ms): "
          f"{'met' if rec['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
