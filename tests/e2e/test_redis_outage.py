"""Redis down at start, stopped and killed under ctxd: 503s, then recovery
without restarting ctxd, and nothing lost."""
# e2e_cluster: no (one server down and back at one address; a cluster node's failure
# is test_cluster_failover.py)
import unittest

from harness import Ctxd, RedisServer, main, request, wait_until


class RedisOutageTest(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer()  # not started yet
        self.ctxd = Ctxd(self.redis.url, env={"CTXD_REDIS_TIMEOUT_MS": "500"}).start()

    def tearDown(self):
        try:
            self.assertEqual(self.ctxd.stop(), 0)
        finally:
            self.ctxd.cleanup()
            self.redis.cleanup()

    def req(self, method, path, body=None):
        return request(self.ctxd.port, method, path, body)

    def assert_503(self, r):
        self.assertEqual(r.status, 503, r)
        j = r.json()
        self.assertEqual(j["code"], "redis_unavailable")
        self.assertIn("127.0.0.1:%d" % self.redis.port, j["error"])
        self.assertEqual(r.headers.get("retry-after"), "1")

    def ready(self):
        return self.req("GET", "/readyz").status == 200

    def test_down_at_start_then_up(self):
        self.assertEqual(self.req("GET", "/healthz").status, 200)
        self.assert_503(self.req("GET", "/readyz"))
        self.assert_503(self.req("POST", "/mcp/context"))
        self.assertIn("redis unreachable at 127.0.0.1:%d" % self.redis.port, self.ctxd.log())
        self.redis.start()
        wait_until(self.ready, what="readyz after redis start")
        self.assertEqual(self.req("POST", "/mcp/context").status, 201)

    def _outage(self, kill):
        self.redis.start()
        wait_until(self.ready, what="readyz")
        cid = self.req("POST", "/mcp/context").json()["context_id"]
        self.assertEqual(self.req("POST", "/mcp/context/%s/message" % cid,
                                  {"message": "hello"}).status, 200)
        self.redis.kill() if kill else self.redis.stop()
        for method, path, body in (("GET", "/mcp/context/" + cid, None),
                                   ("POST", "/mcp/context/%s/message" % cid, {"message": "x"}),
                                   ("POST", "/mcp/context", None),
                                   ("GET", "/readyz", None)):
            self.assert_503(self.req(method, path, body))
        self.assertEqual(self.req("GET", "/healthz").status, 200)
        self.redis.start()  # same port, same dir: the AOF brings the data back
        wait_until(self.ready, what="readyz after restart")
        # Every worker thread has recovered, not only the one that probed.
        for i in range(60):
            r = self.req("GET", "/mcp/context/" + cid)
            self.assertEqual(r.status, 200, (i, r))
        self.assertEqual(len(r.json()["messages"]), 2)
        r = self.req("POST", "/mcp/context/%s/message" % cid, {"message": "after"})
        self.assertEqual(r.status, 200, r)
        self.assertIn("1 earlier turn ", r.json()["ai_response"])

    def test_redis_stopped_and_restarted(self):
        self._outage(kill=False)

    def test_redis_killed_and_restarted(self):
        self._outage(kill=True)


if __name__ == "__main__":
    main()
