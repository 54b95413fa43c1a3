"""CTXD_REDIS_WAIT_REPLICAS: a write is acknowledged only once a replica holds
it; without enough replicas in CTXD_REDIS_WAIT_MS it is a 503 whose retry
with the same Idempotency-Key replays instead of calling the model again."""
# e2e_cluster: no (one master and its replica; a cluster's are in test_cluster_failover.py)
import os
import subprocess
import time
import unittest

import harness
from harness import Ctxd, FakeUpstream, RedisServer, main, wait_until

WAIT_MS = 500


class Replica(RedisServer):
    """A redis-server replicating master_port, in its own temp dir."""

    def __init__(self, master_port):
        super().__init__(appendonly=False)
        self.master_port = master_port

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "no", "--save", "", "--daemonize", "no",
             "--replicaof", "127.0.0.1", str(self.master_port),
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness._live.append(self.proc)
        # In sync, and taking the master's writes: after a sync the master
        # streams to a replica only once it acknowledged (up to a second).
        wait_until(lambda: "master_link_status:up" in self.cli("INFO", "replication"),
                   what="replica on %d in sync" % self.port)
        out = subprocess.run(["redis-cli", "-p", str(self.master_port), "--raw"],
                             input="SET test:replica-up 1\nWAIT 1 5000\n",
                             capture_output=True, text=True, timeout=10)  # one connection
        self.up = out.stdout.split() == ["OK", "1"]
        return self


class DurabilityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.master = RedisServer().start()
        # A replica that comes back resyncs at once, not after 5 s.
        cls.master.cli("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        cls.replica = Replica(cls.master.port).start()
        assert cls.replica.up, "the replica does not acknowledge writes"
        cls.fake = FakeUpstream()
        cls.ctxd = Ctxd(cls.master.url, env={
            "CTXD_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "test-key",
            "CTXD_ANTHROPIC_URL": cls.fake.url, "CTXD_UPSTREAM_MAX_RETRIES": "0",
            "CTXD_REDIS_WAIT_REPLICAS": "1", "CTXD_REDIS_WAIT_MS": str(WAIT_MS)}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.ctxd.stop_ok()
        finally:
            cls.ctxd.cleanup()
            cls.fake.stop()
            cls.replica.cleanup()
            cls.master.cleanup()

    def req(self, method, path, body=None, headers=None, ctxd=None):
        return (ctxd or self.ctxd).request(method, path, body, headers)

    def create(self):
        r = self.req("POST", "/mcp/context")
        self.assertEqual(r.status, 201, r)
        return r.json()["context_id"]

    def on_replica(self, *args):
        return self.replica.cli(*args)

    def assert_unreplicated(self, r, started, replicas=1, wait_ms=WAIT_MS):
        """A 503 saying the write is on the master only, after about wait_ms."""
        elapsed = time.monotonic() - started
        self.assertEqual(r.status, 503, r)
        j = r.json()
        self.assertEqual(j["code"], "redis_unavailable", r)
        self.assertIn("stored on the Redis master at 127.0.0.1:%d but not yet on %d replica"
                      % (self.master.port, replicas), j["error"])
        self.assertIn("Idempotency-Key", j["error"])
        self.assertEqual(r.headers.get("retry-after"), "1", r.headers)
        self.assertGreaterEqual(elapsed, wait_ms / 1000.0 * 0.9)
        self.assertLess(elapsed, wait_ms / 1000.0 + 2.0)

    def test_a_every_acknowledged_write_is_on_the_replica(self):
        cid = self.create()
        meta, messages, state = ("ctxd:{%s}:%s" % (cid, k) for k in ("meta", "messages", "state"))
        self.assertEqual(self.on_replica("EXISTS", meta), "1")
        for i in range(1, 4):
            r = self.req("POST", "/mcp/context/%s/message" % cid, {"message": "turn %d" % i})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(self.on_replica("LLEN", messages), str(2 * i))
        r = self.req("POST", "/mcp/context/%s/messages" % cid,
                     {"messages": [{"role": "user", "content": "u"},
                                   {"role": "assistant", "content": "a"}]})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.on_replica("LLEN", messages), "8")
        self.assertEqual(self.req("PUT", "/mcp/context/%s/state" % cid, {"k": 1}).status, 200)
        self.assertEqual(self.on_replica("HGET", state, "k"), "1")
        self.assertEqual(self.req("PATCH", "/mcp/context/%s/state" % cid, {"k": 2}).status, 200)
        self.assertEqual(self.on_replica("HGET", state, "k"), "2")
        self.assertEqual(self.req("PATCH", "/mcp/context/" + cid, {"system": "be brief"}).status,
                         200)
        self.assertEqual(self.on_replica("HGET", meta, "system"), "be brief")
        self.assertEqual(self.req("DELETE", "/mcp/context/" + cid).status, 200)
        self.assertEqual(self.on_replica("EXISTS", meta, messages, state), "0")

    def test_b_replica_down_is_a_503_and_the_retry_replays(self):
        cid = self.create()
        messages = "ctxd:{%s}:messages" % cid
        self.fake.reset()
        self.replica.stop()
        try:
            key = {"Idempotency-Key": "durable-1"}
            t0 = time.monotonic()
            r = self.req("POST", "/mcp/context/%s/message" % cid, {"message": "hello"}, key)
            self.assert_unreplicated(r, t0)
            # Stored on the master (with its idempotency record), once.
            self.assertEqual(self.master.cli("LLEN", messages), "2")
            self.assertEqual(len(self.fake.requests()), 1)
            # Other acknowledged writes fail the same way.
            t0 = time.monotonic()
            self.assert_unreplicated(self.req("POST", "/mcp/context"), t0)
            t0 = time.monotonic()
            self.assert_unreplicated(self.req("PUT", "/mcp/context/%s/state" % cid, {"k": 1}), t0)
            # Reads do not wait.
            self.assertEqual(self.req("GET", "/mcp/context/" + cid).status, 200)
        finally:
            self.assertTrue(self.replica.start().up, "the replica does not acknowledge writes")
        r = self.req("POST", "/mcp/context/%s/message" % cid, {"message": "hello"}, key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("idempotent-replayed"), "true", r.headers)
        self.assertEqual(r.json()["ai_response"], "fake-anthropic reply #1 to: hello")
        self.assertEqual(len(self.fake.requests()), 1, "the retry called the model again")
        self.assertEqual(self.master.cli("LLEN", messages), "2")
        wait_until(lambda: self.on_replica("LLEN", messages) == "2", timeout=5,
                   what="the turn on the replica")
        # And the next turn is acknowledged replicated again.
        r = self.req("POST", "/mcp/context/%s/message" % cid, {"message": "again"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.on_replica("LLEN", messages), "4")

    def test_c_more_replicas_asked_than_there_are(self):
        c = Ctxd(self.master.url, env={"CTXD_REDIS_WAIT_REPLICAS": "2",
                                       "CTXD_REDIS_WAIT_MS": "300"}).start()
        try:
            r = self.req("POST", "/mcp/context", ctxd=c)
            self.assertEqual(r.status, 503, r)
            cid = self.create()  # through the ctxd that waits for one
            t0 = time.monotonic()
            r = self.req("POST", "/mcp/context/%s/message" % cid, {"message": "hi"}, ctxd=c)
            self.assert_unreplicated(r, t0, replicas=2, wait_ms=300)
            self.assertEqual(c.stop(), 0)
        finally:
            c.cleanup()


if __name__ == "__main__":
    main()
