"""CTXD_REDIS_URL forms: a password, a database number, a unix socket; the
password never shows in answers or logs."""
# e2e_cluster: no (a password, a database number and a unix socket of one server;
# a Redis Cluster has database 0 only)
import os
import subprocess
import unittest

from harness import Ctxd, RedisServer, main, wait_until


class PasswordRedis(RedisServer):
    """A Redis that wants a password and also listens on a unix socket."""

    def __init__(self, password):
        super().__init__()
        self.password = password
        self.sock = os.path.join(self.dir, "redis.sock")

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--requirepass", self.password,
             "--unixsocket", self.sock, "--unixsocketperm", "700", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(self.sock), what="redis socket")
        return self

    def cli_auth(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "-a", self.password,
                              "--no-auth-warning", "--raw"] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()


class RedisUrlTest(unittest.TestCase):
    PASSWORD = "s3cret/pass@word"  # needs percent-encoding in a URL

    def setUp(self):
        self.redis = PasswordRedis(self.PASSWORD).start()

    def tearDown(self):
        self.redis.cleanup()

    def run_flow(self, url):
        c = Ctxd(url).start()
        try:
            self.assertEqual(c.request("GET", "/readyz").status, 200, c.log())
            cid = c.request("POST", "/mcp/context").json()["context_id"]
            self.assertEqual(c.request("POST", "/mcp/context/%s/message" % cid,
                                       {"message": "hello"}).status, 200)
            self.assertEqual(c.stop(), 0)
            self.assertNotIn(self.PASSWORD, c.log())
            return cid
        finally:
            c.cleanup()

    def test_password_and_database_in_the_url(self):
        cid = self.run_flow("redis://:s3cret%%2Fpass%%40word@127.0.0.1:%d/3" % self.redis.port)
        self.assertEqual(self.redis.cli_auth("-n", "3", "LLEN", "ctxd:{%s}:messages" % cid), "2")
        self.assertEqual(self.redis.cli_auth("-n", "0", "EXISTS", "ctxd:{%s}:meta" % cid), "0")

    def test_user_and_password(self):
        cid = self.run_flow("redis://default:s3cret%%2Fpass%%40word@127.0.0.1:%d/0"
                            % self.redis.port)
        self.assertEqual(self.redis.cli_auth("LLEN", "ctxd:{%s}:messages" % cid), "2")

    def test_unix_socket(self):
        cid = self.run_flow("unix://%s?db=2&password=s3cret%%2Fpass%%40word" % self.redis.sock)
        self.assertEqual(self.redis.cli_auth("-n", "2", "LLEN", "ctxd:{%s}:messages" % cid), "2")
        c = Ctxd("unix://%s?db=2" % self.redis.sock).start()
        try:
            r = c.request("GET", "/readyz")  # no password: refused, and said so
            self.assertEqual(r.status, 503)
            self.assertIn(self.redis.sock, r.json()["error"])
        finally:
            c.cleanup()

    def test_wrong_password_is_a_clear_503_without_the_password(self):
        c = Ctxd("redis://:wrong-one@127.0.0.1:%d/0" % self.redis.port).start()
        try:
            r = c.request("POST", "/mcp/context")
            self.assertEqual(r.status, 503)
            j = r.json()
            self.assertEqual(j["code"], "redis_unavailable")
            self.assertIn("AUTH", j["error"])
            self.assertNotIn("wrong-one", j["error"])
            self.assertEqual(c.stop(), 0)
            self.assertNotIn("wrong-one", c.log())
        finally:
            c.cleanup()


if __name__ == "__main__":
    main()
