"""harness.py: real redis-server and real ctxd processes for end-to-end tests.

Every test file runs as `python3 tests/e2e/test_x.py` (ctest does this with
CTXD_BIN set). Servers listen on free ports on 127.0.0.1 in temp dirs and are
stopped by the test, or at exit at the latest.
"""
import atexit
import http.client
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SOURCE_DIR = os.environ.get("CTXD_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
CTXD_BIN = os.environ.get("CTXD_BIN") or os.path.join(SOURCE_DIR, "build", "ctxd")

_live = []  # processes to kill at exit whatever happens


@atexit.register
def _kill_leftovers():
    for p in _live:
        if p.poll() is None:
            p.kill()
            p.wait()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)



def error_table():
    """{code: set of statuses} from the one error table (src/http/http_error.c).
    Only errors something in src/ raises count: a row whose enum nothing else
    names is reported as unused (an AssertionError), so a code that stopped
    being sent cannot stay documented."""
    src = os.path.join(SOURCE_DIR, "src")
    texts = {}
    for d, _, files in os.walk(src):
        for f in files:
            if f.endswith((".c", ".h")):
                with open(os.path.join(d, f)) as fh:
                    texts[os.path.join(d, f)] = fh.read()
    table_path = os.path.join(src, "http", "http_error.c")
    rows = re.findall(r'\[(CTXD_E_\w+)\] = \{(\d{3}), "([a-z0-9_]+)"', texts[table_path])
    assert rows, "no error table found in " + table_path
    codes = {}
    for enum, status, code in rows:
        if enum == "CTXD_E_NONE":
            continue  # the fallback for a bug, never raised on purpose
        users = [p for p, t in texts.items()
                 if p != table_path and not p.endswith("error.h") and re.search(r"\b%s\b" % enum, t)]
        assert users, "%s (%s) is in the error table but nothing raises it" % (enum, code)
        codes.setdefault(code, set()).add(status)
    return codes

class RedisServer:
    """A private redis-server with AOF on, in its own temp dir."""

    def __init__(self, port=None, appendonly=True):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="ctxd-redis-")
        self.appendonly = appendonly
        self.proc = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "yes" if self.appendonly else "no",
             "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _live.append(self.proc)
        mine = "process_id:%d" % self.proc.pid

        def up():  # ours answering, not another test's server that took the port first
            if self.proc.poll() is not None:
                raise AssertionError("redis-server on %d exited: %s" % (self.port, open(
                    os.path.join(self.dir, "redis.log")).read()[-500:]))
            try:
                return mine in self.cli("INFO", "server")
            except subprocess.SubprocessError:
                return False
        wait_until(up, what="redis-server on %d" % self.port)
        return self

    def master_of(self, key):
        """The port of the server holding key: this one."""
        return self.port

    def ping(self):
        try:
            return self.cli("PING") == "PONG"
        except subprocess.SubprocessError:
            return False

    def cli(self, *args):
        """Run redis-cli --raw against this server; returns stdout stripped."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def raw(self, *args):
        """redis-cli --raw output lines."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()

    def keys(self, pattern="*"):
        return sorted(k for k in self.raw("KEYS", pattern) if k)

    def snapshot(self):
        """Every key with its type and content, to prove nothing changed."""
        out = {}
        for k in self.keys():
            t = self.cli("TYPE", k)
            if t == "list":
                out[k] = self.raw("LRANGE", k, "0", "-1")
            elif t == "hash":
                out[k] = sorted(self.raw("HGETALL", k))
            elif t == "set":
                out[k] = sorted(self.raw("SMEMBERS", k))
            elif t == "zset":
                out[k] = self.raw("ZRANGE", k, "0", "-1", "WITHSCORES")
            else:
                out[k] = self.raw("GET", k)
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_cluster_port(taken=()):
    """A free port whose cluster bus port (+10000) is free too, and neither
    of them a port or bus port in taken (the cluster's other nodes: a port
    drawn twice would have two nodes on one port, the second refused while
    the first answers its PING)."""
    import random
    used = set(taken) | {p + 10000 for p in taken}
    for _ in range(1000):
        port = random.randrange(20000, 40000)
        if port in used or port + 10000 in used:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


class RedisCluster:
    """A private Redis Cluster: `masters` redis-server processes in cluster
    mode, each with `replicas` replicas, made with `redis-cli --cluster
    create`, in one temp dir. It answers like RedisServer (url, port, cli,
    keys, snapshot, start, stop, kill, cleanup) for the whole cluster, and
    has helpers to find, kill and replace the nodes."""

    def __init__(self, masters=3, replicas=1, appendonly=True, node_timeout_ms=1000):
        self.dir = tempfile.mkdtemp(prefix="ctxd-cluster-")
        self.ports = []
        for _ in range(masters * (1 + replicas)):
            self.ports.append(free_cluster_port(self.ports))
        self.n_masters, self.replicas = masters, replicas
        self.appendonly, self.node_timeout_ms = appendonly, node_timeout_ms
        self.procs = {}
        self.created = False

    @property
    def port(self):
        return self.ports[0]

    @property
    def url(self):
        """Every node as a seed: ctxd finds the masters by itself."""
        return "redis://" + ",".join("127.0.0.1:%d" % p for p in self.ports[:self.n_masters])

    def start_node(self, port):
        d = os.path.join(self.dir, str(port))
        os.makedirs(d, exist_ok=True)
        p = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms),
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--logfile", os.path.join(d, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _live.append(p)
        self.procs[port] = p
        # Ours answering, not another test's node that took the port first.
        mine = "process_id:%d" % p.pid
        wait_until(lambda: p.poll() is not None or mine in self.node_cli(port, "INFO", "server"),
                   what="redis on %d" % port)
        if p.poll() is not None:
            raise AssertionError("redis on %d exited: %s" % (port, open(os.path.join(
                d, "redis.log")).read()[-500:]))

    def start(self):
        for i, port in enumerate(self.ports):
            for attempt in range(5):
                try:
                    self.start_node(port)
                    break
                except AssertionError:
                    # Taken meanwhile (the port or its bus port +10000) by
                    # another test: before the cluster exists, take another.
                    if self.created or attempt == 4 or self.alive(port):
                        raise
                    port = self.ports[i] = free_cluster_port(self.ports)
        if not self.created:
            out = subprocess.run(
                ["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % p for p in self.ports]
                + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise AssertionError("redis-cli --cluster create failed:\n" + out.stdout
                                     + out.stderr)
            self.created = True
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout=90):
        """Every live node says the cluster is ok, and the masters with
        slots have their replicas attached."""
        def ok():
            live = [p for p in self.ports if self.alive(p)]
            if not all("cluster_state:ok" in self.node_cli(p, "CLUSTER", "INFO") for p in live):
                return False
            want = min(self.replicas, len(live) - self.n_masters)
            return len(self.masters()) == self.n_masters and all(
                len(self.replicas_of(m)) >= want and
                self.node_cli(m, "INFO", "replication").count("state=online") >= want
                for m in self.masters())
        try:
            wait_until(ok, timeout=timeout, interval=0.2, what="the cluster to be ok")
        except AssertionError:
            live = [p for p in self.ports if self.alive(p)]
            raise AssertionError("the cluster is not ok after %d s:\n%s\n%s" % (
                timeout, self.node_cli(live[0], "CLUSTER", "NODES") if live else "no node alive",
                "\n".join("%d: %s" % (p, self.node_cli(p, "INFO", "replication").replace(
                    "\r\n", " ")[:300]) for p in live)))

    def alive(self, port):
        p = self.procs.get(port)
        return p is not None and p.poll() is None

    def node_cli(self, port, *args):
        try:
            out = subprocess.run(["redis-cli", "-p", str(port), "--raw"] + list(args),
                                 capture_output=True, text=True, timeout=10)
        except subprocess.SubprocessError:
            return ""
        return out.stdout.strip()

    def nodes(self):
        """[(id, port, flags, master_id, slots)] from a live node's CLUSTER NODES."""
        for port in self.ports:
            if not self.alive(port):
                continue
            out = self.node_cli(port, "CLUSTER", "NODES")
            if not out:
                continue
            rows = []
            for line in out.splitlines():
                f = line.split()
                rows.append((f[0], int(f[1].split("@")[0].rsplit(":", 1)[1]), f[2], f[3],
                             f[8:]))
            return rows
        return []

    def masters(self):
        """Ports of the live masters that serve slots."""
        return sorted(port for _, port, flags, _, slots in self.nodes()
                      if "master" in flags and "fail" not in flags and slots
                      and self.alive(port))

    def replicas_of(self, master_port):
        rows = self.nodes()
        mid = [i for i, port, _, _, _ in rows if port == master_port]
        return [port for _, port, flags, m, _ in rows
                if mid and m == mid[0] and "slave" in flags and "fail" not in flags
                and self.alive(port)]

    def slot_of(self, key):
        return int(self.node_cli(self.masters()[0], "CLUSTER", "KEYSLOT", key))

    def master_of(self, key):
        """Port of the master serving key's slot."""
        slot = self.slot_of(key)
        for _, port, flags, _, slots in self.nodes():
            if "master" not in flags or "fail" in flags:
                continue
            for rng in slots:
                if rng.startswith("["):
                    continue
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return port
        raise AssertionError("no master serves slot %d" % slot)

    def reshard(self, src, dst, slots):
        """redis-cli --cluster reshard: slots slots from master src to dst."""
        out = subprocess.run(
            ["redis-cli", "--cluster", "reshard", "127.0.0.1:%d" % src, "--cluster-from",
             self.node_cli(src, "CLUSTER", "MYID"), "--cluster-to",
             self.node_cli(dst, "CLUSTER", "MYID"), "--cluster-slots", str(slots),
             "--cluster-yes"], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError("redis-cli --cluster reshard failed:\n" + out.stdout[-3000:]
                                 + out.stderr)
        return out.stdout

    def kill_node(self, port):
        p = self.procs.get(port)
        if p and p.poll() is None:
            p.kill()
            p.wait(timeout=10)

    def cli(self, *args):
        """redis-cli -c (following redirects) for one-key commands; INFO's
        numbers are summed over the masters, KEYS is the union."""
        if args and args[0].upper() == "INFO":
            return self._info_sum(*args)
        if args and args[0].upper() == "KEYS":
            return "\n".join(self.keys(args[1] if len(args) > 1 else "*"))
        return "\n".join(self.raw(*args))

    def raw(self, *args):
        port = self.masters()[0]
        out = subprocess.run(["redis-cli", "-c", "-p", str(port), "--raw"] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()

    def _info_sum(self, *args):
        totals = {}
        for port in self.masters():
            for line in self.node_cli(port, *args).splitlines():
                for m in re.finditer(r"^(\w+):(.*)$", line):
                    name, fields = m.group(1), m.group(2)
                    if "=" not in fields:
                        continue
                    acc = totals.setdefault(name, {})
                    for kv in fields.split(","):
                        k, _, v = kv.partition("=")
                        try:
                            acc[k] = acc.get(k, 0) + float(v)
                        except ValueError:
                            pass
        return "\n".join("%s:%s" % (n, ",".join("%s=%g" % kv for kv in acc.items()))
                         for n, acc in totals.items())

    def keys(self, pattern="*"):
        out = set()
        for port in self.masters():
            out.update(k for k in self.node_cli(port, "KEYS", pattern).splitlines() if k)
        return sorted(out)

    def snapshot(self):
        return RedisServer.snapshot(self)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            p.wait(timeout=10)

    def kill(self):
        for port in self.ports:
            self.kill_node(port)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# The Redis every test runs against: one server, or with CTXD_TEST_REDIS=cluster
# a 3-master, 3-replica Redis Cluster (ctest's e2e_cluster label). Tests that are
# about one server's own behaviour (replication, Sentinel, passwords, restarts
# at one address) use RedisServer by name.
TEST_REDIS = os.environ.get("CTXD_TEST_REDIS", "server")


def Redis(port=None, appendonly=True):
    if TEST_REDIS == "cluster":
        return RedisCluster(appendonly=appendonly)
    return RedisServer(port=port, appendonly=appendonly)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %s>" % (self.status, self.text[:300])


class Ctxd:
    """A ctxd process on a free port. env adds to a clean environment."""

    def __init__(self, redis_url, env=None, args=None, port=None):
        self.port = port or free_port()
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        self.args = list(args or [])
        self.proc = None
        self.logfile = tempfile.NamedTemporaryFile(prefix="ctxd-log-", suffix=".log",
                                                   delete=False)
        self.logpath = self.logfile.name

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def env(self):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("CTXD_") and k not in (
                 "ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
        # Prompt caching reshapes Anthropic bodies (system and the last
        # message as blocks with cache_control): tests that read exact bodies
        # run without it; test_caching.py turns it on.
        e.update({"CTXD_LISTEN": "127.0.0.1:%d" % self.port,
                  "CTXD_REDIS_URL": self.redis_url, "CTXD_LOG_LEVEL": "info",
                  "CTXD_PROMPT_CACHE": "off"})
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1")
        e.update(self.extra_env)
        return e

    def start(self, wait=True):
        self.proc = subprocess.Popen([CTXD_BIN] + self.args, env=self.env(),
                                     stdout=self.logfile, stderr=subprocess.STDOUT)
        _live.append(self.proc)
        if wait:
            def up():
                if self.proc.poll() is not None:
                    raise AssertionError("ctxd exited with %s:\n%s" % (
                        self.proc.returncode, self.log()))
                try:
                    return self.request("GET", "/healthz", timeout=1).status == 200
                except OSError:
                    return False
            wait_until(up, timeout=15, what="ctxd /healthz")
        return self

    def log(self):
        with open(self.logpath, "r", errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stop and return the exit code (asserting no sanitizer report)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        log = self.log()
        if "Sanitizer" in log or "runtime error:" in log:
            raise AssertionError("sanitizer report in ctxd log:\n" + log[-6000:])
        return rc

    def stop_ok(self, name="ctxd"):
        """Stop, and fail with the end of the log unless it exited 0 (the
        check of every tearDown)."""
        rc = self.stop()
        if rc != 0:
            raise AssertionError("%s exited with %s:\n%s" % (name, rc, self.log()[-4000:]))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        try:
            self.stop()
        finally:
            self.kill()
            os.unlink(self.logpath)

    def request(self, method, path, body=None, headers=None, raw=None, timeout=30):
        """One HTTP request on a fresh connection. body (dict/list) is sent as
        JSON; raw (bytes) is sent as is."""
        return request(self.port, method, path, body, headers, raw, timeout)


def request(port, method, path, body=None, headers=None, raw=None, timeout=30):
    h = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def sse_events(body):
    """Parse a text/event-stream body into [(event, data-json-or-text)]."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        ev, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                ev = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        text = "\n".join(data)
        try:
            events.append((ev, json.loads(text)))
        except ValueError:
            events.append((ev, text))
    return events


class CtxdTestCase(unittest.TestCase):
    """One redis-server and one ctxd per test class. Set CTXD_ENV / CTXD_ARGS
    in a subclass to configure ctxd."""
    CTXD_ENV = {}
    CTXD_ARGS = []

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()
        cls.ctxd = Ctxd(cls.redis.url, env=cls.CTXD_ENV, args=cls.CTXD_ARGS).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.ctxd.stop_ok()
        finally:
            cls.ctxd.cleanup()
            cls.redis.cleanup()

    def req(self, method, path, body=None, headers=None, raw=None, timeout=30):
        return self.ctxd.request(method, path, body, headers, raw, timeout)

    def create(self, body=None, headers=None):
        r = self.req("POST", "/mcp/context", body=body, headers=headers)
        self.assertEqual(r.status, 201, r)
        return r.json()["context_id"]

    def turn(self, cid, message, headers=None):
        return self.req("POST", "/mcp/context/%s/message" % cid, {"message": message},
                        headers=headers)

    def assert_error(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        j = r.json()
        self.assertEqual(j.get("code"), code, r)
        self.assertIsInstance(j.get("error"), str)
        self.assertTrue(j["error"], r)
        return j


# A skip is allowed only for a tool that is truly absent, and it is never a
# pass. require_tool and require_module check, and only they may skip: main()
# fails any other skip (skipTest, @unittest.skip...).
SKIP_EXIT = 77  # main()'s exit status when tests were skipped for absent tools
_ABSENT = set()  # the skip reasons require_tool / require_module gave


def _skip_absent(reason):
    _ABSENT.add(reason)
    raise unittest.SkipTest(reason)


def require_tool(name, install):
    """The path of program name on PATH; if it is not installed, skip the test
    (the class, from setUpClass) saying so and how to install it."""
    path = shutil.which(name)
    if not path:
        _skip_absent("%s is not installed (not on PATH); %s" % (name, install))
    return path


def require_module(name, install):
    """Python module name, imported; if it is not installed, skip like
    require_tool."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        _skip_absent("python module %s is not installed (%s); %s" % (name, e, install))


def require_path(path, install):
    """path, when it exists; else skip like require_tool (a file a tool
    installs, e.g. tests/node/node_modules/...)."""
    if not os.path.exists(path):
        _skip_absent("%s is not installed; %s" % (path, install))
    return path


class _Result(unittest.TextTestResult):
    """Also records which tests started and which passed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started, self.passed = set(), []

    def startTest(self, test):
        super().startTest(test)
        self.started.add(test.id())

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test)


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main():
    """Run the file's tests; print 'N passed, N failed, N skipped' and each
    skip with its reason. Exit 0 only when every test ran and passed; 1 on any
    failure, any skip but one for an absent tool, or no test at all; else
    SKIP_EXIT when tests were skipped for an absent tool (ctest maps it with
    SKIP_RETURN_CODE: "Not Run", never "Passed")."""
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules["__main__"])
    tests = list(_flatten(suite))
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout,
                                     resultclass=_Result).run(suite)
    failed = (len(result.failures) + len(result.errors) + len(result.expectedFailures)
              + len(result.unexpectedSuccesses))
    skipped = 0
    for test, reason in result.skipped:
        if isinstance(test, unittest.TestCase):
            name, n = test.id(), 1
        else:  # setUpClass or setUpModule skipped: its tests never started
            name = str(test)
            owner = name[name.find("(") + 1:name.rfind(")")]
            n = max(1, sum(1 for t in tests if t.id() not in result.started
                           and t.id().startswith(owner + ".")))
        if reason in _ABSENT:
            skipped += n
            print("SKIPPED %s (%d test%s not run): %s" % (name, n, "" if n == 1 else "s",
                                                          reason))
        else:
            failed += n
            print("FAILED %s: skipped (%s), but a skip is allowed only for a tool that is "
                  "not installed (require_tool, require_module)" % (name, reason))
    passed = len(result.passed)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if failed or not result.wasSuccessful() or not (passed or skipped):
        sys.exit(1)
    if skipped:
        print("skipped tests are not passes: exit %d" % SKIP_EXIT)
        sys.exit(SKIP_EXIT)
    sys.exit(0)


class TurnClient(threading.Thread):
    """Turns on its own context until stopped; records every answer."""

    def __init__(self, ctxd, cid, name):
        super().__init__(daemon=True)
        self.ctxd, self.cid, self.name = ctxd, cid, name
        self.stop = threading.Event()
        self.answers = []  # (time, message, status, code, retry-after)

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            msg = "%s-%d" % (self.name, i)
            try:
                r = self.ctxd.request("POST", "/mcp/context/%s/message" % self.cid,
                                      {"message": msg}, timeout=20)
                code = r.json().get("code") if r.status != 200 else None
                self.answers.append((time.monotonic(), msg, r.status, code,
                                     r.headers.get("retry-after")))
                if r.status != 200:
                    time.sleep(0.05)
            except OSError as e:
                self.answers.append((time.monotonic(), msg, 0, repr(e), None))
                time.sleep(0.05)

    def acked(self, before=None):
        return [m for t, m, s, _, _ in self.answers if s == 200 and (before is None or t < before)]


class FakeUpstream:
    """tests/fakes/fake_upstream.py on a free port (Anthropic and OpenAI
    wire formats); see its docstring for the admin API. args default to
    checking the key "test-key" on both routes."""

    def __init__(self, args=None):
        if args is None:
            args = ["--anthropic-key", "test-key", "--openai-key", "test-key"]
        self.errlog = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(SOURCE_DIR, "tests", "fakes", "fake_upstream.py"),
             "--port", "0"] + list(args),
            stdout=subprocess.PIPE, stderr=self.errlog, text=True)
        _live.append(self.proc)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise AssertionError("fake upstream did not start: %r" % line)
        self.port = int(line.split()[1])
        self.url = "http://127.0.0.1:%d" % self.port

    def start(self):
        """Kept for callers that chain it: the fake starts in __init__."""
        return self

    def admin(self, method, path, body=None):
        r = request(self.port, method, "/_admin/" + path.lstrip("/").replace("_admin/", ""),
                    body, timeout=10)
        if r.status != 200:
            raise AssertionError("fake admin %s %s: %r" % (method, path, r))
        return r.json()

    def script(self, *behaviours):
        """Queue behaviours; each model request takes the next one."""
        self.admin("POST", "script", list(behaviours))

    def requests(self):
        """Every model request received since the last reset, in order."""
        return self.admin("GET", "requests")["requests"]

    def mode(self, **mode):
        """Persistent behaviour (see fake_upstream.py: /_admin/mode)."""
        return self.admin("POST", "/_admin/mode", mode)

    def reset(self):
        self.admin("POST", "reset")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.errlog.close()
