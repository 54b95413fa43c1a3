"""test_cluster.py: scripts/cluster.sh for real: redis, three ctxd and haproxy
on free ports, the guide's conversation through haproxy, and a replica killed
with SIGKILL half way without the client noticing."""
# e2e_cluster: no (scripts/cluster.sh starts its own Redis)
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import requests  # noqa: E402

CLUSTER_SH = os.path.join(harness.SOURCE_DIR, "scripts", "cluster.sh")
ECHO_DELAY_MS = 300  # long enough to see a stream arrive in pieces
FIRST = "Can you book me a flight to New York?"
SECOND = "Make it for next Tuesday and I prefer a window seat."
SECOND_REPLY = "Got it, a flight for next Tuesday. Any specific time or airline?"


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_run(n):
    """The first of n consecutive free ports on 127.0.0.1."""
    for _ in range(100):
        p = harness.free_port()
        if p + n <= 65535 and all(port_free(p + i) for i in range(n)):
            return p
    raise AssertionError("no %d consecutive free ports" % n)


def haproxy_stat(sock_path):
    """haproxy's `show stat` rows for the ctxd servers: {name: row dict}."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock_path)
    s.sendall(b"show stat\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(head, line.split(","))) for line in lines[1:] if line]
    return {r["svname"]: r for r in rows
            if r["pxname"] == "ctxd" and r["svname"] not in ("FRONTEND", "BACKEND")}


class Cluster:
    """A cluster.sh cluster in a private state dir on free ports."""

    def __init__(self, n=3):
        self.n = n
        self.dir = tempfile.mkdtemp(prefix="ctxd-cluster-")
        self.port = harness.free_port()
        self.redis_port = harness.free_port()
        self.base = free_run(n)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("CTXD_", "CLUSTER_"))
                    and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY",
                                  "ANTHROPIC_API_KEY_FILE", "OPENAI_API_KEY_FILE")}
        self.env.update({
            "CTXD_BIN": harness.CTXD_BIN, "CTXD_PROVIDER": "echo",
            "CTXD_ECHO_DELAY_MS": str(ECHO_DELAY_MS), "CTXD_LOG_LEVEL": "info",
            "CLUSTER_DIR": self.dir, "CLUSTER_PORT": str(self.port),
            "CLUSTER_BASE_PORT": str(self.base),
            "CLUSTER_REDIS_PORT": str(self.redis_port)})

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def run(self, *args, check=True, timeout=60):
        r = subprocess.run([CLUSTER_SH] + list(args), env=self.env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError("cluster.sh %s exited with %d\nstdout:\n%s\nstderr:\n%s%s" % (
                " ".join(args), r.returncode, r.stdout, r.stderr, self.logs()))
        return r

    def pid(self, name):
        with open(os.path.join(self.dir, name + ".pid")) as f:
            return int(f.read())

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out.append("---- %s\n%s" % (name, f.read()[-3000:]))
        return "\n".join(out)

    def cleanup(self):
        """cluster.sh down; then SIGKILL anything it left, check the ctxd logs
        for sanitizer reports and remove the state dir."""
        if not os.path.isdir(self.dir):
            return
        try:
            self.run("down", check=False, timeout=60)
        finally:
            for name in os.listdir(self.dir):
                if name.endswith(".pid"):
                    try:
                        pid = int(open(os.path.join(self.dir, name)).read())
                        with open("/proc/%d/cmdline" % pid, "rb") as f:
                            cmd = f.read()
                        if any(w in cmd for w in (b"ctxd", b"redis-server", b"haproxy")):
                            os.kill(pid, signal.SIGKILL)
                    except (OSError, ValueError):
                        pass
            logs = self.logs()
            shutil.rmtree(self.dir, ignore_errors=True)
        if "Sanitizer" in logs or "runtime error:" in logs:
            raise AssertionError("sanitizer report in a cluster log:\n" + logs[-6000:])


_clusters = []
atexit.register(lambda: [c.cleanup() for c in _clusters])
# A SIGTERM (a ctest timeout, Ctrl-C in another form) still runs the cleanup.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(3)
        _clusters.append(cls.cluster)
        cls.addClassCleanup(cls.cluster.cleanup)
        t0 = time.monotonic()
        out = cls.cluster.run("up", "3").stdout
        print("cluster up in %.1f s:\n%s" % (time.monotonic() - t0, out))
        cls.http = requests.Session()
        cls.addClassCleanup(cls.http.close)

    def call(self, method, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.request(method, self.cluster.url + path, **kw)

    def turn(self, cid, message, **kw):
        r = self.call("POST", "/mcp/context/%s/message" % cid, json={"message": message},
                      headers={"Idempotency-Key": str(uuid.uuid4())}, **kw)
        self.assertEqual(r.status_code, 200, r.text)
        return r

    def status(self):
        r = self.cluster.run("status", check=False)
        rows = {}
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) >= 4 and f[2].startswith("127.0.0.1:"):
                rows[f[0]] = f
        return r.returncode, rows, r.stdout

    def test_busy_port_is_refused_before_anything_starts(self):
        other = Cluster(1)
        _clusters.append(other)
        try:
            other.env["CLUSTER_PORT"] = str(self.cluster.port)  # haproxy has it
            r = other.run("up", "1", check=False)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertIn("in use", r.stderr)
            self.assertIn(str(self.cluster.port), r.stderr)
            self.assertEqual([n for n in os.listdir(other.dir) if n.endswith(".pid")], [])
        finally:
            other.cleanup()

    def test_guide_flow_survives_a_killed_replica(self):
        c = self.cluster
        code, rows, out = self.status()
        self.assertEqual(code, 0, out)
        self.assertEqual(sorted(rows), ["ctxd-1", "ctxd-2", "ctxd-3", "haproxy", "redis"], out)

        r = self.call("POST", "/mcp/context", json={})
        self.assertEqual(r.status_code, 201, r.text)
        cid = r.json()["context_id"]
        self.turn(cid, FIRST)
        self.assertEqual(self.turn(cid, SECOND).json()["ai_response"], SECOND_REPLY)
        r = self.call("GET", "/mcp/context/" + cid)
        self.assertEqual(r.status_code, 200, r.text)
        msgs = r.json()["messages"]
        self.assertEqual([(m["role"], m["content"]) for m in msgs],
                         [("user", FIRST), ("assistant", msgs[1]["content"]),
                          ("user", SECOND), ("assistant", SECOND_REPLY)])

        # SIGKILL one replica; haproxy has not noticed yet, so some of the next
        # turns are sent to it and must be retried on the others.
        killed = c.pid("ctxd-2")
        os.kill(killed, signal.SIGKILL)
        harness.wait_until(lambda: not os.path.exists("/proc/%d" % killed) or
                           open("/proc/%d/stat" % killed).read().split()[2] == "Z",
                           what="ctxd-2 to die")
        sent = [FIRST, SECOND]
        for i in range(9):
            sent.append("turn %d after the kill" % i)
            self.turn(cid, sent[-1])

        code, rows, out = self.status()
        self.assertEqual(code, 1, out)
        self.assertEqual(rows["ctxd-2"][3], "down", out)
        for name in ("redis", "ctxd-1", "ctxd-3", "haproxy"):
            self.assertEqual(rows[name][3], "up", out)

        stats = haproxy_stat(os.path.join(c.dir, "haproxy.sock"))
        dead = stats["ctxd-2"]
        self.assertGreater(int(dead["econ"] or 0) + int(dead["wretr"] or 0)
                           + int(dead["wredis"] or 0), 0,
                           "no request was sent to the killed ctxd, so the retry "
                           "path was not exercised: %s" % dead)

        # A streamed turn through haproxy arrives in pieces, not at the end.
        t0 = time.monotonic()
        r = self.call("POST", "/mcp/context/%s/message" % cid, stream=True,
                      json={"message": "stream this one", "stream": True})
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["content-type"].startswith("text/event-stream"), r.headers)
        times = {}
        for line in r.iter_lines(chunk_size=1):
            if line.startswith(b"event:"):
                times.setdefault(line.split(b":", 1)[1].strip(), time.monotonic() - t0)
        r.close()
        sent.append("stream this one")
        self.assertIn(b"delta", times)
        self.assertIn(b"done", times)
        self.assertGreater(times[b"done"] - times[b"delta"], ECHO_DELAY_MS / 3000,
                           "the stream arrived in one piece: %s" % times)

        r = self.call("GET", "/mcp/context/" + cid)
        msgs = r.json()["messages"]
        self.assertEqual([m["role"] for m in msgs], ["user", "assistant"] * len(sent))
        self.assertEqual([m["content"] for m in msgs[::2]], sent)

        # up again is idempotent: it restarts only the dead replica.
        before = {n: c.pid(n) for n in ("redis", "ctxd-1", "ctxd-3", "haproxy")}
        c.run("up", "3")
        self.assertEqual(before, {n: c.pid(n) for n in before})
        self.assertNotEqual(c.pid("ctxd-2"), killed)
        code, rows, out = self.status()
        self.assertEqual(code, 0, out)
        self.turn(cid, "back to three")

        r = self.call("DELETE", "/mcp/context/" + cid)
        self.assertEqual(r.status_code, 200, r.text)
        r = self.call("GET", "/mcp/context/" + cid)
        self.assertEqual(r.status_code, 404, r.text)

    def test_redis_keeps_an_append_only_file(self):
        out = subprocess.run(["redis-cli", "-p", str(self.cluster.redis_port), "--raw",
                              "CONFIG", "GET", "appendonly"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        self.assertEqual(out, ["appendonly", "yes"])
        self.assertTrue(os.path.isdir(os.path.join(self.cluster.dir, "redis")))


if __name__ == "__main__":
    harness.main()
