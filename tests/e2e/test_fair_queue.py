"""Turns waiting on one context, across processes, are served in arrival order,
woken when the lock comes free, and a killed holder or waiter stops blocking."""
import json
import re
import socket
import threading
import time

from harness import Ctxd, Redis, main, request, wait_until
import unittest

CLIENTS, TURNS = 32, 6
MARK = re.compile(r"^client (\d+) turn (\d+)$")
ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b'"': b'"',
           b"\\": b"\\"}


def unquote(s):
    """One argument of a MONITOR line, as Redis' sdscatrepr wrote it."""
    out, i = bytearray(), 0
    while i < len(s):
        c = s[i:i + 1]
        if c == b"\\":
            n = s[i + 1:i + 2]
            if n == b"x":
                out += bytes([int(s[i + 2:i + 4], 16)])
                i += 4
                continue
            out += ESCAPES.get(n, n)
            i += 2
            continue
        out += c
        i += 1
    return bytes(out)


class Monitor:
    """Every command Redis runs, in its order (MONITOR on a raw socket)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.buf = b""
        self.lines = []
        self.done = False
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while not self.done:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.buf += chunk
            *lines, self.buf = self.buf.split(b"\r\n")
            self.lines += lines

    def stop(self):
        time.sleep(0.2)  # let the last lines arrive
        self.done = True
        self.sock.close()
        self.thread.join(5)
        return [[unquote(a) for a in ARG.findall(line)] for line in self.lines
                if line.startswith(b"+") and (b'"EVALSHA"' in line or b'"SET"' in line)]


def scripts_of(words, cid):
    """(kind, token, words after the keys) of a try for cid's lock or an
    EVALSHA on cid's keys: a turn first tries SET <lock> <token> NX PX ttl
    (store_turn.c), then the turn lock script, which has five ARGV (token,
    lock TTL, idempotency key, now, queue TTL); the append has its messages
    after 12 others (ARGV layouts of lua/turn_lock.lua and append.lua)."""
    if words[0] == b"SET":
        if words[1] == ("ctxd:{%s}:lock" % cid).encode() and b"NX" in words[3:]:
            return "read", words[2].decode(), words[3:]
        return None
    nkeys = int(words[2])
    keys, argv = words[3:3 + nkeys], words[3 + nkeys:]
    if not keys or ("ctxd:{%s}:meta" % cid).encode() != keys[0]:
        return None
    if len(argv) == 5 and argv[1].isdigit() and argv[3].isdigit() and argv[4].isdigit():
        return "read", argv[0].decode(), argv
    if len(argv) >= 13 and argv[0] and argv[1].isdigit():
        return "append", argv[0].decode(), argv
    return None


class FairQueueTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = Redis(appendonly=False).start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.cleanup()

    def ctxd(self, **env):
        c = Ctxd(self.redis.url, env={k: str(v) for k, v in env.items()}).start()
        self.addCleanup(c.cleanup)
        return c

    def new_context(self, port):
        r = request(port, "POST", "/mcp/context")
        self.assertEqual(r.status, 201, r)
        return r.json()["context_id"]

    @staticmethod
    def doomed_turn(port, cid, text):
        """A turn on a ctxd that gets killed: its connection just ends."""
        try:
            request(port, "POST", "/mcp/context/%s/message" % cid, {"message": text},
                    timeout=60)
        except OSError:
            pass

    def messages(self, cid):
        return [json.loads(x) for x in
                self.redis.raw("LRANGE", "ctxd:{%s}:messages" % cid, "0", "-1")]

    def test_32_clients_6_turns_two_processes_in_arrival_order(self):
        ports = [self.ctxd(CTXD_ECHO_DELAY_MS=100).port,
                 self.ctxd(CTXD_ECHO_DELAY_MS=100).port]
        cid = self.new_context(ports[0])
        statuses = [[] for _ in range(CLIENTS)]

        def client(i):
            for k in range(TURNS):
                r = request(ports[i % 2], "POST", "/mcp/context/%s/message" % cid,
                            {"message": "client %d turn %d" % (i, k)}, timeout=60)
                statuses[i].append(r.status)
                if r.status != 200:
                    print("client %d turn %d: %r %s" % (i, k, r, r.headers.get("retry-after")))

        mon = Monitor(self.redis.master_of("ctxd:{%s}:lock" % cid))
        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        calls = mon.stop()
        flat = [s for per in statuses for s in per]
        busy = flat.count(409)
        print("32x6: %d turns in %.1f s, %d answered 409, others not 200: %d"
              % (len(flat), wall, busy, sum(1 for s in flat if s not in (200, 409))))
        stored = self.messages(cid)
        users = [m["content"] for m in stored if m["role"] == "user"]
        order = [tuple(map(int, MARK.match(u).groups())) for u in users]

        # Arrival at the lock, in Redis' order: a turn's first lock script
        # (where a turn that found the lock taken joins the queue), or its
        # SET NX when that took the lock and it never needed the script; the
        # append under the same token says which message that was. The
        # history must follow arrival exactly.
        first_read, first_set, marker = {}, {}, {}
        for i, words in enumerate(calls):
            s = scripts_of(words, cid)
            if not s:
                continue
            kind, token, argv = s
            if kind == "read" and words[0] == b"SET":
                first_set.setdefault(token, i)
            elif kind == "read":
                first_read.setdefault(token, i)
            else:
                msg = json.loads(next(a for a in argv[11:] if a.startswith(b'{"seq"')))
                marker[token] = tuple(map(int, MARK.match(msg["content"]).groups()))
        arrival = [marker[t] for t in
                   sorted(marker, key=lambda t: first_read.get(t, first_set.get(t)))]
        out_of_order = sum(1 for a, b in zip(arrival, order) if a != b)
        print("32x6: history vs arrival at the lock: %d of %d turns out of place"
              % (out_of_order, len(order)))
        self.assertEqual(busy, 0)
        self.assertEqual(flat, [200] * (CLIENTS * TURNS))

        # The history: whole pairs, each client's turns in the order it sent them.
        self.assertEqual(len(stored), 2 * CLIENTS * TURNS)
        self.assertEqual([m["role"] for m in stored], ["user", "assistant"] * (CLIENTS * TURNS))
        for i in range(CLIENTS):
            self.assertEqual([k for c, k in order if c == i], list(range(TURNS)))
        self.assertEqual(len(marker), CLIENTS * TURNS)
        self.assertEqual(order, arrival)
        self.assertLess(wall, 60)
        self.assertEqual(self.redis.cli("EXISTS", "ctxd:{%s}:queue" % cid), "0")
        self.assertEqual(self.redis.cli("EXISTS", "ctxd:{%s}:lock" % cid), "0")

    def test_short_wait_long_queue_still_409(self):
        port = self.ctxd(CTXD_ECHO_DELAY_MS=300, CTXD_LOCK_WAIT_MS=200).port
        cid = self.new_context(port)
        results = [None] * 8

        def client(i):
            results[i] = request(port, "POST", "/mcp/context/%s/message" % cid,
                                 {"message": "hurry %d" % i})
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        busy = [r for r in results if r.status == 409]
        self.assertTrue(busy, results)
        self.assertEqual(len(busy) + sum(1 for r in results if r.status == 200), 8, results)
        for r in busy:
            self.assertEqual(r.json()["code"], "context_busy")
            self.assertEqual(r.headers.get("retry-after"), "1")
        # Those that gave up left the queue: the next turn goes straight in.
        wait_until(lambda: self.redis.cli("EXISTS", "ctxd:{%s}:lock" % cid) == "0", timeout=5)
        self.assertEqual(self.redis.cli("EXISTS", "ctxd:{%s}:queue" % cid), "0")
        self.assertEqual(request(port, "POST", "/mcp/context/%s/message" % cid,
                                 {"message": "after"}).status, 200)

    def test_killed_holder_stops_blocking_within_the_lock_ttl(self):
        holder = self.ctxd(CTXD_ECHO_DELAY_MS=20000, CTXD_LOCK_TTL_MS=1000)
        other = self.ctxd(CTXD_ECHO_DELAY_MS=50, CTXD_LOCK_TTL_MS=1000)
        cid = self.new_context(other.port)
        lock, queue = "ctxd:{%s}:lock" % cid, "ctxd:{%s}:queue" % cid
        threading.Thread(target=self.doomed_turn, args=(holder.port, cid, "never stored"),
                         daemon=True).start()
        wait_until(lambda: self.redis.cli("EXISTS", lock) == "1", what="the lock")
        res = []
        waiter = threading.Thread(target=lambda: res.append(request(
            other.port, "POST", "/mcp/context/%s/message" % cid, {"message": "next"})))
        waiter.start()
        wait_until(lambda: self.redis.cli("LLEN", queue) == "1", what="a waiter in line")
        time.sleep(1.2)  # the holder renews its lock meanwhile
        self.assertEqual(self.redis.cli("EXISTS", lock), "1")
        holder.kill()
        killed = time.monotonic()
        waiter.join()
        took = time.monotonic() - killed
        print("killed holder: the waiter went ahead %.2f s after the kill" % took)
        self.assertEqual(res[0].status, 200, res[0])
        self.assertLess(took, 1.0 + 0.25 + 0.05 + 0.7)  # TTL, a look, the turn, slack
        self.assertEqual([m["content"] for m in self.messages(cid)][0], "next")

    def test_killed_waiter_stops_blocking_when_its_place_expires(self):
        holder = self.ctxd(CTXD_ECHO_DELAY_MS=1000)
        doomed = self.ctxd(CTXD_ECHO_DELAY_MS=50)
        last = self.ctxd(CTXD_ECHO_DELAY_MS=50)
        cid = self.new_context(last.port)
        lock, queue = "ctxd:{%s}:lock" % cid, "ctxd:{%s}:queue" % cid
        res = {}

        def turn(name, c):
            res[name] = request(c.port, "POST", "/mcp/context/%s/message" % cid,
                                {"message": name}, timeout=30)
        ts = [threading.Thread(target=turn, args=("first", holder))]
        ts[0].start()
        wait_until(lambda: self.redis.cli("EXISTS", lock) == "1", what="the lock")
        threading.Thread(target=self.doomed_turn, args=(doomed.port, cid, "doomed"),
                         daemon=True).start()
        wait_until(lambda: self.redis.cli("LLEN", queue) == "1", what="the doomed waiter")
        ts.append(threading.Thread(target=turn, args=("last", last)))
        ts[1].start()
        wait_until(lambda: self.redis.cli("LLEN", queue) == "2", what="the last waiter")
        doomed.kill()
        killed = time.monotonic()
        for t in ts:
            t.join()
        took = time.monotonic() - killed
        print("killed waiter: the one behind it went ahead %.2f s after the kill" % took)
        self.assertEqual(res["first"].status, 200, res["first"])
        self.assertEqual(res["last"].status, 200, res["last"])
        # Its place lasts 3 s after its last look (every 0.25 s at most).
        self.assertLess(took, 3.0 + 0.25 + 0.05 + 1.0)
        self.assertEqual([m["content"] for m in self.messages(cid) if m["role"] == "user"],
                         ["first", "last"])
        self.assertEqual(self.redis.cli("EXISTS", queue), "0")


if __name__ == "__main__":
    main()
