"""docs/openapi.yaml against the real server.

The spec is checked on its own (OpenAPI 3.1 structure, every $ref resolves,
unique operationIds, every schema valid Draft 2020-12), against the sources
(every registered route and every error code is documented, each code under
the status the code sends it with), and against a running ctxd: every
documented operation is called for each documented status, every answer's
status must be documented for its operation, and its body (JSON, or each
server-sent event's data) and headers must validate against the documented
schemas. The last test fails if a documented operation, status, media type or
event was never exercised, so documenting a new route without a test case here
fails too.

The class's ctxd runs with CTXD_AUTH=off (every request acts as tenant
`default` with every scope); the tests of API keys, scopes and rate limits
start their own ctxd with CTXD_AUTH=keys and CTXD_ADMIN_TOKEN, and make their
keys with POST /admin/keys.

Needs python3-yaml and python3-jsonschema (Draft 2020-12: jsonschema >= 4).
"""
import collections
import contextlib
import glob
import http.client
import json
import os
import re
import secrets
import signal
import socket
import string
import time
import urllib.parse
import uuid
import zlib

import jsonschema
import yaml

from harness import (SOURCE_DIR, Ctxd, CtxdTestCase, FakeUpstream, Redis, Response, error_table,
                     main, request, sse_events)

SPEC_PATH = os.path.join(SOURCE_DIR, "docs", "openapi.yaml")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

with open(SPEC_PATH) as f:
    SPEC = yaml.safe_load(f)

# (METHOD, path template) -> operation object, for every documented operation.
OPS = {(m.upper(), path): op for path, item in SPEC.get("paths", {}).items()
       for m, op in item.items() if m in HTTP_METHODS}

# What the run saw: (METHOD, template) -> status -> set of media types, and
# (METHOD, template, status, media type) -> set of event names.
OBSERVED = collections.defaultdict(lambda: collections.defaultdict(set))
OBSERVED_EVENTS = collections.defaultdict(set)

# Documented answers no test can provoke cheaply: (METHOD, template, status) -> why.
NOT_EXERCISED = {
    ("GET", "/healthz", "503"): "only when a worker thread could not allocate its resources",
    ("GET", "/metrics", "503"): "only when out of memory",
}

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"

# The body of the MCP transport's refusals (JSON-RPC errors), and an initialize.
MCP_ERROR = "#/components/schemas/JsonRpcError"
MCP_INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "test_openapi", "version": "1"}}}
MCP_CHALLENGE = re.compile(r'^Bearer realm="ctxd", resource_metadata="http://127\.0\.0\.1:\d+'
                           r'/\.well-known/oauth-protected-resource/mcp"$')

# The operations that need no API key (they declare `security: []`).
PROBES = {t for (m, t), op in OPS.items() if op.get("security") == []}

# Headers whose presence means something: an answer that carries one must
# document it (where it is optional too), so none is sent unannounced.
SIGNIFICANT_HEADERS = ("retry-after", "www-authenticate", "ratelimit-policy", "ratelimit",
                       "location", "idempotent-replayed", "allow")

# The keys servers' admin token, and API keys: ctxd_<43 base62>_<6 base62: CRC-32 of the 43>.
ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
KEY_RE = r"^ctxd_[0-9A-Za-z]{43}_[0-9A-Za-z]{6}$"
CHALLENGE = 'Bearer realm="ctxd"'


def key_checksum(random_part):
    v = zlib.crc32(random_part.encode())
    out = ""
    for _ in range(6):
        out = BASE62[v % 62] + out
        v //= 62
    return out


def fake_key():
    """A well-formed key (right shape and checksum) that no server made."""
    r = "".join(secrets.choice(BASE62) for _ in range(43))
    return "ctxd_%s_%s" % (r, key_checksum(r))


def bearer(key):
    return {"Authorization": "Bearer " + key["key"]}


def error_code(doc):
    """ctxd's code in an error body: its own shape, or a provider's (the SDK
    routes: error.code)."""
    if isinstance(doc.get("error"), dict):
        return doc["error"].get("code")
    return doc.get("code")


def error_text(doc):
    return doc["error"]["message"] if isinstance(doc.get("error"), dict) else doc["error"]


def ok_status(method, template):
    """The one success status of an operation."""
    return int(next(s for s in OPS[(method, template)]["responses"] if s.startswith("2")))


def scope_of(method, template):
    return OPS[(method, template)].get("x-required-scope")


# ---- Spec helpers ----

def pointer_get(ptr):
    """The node at a local JSON pointer ('#/a/b')."""
    assert ptr.startswith("#/"), ptr
    node = SPEC
    for part in ptr[2:].split("/"):
        part = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def pointer_join(ptr, *parts):
    esc = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return ptr + "/" + "/".join(urllib.parse.quote(p, safe="~") for p in esc)


def deref(node, ptr):
    """Follow $ref chains (for responses, parameters, headers): (node, its pointer)."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ptr = node["$ref"]
        assert ptr not in seen, "$ref loop at " + ptr
        seen.add(ptr)
        node = pointer_get(ptr)
    return node, ptr


def op_ptr(method, template):
    return pointer_join("#/paths", template, method.lower())


def validate_at(instance, schema_ptr, what):
    """Validate instance against the schema at schema_ptr (refs resolved
    against the whole document), raising AssertionError with every problem."""
    root = dict(SPEC)
    root["$ref"] = schema_ptr
    errors = sorted(jsonschema.Draft202012Validator(root).iter_errors(instance),
                    key=lambda e: list(e.path))
    if errors:
        lines = []
        for e in errors[:8]:
            lines.append("  at %s: %s" % ("/".join(map(str, e.path)) or "(root)", e.message[:300]))
            for c in (e.context or [])[:4]:
                lines.append("      - %s" % c.message[:200])
        raise AssertionError("%s does not match %s:\n%s\ninstance: %s" % (
            what, schema_ptr, "\n".join(lines), json.dumps(instance)[:600]))


def _media(text):
    parts = [p.strip().lower() for p in text.split(";")]
    return parts[0], {p.replace(" ", "") for p in parts[1:] if p}


def media_key(content, content_type):
    """The documented media type matching a Content-Type header (same type,
    the documented parameters all present), or None."""
    base, params = _media(content_type)
    for k in content:
        kb, kp = _media(k)
        if kb == base and kp <= params:
            return k
    return None


def walk(node, ptr="#"):
    """Yield (pointer, node) for every dict in the document."""
    if isinstance(node, dict):
        yield ptr, node
        for k, v in node.items():
            yield from walk(v, pointer_join(ptr, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, pointer_join(ptr, i))


def op_params(method, template):
    """Operation + path-level parameters, dereferenced, by (in, name)."""
    item = SPEC["paths"][template]
    out = {}
    base = pointer_join("#/paths", template)
    for where, params in ((pointer_join(base, "parameters"), item.get("parameters", [])),
                          (pointer_join(op_ptr(method, template), "parameters"),
                           item[method.lower()].get("parameters", []))):
        for i, p in enumerate(params):
            p, pptr = deref(p, pointer_join(where, i))
            out[(p["in"], p["name"].lower())] = (p, pptr)
    return out


def request_schema_ptr(method, template):
    rb = OPS[(method, template)].get("requestBody")
    if not rb:
        return None
    rb, ptr = deref(rb, pointer_join(op_ptr(method, template), "requestBody"))
    return pointer_join(ptr, "content", "application/json", "schema")


def example_body(method, template):
    """The first example of the operation's request schema (None if it has
    no body; AssertionError if the body is required but has no example)."""
    ptr = request_schema_ptr(method, template)
    if not ptr:
        return None
    schema, _ = deref(pointer_get(ptr), ptr)
    ex = schema.get("examples")
    rb, _ = deref(OPS[(method, template)]["requestBody"], "#")
    if not ex:
        assert not rb.get("required"), "%s %s: its request schema needs an example" % (
            method, template)
        return None
    return ex[0]


# ---- Source scan ----

def source_text():
    text = {}
    for p in sorted(glob.glob(os.path.join(SOURCE_DIR, "src", "**", "*.c"), recursive=True)):
        with open(p) as f:
            text[os.path.basename(p)] = f.read()
    return text


def source_routes():
    out = set()
    for text in source_text().values():
        for m, path in re.findall(r'http_route(?:_api)?\(\s*"([A-Z]+)"\s*,\s*"([^"]+)"', text):
            out.add((m, path))
    return out


def source_open_routes():
    """The routes http_auth.c lets through without a key (is_open)."""
    text = source_text()["http_auth.c"]
    body = re.search(r"static int is_open\(const char \*pattern\) \{(.*?)\n\}", text, re.S)
    assert body, "no is_open() in src/http/http_auth.c"
    return set(re.findall(r'!strcmp\(pattern, "([^"]+)"\)', body.group(1)))


def source_codes():
    """{code: set of statuses it is sent with}, from the error table."""
    return error_table()


def error_schema_codes(status):
    s = SPEC["components"]["schemas"].get("Error%s" % status)
    assert s, "no Error%s schema" % status
    code = s["allOf"][1]["properties"]["code"]
    return set(code["enum"]) if "enum" in code else {code["const"]}


# ---- The test ----

class OpenApiTest(CtxdTestCase):
    CTXD_ENV = {"CTXD_MAX_BODY_BYTES": "2048", "CTXD_MAX_MESSAGE_BYTES": "1024",
                "CTXD_MAX_STATE_BYTES": "128", "CTXD_MAX_MESSAGES": "4",
                "CTXD_LOCK_WAIT_MS": "200", "CTXD_THREADS": "8"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = None
        cls.upstream = None
        try:
            cls.fake = FakeUpstream()
            # Same Redis, a real provider (the fake), no retries, short timeouts.
            cls.upstream = Ctxd(cls.redis.url, env={
                "CTXD_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "test-key",
                "CTXD_ANTHROPIC_URL": cls.fake.url, "CTXD_UPSTREAM_MAX_RETRIES": "0",
                "CTXD_UPSTREAM_TIMEOUT_MS": "300", "CTXD_UPSTREAM_RETRY_CAP_MS": "0",
                "CTXD_THREADS": "4"}).start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.upstream:
                try:
                    cls.upstream.stop_ok("upstream ctxd")
                finally:
                    cls.upstream.cleanup()
        finally:
            if cls.fake:
                cls.fake.stop()
            super().tearDownClass()

    # ---- calling and checking ----

    def call(self, method, template, cid=None, query=None, body=None, raw=None,
             headers=None, server=None, expect=None, code=None):
        """Send a request to a documented operation, check the answer against
        the spec, and return it (a harness Response)."""
        self.assertIn((method, template), OPS, "%s %s is not documented" % (method, template))
        path = template.replace("{id}", cid) if cid is not None else template
        if query:
            path += "?" + query
        port = (server or self.ctxd).port
        r = request(port, method, path, body, headers, raw, timeout=30)
        self.check(method, template, r, query=query, body=body, expect=expect, code=code)
        return r

    def check(self, method, template, r, query=None, body=None, expect=None, code=None):
        """Check an answer to a documented operation and record what it covered."""
        what = "%s %s -> %d" % (method, template, r.status)
        op = OPS[(method, template)]
        status = str(r.status)
        self.assertIn(status, op["responses"],
                      "%s: status %s is not documented for this operation: %r" % (what, status, r))
        if expect is not None:
            self.assertEqual(r.status, expect, "%s: %r" % (what, r))
        resp, rptr = deref(op["responses"][status],
                           pointer_join(op_ptr(method, template), "responses", status))
        self.check_headers(what, resp, rptr, r)
        ct = r.headers.get("content-type")
        self.assertTrue(ct, "%s: no Content-Type" % what)
        content = resp.get("content", {})
        mk = media_key(content, ct)
        self.assertIsNotNone(mk, "%s: Content-Type %r is not documented (%s)" % (
            what, ct, ", ".join(content)))
        sptr = pointer_join(rptr, "content", mk, "schema")
        if mk == "text/event-stream":
            self.check_events(what, content[mk], pointer_join(rptr, "content", mk), r,
                              (method, template, status, mk))
        elif "json" in mk:
            try:
                doc = r.json()
            except ValueError:
                self.fail("%s: body is not JSON: %r" % (what, r))
            validate_at(doc, sptr, what)
            if code is not None:
                self.assertEqual(error_code(doc), code, "%s: %r" % (what, r))
        else:
            validate_at(r.text, sptr, what)
        if r.status < 300:
            self.check_request(method, template, query, body)
        OBSERVED[(method, template)][status].add(mk)
        return r

    def check_headers(self, what, resp, rptr, r):
        self.assertTrue(r.headers.get("x-request-id"), "%s: no X-Request-Id" % what)
        documented = {name.lower() for name in resp.get("headers", {})}
        for name in SIGNIFICANT_HEADERS:
            if name in r.headers:
                self.assertIn(name, documented, "%s: header %s: %r is sent but not documented" % (
                    what, name, r.headers[name]))
        for name, h in resp.get("headers", {}).items():
            h, hptr = deref(h, pointer_join(rptr, "headers", name))
            value = r.headers.get(name.lower())
            if value is None:
                self.assertFalse(h.get("required"), "%s: required header %s missing" % (
                    what, name))
            else:
                validate_at(value, pointer_join(hptr, "schema"), "%s header %s" % (what, name))

    def check_events(self, what, media, mptr, r, key):
        events = sse_events(r.body)
        self.assertTrue(events, "%s: an empty event stream" % what)
        documented = media.get("x-sse-events", {})
        for i, (name, data) in enumerate(events):
            self.assertIn(name, documented, "%s: event %r is not documented" % (what, name))
            validate_at(data, pointer_join(mptr, "x-sse-events", name),
                        "%s event #%d (%s)" % (what, i, name))
            OBSERVED_EVENTS[key].add(name)
        names = [n for n, _ in events]
        # ctxd's streams end with one done or error event; the SDK routes'
        # as their provider's do (x-sse-end: the last event's name or data).
        end = media.get("x-sse-end")
        if end:
            self.assertTrue(names[-1] in end or events[-1][1] in end,
                            "%s: stream ends with %r" % (what, events[-1]))
            return events
        if "done" not in documented:  # MCP: one JSON-RPC message per event
            return events
        self.assertIn(names[-1], ("done", "error"), "%s: stream ends with %r" % (what, names[-1]))
        self.assertEqual(names.count("done") + names.count("error"), 1,
                         "%s: one done or error event expected: %s" % (what, names))
        return events

    def check_request(self, method, template, query, body):
        """A request the server accepted must be one the spec allows."""
        params = op_params(method, template)
        for k, v in urllib.parse.parse_qsl(query or "", keep_blank_values=True):
            self.assertIn(("query", k.lower()), params,
                          "%s %s: query parameter %s accepted but not documented" % (
                              method, template, k))
            p, pptr = params[("query", k.lower())]
            value = int(v) if p["schema"].get("type") == "integer" and re.fullmatch(r"-?\d+", v) else v
            validate_at(value, pointer_join(pptr, "schema"), "query parameter %s" % k)
        if isinstance(body, dict):
            ptr = request_schema_ptr(method, template)
            self.assertIsNotNone(ptr, "%s %s accepted a body it does not document" % (
                method, template))
            validate_at(body, ptr, "the accepted request body of %s %s" % (method, template))

    # ---- fixtures ----

    def new_context(self, body=None, server=None, headers=None):
        r = self.call("POST", "/mcp/context", body=body, server=server, headers=headers, expect=201)
        return r.json()["context_id"]

    def turn(self, cid, message="hi", expect=200, **kw):
        return self.call("POST", "/mcp/context/{id}/message", cid, body={"message": message},
                         expect=expect, **kw)

    # ---- the spec itself ----

    def test_00_spec_is_well_formed_openapi_3_1(self):
        self.assertRegex(str(SPEC.get("openapi")), r"^3\.1\.\d+$")
        self.assertTrue(SPEC["info"].get("title") and SPEC["info"].get("version"))
        # Every $ref resolves.
        for ptr, node in walk(SPEC):
            if "$ref" in node:
                ref = node["$ref"]
                self.assertTrue(ref.startswith("#/"), "%s: non-local $ref %s" % (ptr, ref))
                try:
                    pointer_get(ref)
                except (KeyError, IndexError, ValueError):
                    self.fail("%s: $ref %s does not resolve" % (ptr, ref))
        ids = collections.Counter()
        self.assertTrue(OPS)
        for template, item in SPEC["paths"].items():
            self.assertTrue(template.startswith("/"), template)
            ops = [m for m in item if m in HTTP_METHODS]
            self.assertTrue(ops, "%s has no operations" % template)
            for m in ops:
                op = item[m]
                where = "%s %s" % (m.upper(), template)
                self.assertTrue(op.get("operationId"), where + ": no operationId")
                ids[op["operationId"]] += 1
                self.assertTrue(op.get("responses"), where + ": no responses")
                self.assertTrue(any(s.startswith("2") for s in op["responses"]),
                                where + ": no success response")
                for status, resp in op["responses"].items():
                    self.assertRegex(status, r"^[1-5][0-9]{2}$", where)
                    resp, rptr = deref(resp, pointer_join(op_ptr(m, template), "responses", status))
                    self.assertTrue(resp.get("description"), "%s %s: no description" % (where, status))
                    self.assertTrue(resp.get("content"), "%s %s: no content" % (where, status))
                    for mt, media in resp["content"].items():
                        self.assertIn("schema", media, "%s %s %s" % (where, status, mt))
                        if mt == "text/event-stream":
                            self.assertTrue(media.get("x-sse-events"), where + ": events undocumented")
                    if int(status) >= 400:  # errors use the Error schema of their status
                        schema = resp["content"]["application/json"]["schema"]
                        # (the MCP transport refuses with JSON-RPC errors, as MCP asks)
                        allowed = ["#/components/schemas/Error%s" % status] + (
                            [MCP_ERROR] if template == "/mcp" else [])
                        if "sdk" in op.get("tags", []):  # or a provider's error shape
                            allowed = ["#/components/schemas/AnthropicError",
                                       "#/components/schemas/OpenAIError"]
                        self.assertIn(schema.get("$ref"), allowed, "%s %s" % (where, status))
                    for name, h in resp.get("headers", {}).items():
                        h, _ = deref(h, "#")
                        self.assertIn("schema", h, "%s %s header %s" % (where, status, name))
                if "requestBody" in op:
                    rb, _ = deref(op["requestBody"], "#")
                    self.assertIn("application/json", rb.get("content", {}), where)
                # Path parameters: every {x} declared, in: path, required.
                params = op_params(m, template)
                for name in re.findall(r"\{([^}]+)\}", template):
                    self.assertIn(("path", name.lower()), params, "%s: {%s} undeclared" % (where, name))
                    self.assertTrue(params[("path", name.lower())][0].get("required"), where)
                for (where_in, name), (p, _) in params.items():
                    self.assertIn(where_in, ("path", "query", "header", "cookie"), where)
                    self.assertIn("schema", p, "%s parameter %s" % (where, name))
                example_body(m.upper(), template)  # a required body has an example
        dups = [i for i, n in ids.items() if n > 1]
        self.assertFalse(dups, "duplicate operationIds: %s" % dups)
        # Security: a bearer key or x-api-key for every operation but the probes.
        schemes = SPEC["components"].get("securitySchemes", {})
        self.assertEqual(sorted((s["type"], s.get("scheme"), s.get("in"), s.get("name", "").lower())
                                for s in schemes.values()),
                         [("apiKey", None, "header", "x-api-key"), ("http", "bearer", None, "")])
        self.assertTrue(SPEC.get("security"), "no top-level security")
        self.assertEqual(sorted(n for req in SPEC["security"] for n in req), sorted(schemes),
                         "the top-level security must accept either scheme")
        self.assertTrue(PROBES)
        for (m, t), op in sorted(OPS.items()):
            where = "%s %s" % (m, t)
            responses = op["responses"]
            if t in PROBES:
                self.assertNotIn("x-required-scope", op, where)
                self.assertFalse({"401", "429"} & set(responses), where + ": a probe needs no key")
                continue
            self.assertNotIn("security", op, where + ": must use the top-level security")
            self.assertIn(scope_of(m, t), ("read", "write", "admin"), where + ": x-required-scope")
            refs_of = (("401", ["Unauthorized"]), ("403", ["Forbidden"]),
                       ("429", ["RateLimited", "TooManyRequests"]))
            if "sdk" in op.get("tags", []):  # the same answers in a provider's shape
                refs_of = (("401", ["AnthropicUnauthorized", "OpenAIUnauthorized"]),
                           ("403", ["AnthropicError", "OpenAIError"]),
                           ("429", ["AnthropicError", "OpenAIError"]))
            for status, refs in refs_of:
                self.assertIn(responses.get(status, {}).get("$ref"),
                              ["#/components/responses/" + r for r in refs], "%s %s" % (where, status))
            # Every answer after the key and its scope were accepted may carry the RateLimit headers.
            for status, resp in responses.items():
                resp, _ = deref(resp, "#")
                if status[0] == "2" or status in ("400", "404", "409", "413", "415", "422",
                                                  "429", "502", "503", "504"):
                    for h in ("RateLimit-Policy", "RateLimit"):
                        self.assertIn(h, resp.get("headers", {}), "%s %s: no %s" % (where, status, h))
        challenge = pointer_get("#/components/responses/Unauthorized").get("headers", {})
        self.assertIn("WWW-Authenticate", challenge, "401 without its WWW-Authenticate header")
        self.assertTrue(deref(challenge["WWW-Authenticate"], "#")[0].get("required"))
        # Every schema is a valid Draft 2020-12 schema; examples validate.
        for ptr, node in walk(SPEC):
            if ptr.endswith("/schema") or re.match(r"^#/components/schemas/[^/]+$", ptr) or \
                    "/x-sse-events/" in ptr:
                jsonschema.Draft202012Validator.check_schema(node)
                for i, ex in enumerate(node.get("examples", [])):
                    validate_at(ex, ptr, "%s example %d" % (ptr, i))

    def test_01_spec_matches_the_sources(self):
        routes = source_routes()
        self.assertTrue(routes, "no http_route calls found under src/")
        documented = set(OPS)
        self.assertFalse(routes - documented, "routes in src/ but not in docs/openapi.yaml")
        self.assertFalse(documented - routes,
                         "documented in docs/openapi.yaml but not registered in src/")
        codes = source_codes()
        enum = set(SPEC["components"]["schemas"]["ErrorCode"]["enum"])
        self.assertEqual(enum, set(codes),
                         "ErrorCode enum vs codes sent in src/ (only in enum: %s; only in src: %s)" % (
                             sorted(enum - set(codes)), sorted(set(codes) - enum)))
        for code, statuses in codes.items():
            for status in statuses:
                self.assertIn(code, error_schema_codes(status),
                              "src/ sends %s with %s; add it to Error%s" % (code, status, status))
        for name, s in SPEC["components"]["schemas"].items():
            if re.fullmatch(r"Error\d{3}", name):
                self.assertTrue(error_schema_codes(name[5:]) <= enum, name)
        self.assertEqual(PROBES, source_open_routes(),
                         "the operations with `security: []` vs is_open() in http_auth.c")
        event_codes = SPEC["components"]["schemas"]["StreamErrorEvent"]["properties"]
        self.assertEqual(event_codes["code"]["$ref"], "#/components/schemas/ErrorCode")

    # ---- probes ----

    def test_health_and_readiness(self):
        self.call("GET", "/healthz", expect=200)
        self.call("GET", "/readyz", expect=200)
        r = self.call("GET", "/healthz", headers={"X-Request-Id": "trace-42"}, expect=200)
        self.assertEqual(r.headers["x-request-id"], "trace-42")
        r = request(self.ctxd.port, "GET", "/healthz/")  # a trailing slash is ignored
        self.check("GET", "/healthz", r, expect=200)

    def test_metrics(self):
        r = request(self.ctxd.port, "GET", "/metrics")
        self.check("GET", "/metrics", r, expect=200)
        self.assertTrue(r.headers["content-type"].replace(" ", "").startswith(
            "text/plain;version=0.0.4"), r.headers["content-type"])

    # ---- contexts ----

    def test_create(self):
        self.new_context()
        self.new_context({})
        cid = self.new_context({"system": "Be brief.", "model": "echo-2", "strategy": "window",
                                "ttl_seconds": 3600, "max_context_tokens": 4000,
                                "max_messages": 4, "state": {"user": "ada", "gone": None}})
        self.assertEqual(self.call("GET", "/mcp/context/{id}/state", cid).json(), {"user": "ada"})
        self.new_context({"system": None, "model": None, "strategy": None, "ttl_seconds": None,
                          "max_context_tokens": None, "max_messages": None, "state": None})
        # Idempotent create: the same answer again, then 422 for another body.
        key = {"Idempotency-Key": str(uuid.uuid4())}
        a = self.call("POST", "/mcp/context", body={"system": "x"}, headers=key, expect=201)
        self.assertNotIn("idempotent-replayed", a.headers)
        b = self.call("POST", "/mcp/context", body={"system": "x"}, headers=key, expect=201)
        self.assertEqual(b.headers.get("idempotent-replayed"), "true")
        self.assertEqual(a.json(), b.json())
        self.assertEqual(a.headers["location"], "/mcp/context/" + a.json()["context_id"])
        self.call("POST", "/mcp/context", body={"system": "y"}, headers=key, expect=422,
                  code="idempotency_key_reused")
        for body, status, code in [
                ({"sytem": "typo"}, 400, "unknown_field"),
                ({"system": 5}, 400, "invalid_field"),
                ({"ttl_seconds": -1}, 400, "invalid_field"),
                ({"strategy": "most"}, 400, "invalid_field"),
                ({"max_messages": 1}, 400, "invalid_field"),
                ({"max_context_tokens": 10}, 400, "invalid_field"),
                ({"state": [1]}, 400, "invalid_field"),
                ({"state": {"": 1}}, 400, "invalid_field"),
                ({"system": "s" * 1100}, 413, "field_too_large"),
                ({"model": "m" * 128}, 413, "field_too_large"),
                ({"state": {"k": "v" * 200}}, 413, "state_too_large")]:
            with self.subTest(body=body):
                self.call("POST", "/mcp/context", body=body, expect=status, code=code)
                if status == 400 or "model" in body:  # the spec refuses it too
                    with self.assertRaises(AssertionError):
                        validate_at(body, request_schema_ptr("POST", "/mcp/context"), "body")
        self.call("POST", "/mcp/context", headers={"Idempotency-Key": "has space"},
                  expect=400, code="invalid_idempotency_key")

    def test_incomplete_body(self):
        s = socket.create_connection(("127.0.0.1", self.ctxd.port), timeout=10)
        try:
            s.sendall(b"POST /mcp/context HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sys")
            s.shutdown(socket.SHUT_WR)
            hr = http.client.HTTPResponse(s, method="POST")
            hr.begin()
            r = Response(hr.status, hr.getheaders(), hr.read())
        finally:
            s.close()
        self.check("POST", "/mcp/context", r, expect=400, code="incomplete_body")

    def test_list(self):
        for _ in range(3):
            self.new_context()
        first = self.call("GET", "/mcp/contexts", query="limit=2", expect=200).json()
        self.assertEqual(len(first["contexts"]), 2)
        self.assertIsNotNone(first["next_cursor"])
        second = self.call("GET", "/mcp/contexts",
                           query="limit=2&cursor=" + first["next_cursor"], expect=200).json()
        self.assertFalse({c["id"] for c in first["contexts"]} & {c["id"] for c in second["contexts"]})
        # A context with messages has a preview.
        cid = self.new_context()
        self.turn(cid, "preview me " + "p" * 200)
        page = self.call("GET", "/mcp/contexts", expect=200).json()
        mine = [c for c in page["contexts"] if c["id"] == cid]
        self.assertEqual(len(mine), 1)
        self.assertTrue(mine[0]["preview"]["truncated"])
        for q in ("limit=0", "limit=1001", "limit=x", "nope=1", "cursor=12", "limit="):
            with self.subTest(query=q):
                self.call("GET", "/mcp/contexts", query=q, expect=400, code="invalid_query")

    def test_get_context_and_messages(self):
        cid = self.new_context({"system": "sys"})
        self.call("POST", "/mcp/context/{id}/messages", cid, body={"messages": [
            {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}]},
            expect=201)
        self.turn(cid, "three")
        full = self.call("GET", "/mcp/context/{id}", cid, expect=200).json()
        self.assertEqual(full["message_count"], 4)
        self.assertFalse(full["has_more"])
        page = self.call("GET", "/mcp/context/{id}", cid, query="limit=1", expect=200).json()
        self.assertTrue(page["has_more"])
        older = self.call("GET", "/mcp/context/{id}/messages", cid,
                          query="limit=2&before=%d" % page["next_before"], expect=200).json()
        self.assertEqual([m["seq"] for m in older["messages"]], [2, 3])
        self.call("GET", "/mcp/context/{id}/messages", cid, expect=200)
        missing = str(uuid.uuid4())
        for t in ("/mcp/context/{id}", "/mcp/context/{id}/messages"):
            with self.subTest(route=t):
                self.call("GET", t, missing, expect=404, code="context_not_found")
                self.call("GET", t, "not-an-id", expect=404, code="context_not_found")
                for q in ("limit=0", "before=x", "cursor=1"):
                    self.call("GET", t, cid, query=q, expect=400, code="invalid_query")

    def test_summary_is_documented(self):
        # strategy summarize with a small budget: the oldest message folds into a summary.
        cid = self.new_context({"strategy": "summarize", "max_context_tokens": 100,
                                "max_messages": 4})
        self.call("POST", "/mcp/context/{id}/messages", cid, body={"messages": [
            {"role": "user", "content": "u" * 300}, {"role": "assistant", "content": "a" * 300}]},
            expect=201)
        self.turn(cid, "fold please")
        g = self.call("GET", "/mcp/context/{id}", cid, expect=200).json()
        self.assertIsInstance(g["summary"], dict, g)

    def test_update_context(self):
        cid = self.new_context()
        r = self.call("PATCH", "/mcp/context/{id}", cid, body={
            "system": "new", "model": "echo-3", "strategy": "window", "ttl_seconds": 600,
            "max_context_tokens": 500, "max_messages": 2}, expect=200).json()
        self.assertEqual((r["strategy"], r["max_messages"], r["ttl_seconds"]), ("window", 2, 600))
        self.call("PATCH", "/mcp/context/{id}", cid, body={}, expect=200)
        self.call("PATCH", "/mcp/context/{id}", cid, body={"ttl_seconds": 0}, expect=200)
        self.call("PATCH", "/mcp/context/{id}", cid, expect=400, code="missing_field")
        self.call("PATCH", "/mcp/context/{id}", cid, body={"state": {}}, expect=400,
                  code="unknown_field")
        self.call("PATCH", "/mcp/context/{id}", cid, body={"max_messages": 5}, expect=400,
                  code="invalid_field")
        self.call("PATCH", "/mcp/context/{id}", cid, body={"model": "m" * 200}, expect=413,
                  code="field_too_large")
        self.call("PATCH", "/mcp/context/{id}", str(uuid.uuid4()), body={"model": "x"},
                  expect=404, code="context_not_found")
        self.call("PATCH", "/mcp/context/{id}", "nope", body={"model": "x"}, expect=404)

    def test_delete(self):
        cid = self.new_context()
        r = self.call("DELETE", "/mcp/context/{id}", cid, expect=200)
        self.assertIn(cid, r.json()["message"])
        self.call("DELETE", "/mcp/context/{id}", cid, expect=404, code="context_not_found")
        self.call("DELETE", "/mcp/context/{id}", "nope", expect=404, code="context_not_found")
        self.call("GET", "/mcp/context/{id}", cid, expect=404)

    # ---- turns ----

    def test_turn(self):
        cid = self.new_context()
        r = self.turn(cid, "hello")
        self.assertEqual(r.headers["content-type"], "application/json")
        key = {"Idempotency-Key": "turn-" + cid}
        a = self.turn(cid, "again", headers=key)
        b = self.turn(cid, "again", headers=key)
        self.assertEqual(b.headers.get("idempotent-replayed"), "true")
        self.assertEqual(a.json(), b.json())
        self.turn(cid, "other", headers=key, expect=422, code="idempotency_key_reused")
        # Two turns made 4 messages: CTXD_MAX_MESSAGES.
        self.turn(cid, "one more", expect=413, code="context_full")
        small = self.new_context({"max_context_tokens": 64})
        self.turn(small, "w" * 400, expect=413, code="prompt_too_large")
        self.turn(small, "w" * 1100, expect=413, code="field_too_large")
        p = "/mcp/context/{id}/message"
        for body, code in [(None, "missing_field"), ({}, "missing_field"),
                           ({"message": ""}, "missing_field"),
                           ({"message": None}, "missing_field"),
                           ({"message": 7}, "invalid_field"),
                           ({"message": "x", "stream": "yes"}, "invalid_field"),
                           ({"message": "x", "extra": 1}, "unknown_field")]:
            with self.subTest(body=body):
                self.call("POST", p, small, body=body, expect=400, code=code)
        self.call("POST", p, small, body={"message": "x"},
                  headers={"Idempotency-Key": "x" * 256}, expect=400,
                  code="invalid_idempotency_key")
        self.call("POST", p, str(uuid.uuid4()), body={"message": "x"}, expect=404,
                  code="context_not_found")
        self.call("POST", p, "nope", body={"message": "x"}, expect=404)

    def test_turn_streams(self):
        cid = self.new_context({"max_messages": 4})
        p = "/mcp/context/{id}/message"
        r = self.call("POST", p, cid, body={"message": "stream me", "stream": True}, expect=200)
        self.assertTrue(r.headers["content-type"].startswith("text/event-stream"))
        events = sse_events(r.body)
        self.assertEqual(events[-1][0], "done")
        text = "".join(d["text"] for n, d in events if n == "delta")
        self.assertEqual(text, events[-1][1]["ai_response"])
        r = self.call("POST", p, cid, body={"message": "by accept"},
                      headers={"Accept": "text/event-stream"}, expect=200)
        self.assertTrue(r.headers["content-type"].startswith("text/event-stream"))
        r = self.call("POST", p, cid, body={"message": "json wins", "stream": False},
                      headers={"Accept": "text/event-stream"}, expect=200)
        self.assertEqual(r.headers["content-type"], "application/json")
        key = {"Idempotency-Key": "stream-" + cid}
        self.call("POST", p, cid, body={"message": "replay", "stream": True}, headers=key)
        r = self.call("POST", p, cid, body={"message": "replay", "stream": True}, headers=key)
        self.assertEqual([n for n, _ in sse_events(r.body)], ["delta", "done"])
        # Errors before the stream starts are plain JSON errors.
        self.call("POST", p, str(uuid.uuid4()), body={"message": "x", "stream": True},
                  expect=404, code="context_not_found")

    def test_sdk_routes(self):
        """The drop-in routes for the SDKs (tests/e2e/test_sdk.py drives them
        with the SDKs themselves)."""
        a, o = "/v1/messages", "/v1/chat/completions"
        r = self.call("POST", a, body={"model": "m", "max_tokens": 20,
                                       "messages": [{"role": "user", "content": "hi"}]}, expect=200)
        cid = r.headers["ctxd-context-id"]
        self.call("POST", a, body={"model": "m", "max_tokens": 20, "stream": True,
                                   "messages": [{"role": "user", "content": "more"}]},
                  headers={"ctxd-context-id": cid}, expect=200)
        self.assertEqual(len(self.call("GET", "/mcp/context/{id}", cid).json()["messages"]), 4)
        r = self.call("POST", o, body={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                      expect=200)
        r = self.call("POST", o, body={"model": "m", "stream": True,
                                       "stream_options": {"include_usage": True},
                                       "messages": [{"role": "user", "content": "y"}]},
                      headers={"ctxd-context-id": r.headers["ctxd-context-id"]}, expect=200)
        self.assertEqual(sse_events(r.body)[-1][1], "[DONE]")
        self.call("GET", "/v1/models", expect=200)
        model = self.call("GET", "/v1/models", expect=200).json()["data"][0]["id"]
        self.assertEqual(self.call("GET", "/v1/models/{id}", model, expect=200).json()["id"], model)
        self.call("GET", "/v1/models/{id}", "no-such-model", expect=404, code="route_not_found")
        for path, body in ((a, {"max_tokens": 5, "messages": []}),
                           (a, {"messages": [{"role": "system", "content": "x"}]}),
                           (a, {"messages": [{"role": "user", "content": [{"type": "nope"}]}]}),
                           (o, {"messages": [{"role": "user", "content": "x"}], "n": 3}),
                           (o, {"messages": [{"role": "robot", "content": "x"}]})):
            with self.subTest(path=path, body=body):
                self.call("POST", path, body=body, expect=400, code="invalid_field")
        for path in (a, o):
            self.call("POST", path, body={"messages": [{"role": "user", "content": "x"}]},
                      headers={"ctxd-context-id": str(uuid.uuid4())}, expect=404,
                      code="context_not_found")
            self.call("POST", path, body={"messages": [{"role": "user", "content": "x"}]},
                      headers={"ctxd-context-id": "nope"}, expect=404, code="context_not_found")

    def test_busy_context(self):
        cid = self.new_context()
        self.redis.cli("SET", "ctxd:{%s}:lock" % cid, "x", "PX", "5000")
        try:
            r = self.turn(cid, "blocked", expect=409, code="context_busy")
            self.assertEqual(r.headers.get("retry-after"), "1")
            self.call("POST", "/mcp/context/{id}/message", cid,
                      body={"message": "blocked", "stream": True}, expect=409, code="context_busy")
            self.call("POST", "/mcp/context/{id}/messages", cid,
                      body={"messages": [{"role": "user", "content": "x"}]}, expect=409,
                      code="context_busy")
        finally:
            self.redis.cli("DEL", "ctxd:{%s}:lock" % cid)
        self.turn(cid, "free again")

    def test_append(self):
        cid = self.new_context()
        p = "/mcp/context/{id}/messages"
        msgs = {"messages": [{"role": "user", "content": "a"}]}
        r = self.call("POST", p, cid, body=msgs, expect=201).json()
        self.assertEqual((r["appended"], r["first_seq"]), (1, 1))
        key = {"Idempotency-Key": "append-" + cid}
        a = self.call("POST", p, cid, body=msgs, headers=key, expect=201)
        b = self.call("POST", p, cid, body=msgs, headers=key, expect=201)
        self.assertEqual(b.headers.get("idempotent-replayed"), "true")
        self.assertEqual(a.json(), b.json())
        self.call("POST", p, cid, body={"messages": [{"role": "user", "content": "b"}]},
                  headers=key, expect=422, code="idempotency_key_reused")
        self.call("POST", p, cid, body=msgs, headers={"Idempotency-Key": ""}, expect=400,
                  code="invalid_idempotency_key")
        for body, code in [(None, "missing_field"), ({}, "invalid_field"),
                           ({"messages": []}, "invalid_field"),
                           ({"messages": "x"}, "invalid_field"),
                           ({"messages": [1]}, "invalid_field"),
                           ({"messages": [{"role": "system", "content": "x"}]}, "invalid_field"),
                           ({"messages": [{"role": "user"}]}, "missing_field"),
                           ({"messages": [{"role": "user", "content": "x", "seq": 1}]},
                            "unknown_field"),
                           ({"messages": msgs["messages"], "more": 1}, "unknown_field")]:
            with self.subTest(body=body):
                self.call("POST", p, cid, body=body, expect=400, code=code)
        self.call("POST", p, cid, body={"messages": [{"role": "user", "content": "c" * 1100}]},
                  expect=413, code="field_too_large")
        fresh = self.new_context()
        self.call("POST", p, fresh, body={"messages": [{"role": "user", "content": "m"}] * 5},
                  expect=413, code="context_full")
        self.call("POST", p, str(uuid.uuid4()), body=msgs, expect=404, code="context_not_found")
        self.call("POST", p, "nope", body=msgs, expect=404)

    # ---- state ----

    def test_state(self):
        cid = self.new_context({"state": {"a": 1}})
        p = "/mcp/context/{id}/state"
        self.assertEqual(self.call("GET", p, cid, expect=200).json(), {"a": 1})
        r = self.call("PUT", p, cid, body={"b": [1, 2], "c": {"d": None}, "z": None}, expect=200)
        self.assertEqual(r.json(), {"b": [1, 2], "c": {"d": None}})
        r = self.call("PATCH", p, cid, body={"b": None, "e": "f"}, expect=200)
        self.assertEqual(r.json(), {"c": {"d": None}, "e": "f"})
        self.call("PUT", p, cid, body={}, expect=200)
        for m in ("PUT", "PATCH"):
            with self.subTest(method=m):
                self.call(m, p, cid, expect=400, code="missing_field")
                self.call(m, p, cid, body={"": 1}, expect=400, code="invalid_field")
                self.call(m, p, cid, body={"k" * 257: 1}, expect=400, code="invalid_field")
                self.call(m, p, cid, body={"k": "v" * 200}, expect=413, code="state_too_large")
                self.call(m, p, str(uuid.uuid4()), body={"k": 1}, expect=404,
                          code="context_not_found")
                self.call(m, p, "nope", body={"k": 1}, expect=404)
        # Each part fits, the merge does not.
        self.call("PUT", p, cid, body={"x": "v" * 70}, expect=200)
        self.call("PATCH", p, cid, body={"y": "w" * 70}, expect=413, code="state_too_large")
        self.call("GET", p, str(uuid.uuid4()), expect=404, code="context_not_found")
        self.call("GET", p, "nope", expect=404)

    # ---- optimistic concurrency ----

    def test_etags_and_if_match(self):
        cid = self.new_context({"state": {"a": 1}})
        st, ctx, msgs = "/mcp/context/{id}/state", "/mcp/context/{id}", "/mcp/context/{id}/messages"
        tag = self.call("GET", ctx, cid, expect=200).headers["etag"]
        self.assertEqual(self.call("GET", st, cid, expect=200).headers["etag"], tag)
        self.assertEqual(self.call("GET", msgs, cid, expect=200).headers["etag"], tag)
        # A write with the current tag goes through and changes the tag.
        r = self.call("PUT", st, cid, body={"a": 2}, headers={"If-Match": tag}, expect=200)
        new = r.headers["etag"]
        self.assertNotEqual(new, tag)
        # The old tag no longer matches anywhere, and nothing changes.
        before = self.redis.snapshot()
        for m, p, body in [("PUT", st, {"a": 3}), ("PATCH", st, {"b": 1}),
                           ("PATCH", ctx, {"system": "x"}),
                           ("POST", msgs, {"messages": [{"role": "user", "content": "x"}]})]:
            with self.subTest(method=m, path=p):
                self.call(m, p, cid, body=body, headers={"If-Match": tag}, expect=412,
                          code="precondition_failed")
        self.assertEqual(self.redis.snapshot(), before)
        # A list, *, and a weak tag (never a strong match).
        self.call("PATCH", st, cid, body={"b": 1}, headers={"If-Match": '"1", ' + new},
                  expect=200)
        self.call("PATCH", ctx, cid, body={"system": "y"}, headers={"If-Match": "*"}, expect=200)
        cur = self.call("GET", ctx, cid, expect=200).headers["etag"]
        self.call("PATCH", ctx, cid, body={"system": "z"}, headers={"If-Match": "W/" + cur},
                  expect=412, code="precondition_failed")
        r = self.call("POST", msgs, cid, body={"messages": [{"role": "user", "content": "m"}]},
                      headers={"If-Match": cur}, expect=201)
        after = self.call("GET", ctx, cid, expect=200).headers["etag"]
        self.assertNotEqual(after, cur)
        # A turn changes it too.
        self.turn(cid, "hi")
        self.assertNotEqual(self.call("GET", ctx, cid, expect=200).headers["etag"], after)
        self.call("PUT", st, cid, body={"a": 1}, headers={"If-Match": "7"}, expect=400,
                  code="bad_http_request")
        self.call("PUT", st, str(uuid.uuid4()), body={"a": 1}, headers={"If-Match": "*"},
                  expect=404, code="context_not_found")

    # ---- what every body-taking operation shares ----

    def test_every_body_taking_operation_checks_its_body(self):
        cid = self.new_context()
        ct = {"Content-Type": "application/json"}
        for (method, template), op in sorted(OPS.items()):
            if "requestBody" not in op:
                continue
            with self.subTest(op="%s %s" % (method, template)):
                kw = {"cid": cid} if "{id}" in template else {}
                self.call(method, template, raw=b'{"a": 1}', headers={"Content-Type": "text/plain"},
                          expect=415, code="unsupported_media_type", **kw)
                if template == "/mcp":  # JSON-RPC's own errors (test_mcp.py checks the rest)
                    for raw, rpc in ((b"{nope", -32700), (b"[1]", -32600), (b'{"a": "\xff"}', -32700),
                                     (b'{"a": "\\ud800"}', -32700), (b'{"a": 1}', -32600)):
                        r = self.call(method, template, raw=raw, headers=ct, expect=400)
                        self.assertEqual(r.json()["error"]["code"], rpc, raw)
                    self.call(method, template, body={"a": "x" * 3000}, expect=413,
                              code="body_too_large")
                    continue
                self.call(method, template, raw=b"{nope", headers=ct, expect=400,
                          code="invalid_json", **kw)
                self.call(method, template, raw=b"[1]", headers=ct, expect=400,
                          code="invalid_json", **kw)
                self.call(method, template, raw=b'{"a": "\xff"}', headers=ct, expect=400,
                          code="invalid_utf8", **kw)
                self.call(method, template, raw=b'{"a": "\\ud800"}', headers=ct, expect=400,
                          code="invalid_utf8", **kw)
                self.call(method, template, body={"a": "x" * 3000}, expect=413,
                          code="body_too_large", **kw)

    def test_routing_errors(self):
        cid = str(uuid.uuid4())
        nf_ptr = "#/components/responses/RouteNotFound"
        for path in ("/nope", "/mcp/context/%s/nope" % cid, "/mcp/nope"):
            with self.subTest(path=path):
                r = request(self.ctxd.port, "GET", path)
                self.assertEqual(r.status, 404, r)
                self.assertEqual(r.json()["code"], "route_not_found")
                validate_at(r.json(), pointer_join(nf_ptr, "content", "application/json", "schema"),
                            "GET " + path)
        # Every documented path answers 405 for a method it does not list, and
        # its Allow header lists exactly the documented methods.
        mna = pointer_get("#/components/responses/MethodNotAllowed")
        for template, item in SPEC["paths"].items():
            documented = {m.upper() for m in item if m in HTTP_METHODS}
            other = next(m for m in ("PUT", "DELETE", "POST", "PATCH", "GET") if m not in documented)
            with self.subTest(path=template, method=other):
                r = request(self.ctxd.port, other, template.replace("{id}", cid),
                            raw=b"{}", headers={"Content-Type": "application/json"})
                self.assertEqual(r.status, 405, r)
                self.assertTrue(r.headers.get("x-request-id"))
                schema = "#/components/responses/MethodNotAllowed/content/application~1json/schema"
                if template.startswith("/v1/"):  # the SDK routes: their provider's shape
                    schema = "#/components/schemas/%sError" % (
                        "Anthropic" if template == "/v1/messages" else "OpenAI")
                validate_at(r.json(), schema, "%s %s" % (other, template))
                self.assertEqual(error_code(r.json()), "method_not_allowed")
                validate_at(r.headers.get("allow"), mna["headers"]["Allow"]["$ref"] + "/schema",
                            "Allow header")
                # HEAD is served wherever GET is documented.
                self.assertEqual(set(r.headers["allow"].split(", ")),
                                 documented | ({"HEAD"} if "GET" in documented else set()))

    # ---- The MCP endpoint ----

    def test_mcp(self):
        r = self.call("POST", "/mcp", body=MCP_INIT, expect=200)
        sid = r.headers["mcp-session-id"]
        self.assertEqual(r.json()["result"]["protocolVersion"], "2025-11-25")
        s = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        self.call("POST", "/mcp", body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                  headers=s, expect=202)
        r = self.call("POST", "/mcp", body=ping, headers=dict(s, Accept="text/event-stream"),
                      expect=200)
        self.assertEqual(sse_events(r.body), [("message", {"jsonrpc": "2.0", "id": 2,
                                                           "result": {}})])
        r = self.call("POST", "/mcp", body={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                            "params": {"name": "create_context", "arguments": {}}},
                      headers=s, expect=200)
        cid = r.json()["result"]["structuredContent"]["context_id"]
        self.call("GET", "/mcp/context/{id}", cid, expect=200)  # the REST API sees it
        self.call("POST", "/mcp", body=ping, headers=dict(s, Accept="text/html"), expect=406)
        self.call("POST", "/mcp", body=ping, expect=400)  # no session
        self.call("POST", "/mcp", body=ping, headers=dict(s, **{"MCP-Protocol-Version": "2024-01-01"}),
                  expect=400)
        gone = {"Mcp-Session-Id": str(uuid.uuid4())}
        self.call("POST", "/mcp", body=ping, headers=gone, expect=404)
        self.call("DELETE", "/mcp", expect=400)
        self.call("DELETE", "/mcp", headers=s, expect=200)
        self.call("DELETE", "/mcp", headers=s, expect=404)
        r = self.call("GET", "/.well-known/oauth-protected-resource/mcp", expect=200)
        self.assertEqual(r.json()["resource"], "http://127.0.0.1:%d/mcp" % self.ctxd.port)

    # ---- DNS rebinding and CORS: every operation refuses foreign callers ----

    def test_foreign_host_and_origin(self):
        cid = self.create()
        self.turn(cid, "hello")
        before = self.redis.snapshot()
        for (method, template) in sorted(OPS):
            body = example_body(method, template)
            for headers, status, code in (
                    ({"Host": "evil.example"}, 421, "host_not_allowed"),
                    ({"Host": "evil.example:%d" % self.ctxd.port}, 421, "host_not_allowed"),
                    ({"Origin": "http://evil.example"}, 403, "origin_not_allowed"),
                    ({"Host": "localhost", "Origin": "null"}, 403, "origin_not_allowed")):
                with self.subTest(op="%s %s" % (method, template), headers=headers):
                    r = self.call(method, template, cid if "{id}" in template else None,
                                  body=body, headers=headers, expect=status, code=code)
                    self.assertIsNone(r.headers.get("access-control-allow-origin"), r)
        self.assertEqual(self.redis.snapshot(), before, "a refused request changed Redis")
        # The local names are served, with or without a port.
        for host in ("localhost", "LOCALHOST:1", "127.0.0.1", "[::1]:%d" % self.ctxd.port):
            self.call("GET", "/mcp/context/{id}", cid, headers={"Host": host}, expect=200)

    # ---- upstream failures (a real provider: the fake) ----

    def test_upstream_errors(self):
        up = self.upstream
        cid = self.new_context({"max_messages": 4}, server=up)
        self.fake.reset()
        self.turn(cid, "fine", server=up)
        cases = [({"status": 429, "headers": {"retry-after": "1"}}, 429, "upstream_rate_limited"),
                 ({"status": 401}, 502, "upstream_auth"),
                 ({"status": 400}, 502, "upstream_rejected"),
                 ({"status": 500}, 502, "upstream_error"),
                 ({"status": 529}, 503, "upstream_overloaded"),
                 ({"delay_ms": 1500}, 504, "upstream_timeout")]
        for script, status, code in cases:
            with self.subTest(code=code):
                self.fake.script(script)
                r = self.turn(cid, "fail " + code, server=up, expect=status, code=code)
                if status in (429, 503):
                    self.assertTrue(r.headers.get("retry-after"), r.headers)
        # After the stream started, the error is the stream's last event.
        self.fake.script({"status": 429, "headers": {"retry-after": "1"}})
        r = self.call("POST", "/mcp/context/{id}/message", cid, server=up,
                      body={"message": "stream fail", "stream": True}, expect=200)
        name, data = sse_events(r.body)[-1]
        self.assertEqual((name, data["status"], data["code"]), ("error", 429, "upstream_rate_limited"))
        self.fake.script({"stream_error": {"type": "overloaded_error", "message": "Overloaded"},
                          "error_after": 1})
        r = self.call("POST", "/mcp/context/{id}/message", cid, server=up,
                      body={"message": "mid-stream fail", "stream": True}, expect=200)
        self.assertEqual(sse_events(r.body)[-1][0], "error")
        # The SDK routes: errors in the provider's shape, before and after
        # the stream began.
        ctx = {"ctxd-context-id": self.new_context(server=up)}
        self.fake.script({"status": 529})
        r = self.call("POST", "/v1/messages", server=up, headers=ctx, expect=529,
                      body={"max_tokens": 9, "messages": [{"role": "user", "content": "x"}]})
        self.assertEqual(r.json()["error"]["type"], "overloaded_error")
        self.fake.script({"stream_error": {"type": "overloaded_error", "message": "Overloaded"},
                          "error_after": 1})
        r = self.call("POST", "/v1/messages", server=up, headers=ctx, expect=200, body={
            "max_tokens": 9, "stream": True, "messages": [{"role": "user", "content": "x"}]})
        self.assertEqual(sse_events(r.body)[-1][0], "error")
        self.fake.reset()

    # ---- Redis down: every operation that needs it answers 503 ----

    def test_redis_outage(self):
        redis = Redis(appendonly=False).start()
        ctxd = None
        try:
            ctxd = Ctxd(redis.url, env={"CTXD_REDIS_TIMEOUT_MS": "300", "CTXD_THREADS": "2"}).start()
            redis.kill()
            cid = str(uuid.uuid4())
            for (method, template) in sorted(OPS):
                with self.subTest(op="%s %s" % (method, template)):
                    body = example_body(method, template)
                    r = self.call(method, template, cid if "{id}" in template else None, body=body,
                                  server=ctxd, headers=self.mcp_session(None, method, template))
                    if template in ("/healthz", "/metrics", "/v1/models", "/v1/models/{id}",
                                    "/.well-known/oauth-protected-resource/mcp"):
                        continue  # no Redis needed (no keys to check with CTXD_AUTH=off)
                    self.assertEqual(r.status, 503, r)
                    self.assertEqual(error_code(r.json()), "redis_unavailable")
                    self.assertEqual(r.headers.get("retry-after"), "1")
        finally:
            if ctxd:
                try:
                    self.assertEqual(ctxd.stop(), 0)
                finally:
                    ctxd.cleanup()
            redis.cleanup()

    # ---- Draining after SIGTERM: 503 shutting_down but for the probes ----

    def test_draining(self):
        redis = Redis(appendonly=False).start()
        ctxd = None
        try:
            ctxd = Ctxd(redis.url, env={"CTXD_ECHO_DELAY_MS": "1500", "CTXD_THREADS": "4",
                                        "CTXD_SHUTDOWN_GRACE_MS": "10000"}).start()
            cid = self.new_context(server=ctxd)
            body = {"message": "slow", "stream": True}
            conn = http.client.HTTPConnection("127.0.0.1", ctxd.port, timeout=20)
            conn.request("POST", "/mcp/context/%s/message" % cid, body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            first = resp.readline()  # the turn is admitted and streaming
            self.assertTrue(first.startswith(b"event: "), first)
            # A kept-alive connection opened before the signal: new ones are
            # refused while draining, requests on open ones get 503.
            keep = http.client.HTTPConnection("127.0.0.1", ctxd.port, timeout=20)
            keep.request("GET", "/healthz")
            keep.getresponse().read()
            ctxd.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)  # draining now
            with self.assertRaises(ConnectionError):  # refused, or reset if queued
                request(ctxd.port, "GET", "/healthz", timeout=5)
            other = str(uuid.uuid4())
            for (method, template) in sorted(OPS):
                with self.subTest(op="%s %s" % (method, template)):
                    body_ = example_body(method, template)
                    path = template.replace("{id}", other)
                    keep.request(method, path, body=None if body_ is None else json.dumps(body_),
                                 headers={"Content-Type": "application/json"})
                    kr = keep.getresponse()
                    r = Response(kr.status, kr.getheaders(), kr.read())
                    self.check(method, template, r, body=body_)
                    if template in ("/healthz", "/metrics"):
                        self.assertEqual(r.status, 200, r)
                    else:
                        self.assertEqual((r.status, error_code(r.json())), (503, "shutting_down"), r)
                        self.assertEqual(r.headers.get("retry-after"), "1")
            keep.close()
            slow = Response(resp.status, resp.getheaders(), first + resp.read())
            conn.close()
            self.check("POST", "/mcp/context/{id}/message", slow, body=body, expect=200)
            self.assertEqual(sse_events(slow.body)[-1][0], "done")
            self.assertEqual(ctxd.proc.wait(timeout=15), 0)
        finally:
            if ctxd:
                ctxd.cleanup()
            redis.cleanup()

    # ---- API keys over HTTP, with auth off (the class's ctxd) ----

    def test_admin_keys(self):
        p, d = "/admin/keys", "/admin/keys/{id}"
        t, other = "t-" + uuid.uuid4().hex[:12], "o-" + uuid.uuid4().hex[:12]
        a = self.call("POST", p, body={"tenant": t, "scopes": ["read", "write"],
                                       "requests_per_minute": 600, "tokens_per_minute": 0,
                                       "name": "backend"}, expect=201).json()
        self.assertRegex(a["key"], KEY_RE)
        self.assertEqual(a["key"][-6:], key_checksum(a["key"][5:48]), "the key's checksum")
        self.assertEqual((a["tenant"], a["scopes"], a["requests_per_minute"],
                          a["tokens_per_minute"], a["name"]),
                         (t, ["read", "write"], 600, 0, "backend"))
        # Scopes as a comma-separated string; null counts as absent.
        b = self.call("POST", p, body={"tenant": t, "scopes": "admin,read", "name": None,
                                       "requests_per_minute": None, "tokens_per_minute": 5},
                      expect=201).json()
        self.assertEqual((b["scopes"], b["name"], b["requests_per_minute"], b["tokens_per_minute"]),
                         (["read", "admin"], "", 0, 5))
        c = self.call("POST", p, body={"tenant": other, "scopes": ["write"]}, expect=201).json()
        self.assertEqual(len({a["key"], b["key"], c["key"]}), 3)
        self.assertEqual(len({a["id"], b["id"], c["id"]}), 3)
        # Listed without the key itself, as they were made.
        listed = {k["id"]: k for k in self.call("GET", p, expect=200).json()["keys"]}
        for made in (a, b, c):
            self.assertEqual(listed.get(made["id"]), {k: v for k, v in made.items() if k != "key"})
        mine = self.call("GET", p, query="tenant=" + t, expect=200).json()["keys"]
        self.assertEqual(sorted(k["id"] for k in mine), sorted([a["id"], b["id"]]))
        self.assertEqual(self.call("GET", p, query="tenant=nobody-" + uuid.uuid4().hex[:8],
                                   expect=200).json(), {"keys": []})
        for q in ("nope=1", "tenant=", "tenant", "tenant=%s&limit=2" % t):
            with self.subTest(query=q):
                self.call("GET", p, query=q, expect=400, code="invalid_query")
        # Revoked once; then it is gone.
        r = self.call("DELETE", d, a["id"], expect=200).json()
        self.assertEqual(r["message"], "Key '%s' revoked" % a["id"])
        self.call("DELETE", d, a["id"], expect=404, code="key_not_found")
        self.call("DELETE", d, "key_" + "0" * 24, expect=404, code="key_not_found")
        self.call("DELETE", d, "nope", expect=404, code="key_not_found")
        self.call("DELETE", d, str(uuid.uuid4()), expect=404, code="key_not_found")
        mine = self.call("GET", p, query="tenant=" + t, expect=200).json()["keys"]
        self.assertEqual([k["id"] for k in mine], [b["id"]])
        self.assertIn(c["id"], [k["id"] for k in self.call("GET", p, query="tenant=" + other,
                                                             expect=200).json()["keys"]])

    def test_admin_keys_refuse_bad_input(self):
        p = "/admin/keys"
        before = self.call("GET", p, expect=200).json()
        good = {"tenant": "acme", "scopes": ["read"]}
        for body, status, code in [
                ({}, 400, "invalid_field"),
                ({"tenant": "acme"}, 400, "invalid_field"),
                ({"scopes": ["read"]}, 400, "invalid_field"),
                ({"tenant": None, "scopes": ["read"]}, 400, "invalid_field"),
                ({"tenant": "Acme", "scopes": ["read"]}, 400, "invalid_field"),
                ({"tenant": "", "scopes": ["read"]}, 400, "invalid_field"),
                ({"tenant": "a b", "scopes": ["read"]}, 400, "invalid_field"),
                ({"tenant": 7, "scopes": ["read"]}, 400, "invalid_field"),
                (dict(good, scopes=[]), 400, "invalid_field"),
                (dict(good, scopes=None), 400, "invalid_field"),
                (dict(good, scopes=["root"]), 400, "invalid_field"),
                (dict(good, scopes=["read", 1]), 400, "invalid_field"),
                (dict(good, scopes=""), 400, "invalid_field"),
                (dict(good, scopes="read,,write"), 400, "invalid_field"),
                (dict(good, scopes={"read": True}), 400, "invalid_field"),
                (dict(good, requests_per_minute=-1), 400, "invalid_field"),
                (dict(good, requests_per_minute="60"), 400, "invalid_field"),
                (dict(good, requests_per_minute=1.5), 400, "invalid_field"),
                (dict(good, tokens_per_minute=1000000001), 400, "invalid_field"),
                (dict(good, name=5), 400, "invalid_field"),
                (dict(good, key="ctxd_x"), 400, "unknown_field"),
                (dict(good, tenants=["acme"]), 400, "unknown_field"),
                (dict(good, tenant="t" * 65), 413, "field_too_large"),
                (dict(good, name="n" * 128), 413, "field_too_large")]:
            with self.subTest(body=body):
                self.call("POST", p, body=body, expect=status, code=code)
                with self.assertRaises(AssertionError):  # the spec refuses it too
                    validate_at(body, request_schema_ptr("POST", p), "body")
        self.call("POST", p, expect=400, code="missing_field")
        self.call("POST", p, raw=b"null", headers={"Content-Type": "application/json"},
                  expect=400, code="invalid_json")
        self.assertEqual(self.call("GET", p, expect=200).json(), before, "a refused request made a key")

    # ---- CTXD_AUTH=keys: a ctxd of its own ----

    @contextlib.contextmanager
    def keys_server(self, env=None):
        """A ctxd with CTXD_AUTH=keys and CTXD_ADMIN_TOKEN on a Redis of its own: (ctxd, redis)."""
        redis = Redis(appendonly=False).start()
        srv = None
        try:
            srv = Ctxd(redis.url, env=dict({"CTXD_AUTH": "keys", "CTXD_ADMIN_TOKEN": ADMIN_TOKEN,
                                            "CTXD_THREADS": "4"}, **(env or {}))).start()
            yield srv, redis
        finally:
            if srv:
                try:
                    self.assertEqual(srv.stop(), 0, srv.log()[-4000:])
                finally:
                    srv.cleanup()
            redis.cleanup()

    def make_key(self, srv, tenant, scopes, **limits):
        """A new key (the creation answer, with "key"), made with the admin token."""
        return self.call("POST", "/admin/keys", body=dict(tenant=tenant, scopes=scopes, **limits),
                         headers=ADMIN, server=srv, expect=201).json()

    def target(self, srv, template, writer):
        """What {id} of template should be on srv: a new context of writer's
        tenant, a new key to revoke, or None."""
        if template.startswith("/mcp/context/{id}"):
            r = self.call("POST", "/mcp/context", headers=bearer(writer), server=srv, expect=201)
            return r.json()["context_id"]
        if template == "/admin/keys/{id}":
            return self.make_key(srv, "spare", ["read"])["id"]
        if template == "/v1/models/{id}":
            return "echo"  # the keys server's CTXD_MODEL
        self.assertNotIn("{", template)
        return None

    def mcp_session(self, srv, method, template, writer=None):
        """The header DELETE /mcp needs: a new MCP session of writer's tenant on
        srv (srv None: any session id, for a server that cannot look it up)."""
        if (method, template) != ("DELETE", "/mcp"):
            return {}
        if srv is None:
            return {"Mcp-Session-Id": str(uuid.uuid4())}
        r = self.call("POST", "/mcp", body=MCP_INIT, server=srv, expect=200,
                      headers=bearer(writer) if writer else None)
        return {"Mcp-Session-Id": r.headers["mcp-session-id"]}

    def test_keys_are_required(self):
        with self.keys_server() as (srv, redis):
            writer = self.make_key(srv, "acme", ["read", "write"])
            revoked = self.make_key(srv, "acme", ["read", "write", "admin"])
            self.call("DELETE", "/admin/keys/{id}", revoked["id"], headers=ADMIN, server=srv,
                      expect=200)
            corrupt = writer["key"][:-1] + ("A" if writer["key"][-1] != "A" else "B")
            refused = [
                {},
                {"Authorization": "Bearer "},
                {"Authorization": "Bearer nope"},
                {"Authorization": "Basic " + writer["key"]},  # not a bearer token, no x-api-key
                {"x-api-key": corrupt},                          # a wrong checksum
                {"Authorization": "Bearer " + fake_key()},       # well-formed, never made
                {"x-api-key": fake_key()},
                {"Authorization": "Bearer " + revoked["key"]},   # revoked: at once here
                {"Authorization": "Bearer " + ADMIN_TOKEN + "x"},
                {"Authorization": "Bearer " + fake_key(), "x-api-key": writer["key"]},  # bearer wins
            ]
            targets = {(m, t): self.target(srv, t, writer) for (m, t) in OPS if "{id}" in t}
            before = redis.snapshot()
            for (method, template) in sorted(OPS):
                body = example_body(method, template)
                cid = targets.get((method, template))
                if template in PROBES:  # no key needed; a bad one is ignored
                    self.call(method, template, server=srv, expect=200)
                    self.call(method, template, headers=refused[2], server=srv, expect=200)
                    continue
                for headers in refused:
                    with self.subTest(op="%s %s" % (method, template), headers=headers):
                        r = self.call(method, template, cid, body=body, headers=headers, server=srv,
                                      expect=401, code="unauthorized")
                        if template == "/mcp":  # names the protected resource metadata
                            self.assertRegex(r.headers.get("www-authenticate"), MCP_CHALLENGE)
                        else:
                            self.assertEqual(r.headers.get("www-authenticate"), CHALLENGE)
                        self.assertNotIn("ratelimit-policy", r.headers)
                # Before the body is even looked at.
                if "requestBody" in OPS[(method, template)]:
                    self.call(method, template, cid, raw=b"{nope", server=srv, expect=401,
                              headers={"Content-Type": "text/plain"}, code="unauthorized")
            self.assertEqual(redis.snapshot(), before, "a refused request changed Redis")
            # The same key as a bearer token or as x-api-key.
            self.call("GET", "/mcp/contexts", headers=bearer(writer), server=srv, expect=200)
            self.call("GET", "/mcp/contexts", headers={"x-api-key": writer["key"]}, server=srv,
                      expect=200)

    def test_keys_need_the_operations_scope(self):
        with self.keys_server() as (srv, _):
            made = {n: self.make_key(srv, "acme", s) for n, s in (
                ("read", ["read"]), ("write", ["write"]), ("read,write", "read,write"),
                ("admin", ["admin"]), ("every", ["read", "write", "admin"]))}
            writer = made["read,write"]
            callers = [(set(n.split(",")) if n != "every" else {"read", "write", "admin"},
                        n, {"x-api-key": k["key"]} if n == "read" else bearer(k))
                       for n, k in made.items()]
            callers.append(({"admin"}, "the admin token", ADMIN))
            for (method, template) in sorted(OPS):
                if template in PROBES:
                    continue
                need = scope_of(method, template)
                body = example_body(method, template)
                for scopes, name, headers in callers:
                    with self.subTest(op="%s %s" % (method, template), caller=name):
                        cid = self.target(srv, template, writer)
                        h = dict(headers, **self.mcp_session(srv, method, template, writer))
                        if need in scopes:
                            self.call(method, template, cid, body=body, headers=h,
                                      server=srv, expect=ok_status(method, template))
                        else:
                            r = self.call(method, template, cid, body=body, headers=h,
                                          server=srv, expect=403, code="forbidden")
                            self.assertIn("needs the %s scope" % need, error_text(r.json()))
                            if cid and template.startswith("/mcp/"):  # nothing was done
                                self.call("GET", "/mcp/context/{id}", cid, headers=bearer(writer),
                                          server=srv, expect=200)

    def test_tenants_see_only_their_own(self):
        with self.keys_server() as (srv, _):
            acme = self.make_key(srv, "acme", ["read", "write"])
            globex = self.make_key(srv, "globex", ["read", "write"])
            admin = self.make_key(srv, "globex", ["admin"])
            cid = self.new_context({"state": {"who": "acme"}}, server=srv, headers=bearer(acme))
            g = bearer(globex)
            for method, template, body in (
                    ("GET", "/mcp/context/{id}", None), ("GET", "/mcp/context/{id}/state", None),
                    ("GET", "/mcp/context/{id}/messages", None),
                    ("POST", "/mcp/context/{id}/message", {"message": "mine now"}),
                    ("PATCH", "/mcp/context/{id}/state", {"who": "globex"}),
                    ("DELETE", "/mcp/context/{id}", None)):
                with self.subTest(op="%s %s" % (method, template)):
                    self.call(method, template, cid, body=body, headers=g, server=srv, expect=404,
                              code="context_not_found")
            self.assertEqual(self.call("GET", "/mcp/context/{id}/state", cid, headers=bearer(acme),
                                       server=srv, expect=200).json(), {"who": "acme"})
            ids = lambda h: [c["id"] for c in self.call("GET", "/mcp/contexts", headers=h,
                                                        server=srv, expect=200).json()["contexts"]]
            self.assertEqual(ids(bearer(acme)), [cid])
            self.assertEqual(ids(g), [])
            # An admin key of any tenant manages the keys of every tenant.
            listed = self.call("GET", "/admin/keys", headers=bearer(admin), server=srv,
                               expect=200).json()["keys"]
            self.assertEqual(sorted(k["id"] for k in listed),
                             sorted(k["id"] for k in (acme, globex, admin)))
            only = self.call("GET", "/admin/keys", query="tenant=acme", headers=bearer(admin),
                             server=srv, expect=200).json()["keys"]
            self.assertEqual([k["id"] for k in only], [acme["id"]])
            made = self.call("POST", "/admin/keys", body={"tenant": "acme", "scopes": ["read"]},
                             headers=bearer(admin), server=srv, expect=201).json()
            self.call("GET", "/mcp/context/{id}", cid, headers=bearer(made), server=srv, expect=200)
            self.call("DELETE", "/admin/keys/{id}", made["id"], headers=bearer(admin), server=srv,
                      expect=200)
            self.call("GET", "/mcp/context/{id}", cid, headers=bearer(made), server=srv, expect=401,
                      code="unauthorized")

    def test_keys_requests_per_minute(self):
        policy = '"requests";q=1;w=60'
        with self.keys_server() as (srv, _):
            writer = self.make_key(srv, "acme", ["read", "write"])
            for (method, template) in sorted(OPS):
                if template in PROBES:
                    continue
                with self.subTest(op="%s %s" % (method, template)):
                    key = self.make_key(srv, "acme", [scope_of(method, template)],
                                        requests_per_minute=1)
                    h = dict(bearer(key), **self.mcp_session(srv, method, template, writer))
                    cid = self.target(srv, template, writer)
                    body = example_body(method, template)
                    first = self.call(method, template, cid, body=body, headers=h, server=srv,
                                      expect=ok_status(method, template))
                    self.assertEqual(first.headers.get("ratelimit-policy"), policy)
                    m = re.fullmatch(r'"requests";r=0;t=(\d+)', first.headers.get("ratelimit", ""))
                    self.assertTrue(m and 1 <= int(m.group(1)) <= 60, first.headers)
                    second = self.call(method, template, cid, body=body, headers=h, server=srv,
                                       expect=429, code="rate_limited")
                    self.assertTrue(1 <= int(second.headers["retry-after"]) <= 60, second.headers)
                    self.assertEqual(second.headers.get("ratelimit-policy"), policy)
                    self.assertRegex(second.headers.get("ratelimit", ""), r'^"requests";r=0;t=\d+$')
                    # The probes need no key and count nothing.
                    r = self.call("GET", "/healthz", headers=h, server=srv, expect=200)
                    self.assertNotIn("ratelimit-policy", r.headers)
            # One limit for every route the key calls.
            cid = self.target(srv, "/mcp/context/{id}", writer)
            two = bearer(self.make_key(srv, "acme", ["read"], requests_per_minute=2))
            self.call("GET", "/mcp/contexts", headers=two, server=srv, expect=200)
            self.call("GET", "/mcp/context/{id}/state", cid, headers=two, server=srv, expect=200)
            self.call("GET", "/mcp/context/{id}", cid, headers=two, server=srv, expect=429,
                      code="rate_limited")
            # A request refused for its scope is not counted.
            one = bearer(self.make_key(srv, "acme", ["read"], requests_per_minute=1))
            r = self.call("POST", "/mcp/context", headers=one, server=srv, expect=403,
                          code="forbidden")
            self.assertNotIn("ratelimit-policy", r.headers)
            self.call("GET", "/mcp/contexts", headers=one, server=srv, expect=200)
            self.call("GET", "/mcp/contexts", headers=one, server=srv, expect=429, code="rate_limited")
            # The count goes down request by request (6 a minute: one comes back
            # every 10 s); a key without a limit gets no headers.
            six = bearer(self.make_key(srv, "acme", ["read", "write"], requests_per_minute=6))
            r = self.call("POST", "/mcp/context", headers=six, server=srv, expect=201)
            self.assertEqual(r.headers.get("ratelimit-policy"), '"requests";q=6;w=60')
            self.assertRegex(r.headers.get("ratelimit", ""), r'^"requests";r=5;t=\d+$')
            r = self.call("GET", "/mcp/contexts", headers=six, server=srv, expect=200)
            self.assertRegex(r.headers.get("ratelimit", ""), r'^"requests";r=4;t=\d+$')
            r = self.call("GET", "/mcp/contexts", headers=bearer(writer), server=srv, expect=200)
            self.assertFalse({"ratelimit-policy", "ratelimit"} & set(r.headers), r.headers)

    def test_keys_tokens_per_minute(self):
        with self.keys_server() as (srv, _):
            key = self.make_key(srv, "acme", ["read", "write"], tokens_per_minute=1)
            h = bearer(key)
            r = self.call("POST", "/mcp/context", headers=h, server=srv, expect=201)
            self.assertEqual(r.headers.get("ratelimit-policy"), '"tokens";q=1;w=60')
            cid = r.json()["context_id"]
            # The first turn is within budget; its tokens are charged when the reply arrives.
            used = self.turn(cid, "hello", headers=h, server=srv).json()["usage"]
            self.assertGreater(used["input_tokens"] + used["output_tokens"], 1)
            before = self.call("GET", "/mcp/context/{id}", cid, headers=h, server=srv,
                               expect=200).json()["message_count"]
            for body in ({"message": "again"}, {"message": "again", "stream": True}):
                with self.subTest(body=body):
                    r = self.call("POST", "/mcp/context/{id}/message", cid, body=body, headers=h,
                                  server=srv, expect=429, code="rate_limited")
                    self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
                    self.assertEqual(r.headers.get("ratelimit-policy"), '"tokens";q=1;w=60')
            # Only turns spend tokens: the rest of the API still answers.
            self.call("POST", "/mcp/context/{id}/messages", cid, headers=h, server=srv, expect=201,
                      body={"messages": [{"role": "user", "content": "imported"}]})
            after = self.call("GET", "/mcp/context/{id}", cid, headers=h, server=srv,
                              expect=200).json()["message_count"]
            self.assertEqual(after, before + 1, "a refused turn stored something")
            # Both limits in one policy.
            both = bearer(self.make_key(srv, "acme", ["read"], requests_per_minute=60,
                                        tokens_per_minute=1000))
            r = self.call("GET", "/mcp/contexts", headers=both, server=srv, expect=200)
            self.assertEqual(r.headers.get("ratelimit-policy"),
                             '"requests";q=60;w=60, "tokens";q=1000;w=60')

    # ---- last: everything documented was exercised ----

    def test_zz_every_documented_answer_was_exercised(self):
        missing = []
        for (method, template), op in sorted(OPS.items()):
            seen = OBSERVED.get((method, template))
            if not seen:
                missing.append("%s %s: never called" % (method, template))
                continue
            for status, resp in op["responses"].items():
                if (method, template, status) in NOT_EXERCISED:
                    continue
                if status not in seen:
                    missing.append("%s %s: status %s never answered" % (method, template, status))
                    continue
                resp, _ = deref(resp, "#")
                for mt, media in resp.get("content", {}).items():
                    if mt not in seen[status]:
                        missing.append("%s %s: %s %s never answered" % (method, template, status, mt))
                    for ev in media.get("x-sse-events", {}):
                        if ev not in OBSERVED_EVENTS[(method, template, status, mt)]:
                            missing.append("%s %s: event %s never sent" % (method, template, ev))
        for (method, template, status), why in NOT_EXERCISED.items():
            self.assertIn(status, OPS.get((method, template), {}).get("responses", {}),
                          "stale NOT_EXERCISED entry %s %s %s" % (method, template, status))
        self.assertFalse(missing, "documented but never exercised:\n  " + "\n  ".join(missing))


if __name__ == "__main__":
    main()
