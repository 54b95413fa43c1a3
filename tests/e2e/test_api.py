"""Every route and error code of the context API, against real Redis and ctxd."""
import json
import re
import uuid

from harness import CtxdTestCase, main, sse_events

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class ApiTest(CtxdTestCase):
    CTXD_ENV = {"CTXD_MAX_BODY_BYTES": "65536", "CTXD_MAX_MESSAGE_BYTES": "4096",
                "CTXD_MAX_STATE_BYTES": "256", "CTXD_MAX_MESSAGES": "8",
                "CTXD_LOCK_WAIT_MS": "300"}

    def snapshot(self):
        return self.redis.snapshot()

    def assert_unchanged(self, before):
        self.assertEqual(self.snapshot(), before)

    # ---- create ----

    def test_create_without_body_like_the_guide(self):
        r = self.req("POST", "/mcp/context")
        self.assertEqual(r.status, 201, r)
        j = r.json()
        self.assertEqual(set(j), {"context_id", "message"})
        self.assertEqual(j["message"], "New context created")
        self.assertRegex(j["context_id"], UUID4)
        self.assertEqual(r.headers["location"], "/mcp/context/" + j["context_id"])
        meta = self.redis.raw("HGETALL", "ctxd:{%s}:meta" % j["context_id"])
        self.assertIn("created_at", meta)

    def test_create_with_options(self):
        cid = self.create({"system": "You are terse.", "model": "echo-2",
                           "state": {"user": "ada", "n": 1, "gone": None},
                           "ttl_seconds": 3600})
        g = self.req("GET", "/mcp/context/" + cid).json()
        self.assertEqual(g["system"], "You are terse.")
        self.assertEqual(g["model"], "echo-2")
        self.assertEqual(g["state"], {"user": "ada", "n": 1})
        self.assertEqual(g["ttl_seconds"], 3600)
        for part in ("meta", "state"):
            ttl = int(self.redis.cli("TTL", "ctxd:{%s}:%s" % (cid, part)))
            self.assertTrue(3590 <= ttl <= 3600, (part, ttl))
        r = self.turn(cid, "hi there")
        self.assertIn("system prompt", r.json()["ai_response"])
        self.assertTrue(int(self.redis.cli("TTL", "ctxd:{%s}:messages" % cid)) > 3500)

    def test_create_rejects_bad_input_and_stores_nothing(self):
        before = self.snapshot()
        cases = [
            ({"sytem": "typo"}, None, 400, "unknown_field"),
            ({"system": 5}, None, 400, "invalid_field"),
            ({"ttl_seconds": -1}, None, 400, "invalid_field"),
            ({"ttl_seconds": "10"}, None, 400, "invalid_field"),
            ({"state": [1]}, None, 400, "invalid_field"),
            ({"state": {"k": "x" * 300}}, None, 413, "state_too_large"),
            ({"system": "x" * 5000}, None, 413, "field_too_large"),
            (None, b"{not json", 400, "invalid_json"),
            (None, b"[1,2]", 400, "invalid_json"),
            (None, b'{"system": "a"} trailing', 400, "invalid_json"),
            (None, b'{"system": "\xff\xfe"}', 400, "invalid_utf8"),
        ]
        for body, raw, status, code in cases:
            with self.subTest(body=body, raw=raw):
                h = {"Content-Type": "application/json"} if raw else None
                self.assert_error(self.req("POST", "/mcp/context", body=body, raw=raw, headers=h),
                                  status, code)
        r = self.req("POST", "/mcp/context", raw=b"system=x",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assert_error(r, 415, "unsupported_media_type")
        self.assert_unchanged(before)

    def test_oversized_body_is_413_and_stores_nothing(self):
        cid = self.create()
        before = self.snapshot()
        big = {"message": "x" * 70000}
        self.assert_error(self.req("POST", "/mcp/context/%s/message" % cid, big), 413,
                          "body_too_large")
        self.assert_error(self.turn(cid, "y" * 5000), 413, "field_too_large")
        self.assert_unchanged(before)

    # ---- read ----

    def test_get_shape_matches_the_guide(self):
        cid = self.create()
        self.assertEqual(self.turn(cid, "hello").status, 200)
        g = self.req("GET", "/mcp/context/" + cid)
        self.assertEqual(g.status, 200)
        j = g.json()
        for k in ("id", "created_at", "last_updated", "messages", "state"):
            self.assertIn(k, j)
        self.assertEqual(j["id"], cid)
        self.assertRegex(j["created_at"], ISO)
        self.assertRegex(j["last_updated"], ISO)
        self.assertEqual([(m["role"], m["content"]) for m in j["messages"]],
                         [("user", "hello"), ("assistant", "Hello there! How can I help you today?")])
        self.assertEqual([m["seq"] for m in j["messages"]], [1, 2])
        self.assertEqual(j["state"], {})

    def test_unknown_and_malformed_ids_are_404(self):
        self.assert_error(self.req("GET", "/mcp/context/" + str(uuid.uuid4())), 404,
                          "context_not_found")
        self.assertEqual(self.req("GET", "/mcp/context/../../etc").status, 404)
        for bad in ("nope", "%7Bx%7D", "x%00y", "A" * 36, str(uuid.uuid4()).upper()):
            with self.subTest(bad=bad):
                self.assert_error(self.req("GET", "/mcp/context/" + bad), 404,
                                  "context_not_found")
        before = self.snapshot()
        self.assert_error(self.turn(str(uuid.uuid4()), "hi"), 404, "context_not_found")
        self.assert_error(self.req("DELETE", "/mcp/context/" + str(uuid.uuid4())), 404,
                          "context_not_found")
        self.assert_unchanged(before)

    def test_paging_back_through_history(self):
        cid = self.create()
        msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": "m%d" % i}
                for i in range(7)]
        r = self.req("POST", "/mcp/context/%s/messages" % cid, {"messages": msgs})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["appended"], 7)
        page = self.req("GET", "/mcp/context/%s?limit=3" % cid).json()
        self.assertEqual([m["content"] for m in page["messages"]], ["m4", "m5", "m6"])
        self.assertTrue(page["has_more"])
        self.assertEqual(page["message_count"], 7)
        seen = [m["content"] for m in page["messages"]]
        while page["has_more"]:
            page = self.req("GET", "/mcp/context/%s?limit=3&before=%d"
                            % (cid, page["next_before"])).json()
            seen = [m["content"] for m in page["messages"]] + seen
        self.assertEqual(seen, ["m%d" % i for i in range(7)])
        for q in ("limit=0", "limit=x", "lim=3", "before=-1", "limit"):
            with self.subTest(q=q):
                self.assert_error(self.req("GET", "/mcp/context/%s?%s" % (cid, q)), 400,
                                  "invalid_query")

    # ---- turns ----

    def test_message_validation(self):
        cid = self.create()
        before = self.snapshot()
        path = "/mcp/context/%s/message" % cid
        self.assert_error(self.req("POST", path), 400, "missing_field")
        self.assert_error(self.req("POST", path, {}), 400, "missing_field")
        self.assert_error(self.req("POST", path, {"message": ""}), 400, "missing_field")
        self.assert_error(self.req("POST", path, {"message": 42}), 400, "invalid_field")
        self.assert_error(self.req("POST", path, {"message": ["a"]}), 400, "invalid_field")
        self.assert_error(self.req("POST", path, {"message": "a", "stream": "yes"}), 400,
                          "invalid_field")
        self.assert_error(self.req("POST", path, {"message": "a", "extra": 1}), 400,
                          "unknown_field")
        self.assert_error(self.req("POST", path, raw=b'{"message": "\\ud800"}',
                                   headers={"Content-Type": "application/json"}), 400,
                          "invalid_utf8")
        self.assert_error(self.req("POST", path, raw=b'{"message": "hi"}',
                                   headers={"Content-Type": "text/plain"}), 415,
                          "unsupported_media_type")
        self.assert_unchanged(before)

    def test_turn_stores_pairs_with_usage(self):
        cid = self.create()
        r = self.turn(cid, "Can you book me a flight to New York?")
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["context_id"], cid)
        self.assertIn("0 earlier turns", j["ai_response"])
        self.assertGreater(j["usage"]["input_tokens"], 0)
        self.assertGreater(j["usage"]["output_tokens"], 0)
        r2 = self.turn(cid, "Make it for next Tuesday and I prefer a window seat.").json()
        self.assertEqual(r2["ai_response"],
                         "Got it, a flight for next Tuesday. Any specific time or airline?")
        r3 = self.turn(cid, "And a window seat please").json()
        self.assertTrue(r3["ai_response"].startswith("A window seat, noted."))
        r4 = self.turn(cid, "thanks").json()
        self.assertIn("3 earlier turns", r4["ai_response"])
        stored = [json.loads(x) for x in self.redis.raw("LRANGE", "ctxd:{%s}:messages" % cid,
                                                        "0", "-1")]
        self.assertEqual([m["role"] for m in stored], ["user", "assistant"] * 4)
        self.assertEqual([m["seq"] for m in stored], list(range(1, 9)))
        self.assertEqual(stored[1]["usage"], j["usage"])
        self.assertEqual(self.redis.cli("HGET", "ctxd:{%s}:meta" % cid, "next_seq"), "9")

    def test_context_full_is_413_and_stores_nothing(self):
        cid = self.create()
        for i in range(4):
            self.assertEqual(self.turn(cid, "turn %d" % i).status, 200)
        before = self.snapshot()
        self.assert_error(self.turn(cid, "one too many"), 413, "context_full")
        self.assert_error(self.req("POST", "/mcp/context/%s/messages" % cid,
                                   {"messages": [{"role": "user", "content": "x"}]}),
                          413, "context_full")
        self.assert_unchanged(before)

    def test_streaming_turn(self):
        cid = self.create()
        for how in ({"body": {"message": "hello", "stream": True}},
                    {"body": {"message": "hello again"}, "headers": {"Accept": "text/event-stream"}}):
            r = self.req("POST", "/mcp/context/%s/message" % cid, how["body"],
                         headers=how.get("headers"))
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.headers["content-type"].startswith("text/event-stream"))
            ev = sse_events(r.body)
            self.assertGreater(len(ev), 2)
            self.assertTrue(all(e == "delta" for e, _ in ev[:-1]), ev)
            self.assertEqual(ev[-1][0], "done")
            text = "".join(d["text"] for _, d in ev[:-1])
            self.assertEqual(text, ev[-1][1]["ai_response"])
            self.assertEqual(ev[-1][1]["context_id"], cid)
            self.assertIn("usage", ev[-1][1])
        msgs = self.req("GET", "/mcp/context/" + cid).json()["messages"]
        self.assertEqual(len(msgs), 4)
        # Errors before the stream starts are plain JSON with their status.
        self.assert_error(self.req("POST", "/mcp/context/%s/message" % uuid.uuid4(),
                                   {"message": "x", "stream": True}), 404, "context_not_found")

    def test_append_messages_validation(self):
        cid = self.create()
        before = self.snapshot()
        path = "/mcp/context/%s/messages" % cid
        for body in ({}, {"messages": []}, {"messages": "x"},
                     {"messages": [{"role": "system", "content": "x"}]},
                     {"messages": [{"role": "user"}]},
                     {"messages": [{"role": "user", "content": "x", "name": "n"}]},
                     {"messages": [5]}):
            with self.subTest(body=body):
                r = self.req("POST", path, body)
                self.assertEqual(r.status, 400, r)
        self.assert_unchanged(before)

    # ---- state ----

    def test_state_get_put_patch(self):
        cid = self.create()
        p = "/mcp/context/%s/state" % cid
        self.assertEqual(self.req("GET", p).json(), {})
        r = self.req("PUT", p, {"dest": "NYC", "seat": "window", "n": [1, 2]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"dest": "NYC", "seat": "window", "n": [1, 2]})
        r = self.req("PATCH", p, {"seat": None, "date": "next Tuesday"})
        self.assertEqual(r.json(), {"dest": "NYC", "n": [1, 2], "date": "next Tuesday"})
        self.assertEqual(self.req("GET", p).json(), r.json())
        self.assertEqual(self.redis.cli("HGET", "ctxd:{%s}:state" % cid, "dest"), '"NYC"')
        r = self.req("PUT", p, {"only": True})
        self.assertEqual(self.req("GET", p).json(), {"only": True})
        self.assertEqual(self.req("GET", "/mcp/context/" + cid).json()["state"], {"only": True})

    def test_state_errors_change_nothing(self):
        cid = self.create()
        p = "/mcp/context/%s/state" % cid
        self.req("PUT", p, {"a": "x" * 100})
        before = self.snapshot()
        self.assert_error(self.req("PUT", p, {"b": "y" * 300}), 413, "state_too_large")
        # Each patch is small, but the merged state would pass the limit.
        self.assert_error(self.req("PATCH", p, {"b": "y" * 200}), 413, "state_too_large")
        self.assert_error(self.req("PUT", p, [1]), 400, "invalid_json")
        self.assert_error(self.req("PUT", p), 400, "missing_field")
        self.assert_error(self.req("PATCH", p, {"": 1}), 400, "invalid_field")
        self.assert_error(self.req("PUT", "/mcp/context/%s/state" % uuid.uuid4(), {"a": 1}),
                          404, "context_not_found")
        self.assert_unchanged(before)

    # ---- delete, routes, probes ----

    def test_delete_removes_every_key(self):
        cid = self.create({"state": {"a": 1}})
        self.turn(cid, "hello", headers={"Idempotency-Key": "k-del"})
        self.assertTrue(self.redis.keys("ctxd:{%s}:*" % cid))
        r = self.req("DELETE", "/mcp/context/" + cid)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"message": "Context '%s' deleted" % cid})
        self.assertEqual(self.redis.keys("ctxd:{%s}:*" % cid), [])
        self.assert_error(self.req("GET", "/mcp/context/" + cid), 404, "context_not_found")

    def test_method_not_allowed_and_unknown_routes(self):
        cid = self.create()
        r = self.req("PUT", "/mcp/context/" + cid)
        self.assert_error(r, 405, "method_not_allowed")
        self.assertEqual(r.headers["allow"], "GET, HEAD, PATCH, DELETE")
        r = self.req("GET", "/mcp/context")
        self.assert_error(r, 405, "method_not_allowed")
        self.assertEqual(r.headers["allow"], "POST")
        self.assertEqual(self.req("GET", "/mcp/context/%s/message" % cid).headers["allow"], "POST")
        self.assert_error(self.req("GET", "/nope"), 404, "route_not_found")
        self.assert_error(self.req("GET", "/mcp/context/%s/x" % cid), 404, "route_not_found")

    def test_malformed_http_gets_a_json_400(self):
        import socket
        for payload in (b"GARBAGE\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
                        b"FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
            with self.subTest(payload=payload[:20]):
                with socket.create_connection(("127.0.0.1", self.ctxd.port), timeout=5) as s:
                    s.sendall(payload)
                    data = b""
                    while b"\r\n\r\n" not in data or not data.endswith(b"}\n"):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                head, body = data.split(b"\r\n\r\n", 1)
                self.assertTrue(head.startswith(b"HTTP/1.1 400 "), head)
                self.assertIn(b"Content-Type: application/json", head)
                self.assertEqual(json.loads(body)["code"], "bad_http_request")
        self.assertEqual(self.req("GET", "/healthz").status, 200)

    def test_probes(self):
        r = self.req("GET", "/healthz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["status"], "ok")
        r = self.req("GET", "/readyz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["redis"], "ok")

    def test_request_id_is_echoed_or_made(self):
        r = self.req("GET", "/healthz", headers={"X-Request-Id": "abc-123"})
        self.assertEqual(r.headers["x-request-id"], "abc-123")
        r = self.req("GET", "/healthz")
        self.assertRegex(r.headers["x-request-id"], r"^[0-9a-f]{32}$")

    # ---- idempotency ----

    def test_idempotent_create(self):
        h = {"Idempotency-Key": "create-" + str(uuid.uuid4())}
        a = self.req("POST", "/mcp/context", {"system": "s"}, headers=h)
        b = self.req("POST", "/mcp/context", {"system": "s"}, headers=h)
        self.assertEqual(a.status, 201)
        self.assertEqual(b.status, 201)
        self.assertEqual(a.json(), b.json())
        self.assertEqual(b.headers.get("idempotent-replayed"), "true")
        n = len(self.redis.keys("ctxd:{*}:meta"))
        c = self.req("POST", "/mcp/context", {"system": "other"}, headers=h)
        self.assert_error(c, 422, "idempotency_key_reused")
        self.assertEqual(len(self.redis.keys("ctxd:{*}:meta")), n)
        self.assert_error(self.req("POST", "/mcp/context", headers={"Idempotency-Key": "has space"}),
                          400, "invalid_idempotency_key")

    def test_idempotent_turn_stores_once(self):
        cid = self.create()
        h = {"Idempotency-Key": "turn-1"}
        a = self.turn(cid, "Can you book me a flight?", headers=h)
        b = self.turn(cid, "Can you book me a flight?", headers=h)
        self.assertEqual(a.status, 200)
        self.assertEqual(b.status, 200)
        self.assertEqual(a.body, b.body)
        self.assertEqual(b.headers.get("idempotent-replayed"), "true")
        self.assertEqual(self.redis.cli("LLEN", "ctxd:{%s}:messages" % cid), "2")
        self.assert_error(self.turn(cid, "something else", headers=h), 422,
                          "idempotency_key_reused")
        # A streamed repeat replays the stored answer as a stream.
        s = self.req("POST", "/mcp/context/%s/message" % cid,
                     {"message": "Can you book me a flight?"}, headers=h)
        self.assertEqual(s.body, a.body)
        self.assertEqual(self.redis.cli("LLEN", "ctxd:{%s}:messages" % cid), "2")
        # The same key on another context is a different request.
        cid2 = self.create()
        self.assertEqual(self.turn(cid2, "Can you book me a flight?", headers=h).status, 200)
        self.assertEqual(self.redis.cli("LLEN", "ctxd:{%s}:messages" % cid2), "2")

    def test_idempotent_append(self):
        cid = self.create()
        h = {"Idempotency-Key": "append-1"}
        body = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        a = self.req("POST", "/mcp/context/%s/messages" % cid, body, headers=h)
        b = self.req("POST", "/mcp/context/%s/messages" % cid, body, headers=h)
        self.assertEqual((a.status, b.status), (201, 201))
        self.assertEqual(a.body, b.body)
        self.assertEqual(self.redis.cli("LLEN", "ctxd:{%s}:messages" % cid), "2")

    # ---- the lock ----

    def test_busy_context_is_409_with_retry_after(self):
        cid = self.create()
        self.redis.cli("SET", "ctxd:{%s}:lock" % cid, "someone-else", "PX", "5000")
        before = self.snapshot()
        r = self.turn(cid, "hello")
        self.assert_error(r, 409, "context_busy")
        self.assertEqual(r.headers.get("retry-after"), "1")
        self.assert_unchanged(before)  # the other owner's lock was left alone
        self.redis.cli("DEL", "ctxd:{%s}:lock" % cid)
        self.assertEqual(self.turn(cid, "hello").status, 200)
        self.assertEqual(self.redis.cli("EXISTS", "ctxd:{%s}:lock" % cid), "0")

    def test_expired_lock_does_not_block(self):
        cid = self.create()
        # A crashed owner: its lock expires and the next turn goes ahead.
        self.redis.cli("SET", "ctxd:{%s}:lock" % cid, "crashed-owner", "PX", "150")
        self.assertEqual(self.turn(cid, "hello").status, 200)


if __name__ == "__main__":
    main()
