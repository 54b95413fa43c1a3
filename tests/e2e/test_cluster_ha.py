"""A Redis Cluster changing under load: a master killed with SIGKILL (its
replica takes over) and slots moved between masters while turns run. Clients
see only 503s with Retry-After during a failover and nothing but 200s during
a reshard; no acknowledged turn is lost and every history is whole pairs."""
# e2e_cluster: no (starts its own clusters: it is about the cluster itself)
import json
import re
import time
import unittest

from harness import Ctxd, RedisCluster, TurnClient, main, wait_until


def redirects(ctxd):
    """ctxd_redis_cluster_redirects_total by kind, from /metrics."""
    text = ctxd.request("GET", "/metrics").text
    return {k: int(float(v)) for k, v in
            re.findall(r'^ctxd_redis_cluster_redirects_total\{kind="(\w+)"\} (\S+)$', text, re.M)}


class ClusterLoad:
    """Helpers shared by the two cases: contexts, clients, and the checks."""

    @classmethod
    def tearDownClass(cls):
        try:
            cls.ctxd.stop_ok()
        finally:
            cls.ctxd.cleanup()
            cls.cluster.cleanup()

    def start_clients(self, n):
        cids = []
        for _ in range(n):
            r = self.ctxd.request("POST", "/mcp/context")
            self.assertEqual(r.status, 201, r)
            cids.append(r.json()["context_id"])
        clients = [TurnClient(self.ctxd, cid, "c%d" % i) for i, cid in enumerate(cids)]
        for cl in clients:
            cl.start()
        wait_until(lambda: all(len(cl.acked()) >= 5 for cl in clients), timeout=20,
                   what="turns before the change")
        return clients

    @staticmethod
    def stop_clients(clients):
        for cl in clients:
            cl.stop.set()
        for cl in clients:
            cl.join(timeout=30)

    def stored(self, cid):
        return [json.loads(m) for m in
                self.cluster.raw("LRANGE", "ctxd:{%s}:messages" % cid, "0", "-1")]

    def check_histories(self, clients):
        """Every acknowledged turn is stored once, in order, as a whole pair;
        ctxd reads the same."""
        for cl in clients:
            stored = self.stored(cl.cid)
            self.assertEqual([m["role"] for m in stored],
                             ["user", "assistant"] * (len(stored) // 2), cl.cid)
            users = [m["content"] for m in stored if m["role"] == "user"]
            acked = cl.acked()
            for msg in acked:
                self.assertEqual(users.count(msg), 1, "acknowledged turn %s: %r" % (msg, users))
            self.assertEqual([u for u in users if u in acked], acked)
            r = self.ctxd.request("GET", "/mcp/context/" + cl.cid)
            self.assertEqual(r.status, 200, r)
            self.assertEqual([m["content"] for m in r.json()["messages"]],
                             [m["content"] for m in stored])


class FailoverTest(ClusterLoad, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Two replicas each: after the failover the new master still has one,
        # so writes can still wait for a replica (CTXD_REDIS_WAIT_REPLICAS=1).
        cls.cluster = RedisCluster(replicas=2, node_timeout_ms=1000).start()
        cls.ctxd = Ctxd(cls.cluster.url, env={"CTXD_REDIS_WAIT_REPLICAS": "1",
                                              "CTXD_REDIS_WAIT_MS": "1000",
                                              "CTXD_REDIS_TIMEOUT_MS": "500",
                                              "CTXD_LOCK_TTL_MS": "1000"}).start()

    def test_master_killed_under_load(self):
        clients = self.start_clients(9)
        busy = {}
        for cl in clients:
            busy.setdefault(self.cluster.master_of("ctxd:{%s}:meta" % cl.cid), []).append(cl)
        victim = max(busy, key=lambda p: len(busy[p]))
        replicas = self.cluster.replicas_of(victim)
        self.assertEqual(len(replicas), 2, "the victim's replicas")
        try:
            started = time.monotonic()
            self.cluster.kill_node(victim)
            # One of its replicas is elected and serves the victim's slots.
            wait_until(lambda: set(replicas) & set(self.cluster.masters()), timeout=30,
                       what="a replica to take over")
            promoted = sorted(set(replicas) & set(self.cluster.masters()))[0]
            took_over = time.monotonic() - started
            # Every client, those on the victim's slots too, gets turns again.
            counts = {cl.cid: len(cl.acked()) for cl in clients}
            wait_until(lambda: all(len(cl.acked()) >= counts[cl.cid] + 3 for cl in clients),
                       timeout=30, what="turns after the failover")
        finally:
            self.stop_clients(clients)
        self.assertIsNone(self.ctxd.proc.poll(), "ctxd exited")

        # Only 200s, and 503 redis_unavailable with Retry-After: 1.
        for cl in clients:
            for t, msg, status, code, retry in cl.answers:
                if status != 200:
                    self.assertEqual((status, code), (503, "redis_unavailable"), (cl.name, msg))
                    self.assertEqual(retry, "1", (cl.name, msg))
        unavailable = [t for cl in clients for t, _, s, _, _ in cl.answers if s != 200]
        self.assertTrue(any(t > started for t in unavailable)
                        or not busy[victim], "no client noticed the master's death")
        self.check_histories(clients)
        print("cluster failover %d -> %d in %.1f s: %d turns acknowledged on %d contexts "
              "(%d on the killed master's slots), %d answered 503, the last %.1f s after "
              "the kill; redirects %s" % (
                  victim, promoted, took_over, sum(len(cl.acked()) for cl in clients),
                  len(clients), len(busy[victim]), len(unavailable),
                  max(unavailable) - started if unavailable else 0, redirects(self.ctxd)))


class ReshardTest(ClusterLoad, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = RedisCluster(replicas=0).start()
        cls.ctxd = Ctxd(cls.cluster.url).start()

    def node_id(self, port):
        return self.cluster.node_cli(port, "CLUSTER", "MYID")

    def move_slot(self, slot, src, dst, pause):
        """The documented live resharding of one slot: IMPORTING on dst,
        MIGRATING on src, MIGRATE the keys a few at a time, then NODE on
        every master. pause: seconds turns run against each stage."""
        c = self.cluster
        src_id, dst_id = self.node_id(src), self.node_id(dst)
        self.assertEqual(c.node_cli(dst, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id),
                         "OK")
        self.assertEqual(c.node_cli(src, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id),
                         "OK")
        time.sleep(pause)
        while True:
            keys = c.node_cli(src, "CLUSTER", "GETKEYSINSLOT", str(slot), "2").split()
            if not keys:
                break
            out = c.node_cli(src, "MIGRATE", "127.0.0.1", str(dst), "", "0", "5000", "KEYS",
                             *keys)
            self.assertIn(out, ("OK", "NOKEY"), out)
            time.sleep(pause / 4)
        for port in [dst, src] + [p for p in c.masters() if p not in (src, dst)]:
            self.assertEqual(c.node_cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id),
                             "OK")

    def test_slots_move_while_turns_run(self):
        clients = self.start_clients(6)
        before = redirects(self.ctxd)
        moved = []
        try:
            # Each busy context's slot goes to the next master, and half of
            # them come back: MOVED, ASK and TRYAGAIN all happen under load.
            for i, cl in enumerate(clients):
                key = "ctxd:{%s}:meta" % cl.cid
                slot, src = self.cluster.slot_of(key), self.cluster.master_of(key)
                masters = self.cluster.masters()
                dst = masters[(masters.index(src) + 1) % len(masters)]
                n = len(cl.acked())
                self.move_slot(slot, src, dst, pause=0.15)
                moved.append((slot, src, dst))
                if i % 2:
                    self.move_slot(slot, dst, src, pause=0.05)
                wait_until(lambda: len(cl.acked()) > n + 2, timeout=20,
                           what="turns after moving slot %d" % slot)
            # And a bulk reshard with the stock tool, turns still running.
            masters = self.cluster.masters()
            out = self.cluster.reshard(masters[0], masters[1], 500)
            counts = {cl.cid: len(cl.acked()) for cl in clients}
            wait_until(lambda: all(len(cl.acked()) >= counts[cl.cid] + 2 for cl in clients),
                       timeout=20, what="turns after the reshard")
        finally:
            self.stop_clients(clients)
        self.assertIsNone(self.ctxd.proc.poll(), "ctxd exited")
        bad = [(cl.name, a) for cl in clients for a in cl.answers if a[2] != 200]
        self.assertEqual(bad, [], "a turn failed during the reshard")
        self.check_histories(clients)
        after = redirects(self.ctxd)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        # Slots moved under the turns: they were sent elsewhere (MOVED, unless
        # a map reload got there first, or ASK) and told to wait (TRYAGAIN).
        self.assertGreater(delta["moved"] + delta["ask"], 0, delta)
        self.assertGreater(delta["retry"], 0, delta)
        self.assertEqual(self.cluster.node_cli(masters[0], "CLUSTER", "COUNTKEYSINSLOT", "0"),
                         "0", out)
        print("reshard: %d slots moved one by one and 500 by redis-cli, %d turns, all 200; "
              "redirects followed %s" % (len(moved), sum(len(cl.acked()) for cl in clients),
                                         delta))


if __name__ == "__main__":
    main()
