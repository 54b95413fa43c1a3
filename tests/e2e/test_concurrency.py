"""Turns on one context from many clients and two processes never interleave."""
import json
import re
import threading

from harness import Ctxd, CtxdTestCase, main, request

EARLIER = re.compile(r"echo model: (\d+) earlier turn")


def check_history(test, redis, cid, expected_pairs):
    """Perfect user/assistant pairs, in order, each reply made from every
    earlier turn (the echo model states how many it saw)."""
    stored = [json.loads(x) for x in redis.raw("LRANGE", "ctxd:{%s}:messages" % cid, "0", "-1")]
    test.assertEqual(len(stored), 2 * expected_pairs)
    test.assertEqual([m["seq"] for m in stored], list(range(1, 2 * expected_pairs + 1)))
    for i in range(expected_pairs):
        user, reply = stored[2 * i], stored[2 * i + 1]
        test.assertEqual(user["role"], "user")
        test.assertEqual(reply["role"], "assistant")
        test.assertIn("'%s'" % user["content"], reply["content"])
        test.assertEqual(int(EARLIER.search(reply["content"]).group(1)), i)
    return stored


class ConcurrencyTest(CtxdTestCase):
    CTXD_ENV = {"CTXD_ECHO_DELAY_MS": "40", "CTXD_LOCK_WAIT_MS": "20000",
                "CTXD_THREADS": "40"}

    def run_clients(self, ports, cid, n, tag):
        results = [None] * n

        def client(i):
            port = ports[i % len(ports)]
            results[i] = request(port, "POST", "/mcp/context/%s/message" % cid,
                                 {"message": "%s client %d" % (tag, i)}, timeout=60)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def test_16_clients_one_context(self):
        cid = self.create()
        results = self.run_clients([self.ctxd.port], cid, 16, "one")
        self.assertEqual([r.status for r in results], [200] * 16, results)
        stored = check_history(self, self.redis, cid, 16)
        # Every answer a client got is in the history, exactly once.
        replies = [m["content"] for m in stored if m["role"] == "assistant"]
        self.assertEqual(sorted(r.json()["ai_response"] for r in results), sorted(replies))
        self.assertEqual(self.redis.cli("EXISTS", "ctxd:{%s}:lock" % cid), "0")

    def test_two_processes_share_the_lock(self):
        other = Ctxd(self.redis.url, env=self.CTXD_ENV).start()
        try:
            cid = self.create()
            results = self.run_clients([self.ctxd.port, other.port], cid, 16, "two")
            self.assertEqual([r.status for r in results], [200] * 16, results)
            check_history(self, self.redis, cid, 16)
        finally:
            self.assertEqual(other.stop(), 0)
            other.cleanup()

    def test_concurrent_idempotent_repeats_store_once(self):
        cid = self.create()
        results = [None] * 6

        def client(i):
            results[i] = request(self.ctxd.port, "POST", "/mcp/context/%s/message" % cid,
                                 {"message": "same"}, headers={"Idempotency-Key": "dup"})
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual({r.status for r in results}, {200})
        self.assertEqual(len({r.body for r in results}), 1)
        check_history(self, self.redis, cid, 1)


class ShortLockTest(CtxdTestCase):
    """A model call longer than the lock's TTL keeps the lock by renewing it."""
    CTXD_ENV = {"CTXD_ECHO_DELAY_MS": "2500", "CTXD_LOCK_TTL_MS": "1000",
                "CTXD_LOCK_WAIT_MS": "200"}

    def test_lock_is_renewed_during_a_long_turn(self):
        cid = self.create()
        slow = []
        t = threading.Thread(target=lambda: slow.append(self.turn(cid, "slow one")))
        t.start()
        # While the slow turn runs (longer than the lock TTL), others get 409.
        import time
        time.sleep(1.6)
        busy = self.turn(cid, "impatient")
        self.assert_error(busy, 409, "context_busy")
        self.assertEqual(busy.headers["retry-after"], "1")
        t.join()
        self.assertEqual(slow[0].status, 200, slow[0])
        check_history(self, self.redis, cid, 1)


if __name__ == "__main__":
    main()
