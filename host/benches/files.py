#!/usr/bin/env python3
"""File-service benchmark: the real `lake serve` (release build, embedded default) driven over
HTTP on loopback, with the server's resident memory sampled from /proc every 20 ms.

    python3 host/benches/files.py --lake target/release/lake --data /tmp/benchdata \
        [--sizes 100000,1000000] [--big-gb 2] [--five-m] [--peers VENV_PYTHON] [--reps 3]

Measures, in one run: upload + parse of each size's left/right CSV; the merge request (inner join on
sample_id) cold and cached at each size; save_merged (Parquet) of the largest; the RSS growth of a
streamed upload of a --big-gb CSV; optionally 5M x 5M; and, with --peers, the seed pipeline, Polars
lazy and DuckDB on the same files through ../shared/bench/workloads.py. Prints a JSON record and a
Markdown table. Only the processes it starts are stopped, by handle.

    --compare   only the side-by-side table: the lake, Polars and DuckDB on the same files
    --growth GB,GB   only how cost grows: uploads from 100 MB to these sizes, two 251 MB uploads
                     at once against one, cold merges of 100k, 1M and 5M rows a side
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))


class Rss:
    """Samples a process's VmRSS; `mark()` starts a phase and `peak()` reads its maximum."""

    def __init__(self, pid):
        self.pid = pid
        self.cur = 0
        self.phase_peak = 0
        self.stop = False
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def read(self, field="VmRSS"):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self):
        while not self.stop:
            v = self.read()
            with self.lock:
                self.cur = v
                self.phase_peak = max(self.phase_peak, v)
            time.sleep(0.02)

    def mark(self):
        v = self.read()
        with self.lock:
            self.phase_peak = v
        return v

    def peak(self):
        with self.lock:
            return max(self.phase_peak, self.read())


def mb(b):
    return round(b / 1e6, 1)


class Lake:
    def __init__(self, binary, workdir, extra_env):
        env = dict(os.environ)
        env.pop("LAKE_CONFIG", None)
        env.update({"LAKE_LOG": os.environ.get("LAKE_BENCH_LOG", "warn")}, **extra_env)
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0"], cwd=workdir, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen = []
        for line in self.proc.stderr:
            if line.startswith("lake listening on "):
                url = line.split()[3]
                break
            seen.append(line)
        else:
            raise SystemExit(f"lake serve exited before listening: {''.join(seen)}")
        # Keep draining the server's log (LAKE_BENCH_LOG=info shows it, e.g. merge stage timings);
        # the uploads' stage timings are kept for the comparison.
        show = "LAKE_BENCH_LOG" in os.environ
        self.stages = []

        def drain():
            for line in self.proc.stderr:
                if show:
                    sys.stderr.write(line)
                if "File uploaded" in line or "Parsed in segments" in line:
                    self.stages.append(dict(
                        kv.split("=", 1) for kv in line.split() if "=" in kv))
        threading.Thread(target=drain, daemon=True).start()
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.rss = Rss(self.proc.pid)

    def request(self, method, path, body=None, headers=None, timeout=3600):
        # A file body is sent in 1 MiB pieces: in http.client's default 8 KiB pieces, sending 251
        # MB to a socket took 0.22-0.50 s of CPU on these same two cores, against 0.09-0.12 s.
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout, blocksize=1 << 20)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            try:
                v = json.loads(data)
            except ValueError:
                v = data.decode(errors="replace")
            return r.status, v
        finally:
            c.close()

    def upload(self, path):
        name = os.path.basename(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            s, v = self.request("POST", f"/files/upload?filename={urllib.parse.quote(name)}", body=f,
                                headers={"Content-Length": str(size)})
        if s not in (200, 201):
            raise SystemExit(f"upload {name}: {s} {v}")
        return v

    def cpu_s(self):
        """The server's CPU seconds so far (user + system)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settle(self, most=15.0):
        """Waits until the server's CPU stays under 5% for half a second (at most `most` s) and
        says how long that took: merges timed right after gigabytes of uploads took up to twice
        as long as on a server at rest."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < most:
            c0 = self.cpu_s()
            time.sleep(0.5)
            if self.cpu_s() - c0 < 0.025:
                break
        return round(time.monotonic() - t0, 1)

    def stop(self):
        self.rss.stop = True
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def timed(fn):
    t = time.perf_counter()
    v = fn()
    return time.perf_counter() - t, v


def label(n):
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def ensure_data(data, sizes, python):
    missing = [n for n in sizes if not os.path.exists(os.path.join(data, f"left_{label(n)}.csv"))]
    if missing:
        subprocess.run([python, os.path.join(SHARED, "bench", "gen_tables.py"), "--out", data,
                        "--sizes", ",".join(str(n) for n in missing)], check=True)


def big_csv(data, gb):
    """A CSV of at least `gb` GB: left_1M.csv's rows repeated (made once, kept)."""
    path = os.path.join(data, f"big_{gb}GB.csv")
    want = int(gb * 1e9)
    if os.path.exists(path) and os.path.getsize(path) >= want:
        return path
    src = os.path.join(data, "left_1M.csv")
    with open(src, "rb") as f:
        header = f.readline()
        body = f.read()
    with open(path + ".tmp", "wb") as out:
        out.write(header)
        written = len(header)
        while written < want:
            out.write(body)
            written += len(body)
    os.replace(path + ".tmp", path)
    return path


def merge(lake, a, b, how="inner"):
    q = urllib.parse.urlencode({"file_id_1": a, "file_id_2": b, "on": "sample_id", "how": how,
                                "preview": 5})
    s, v = lake.request("GET", f"/files/merge?{q}")
    if s != 200:
        raise SystemExit(f"merge: {s} {v}")
    return v


def run_peers(python, data, reps):
    out = {}
    left, right = (os.path.join(data, f"{s}_1M.csv") for s in ("left", "right"))
    wl = os.path.join(SHARED, "bench", "workloads.py")
    for name in ("pandas_seed", "polars_lazy", "duckdb_e2e"):
        runs = []
        for _ in range(reps):
            r = subprocess.run([python, wl, name, left, right], capture_output=True, text=True,
                               check=True)
            runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        out[name] = {"median_s": statistics.median(r["total_s"] for r in runs),
                     "peak_mb": max(r["peak_mb"] for r in runs),
                     "rows_out": runs[0].get("rows_out")}
    return out


PEER_SNIPPETS = {
    # The same file to a Parquet file, as a lab member would on a laptop.
    "polars_sink_parquet": (
        "import polars as pl,sys,time\n"
        "t=time.perf_counter();pl.scan_csv(sys.argv[1]).sink_parquet(sys.argv[2])\n"
        "print(time.perf_counter()-t)"),
    "duckdb_copy": (
        "import duckdb,sys,time\n"
        "c=duckdb.connect();c.execute('SET enable_progress_bar=false');t=time.perf_counter()\n"
        "c.execute(f\"COPY (SELECT * FROM read_csv('{sys.argv[1]}')) TO '{sys.argv[2]}' "
        "(FORMAT parquet)\")\n"
        "print(time.perf_counter()-t)"),
    # Two tables already in Parquet, read and joined in memory.
    "polars_parquet_join": (
        "import polars as pl,sys,time\n"
        "t=time.perf_counter()\n"
        "j=pl.read_parquet(sys.argv[1]).join(pl.read_parquet(sys.argv[2]),on='sample_id',"
        "how='inner')\n"
        "print(time.perf_counter()-t, j.height)"),
    "polars_csv_gz_parquet": (
        "import polars as pl,sys,time\n"
        "t=time.perf_counter();pl.read_csv(sys.argv[1]).write_parquet(sys.argv[2])\n"
        "print(time.perf_counter()-t)"),
}


def peer(python, name, *args):
    r = subprocess.run([python, "-c", PEER_SNIPPETS[name], *args], capture_output=True,
                       text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1].split()[0])


def distinct_copies(path, n):
    """`n` copies of a CSV, each with one extra row (its first data row again), so no upload of
    one is a duplicate of another. Made once, kept beside the original."""
    out = []
    with open(path, "rb") as f:
        f.readline()
        row = f.readline()
    for i in range(n):
        copy = f"{path[:-4]}_copy{i}.csv"
        if not os.path.exists(copy):
            shutil.copyfile(path, copy + ".tmp")
            with open(copy + ".tmp", "ab") as f:
                for _ in range(i + 1):
                    f.write(row)
            os.replace(copy + ".tmp", copy)
        out.append(copy)
    return out


def compare(binary, data, python, reps):
    """The lake and its peers on the same files in one run: upload-to-table of the 251 MB CSV
    against Polars' sink_parquet and DuckDB's COPY, the same file gzipped, and a cold 1M x 1M
    merge against Polars joining the two tables from Parquet. Each figure is a median of `reps`."""
    ensure_data(data, [1_000_000, 5_000_000], python)
    big = os.path.join(data, "left_5M.csv")
    copies = distinct_copies(big, reps)
    gz = big + ".gz"
    if not os.path.exists(gz):
        subprocess.run(["sh", "-c", f"gzip -c1 '{big}' > '{gz}.tmp' && mv '{gz}.tmp' '{gz}'"],
                       check=True)
    gz_copies = []
    for i, c in enumerate(copies):
        g = c + ".gz"
        if not os.path.exists(g):
            subprocess.run(["sh", "-c", f"gzip -c1 '{c}' > '{g}.tmp' && mv '{g}.tmp' '{g}'"],
                           check=True)
        gz_copies.append(g)
    work = tempfile.mkdtemp(prefix="lake-compare-")
    out = os.path.join(work, "peer.parquet")
    rec = {"load_start": os.getloadavg()}
    lake = Lake(binary, work, {"LAKE_LOG": "warn,lake_host::files=info,lake_host::plugins=info"})
    try:
        while not lake.request("GET", "/plugins")[1].get("loading", {}).get("done", True):
            time.sleep(0.1)
        base = lake.rss.mark()
        ups, stages = [], []
        cpu_s = lake.cpu_s
        cpu = []
        for c in copies:
            seen = len(lake.stages)
            c0 = cpu_s()
            t, v = timed(lambda: lake.upload(c))
            cpu.append(round(cpu_s() - c0, 2))
            assert v["rows"] and not v.get("duplicate"), v
            ups.append(t)
            time.sleep(0.2)  # the log lines follow the answer
            merged = {}
            for st in lake.stages[seen:]:
                merged.update(st)
            stages.append(merged)
        rec["upload_s"] = ups
        rec["upload_server_cpu_s"] = cpu
        rec["upload_stages"] = stages
        rec["upload_rss_growth_mb"] = mb(lake.rss.peak() - base)
        gzs = []
        for g in gz_copies:
            t, v = timed(lambda: lake.upload(g))
            assert v["rows"] and not v.get("duplicate"), v
            gzs.append(t)
        rec["upload_gz_s"] = gzs
        _, left = timed(lambda: lake.upload(os.path.join(data, "left_1M.csv")))
        _, right = timed(lambda: lake.upload(os.path.join(data, "right_1M.csv")))
        # The merges start once the uploads' work has settled, as on a server not just fed 1.5 GB.
        rec["settle_s"] = lake.settle()
        merges = []
        for i in range(reps):
            q = urllib.parse.urlencode({
                "file_id_1": left["file_id"], "file_id_2": right["file_id"], "on": "sample_id",
                "how": "inner", "suffixes": f"_l{i},_r{i}", "preview": 5})
            t, (s, v) = timed(lambda: lake.request("GET", f"/files/merge?{q}"))
            assert s == 200 and not v["cached"], v
            merges.append(t)
        rec["merge_cold_s"] = merges
        rec["merge_rows"] = v["rows"]
    finally:
        lake.stop()
    try:
        rec["polars_sink_parquet_s"] = [peer(python, "polars_sink_parquet", big, out)
                                        for _ in range(reps)]
        rec["duckdb_copy_s"] = [peer(python, "duckdb_copy", big, out) for _ in range(reps)]
        rec["polars_gz_s"] = [peer(python, "polars_csv_gz_parquet", gz, out) for _ in range(reps)]
        pl_, pr = os.path.join(work, "l.parquet"), os.path.join(work, "r.parquet")
        peer(python, "polars_sink_parquet", os.path.join(data, "left_1M.csv"), pl_)
        peer(python, "polars_sink_parquet", os.path.join(data, "right_1M.csv"), pr)
        rec["polars_parquet_join_s"] = [peer(python, "polars_parquet_join", pl_, pr)
                                        for _ in range(reps)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rec["load_end"] = os.getloadavg()
    med = {k: statistics.median(v) for k, v in rec.items()
           if k.endswith("_s") and isinstance(v, list)}
    print(json.dumps(rec, indent=1))
    print()
    print(f"load average at start {rec['load_start'][0]:.2f}, at end {rec['load_end'][0]:.2f} "
          f"({os.cpu_count()} cores); medians of {reps}")
    print()
    print("| work | the lake | Polars | lake / Polars | DuckDB | lake / DuckDB |")
    print("|---|---|---|---|---|---|")
    up, pol, duck = med["upload_s"], med["polars_sink_parquet_s"], med["duckdb_copy_s"]
    print(f"| upload-to-table, 251 MB CSV (5M x 5) | {up:.2f} s | {pol:.2f} s (sink_parquet) | "
          f"{up / pol:.2f}x | {duck:.2f} s (COPY) | {up / duck:.2f}x |")
    g, pg = med["upload_gz_s"], med["polars_gz_s"]
    print(f"| upload-to-table, the same gzipped | {g:.2f} s | {pg:.2f} s (read_csv.gz) | "
          f"{g / pg:.2f}x | - | - |")
    m, pj = med["merge_cold_s"], med["polars_parquet_join_s"]
    print(f"| merge 1M x 1M inner, cold | {m:.3f} s | {pj:.3f} s (Parquet join) | "
          f"{m / pj:.2f}x | - | - |")
    print()
    print(f"the merges started {rec['settle_s']} s after the uploads, once the server was idle")
    print(f"upload server RSS growth over {reps} uploads: {rec['upload_rss_growth_mb']} MB; "
          f"server CPU per upload: {rec['upload_server_cpu_s']} s")
    for i, st in enumerate(rec["upload_stages"]):
        print(f"upload {i} stages (ms): " + ", ".join(
            f"{k}={v}" for k, v in st.items() if k.endswith("_ms") or k == "segments"))
    return rec


def growth(binary, data, python, gbs):
    """How cost grows: upload-to-table of CSVs from 100 MB to the largest `gbs` asks for (time,
    MB/s, server RSS growth), one 251 MB upload against two at once, and cold merges of 100k, 1M
    and 5M rows a side, with Polars joining the same tables from Parquet beside each merge."""
    sizes = [100_000, 1_000_000, 5_000_000]
    ensure_data(data, sizes, python)
    work = tempfile.mkdtemp(prefix="lake-growth-")
    with open(os.path.join(work, "lake.toml"), "w") as f:
        f.write('[server]\nmax_upload_bytes = "64GiB"\n'
                '[plugins.overrides.merge]\nmemory = "4GiB"\n'
                '[files]\nmerge_cache_bytes = "4GiB"\n')
    rec = {"load_start": os.getloadavg(), "uploads": [], "merges": []}
    lake = Lake(binary, work, {})
    try:
        while not lake.request("GET", "/plugins")[1].get("loading", {}).get("done", True):
            time.sleep(0.1)
        base = lake.rss.mark()
        rec["rss_idle_mb"] = mb(base)
        files = [(0.1, big_csv(data, 0.1)), (0.25, os.path.join(data, "left_5M.csv"))]
        files += [(gb, big_csv(data, gb)) for gb in gbs]
        for gb, path in files:
            before = lake.rss.mark()
            t, v = timed(lambda: lake.upload(path))
            assert v["rows"] and not v.get("duplicate"), v
            r = {"file": os.path.basename(path), "bytes": v["size"], "rows": v["rows"],
                 "seconds": round(t, 2), "mb_s": round(v["size"] / 1e6 / t, 1),
                 "rss_growth_mb": mb(lake.rss.peak() - before)}
            rec["uploads"].append(r)
            print(json.dumps(r), file=sys.stderr)
        a, b, c = distinct_copies(os.path.join(data, "left_5M.csv"), 3)
        lake.settle()
        c0 = lake.cpu_s()
        one, _ = timed(lambda: lake.upload(a))
        rec["one_upload_cpu_s"] = round(lake.cpu_s() - c0, 2)
        lake.rss.mark()
        both = {}

        def up(p):
            both[p] = timed(lambda: lake.upload(p))[0]
        lake.settle()
        before = lake.rss.mark()
        c0 = lake.cpu_s()
        t0 = time.perf_counter()
        ts = [threading.Thread(target=up, args=(p,)) for p in (b, c)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(both) == 2, "an upload of the two at once failed"
        rec["one_upload_s"] = round(one, 2)
        rec["two_at_once_s"] = round(time.perf_counter() - t0, 2)
        rec["two_at_once_cpu_s"] = round(lake.cpu_s() - c0, 2)
        rec["two_at_once_rss_growth_mb"] = mb(lake.rss.peak() - before)
        for n in sizes:
            lb = label(n)
            _, left = timed(lambda: lake.upload(os.path.join(data, f"left_{lb}.csv")))
            _, right = timed(lambda: lake.upload(os.path.join(data, f"right_{lb}.csv")))
            settled = lake.settle()
            before = lake.rss.mark()
            t, m = timed(lambda: merge(lake, left["file_id"], right["file_id"]))
            rec["merges"].append({"rows": lb, "seconds": round(t, 3), "rows_out": m["rows"],
                                  "rss_peak_mb": mb(lake.rss.peak()),
                                  "rss_growth_mb": mb(lake.rss.peak() - before),
                                  "settle_s": settled})
    finally:
        lake.stop()
    try:
        for r, n in zip(rec["merges"], sizes):
            lb = label(n)
            pl_, pr = os.path.join(work, f"l{lb}.parquet"), os.path.join(work, f"r{lb}.parquet")
            peer(python, "polars_sink_parquet", os.path.join(data, f"left_{lb}.csv"), pl_)
            peer(python, "polars_sink_parquet", os.path.join(data, f"right_{lb}.csv"), pr)
            r["polars_parquet_join_s"] = round(peer(python, "polars_parquet_join", pl_, pr), 3)
            # Polars lazy from the CSVs (scan, join, sink to Parquet), as issue 24 measured it.
            lazy = subprocess.run(
                [python, os.path.join(SHARED, "bench", "workloads.py"), "polars_lazy",
                 os.path.join(data, f"left_{lb}.csv"), os.path.join(data, f"right_{lb}.csv")],
                capture_output=True, text=True, check=True, env={**os.environ, "BENCH_OUT": work})
            lazy = json.loads(lazy.stdout.strip().splitlines()[-1])
            r["polars_lazy_csv_s"] = round(lazy["total_s"], 3)
            r["polars_lazy_csv_peak_mb"] = lazy["peak_mb"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rec["load_end"] = os.getloadavg()
    print(json.dumps(rec, indent=1))
    print()
    print(f"load average at start {rec['load_start'][0]:.2f}, at end {rec['load_end'][0]:.2f} "
          f"({os.cpu_count()} cores); idle server RSS {rec['rss_idle_mb']} MB")
    print()
    print("| upload | rows | seconds | MB/s | server RSS growth MB |")
    print("|---|---|---|---|---|")
    for r in rec["uploads"]:
        print(f"| {r['bytes'] / 1e6:.0f} MB | {r['rows']} | {r['seconds']} | {r['mb_s']} | "
              f"{r['rss_growth_mb']} |")
    print()
    print(f"one 251 MB upload {rec['one_upload_s']} s (server CPU {rec['one_upload_cpu_s']} s); "
          f"two at once {rec['two_at_once_s']} s (CPU {rec['two_at_once_cpu_s']} s, "
          f"{rec['two_at_once_s'] / rec['one_upload_s']:.2f}x one); server RSS growth "
          f"{rec['two_at_once_rss_growth_mb']} MB")
    print()
    print("| merge, rows a side | seconds (cold) | Polars Parquet join s | Polars lazy from CSV s "
          "| rows out | server RSS growth MB | Polars lazy peak MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rec["merges"]:
        print(f"| {r['rows']} | {r['seconds']} | {r['polars_parquet_join_s']} | "
              f"{r['polars_lazy_csv_s']} ({r['seconds'] / r['polars_lazy_csv_s']:.2f}x) | "
              f"{r['rows_out']} | {r['rss_growth_mb']} | {r['polars_lazy_csv_peak_mb']} |")
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "lake"))
    ap.add_argument("--data", default=os.environ.get("LAKE_BENCH_DATA", "/tmp/benchdata"))
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--big-gb", type=float, default=2.0, help="0 skips the big upload")
    ap.add_argument("--five-m", action="store_true", help="also 5M x 5M")
    ap.add_argument("--python", default=sys.executable, help="python with the bench requirements")
    ap.add_argument("--peers", action="store_true", help="run the peers through workloads.py")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compare", action="store_true",
                    help="only the side-by-side table: the lake, Polars and DuckDB on the same files")
    ap.add_argument("--growth", default=None, metavar="GB,GB",
                    help="only the growth curve: uploads from 100 MB to these sizes in GB, two at "
                         "once, merges of 100k to 5M rows")
    a = ap.parse_args()
    if a.growth:
        growth(a.lake, a.data, a.python, [float(g) for g in a.growth.split(",")])
        return
    if a.compare:
        compare(a.lake, a.data, a.python, a.reps)
        return

    sizes = [int(s) for s in a.sizes.split(",")]
    all_sizes = sizes + ([5_000_000] if a.five_m else [])
    ensure_data(a.data, all_sizes, a.python)
    work = tempfile.mkdtemp(prefix="lake-files-bench-")
    with open(os.path.join(work, "lake.toml"), "w") as f:
        f.write('[server]\nmax_upload_bytes = "64GiB"\n'
                '[plugins]\ncache_dir = "%s"\n'
                '[plugins.overrides.merge]\nmemory = "4GiB"\n'
                '[files]\nmerge_cache_bytes = "4GiB"\n'
                % os.path.join(os.path.expanduser("~"), ".cache", "lake", "bench-plugin-cache"))
    rec = {"sizes": {}, "machine": {"cpus": os.cpu_count(), "loadavg1": os.getloadavg()[0]}}
    lake = Lake(a.lake, work, {})
    try:
        lake.request("GET", "/health")
        # `lake serve` answers at once and loads its components in the background (a cold cache
        # compiles them): wait for them, so the figures are requests, not start-up.
        t_loaded = time.monotonic()
        while True:
            _, plugins = lake.request("GET", "/plugins")
            loading = plugins.get("loading", {}) if isinstance(plugins, dict) else {}
            if loading.get("done", True):
                break
            time.sleep(0.1)
        rec["plugins_loaded_s"] = round(time.monotonic() - t_loaded, 2)
        base = lake.rss.mark()
        rec["rss_idle_mb"] = mb(base)
        for n in all_sizes:
            lb = label(n)
            r = {}
            lake.rss.mark()
            t_l, left = timed(lambda: lake.upload(os.path.join(a.data, f"left_{lb}.csv")))
            t_r, right = timed(lambda: lake.upload(os.path.join(a.data, f"right_{lb}.csv")))
            r["upload_parse_s"] = {"left": round(t_l, 3), "right": round(t_r, 3)}
            r["upload_mb_s"] = round((left["size"] + right["size"]) / 1e6 / (t_l + t_r), 1)
            r["rows"] = [left["rows"], right["rows"]]
            r["upload_peak_rss_mb"] = mb(lake.rss.peak())
            before = lake.rss.mark()
            t_cold, m = timed(lambda: merge(lake, left["file_id"], right["file_id"]))
            r["merge_peak_rss_mb"] = mb(lake.rss.peak())
            r["merge_rss_growth_mb"] = mb(lake.rss.peak() - base)
            cached = []
            for _ in range(a.reps):
                t, mc = timed(lambda: merge(lake, left["file_id"], right["file_id"]))
                assert mc["cached"], mc
                cached.append(t)
            r["merge_cold_s"] = round(t_cold, 3)
            r["merge_cached_s"] = round(statistics.median(cached), 4)
            r["rows_out"] = m["rows"]
            r["columns_out"] = m["columns"]
            lake.rss.mark()
            body = json.dumps({"cache_key": m["cache_key"], "name": f"merged {lb}",
                               "format": "parquet"})
            t_save, saved = timed(lambda: lake.request(
                "POST", "/files/save_merged", body=body,
                headers={"Content-Type": "application/json"}))
            if saved[0] != 201:
                raise SystemExit(f"save_merged: {saved}")
            r["save_merged_s"] = round(t_save, 3)
            r["saved_mb"] = mb(saved[1]["file"]["size"])
            r["save_peak_rss_mb"] = mb(lake.rss.peak())
            rec["sizes"][lb] = r
            print(json.dumps({lb: r}), file=sys.stderr)
        if a.big_gb > 0:
            path = big_csv(a.data, a.big_gb)
            before = lake.rss.mark()
            t, v = timed(lambda: lake.upload(path))
            peak = lake.rss.peak()
            rec["big_upload"] = {"bytes": v["size"], "rows": v["rows"], "seconds": round(t, 2),
                                 "mb_s": round(v["size"] / 1e6 / t, 1),
                                 "rss_before_mb": mb(before), "rss_peak_mb": mb(peak),
                                 "rss_growth_mb": mb(peak - before)}
            print(json.dumps({"big_upload": rec["big_upload"]}), file=sys.stderr)
        rec["server_vmhwm_mb"] = mb(lake.rss.read("VmHWM"))
    finally:
        lake.stop()
        shutil.rmtree(work, ignore_errors=True)
    if a.peers:
        rec["peers_1M"] = run_peers(a.python, a.data, a.reps)
    print(json.dumps(rec, indent=1))
    print()
    print("| size | upload+parse L / R s | MB/s | merge cold s | cached s | save s | rows out | peak RSS MB (merge) |")
    print("|---|---|---|---|---|---|---|---|")
    for lb, r in rec["sizes"].items():
        print(f"| {lb} | {r['upload_parse_s']['left']} / {r['upload_parse_s']['right']} | "
              f"{r['upload_mb_s']} | {r['merge_cold_s']} | {r['merge_cached_s']} | "
              f"{r['save_merged_s']} | {r['rows_out']} | {r['merge_peak_rss_mb']} |")
    if "peers_1M" in rec:
        for k, v in rec["peers_1M"].items():
            print(f"| peer 1M {k} | | | {v['median_s']} | | | {v['rows_out']} | {v['peak_mb']} |")


if __name__ == "__main__":
    main()
