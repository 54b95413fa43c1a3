"""CTXD_REDIS_URL=redis+sentinel://: ctxd finds the master through Redis
Sentinel and follows a failover without a restart. Clients see only 503s
with Retry-After meanwhile, and no acknowledged turn is lost (with
CTXD_REDIS_WAIT_REPLICAS=1 acknowledged means replicated)."""
# e2e_cluster: no (Sentinel watches one master and its replicas)
import json
import os
import subprocess
import time
import unittest

import harness
from harness import Ctxd, RedisServer, TurnClient, free_port, main, wait_until

PASSWORD = "master/pw"  # the data nodes'; percent-encoded in the URL
SENTINEL_PASSWORD = "sentinel&pw"


class Node(RedisServer):
    """A password-protected redis-server, a replica of master_port if given."""

    def __init__(self, master_port=None):
        super().__init__(appendonly=True)
        self.master_port = master_port

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log"),
                "--requirepass", PASSWORD, "--masterauth", PASSWORD,
                "--repl-diskless-sync-delay", "0"]
        if self.master_port:
            args += ["--replicaof", "127.0.0.1", str(self.master_port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness._live.append(self.proc)
        wait_until(self.ping, what="redis-server on %d" % self.port)
        return self

    def raw(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "-a", PASSWORD,
                              "--no-auth-warning", "--raw"] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()

    def cli(self, *args):
        return "\n".join(self.raw(*args)).strip()


class Sentinel:
    """redis-server --sentinel with its own writable config file (Sentinel
    rewrites it)."""

    def __init__(self, master_port, quorum=2):
        self.port = free_port()
        self.dir = RedisServer().dir
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\nrequirepass %s\n"
                    "sentinel monitor m 127.0.0.1 %d %d\n"
                    "sentinel auth-pass m %s\n"
                    "sentinel down-after-milliseconds m 1000\n"
                    "sentinel failover-timeout m 5000\n"
                    % (self.port, self.dir, os.path.join(self.dir, "sentinel.log"),
                       SENTINEL_PASSWORD, master_port, quorum, PASSWORD))
        self.proc = subprocess.Popen(["redis-server", self.conf, "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness._live.append(self.proc)

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "-a", SENTINEL_PASSWORD,
                              "--no-auth-warning", "--raw"] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def master_port(self):
        lines = self.cli("SENTINEL", "get-master-addr-by-name", "m").splitlines()
        return int(lines[1]) if len(lines) == 2 and lines[1].isdigit() else None

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir])


class SentinelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.master = Node().start()
        cls.replicas = [Node(cls.master.port).start() for _ in range(2)]
        wait_until(lambda: cls.master.cli("INFO", "replication").count("state=online") == 2,
                   what="two replicas online")
        cls.sentinels = [Sentinel(cls.master.port) for _ in range(3)]
        # Each Sentinel knows the master and found the two others.
        wait_until(lambda: all(s.cli("SENTINEL", "ckquorum", "m").startswith("OK 3 ")
                               for s in cls.sentinels), timeout=20, what="sentinels in quorum")
        # A Sentinel that is not there comes first: ctxd must ask the next.
        hosts = ["127.0.0.1:%d" % free_port()] + ["127.0.0.1:%d" % s.port for s in cls.sentinels]
        cls.url = "redis+sentinel://:master%%2Fpw@%s/m?sentinel_password=sentinel%%26pw" % (
            ",".join(hosts))
        cls.ctxd = Ctxd(cls.url, env={"CTXD_REDIS_WAIT_REPLICAS": "1",
                                      "CTXD_REDIS_WAIT_MS": "1000",
                                      "CTXD_REDIS_TIMEOUT_MS": "500",
                                      "CTXD_LOCK_TTL_MS": "1000"}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.ctxd.stop_ok()
        finally:
            cls.ctxd.cleanup()
            for s in cls.sentinels:
                s.cleanup()
            for n in [cls.master] + cls.replicas:
                n.cleanup()

    def nodes(self):
        return [self.master] + self.replicas

    def master_now(self):
        port = self.sentinels[0].master_port()
        return [n for n in self.nodes() if n.port == port][0]

    def messages_on(self, node, cid):
        return [json.loads(m)["content"]
                for m in node.raw("LRANGE", "ctxd:{%s}:messages" % cid, "0", "-1")]

    def failover(self, trigger, lossless):
        """Turns from three clients on their own contexts while trigger()
        makes the Sentinels elect another master, until each client's turns
        land on the new master. lossless: every acknowledged turn must be on
        the new master (else only those acknowledged before trigger())."""
        c = self.ctxd
        old = self.master_now()
        cids = []
        for _ in range(3):
            r = c.request("POST", "/mcp/context")
            self.assertEqual(r.status, 201, r)
            cids.append(r.json()["context_id"])
        clients = [TurnClient(c, cid, "c%d" % i) for i, cid in enumerate(cids)]
        for cl in clients:
            cl.start()
        try:
            wait_until(lambda: all(len(cl.acked()) >= 5 for cl in clients), timeout=10,
                       what="turns before the failover")
            started = time.monotonic()
            trigger(old)
            wait_until(lambda: self.sentinels[0].master_port() not in (None, old.port),
                       timeout=30, what="the Sentinels to fail over")
            new = self.master_now()
            # Every client gets turns through the new master, from the same
            # ctxd.
            wait_until(lambda: all(cl.acked() and cl.acked()[-1] in self.messages_on(new, cl.cid)
                                   for cl in clients),
                       timeout=20, what="turns on the new master")
        finally:
            for cl in clients:
                cl.stop.set()
            for cl in clients:
                cl.join(timeout=30)
        self.assertIsNone(c.proc.poll(), "ctxd exited")

        # Only 200s and 503 redis_unavailable with Retry-After, nothing else.
        for cl in clients:
            for t, msg, status, code, retry in cl.answers:
                if status != 200:
                    self.assertEqual((status, code), (503, "redis_unavailable"), (cl.name, msg))
                    self.assertEqual(retry, "1", (cl.name, msg))
        unavailable = [t for cl in clients for t, _, s, _, _ in cl.answers if s != 200]

        # The acknowledged turns are on the new master, and ctxd reads there.
        lost = []
        for cl in clients:
            on_master = self.messages_on(new, cl.cid)
            for msg in cl.acked(None if lossless else started):
                self.assertIn(msg, on_master, "acknowledged turn %s is lost" % msg)
            lost += [m for m in cl.acked() if m not in on_master]
            r = c.request("GET", "/mcp/context/" + cl.cid)
            self.assertEqual(r.status, 200, r)
            self.assertEqual([m["content"] for m in r.json()["messages"]], on_master)
        print("failover %d -> %d: %d turns acknowledged (%d of them lost), %d answered 503%s" % (
            old.port, new.port, sum(len(cl.acked()) for cl in clients), len(lost),
            len(unavailable), ", the last %.1f s after the failover began"
            % (max(unavailable) - started) if unavailable else ""))
        self.assertIn("redis sentinel master m moved from 127.0.0.1:%d to 127.0.0.1:%d"
                      % (old.port, new.port), c.log())
        return clients

    def test_a_master_found_through_the_sentinels(self):
        c = self.ctxd
        log = c.log()
        self.assertIn("sentinel master m via 127.0.0.1:", log)
        self.assertIn("redis sentinel master m is at 127.0.0.1:%d" % self.master.port, log)
        for secret in (PASSWORD, SENTINEL_PASSWORD, "master%2Fpw", "sentinel%26pw"):
            self.assertNotIn(secret, log)
        self.assertEqual(c.request("GET", "/readyz").status, 200, c.log())
        r = c.request("POST", "/mcp/context")
        self.assertEqual(r.status, 201, r)
        cid = r.json()["context_id"]
        r = c.request("POST", "/mcp/context/%s/message" % cid, {"message": "hi"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.master.cli("LLEN", "ctxd:{%s}:messages" % cid), "2")

    def test_b_master_killed(self):
        clients = self.failover(lambda old: old.kill(), lossless=True)
        self.assertTrue(any(a[2] == 503 for cl in clients for a in cl.answers),
                        "no client noticed the master's death")

    def test_c_master_demoted_by_a_manual_failover(self):
        # The old master stays up and becomes a replica: connections to it
        # are killed by the Sentinel, or refused with READONLY.
        def trigger(old):
            wait_until(lambda: self.sentinels[0].cli("SENTINEL", "failover", "m") == "OK",
                       timeout=20, what="SENTINEL FAILOVER to start")
        self.failover(trigger, lossless=False)


class SentinelRoleTest(unittest.TestCase):
    """The server a Sentinel names must say ROLE master; a master that turns
    replica under ctxd (READONLY) is left for the one the Sentinel names."""

    @classmethod
    def setUpClass(cls):
        cls.a = Node().start()
        cls.b = Node(cls.a.port).start()
        wait_until(lambda: "state=online" in cls.a.cli("INFO", "replication"),
                   what="replica online")
        cls.sentinel = Sentinel(cls.a.port, quorum=1)
        wait_until(lambda: cls.sentinel.master_port() == cls.a.port, what="the sentinel")
        # One worker thread: one connection, so the turn after the swap below
        # runs on the connection made before it.
        cls.ctxd = Ctxd("redis+sentinel://:master%%2Fpw@127.0.0.1:%d/m?sentinel_password=%s"
                        % (cls.sentinel.port, "sentinel%26pw"),
                        env={"CTXD_REDIS_TIMEOUT_MS": "500", "CTXD_THREADS": "1"}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.ctxd.stop_ok()
        finally:
            cls.ctxd.cleanup()
            cls.sentinel.cleanup()
            cls.a.cleanup()
            cls.b.cleanup()

    def turn(self, cid, msg):
        return self.ctxd.request("POST", "/mcp/context/%s/message" % cid, {"message": msg})

    def test_a_replica_named_as_master_is_refused_until_the_sentinel_knows(self):
        r = self.ctxd.request("POST", "/mcp/context")
        self.assertEqual(r.status, 201, r)
        cid = r.json()["context_id"]
        self.assertEqual(self.turn(cid, "one").status, 200)
        wait_until(lambda: self.b.cli("LLEN", "ctxd:{%s}:messages" % cid) == "2",
                   what="the turn on the replica")
        # Swap the roles by hand: the Sentinel still names a, now a replica.
        self.assertEqual(self.b.cli("REPLICAOF", "NO", "ONE"), "OK")
        self.assertEqual(self.a.cli("REPLICAOF", "127.0.0.1", str(self.b.port)), "OK")
        r = self.turn(cid, "two")
        self.assertEqual(r.status, 503, r)
        self.assertIn("127.0.0.1:%d (sentinel master m) is not the master of m (role slave)"
                      % self.a.port, r.json()["error"])
        self.assertEqual(r.headers.get("retry-after"), "1")
        # ctxd's connection to a survived the swap: a refused the turn's
        # script with READONLY, and ctxd asked the Sentinel again.
        self.assertIn("errorstat_READONLY:count=1", self.a.cli("INFO", "errorstats"))
        # Once the Sentinel names b, ctxd follows without a restart.
        self.assertEqual(self.sentinel.cli("SENTINEL", "REMOVE", "m"), "OK")
        self.assertEqual(self.sentinel.cli("SENTINEL", "MONITOR", "m", "127.0.0.1",
                                           str(self.b.port), "1"), "OK")
        self.assertEqual(self.sentinel.cli("SENTINEL", "SET", "m", "auth-pass", PASSWORD), "OK")
        r = self.turn(cid, "three")
        self.assertEqual(r.status, 200, r)
        self.assertIn("1 earlier turn", r.json()["ai_response"])
        self.assertEqual(self.b.cli("LLEN", "ctxd:{%s}:messages" % cid), "4")
        self.assertIn("redis sentinel master m moved from 127.0.0.1:%d to 127.0.0.1:%d"
                      % (self.a.port, self.b.port), self.ctxd.log())


if __name__ == "__main__":
    main()
