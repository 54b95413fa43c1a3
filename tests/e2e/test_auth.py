"""Tenants, API keys, scopes and rate limits (README "Tenants and API keys"),
against one real Redis and two ctxd processes with CTXD_AUTH=keys."""
import hashlib
import os
import re
import secrets
import subprocess
import time
import unittest
import uuid
import zlib

from harness import CTXD_BIN, Ctxd, CtxdTestCase, Redis, free_port, main, wait_until

ADMIN_TOKEN = "admin-token-0123456789abcdef"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_RE = re.compile(r"^ctxd_[0-9A-Za-z]{43}_[0-9A-Za-z]{6}$")
KEY_ID_RE = re.compile(r"^key_[0-9a-f]{24}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RATELIMIT_RE = re.compile(r'^"requests";r=(\d+);t=(\d+)$')
CACHE_BOUND_S = 3.0  # README: a revoked key stops working everywhere within 2 s
KEY_FIELDS = {"id", "tenant", "scopes", "requests_per_minute", "tokens_per_minute", "name",
              "created_at"}


def checksum(random43):
    """The key's check digits as src/service/auth.c makes them: CRC-32 of the
    43 random characters, as 6 base62 digits, most significant first."""
    v = zlib.crc32(random43.encode()) & 0xffffffff
    out = ""
    for _ in range(6):
        out = BASE62[v % 62] + out
        v //= 62
    return out


def random_key():
    """A well-formed key (valid checksum) that no one created."""
    r = "".join(secrets.choice(BASE62) for _ in range(43))
    return "ctxd_%s_%s" % (r, checksum(r))


def bearer(key):
    return {"Authorization": "Bearer " + key} if key is not None else {}


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def cli_env(redis_url):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("CTXD_") and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    e["CTXD_REDIS_URL"] = redis_url
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1")
    return e


def run_cli(redis_url, *args):
    """$CTXD_BIN keys ARGS with CTXD_REDIS_URL in the environment."""
    return subprocess.run([CTXD_BIN, "keys"] + list(args), env=cli_env(redis_url),
                          capture_output=True, text=True, timeout=20)


def upstream_calls(proc, provider="echo"):
    """Sum of ctxd_upstream_calls_total for one provider on one process."""
    r = proc.request("GET", "/metrics")
    assert r.status == 200, r
    total = 0
    for line in r.text.splitlines():
        if line.startswith('ctxd_upstream_calls_total{provider="%s"' % provider):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total



def index_bucket(tenant, cid):
    """The listing's sorted set holding a context: one of 16 per tenant, by
    64-bit FNV-1a of the id (src/store/store_keys.c)."""
    h = 14695981039346656037
    for ch in cid.encode():
        h = ((h ^ ch) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "ctxd:{index:%s:%d}" % (tenant, h % 16)


def durable(snap):
    """A snapshot without the rate-limit states: they expire by themselves
    (a key allowed many requests a minute keeps its state for about a
    second), so two snapshots could differ while nothing was written."""
    return {k: v for k, v in snap.items() if not k.startswith("ctxd:{rate:")}


class AuthTest(CtxdTestCase):
    """Two processes on one Redis, both CTXD_AUTH=keys with an admin token."""
    CTXD_ENV = {"CTXD_AUTH": "keys", "CTXD_ADMIN_TOKEN": ADMIN_TOKEN,
                "CTXD_LOG_LEVEL": "debug", "CTXD_LOCK_WAIT_MS": "300"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.seen_keys = []  # every key text this class saw, for the leak check
        try:
            cls.other = Ctxd(cls.redis.url, env=cls.CTXD_ENV).start()
        except Exception:
            super().tearDownClass()
            raise
        cls.procs = [cls.ctxd, cls.other]

    @classmethod
    def tearDownClass(cls):
        try:
            cls.other.stop_ok("second ctxd")
        finally:
            cls.other.cleanup()
            super().tearDownClass()

    # ---- helpers ----

    def call(self, proc, method, path, key=None, body=None, headers=None):
        h = dict(bearer(key))
        h.update(headers or {})
        return proc.request(method, path, body=body, headers=h)

    def admin(self, method, path, body=None, proc=None):
        return self.call(proc or self.ctxd, method, path, ADMIN_TOKEN, body)

    def make_key(self, tenant, scopes, proc=None, **more):
        """A key made over HTTP with the admin token: (id, key text)."""
        body = {"tenant": tenant, "scopes": scopes}
        body.update(more)
        r = self.admin("POST", "/admin/keys", body, proc)
        self.assertEqual(r.status, 201, r)
        j = r.json()
        self.seen_keys.append(j["key"])
        return j["id"], j["key"]

    def cli(self, *args):
        return run_cli(self.redis.url, *args)

    def cli_create(self, *args):
        p = self.cli("create", *args)
        self.assertEqual(p.returncode, 0, p.stderr)
        key = p.stdout.strip()
        self.assertRegex(key, KEY_RE)
        self.seen_keys.append(key)
        return key

    def new_context(self, key, proc=None):
        r = self.call(proc or self.ctxd, "POST", "/mcp/context", key)
        self.assertEqual(r.status, 201, r)
        return r.json()["context_id"]

    def hgetall_calls(self):
        m = re.search(r"^cmdstat_hgetall:calls=(\d+)", self.redis.cli("INFO", "commandstats"),
                      re.M)
        return int(m.group(1)) if m else 0

    def assert_unauthorized(self, r):
        self.assert_error(r, 401, "unauthorized")
        self.assertTrue(r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers)

    def wait_refused(self, proc, key, bound):
        """Seconds until key gets 401 on proc (polling), failing past bound."""
        t0 = time.monotonic()
        while True:
            r = self.call(proc, "GET", "/mcp/contexts", key)
            if r.status == 401:
                self.assert_unauthorized(r)
                return time.monotonic() - t0
            self.assertEqual(r.status, 200, r)
            if time.monotonic() - t0 > bound:
                self.fail("key still accepted on port %d %.2f s after revoking" % (
                    proc.port, time.monotonic() - t0))
            time.sleep(0.02)

    # ---- making, listing and revoking keys ----

    def test_keys_made_listed_and_revoked_by_cli_and_http(self):
        cli_key = self.cli_create("--tenant", "a", "--scopes", "read,write", "--name", "cli-made")
        # The key's own checksum is the CRC-32 the README describes.
        self.assertEqual(cli_key[-6:], checksum(cli_key[5:48]))

        r = self.admin("POST", "/admin/keys", {"tenant": "a", "scopes": ["read", "write"],
                                               "requests_per_minute": 600, "name": "http-made"})
        self.assertEqual(r.status, 201, r)
        made = r.json()
        self.seen_keys.append(made["key"])
        self.assertEqual(set(made), KEY_FIELDS | {"key"})
        self.assertRegex(made["key"], KEY_RE)
        self.assertRegex(made["id"], KEY_ID_RE)
        self.assertEqual((made["tenant"], made["scopes"], made["requests_per_minute"],
                          made["tokens_per_minute"], made["name"]),
                         ("a", ["read", "write"], 600, 0, "http-made"))
        self.assertRegex(made["created_at"], ISO)
        http_key, http_id = made["key"], made["id"]
        # A key of tenant b, to see the tenant filter.
        b_id, b_key = self.make_key("b", ["read"])

        # Both keys work on both processes.
        for key in (cli_key, http_key):
            for p in self.procs:
                self.new_context(key, p)

        # Listing over HTTP: every key's fields, never the key text.
        r = self.admin("GET", "/admin/keys")
        self.assertEqual(r.status, 200, r)
        listed = {k["id"]: k for k in r.json()["keys"]}
        self.assertIn(http_id, listed)
        self.assertIn(b_id, listed)
        cli_ids = [i for i, k in listed.items() if k["name"] == "cli-made"]
        self.assertEqual(len(cli_ids), 1, listed)
        cli_id = cli_ids[0]
        for k in listed.values():
            self.assertEqual(set(k), KEY_FIELDS, k)
        self.assertEqual(listed[cli_id]["tenant"], "a")
        self.assertEqual(listed[cli_id]["scopes"], ["read", "write"])
        for key in (cli_key, http_key, b_key):
            self.assertNotIn(key, r.text)
            self.assertNotIn(key[5:48], r.text)
        r = self.admin("GET", "/admin/keys?tenant=a", proc=self.other)
        ids_a = {k["id"] for k in r.json()["keys"]}
        self.assertTrue({cli_id, http_id} <= ids_a, ids_a)
        self.assertNotIn(b_id, ids_a)
        self.assertEqual({k["tenant"] for k in r.json()["keys"]}, {"a"})

        # Listing with the command: the same ids, never the key text.
        p = self.cli("list")
        self.assertEqual(p.returncode, 0, p.stderr)
        for i in (cli_id, http_id, b_id):
            self.assertIn(i, p.stdout)
        for key in (cli_key, http_key, b_key):
            self.assertNotIn(key[5:48], p.stdout + p.stderr)
        p = self.cli("list", "--tenant", "b")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b_id, p.stdout)
        self.assertNotIn(cli_id, p.stdout)
        self.assertNotIn(http_id, p.stdout)

        # Revoking with the command and over HTTP.
        p = self.cli("revoke", cli_id)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = self.admin("DELETE", "/admin/keys/" + http_id, proc=self.other)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"message": "Key '%s' revoked" % http_id})
        self.assert_error(self.admin("DELETE", "/admin/keys/" + http_id), 404, "key_not_found")
        self.assertNotEqual(self.cli("revoke", cli_id).returncode, 0)
        listed = {k["id"] for k in self.admin("GET", "/admin/keys").json()["keys"]}
        self.assertNotIn(cli_id, listed)
        self.assertNotIn(http_id, listed)
        self.assertIn(b_id, listed)
        self.assertNotIn(cli_id, self.cli("list").stdout)
        for key in (cli_key, http_key):
            for p in self.procs:
                self.wait_refused(p, key, CACHE_BOUND_S)

    # ---- tenants ----

    def test_another_tenants_context_is_404_everywhere_and_untouched(self):
        _, a = self.make_key("a", ["read", "write"])
        _, b = self.make_key("b", ["read", "write"])
        cid = self.new_context(a)
        self.assertEqual(self.call(self.ctxd, "POST", "/mcp/context/%s/message" % cid, a,
                                   {"message": "hello"}).status, 200)
        self.assertEqual(self.call(self.ctxd, "PUT", "/mcp/context/%s/state" % cid, a,
                                   {"user": "ada"}).status, 200)

        # Keys of tenant a hold the tenant; the default names are unused.
        self.assertEqual(self.redis.keys("*%s*" % cid),
                         sorted("ctxd:{a:%s}:%s" % (cid, n) for n in ("meta", "messages",
                                                                      "state")))
        self.assertEqual(self.redis.cli("EXISTS", "ctxd:{%s}:meta" % cid), "0")
        self.assertNotEqual(self.redis.cli("ZSCORE", index_bucket("a", cid), cid), "")
        self.assertEqual(self.redis.cli("ZSCORE", index_bucket("default", cid), cid), "")
        self.assertEqual(self.redis.cli("ZSCORE", "ctxd:index", cid), "")

        routes = [
            ("GET", "/mcp/context/%s", None),
            ("GET", "/mcp/context/%s?limit=1", None),
            ("GET", "/mcp/context/%s/messages", None),
            ("GET", "/mcp/context/%s/messages?limit=1", None),
            ("POST", "/mcp/context/%s/message", {"message": "steal"}),
            ("POST", "/mcp/context/%s/messages", {"messages": [{"role": "user",
                                                                "content": "x"}]}),
            ("GET", "/mcp/context/%s/state", None),
            ("PUT", "/mcp/context/%s/state", {"user": "mallory"}),
            ("PATCH", "/mcp/context/%s/state", {"user": None}),
            ("PATCH", "/mcp/context/%s", {"system": "obey b"}),
            ("DELETE", "/mcp/context/%s", None),
        ]
        before = durable(self.redis.snapshot())
        calls_before = [upstream_calls(p) for p in self.procs]
        for p in self.procs:
            for method, path, body in routes:
                with self.subTest(port=p.port, method=method, path=path):
                    r = self.call(p, method, path % cid, b, body)
                    j = self.assert_error(r, 404, "context_not_found")
                    # Exactly as for an id that does not exist.
                    nid = str(uuid.uuid4())
                    n = self.call(p, method, path % nid, b, body)
                    self.assert_error(n, 404, "context_not_found")
                    self.assertEqual(j["error"].replace(cid, "ID"),
                                     n.json()["error"].replace(nid, "ID"))
        self.assertEqual(durable(self.redis.snapshot()), before)
        self.assertEqual([upstream_calls(p) for p in self.procs], calls_before)

        # a still has it whole, on both processes.
        for p in self.procs:
            g = self.call(p, "GET", "/mcp/context/" + cid, a)
            self.assertEqual(g.status, 200, g)
            self.assertEqual(g.json()["message_count"], 2)
            self.assertEqual(g.json()["state"], {"user": "ada"})
            self.assertNotEqual(g.json().get("system"), "obey b")

        # Listing: each tenant sees only its own.
        cid_b = self.new_context(b, self.other)
        self.assertTrue(self.redis.keys("ctxd:{b:%s}:meta" % cid_b))
        for p in self.procs:
            ids_a = [c["id"] for c in self.call(p, "GET", "/mcp/contexts?limit=100", a)
                     .json()["contexts"]]
            ids_b = [c["id"] for c in self.call(p, "GET", "/mcp/contexts?limit=100", b)
                     .json()["contexts"]]
            self.assertIn(cid, ids_a)
            self.assertNotIn(cid_b, ids_a)
            self.assertNotIn(cid, ids_b)
            self.assertIn(cid_b, ids_b)
        # a's own delete works, and leaves none of its keys behind.
        r = self.call(self.other, "DELETE", "/mcp/context/" + cid, a)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.redis.keys("*%s*" % cid), [])

    # ---- scopes ----

    def test_scopes_are_enforced(self):
        _, rw = self.make_key("a", ["read", "write"])
        read_id, ro = self.make_key("a", ["read"])
        admin_id, adm = self.make_key("ops", ["admin"])
        cid = self.new_context(rw)
        self.assertEqual(self.call(self.ctxd, "POST", "/mcp/context/%s/message" % cid, rw,
                                   {"message": "hello"}).status, 200)
        before = durable(self.redis.snapshot())
        for p in self.procs:
            # read: every GET works.
            for path in ("/mcp/context/%s" % cid, "/mcp/context/%s/messages" % cid,
                         "/mcp/context/%s/state" % cid, "/mcp/contexts"):
                r = self.call(p, "GET", path, ro)
                self.assertEqual(r.status, 200, (path, r))
            # ... and no write.
            writes = [("POST", "/mcp/context", None),
                      ("POST", "/mcp/context/%s/message" % cid, {"message": "hi"}),
                      ("POST", "/mcp/context/%s/messages" % cid,
                       {"messages": [{"role": "user", "content": "x"}]}),
                      ("PUT", "/mcp/context/%s/state" % cid, {"k": 1}),
                      ("PATCH", "/mcp/context/%s/state" % cid, {"k": 1}),
                      ("PATCH", "/mcp/context/%s" % cid, {"system": "x"}),
                      ("DELETE", "/mcp/context/%s" % cid, None),
                      ("GET", "/admin/keys", None)]
            for method, path, body in writes:
                with self.subTest(key="read", port=p.port, method=method, path=path):
                    self.assert_error(self.call(p, method, path, ro, body), 403, "forbidden")
            # read/write: no /admin/keys.
            for method, path, body in [("GET", "/admin/keys", None),
                                       ("GET", "/admin/keys?tenant=a", None),
                                       ("POST", "/admin/keys", {"tenant": "a",
                                                                "scopes": ["admin"]}),
                                       ("DELETE", "/admin/keys/" + read_id, None)]:
                with self.subTest(key="read,write", port=p.port, method=method, path=path):
                    self.assert_error(self.call(p, method, path, rw, body), 403, "forbidden")
            # The admin token alone (and an admin-only key): no context routes.
            for key in (ADMIN_TOKEN, adm):
                for method, path, body in [("GET", "/mcp/contexts", None),
                                           ("POST", "/mcp/context", None),
                                           ("GET", "/mcp/context/" + cid, None),
                                           ("POST", "/mcp/context/%s/message" % cid,
                                            {"message": "hi"}),
                                           ("DELETE", "/mcp/context/" + cid, None)]:
                    with self.subTest(key=key[:8], port=p.port, method=method, path=path):
                        self.assert_error(self.call(p, method, path, key, body), 403,
                                          "forbidden")
        self.assertEqual(durable(self.redis.snapshot()), before)
        # ro was not revoked by rw's attempt, and an admin key may use /admin/keys.
        r = self.call(self.other, "GET", "/admin/keys", adm)
        self.assertEqual(r.status, 200, r)
        self.assertTrue({read_id, admin_id} <= {k["id"] for k in r.json()["keys"]})
        # x-api-key works like Authorization: Bearer.
        r = self.call(self.other, "GET", "/mcp/context/" + cid, headers={"x-api-key": ro})
        self.assertEqual(r.status, 200, r)

    # ---- refused keys ----

    def test_missing_malformed_and_bad_checksum_keys_are_401_without_redis(self):
        _, good = self.make_key("a", ["read"])
        right = good[-6:]
        wrong = right[:-1] + ("0" if right[-1] != "0" else "1")
        bad_checksum = good[:-6] + wrong
        # A well-formed key with a wrong checksum: all else is right.
        self.assertRegex(bad_checksum, KEY_RE)
        malformed = ["nonsense", "ctxd_", "ctxd_abc_def", good[:-1], good + "x",
                     good.replace("ctxd_", "ctxe_", 1), good[:10] + "!" + good[11:],
                     good[:48] + "-" + good[49:], "Bearer " + good, good.lower()
                     if good.lower() != good else good.upper()]
        for p in self.procs:
            before = self.hgetall_calls()
            self.assert_unauthorized(self.call(p, "GET", "/mcp/contexts"))
            self.assert_unauthorized(self.call(p, "POST", "/mcp/context",
                                               headers={"Authorization": "Bearer "}))
            for cred in malformed + [bad_checksum]:
                with self.subTest(port=p.port, cred=cred):
                    if KEY_RE.match(cred) and cred[-6:] == checksum(cred[5:48]):
                        continue  # the case change happened to keep a valid checksum
                    self.assert_unauthorized(self.call(p, "GET", "/mcp/contexts", cred))
                    self.assert_unauthorized(self.call(p, "GET", "/mcp/contexts",
                                                       headers={"x-api-key": cred}))
            self.assertEqual(self.hgetall_calls(), before,
                             "a malformed or bad-checksum key made ctxd read the key store")

        # An unknown well-formed key: exactly one HGETALL per request.
        made_id, revoked = self.make_key("a", ["read"])
        self.assertEqual(self.admin("DELETE", "/admin/keys/" + made_id).status, 200)
        for p in self.procs:
            for cred in (random_key(), revoked):
                with self.subTest(port=p.port, cred=cred):
                    before = self.hgetall_calls()
                    self.assert_unauthorized(self.call(p, "GET", "/mcp/contexts", cred))
                    self.assertEqual(self.hgetall_calls() - before, 1)

    def test_revoked_key_is_refused_on_both_processes_within_2s(self):
        kid, key = self.make_key("a", ["read"])
        for p in self.procs:  # both accept it, and now remember it
            r = self.call(p, "GET", "/mcp/contexts", key)
            self.assertEqual(r.status, 200, r)
        t0 = time.monotonic()
        r = self.admin("DELETE", "/admin/keys/" + kid, proc=self.ctxd)
        self.assertEqual(r.status, 200, r)
        # At once on the process that revoked it.
        self.assert_unauthorized(self.call(self.ctxd, "GET", "/mcp/contexts", key))
        self.wait_refused(self.other, key, CACHE_BOUND_S)
        elapsed = time.monotonic() - t0
        print("\n  revoked key refused by the other process after %.2f s" % elapsed)
        self.assertLess(elapsed, CACHE_BOUND_S)
        for p in self.procs:
            self.assert_unauthorized(self.call(p, "GET", "/mcp/contexts", key))

    # ---- rate limits ----

    def test_requests_per_minute_is_shared_by_both_processes(self):
        _, key = self.make_key("a", ["read"], requests_per_minute=5)
        remaining = []
        for i in range(5):
            r = self.call(self.procs[i % 2], "GET", "/mcp/contexts", key)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get("ratelimit-policy"), '"requests";q=5;w=60', r.headers)
            m = RATELIMIT_RE.match(r.headers.get("ratelimit", ""))
            self.assertTrue(m, r.headers)
            self.assertGreaterEqual(int(m.group(2)), 1)
            remaining.append(int(m.group(1)))
        self.assertEqual(remaining, [4, 3, 2, 1, 0])
        before = durable(self.redis.snapshot())
        for p in (self.other, self.ctxd):  # the 6th and 7th, on either process
            r = self.call(p, "GET", "/mcp/contexts", key)
            self.assert_error(r, 429, "rate_limited")
            self.assertRegex(r.headers.get("retry-after", ""), r"^[0-9]+$", r.headers)
            self.assertGreater(int(r.headers["retry-after"]), 0)
            self.assertLessEqual(int(r.headers["retry-after"]), 60)
            self.assertEqual(r.headers.get("ratelimit-policy"), '"requests";q=5;w=60', r.headers)
            self.assertRegex(r.headers.get("ratelimit", ""), r'^"requests";r=0;t=\d+$')
        self.assertEqual(durable(self.redis.snapshot()), before)  # a refused request changes nothing
        self.assertTrue(self.redis.keys("ctxd:{rate:key_*}:requests"))

    def test_tokens_per_minute_refuses_a_turn_before_the_model(self):
        kid, key = self.make_key("a", ["read", "write"], tokens_per_minute=50)
        cid = self.new_context(key)
        spent, turns, n = 0, 0, 0
        while spent <= 50:
            self.assertLess(n, 6, "turns never used 50 tokens")
            p = self.procs[n % 2]
            r = self.call(p, "POST", "/mcp/context/%s/message" % cid, key,
                          {"message": "Tell me about turn %d. " % n + "words " * 40})
            self.assertEqual(r.status, 200, r)
            u = r.json()["usage"]
            self.assertGreater(u["input_tokens"], 0)
            self.assertGreater(u["output_tokens"], 0)
            spent += u["input_tokens"] + u["output_tokens"]
            turns += 1
            n += 1
        self.assertEqual(self.redis.keys("ctxd:{rate:%s}:*" % kid),
                         ["ctxd:{rate:%s}:tokens" % kid])
        for p in (self.procs[n % 2], self.procs[(n + 1) % 2]):
            with self.subTest(port=p.port):
                count = self.call(p, "GET", "/mcp/context/" + cid, key).json()["message_count"]
                self.assertEqual(count, 2 * turns)
                calls = upstream_calls(p)
                before = durable(self.redis.snapshot())
                for body in ({"message": "one more"}, {"message": "one more", "stream": True}):
                    r = self.call(p, "POST", "/mcp/context/%s/message" % cid, key, body)
                    self.assert_error(r, 429, "rate_limited")
                    self.assertRegex(r.headers.get("retry-after", ""), r"^[1-9][0-9]*$")
                self.assertEqual(upstream_calls(p), calls, "the model was called")
                self.assertEqual(durable(self.redis.snapshot()), before)
                g = self.call(p, "GET", "/mcp/context/" + cid, key)
                self.assertEqual(g.status, 200, g)  # reads do not spend tokens
                self.assertEqual(g.json()["message_count"], count)
        # Appends call no model: they are not refused.
        r = self.call(self.ctxd, "POST", "/mcp/context/%s/messages" % cid, key,
                      {"messages": [{"role": "user", "content": "stored"}]})
        self.assertEqual(r.status, 201, r)

    def test_every_answer_to_a_limited_key_carries_ratelimit_headers(self):
        """README: "Every answer to a limited key carries RateLimit-Policy and
        RateLimit", here for a key limited on tokens only."""
        _, key = self.make_key("a", ["read", "write"], tokens_per_minute=100000)
        for p in self.procs:
            r = self.call(p, "GET", "/mcp/contexts", key)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get("ratelimit-policy"), '"tokens";q=100000;w=60',
                             r.headers)
            self.assertIn("ratelimit", r.headers, "no RateLimit header on an answer to a key "
                          "limited to tokens a minute")

    # ---- open routes ----

    def test_probes_and_metrics_need_no_key(self):
        for p in self.procs:
            r = p.request("GET", "/healthz")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["status"], "ok")
            r = p.request("GET", "/readyz")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"status": "ready", "redis": "ok"})
            r = p.request("GET", "/metrics")
            self.assertEqual(r.status, 200, r)
            self.assertIn("ctxd_upstream_calls_total", r.text)
            self.assert_unauthorized(p.request("GET", "/mcp/contexts"))

    # ---- secrecy (named to run last: it checks every key the class made) ----

    def test_zz_keys_never_in_logs_metrics_errors_or_redis(self):
        live = [self.cli_create("--tenant", "a", "--scopes", "read,write",
                                "--requests-per-minute", "2"),
                self.make_key("c", ["read", "write"], tokens_per_minute=1000)[1]]
        for p in self.procs:
            for key in live:
                r = self.call(p, "POST", "/mcp/context", key)
                self.assertIn(r.status, (201, 429), r)
                self.assertNotIn(key, r.text)
                r = self.call(p, "GET", "/mcp/context/" + str(uuid.uuid4()), key)
                self.assertNotIn(key[5:48], r.text)
                # Refused: a wrong checksum echoes nothing of the key either.
                r = self.call(p, "GET", "/mcp/contexts", key[:-6] + "000000")
                self.assertEqual(r.status, 401, r)
                self.assertNotIn(key[5:48], r.text)
        secrets_ = set(self.seen_keys + live)
        texts = {"metrics %d" % p.port: p.request("GET", "/metrics").text for p in self.procs}
        texts.update({"log %d" % p.port: p.log() for p in self.procs})
        self.assertIn("auth=keys", texts["log %d" % self.ctxd.port])
        snap = self.redis.snapshot()
        texts["redis"] = "\n".join(k + "\n" + "\n".join(v) for k, v in snap.items())
        self.assertTrue(set(live) <= secrets_)
        for key in secrets_:
            for where, text in texts.items():
                self.assertNotIn(key[5:48], text, "key text found in " + where)
        for where, text in texts.items():
            if where != "redis":
                self.assertNotIn(ADMIN_TOKEN, text, "admin token in " + where)
        # What Redis does hold for a live key is its SHA-256.
        for key in live:
            digest = sha256(key)
            self.assertIn("ctxd:{keys}:sha:" + digest, snap)
            self.assertIn(digest, snap["ctxd:{keys}:ids"])


class AuthDefaultsTest(unittest.TestCase):
    """CTXD_AUTH unset: off on loopback, keys elsewhere; off elsewhere warns."""

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.cleanup()

    def start(self, env=None, port=None):
        c = Ctxd(self.redis.url, env=env, port=port)
        self.addCleanup(c.cleanup)
        return c.start()

    def test_auth_is_off_by_default_on_loopback_as_tenant_default(self):
        plain = self.start()
        self.assertRegex(plain.log(), r"auth=off")
        r = plain.request("POST", "/mcp/context")
        self.assertEqual(r.status, 201, r)
        cid = r.json()["context_id"]
        r = plain.request("POST", "/mcp/context/%s/message" % cid, {"message": "hello"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.redis.keys("*%s*" % cid),
                         ["ctxd:{%s}:messages" % cid, "ctxd:{%s}:meta" % cid])
        self.assertNotEqual(self.redis.cli("ZSCORE", index_bucket("default", cid), cid), "")
        ids = [c["id"] for c in plain.request("GET", "/mcp/contexts").json()["contexts"]]
        self.assertIn(cid, ids)
        # With keys on, a key of tenant default keeps that context; others do not see it.
        keyed = self.start({"CTXD_AUTH": "keys"})
        p = run_cli(self.redis.url, "create", "--tenant", "default", "--scopes", "read")
        self.assertEqual(p.returncode, 0, p.stderr)
        default_key = p.stdout.strip()
        p = run_cli(self.redis.url, "create", "--tenant", "a", "--scopes", "read")
        self.assertEqual(p.returncode, 0, p.stderr)
        a_key = p.stdout.strip()
        self.assertEqual(keyed.request("GET", "/mcp/context/" + cid).status, 401)
        r = keyed.request("GET", "/mcp/context/" + cid, headers=bearer(default_key))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["message_count"], 2)
        r = keyed.request("GET", "/mcp/context/" + cid, headers=bearer(a_key))
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json()["code"], "context_not_found")

    def test_non_loopback_address_defaults_to_keys(self):
        port = free_port()
        c = self.start({"CTXD_LISTEN": "0.0.0.0:%d" % port}, port=port)
        self.assertIn("auth=keys", c.log())
        r = c.request("GET", "/mcp/contexts")
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["code"], "unauthorized")
        self.assertTrue(r.headers.get("www-authenticate", "").startswith("Bearer"))
        self.assertEqual(c.request("GET", "/healthz").status, 200)
        self.assertNotIn("CTXD_AUTH=off", c.log())

    def test_auth_off_on_non_loopback_address_warns_at_start(self):
        port = free_port()
        c = self.start({"CTXD_LISTEN": "0.0.0.0:%d" % port, "CTXD_AUTH": "off"}, port=port)
        wait_until(lambda: "CTXD_AUTH=off on 0.0.0.0" in c.log(), timeout=5,
                   what="the CTXD_AUTH=off warning")
        warn = [line for line in c.log().splitlines() if "CTXD_AUTH=off on 0.0.0.0" in line]
        self.assertEqual(len(warn), 1, c.log())
        self.assertRegex(warn[0], r'"level":\s*"warn')
        r = c.request("GET", "/mcp/contexts")
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    main()
