"""test_compose.py: docker-compose.yml, docker/Dockerfile, docker/haproxy.cfg and
scripts/cluster.sh agree with each other and with ctxd itself (no Docker engine
needed: docker-compose only validates, haproxy only checks its config)."""
# e2e_cluster: no (docker compose starts its own Redis)
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SRC = harness.SOURCE_DIR
PORT = 61909
NOT_SETTINGS = {"CTXD_BIN", "CTXD_SOURCE_DIR"}  # read by scripts and tests, not ctxd


def read(*path):
    with open(os.path.join(SRC, *path)) as f:
        return f.read()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CTXD_", "CLUSTER_", "HAPROXY_"))
           and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    env.update(extra)
    return env


def ctxd_help():
    r = subprocess.run([harness.CTXD_BIN, "--help"], capture_output=True, text=True,
                       timeout=10, env=clean_env())
    if r.returncode != 0:
        raise AssertionError("ctxd --help exited with %d: %s" % (r.returncode, r.stderr))
    return r.stdout


def help_default(text, env):
    """The [default ...] of setting env in ctxd --help."""
    m = re.search(r"\b%s\b[^\n]*\n[^\n]*\[default ([^\]]+)\]" % env, text)
    if not m:
        raise AssertionError("%s has no default in ctxd --help:\n%s" % (env, text))
    return m.group(1)


def dockerfile_instructions():
    """[(INSTRUCTION, args)] with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in read("docker", "Dockerfile").splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def haproxy_directives(text):
    """Non-comment lines of an haproxy config, whitespace-normalised."""
    return [" ".join(line.split()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def seconds(value):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    n = int(m.group(1))
    return n / 1000 if m.group(2) == "ms" else n * 60 if m.group(2) == "m" else n


class ComposeFileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.compose_bin = harness.require_tool(
            "docker-compose", "Debian package docker-compose; scripts/deps.sh test installs it")
        cls.yaml = harness.require_module("yaml", "python3-yaml comes with docker-compose")
        cls.config = cls.compose_config(ANTHROPIC_API_KEY="sk-ant-test-passthrough")
        cls.services = cls.config["services"]

    @classmethod
    def compose_config(cls, **env):
        r = subprocess.run([cls.compose_bin, "-f", "docker-compose.yml", "config"], cwd=SRC,
                           capture_output=True, text=True, timeout=60, env=clean_env(**env))
        if r.returncode != 0:
            raise AssertionError("docker-compose config failed:\n%s%s" % (r.stdout, r.stderr))
        return cls.yaml.safe_load(r.stdout)

    def test_services(self):
        self.assertEqual(sorted(self.services), ["ctxd", "haproxy", "redis"])

    def test_redis_keeps_an_append_only_file_on_a_named_volume(self):
        redis = self.services["redis"]
        self.assertTrue(redis["image"].startswith("redis:7"), redis["image"])
        cmd = redis["command"]
        cmd = cmd if isinstance(cmd, list) else cmd.split()
        self.assertIn("--appendonly", cmd)
        self.assertEqual(cmd[cmd.index("--appendonly") + 1], "yes")
        volume = redis["volumes"][0]
        source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
        self.assertIn(source, self.config["volumes"])
        self.assertIn("redis-cli", " ".join(redis["healthcheck"]["test"]))
        self.assertNotIn("ports", redis, "redis must not be published")

    def test_ctxd_is_built_from_the_dockerfile_and_scales(self):
        ctxd = self.services["ctxd"]
        self.assertEqual(os.path.realpath(ctxd["build"]["context"]), os.path.realpath(SRC))
        self.assertEqual(ctxd["build"]["dockerfile"], "docker/Dockerfile")
        self.assertEqual(ctxd["deploy"]["replicas"], 3)
        # --scale ctxd=N needs these two absent.
        self.assertNotIn("container_name", ctxd)
        self.assertNotIn("ports", ctxd)
        self.assertEqual(ctxd["depends_on"]["redis"]["condition"], "service_healthy")
        env = ctxd["environment"]
        self.assertEqual(env["CTXD_REDIS_URL"], "redis://redis:6379/0")
        self.assertEqual(env["ANTHROPIC_API_KEY"], "sk-ant-test-passthrough")
        self.assertIn("OPENAI_API_KEY", env)

    def test_unset_keys_stay_empty(self):
        env = self.compose_config()["services"]["ctxd"]["environment"]
        self.assertEqual(env["ANTHROPIC_API_KEY"], "")
        self.assertEqual(env["OPENAI_API_KEY"], "")
        # Local development runs without API keys, as before; keys on when asked.
        self.assertEqual(env["CTXD_AUTH"], "off")
        self.assertEqual(env["CTXD_ADMIN_TOKEN"], "")
        on = self.compose_config(CTXD_AUTH="keys", CTXD_ADMIN_TOKEN="t" * 24)
        self.assertEqual(on["services"]["ctxd"]["environment"]["CTXD_AUTH"], "keys")
        self.assertEqual(on["services"]["ctxd"]["environment"]["CTXD_ADMIN_TOKEN"], "t" * 24)

    def test_haproxy_is_published_on_loopback_only(self):
        hap = self.services["haproxy"]
        self.assertEqual(len(hap["ports"]), 1, hap["ports"])
        port = hap["ports"][0]
        if isinstance(port, str):
            m = re.fullmatch(r"([\d.]+):(\d+):(\d+)(/tcp)?", port)
            self.assertTrue(m, port)
            host_ip, published, target = m.group(1), int(m.group(2)), int(m.group(3))
        else:
            host_ip, published, target = (port.get("host_ip"), int(port["published"]),
                                          int(port["target"]))
        self.assertEqual((host_ip, published, target), ("127.0.0.1", PORT, PORT))
        mounts = [v if isinstance(v, str) else "%s:%s" % (v["source"], v["target"])
                  for v in hap["volumes"]]
        self.assertTrue(any(m.startswith(os.path.join(SRC, "docker", "haproxy.cfg") + ":")
                            for m in mounts), mounts)
        self.assertEqual(hap["depends_on"]["ctxd"]["condition"], "service_healthy")


class DockerfileTest(unittest.TestCase):
    def setUp(self):
        self.ins = dockerfile_instructions()
        froms = [i for i, (w, _) in enumerate(self.ins) if w == "FROM"]
        self.assertEqual(len(froms), 2, "two stages expected")
        self.build = self.ins[froms[0]:froms[1]]
        self.runtime = self.ins[froms[1]:]

    def args(self, stage, word):
        return [a for w, a in stage if w == word]

    def test_build_stage_uses_the_project_scripts(self):
        self.assertRegex(self.build[0][1], r"^debian:bookworm AS build$")
        runs = " ".join(self.args(self.build, "RUN"))
        self.assertIn("scripts/deps.sh build", runs)
        self.assertIn("scripts/build.sh --release", runs)

    def test_runtime_stage_is_slim_and_holds_only_the_binary(self):
        self.assertEqual(self.runtime[0][1], "debian:bookworm-slim")
        self.assertRegex(" ".join(self.args(self.runtime, "RUN")), r"deps\.sh runtime")
        copies = self.args(self.runtime, "COPY")
        from_build = [c for c in copies if c.startswith("--from=")]
        self.assertEqual(from_build, ["--from=build /usr/local/bin/ctxd /usr/local/bin/ctxd"])
        self.assertEqual([c for c in copies if c not in from_build], ["scripts/deps.sh /tmp/deps.sh"])
        self.assertEqual(self.args(self.runtime, "ENTRYPOINT"), ['["/usr/local/bin/ctxd"]'])

    def test_runs_as_a_non_root_user(self):
        users = self.args(self.runtime, "USER")
        self.assertEqual(len(users), 1)
        self.assertNotIn(users[0].split(":")[0], ("root", "0"))

    def test_listens_on_all_interfaces_inside_the_container_on_the_default_port(self):
        self.assertIn("CTXD_LISTEN=0.0.0.0:%d" % PORT, self.args(self.runtime, "ENV"))
        self.assertEqual(self.args(self.runtime, "EXPOSE"), [str(PORT)])
        self.assertEqual(help_default(ctxd_help(), "CTXD_LISTEN"), "127.0.0.1:%d" % PORT)

    def test_healthcheck_probes_healthz_on_the_listen_port(self):
        checks = self.args(self.runtime, "HEALTHCHECK")
        self.assertEqual(len(checks), 1)
        self.assertIn("/healthz", checks[0])
        self.assertIn("${CTXD_LISTEN##*:}", checks[0])
        self.assertIn("curl", " ".join(self.args(self.runtime, "RUN")),
                      "the HEALTHCHECK uses curl, which the runtime stage must install")

    def test_dockerignore_keeps_what_the_build_needs(self):
        patterns = [p.strip().rstrip("/") for p in read(".dockerignore").splitlines()
                    if p.strip() and not p.startswith("#")]
        needed = ["CMakeLists.txt", "scripts/deps.sh", "scripts/build.sh", "src/main.c",
                  "include/ctxd/version.h", "tests/CMakeLists.txt", "docker/Dockerfile"]
        for path in needed:
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            hit = [p for p in patterns for pre in prefixes
                   if fnmatch.fnmatch(pre, p) and not p.startswith("!")]
            self.assertEqual(hit, [], "%s is excluded by .dockerignore" % path)


class SettingsTest(unittest.TestCase):
    def test_every_setting_named_is_one_ctxd_knows(self):
        help_text = ctxd_help()
        for name in ("docker-compose.yml", "docker/Dockerfile", "README.md",
                     "scripts/cluster.sh"):
            used = set(re.findall(r"\bCTXD_[A-Z0-9_]+", read(*name.split("/")))) - NOT_SETTINGS
            unknown = sorted(v for v in used if not re.search(r"\b%s\b" % v, help_text))
            self.assertEqual(unknown, [], "%s names settings ctxd --help does not list" % name)
        for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
            self.assertIn(key, help_text)


class HaproxyConfigTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_tool("haproxy", "scripts/deps.sh test installs it")
        cls.docker_cfg = read("docker", "haproxy.cfg")
        cls.tmp = tempfile.mkdtemp(prefix="ctxd-haproxy-")
        r = subprocess.run([os.path.join(SRC, "scripts", "cluster.sh"), "config", "3"],
                           capture_output=True, text=True, timeout=30,
                           env=clean_env(CLUSTER_DIR=cls.tmp))
        if r.returncode != 0:
            raise AssertionError("cluster.sh config failed: %s" % r.stderr)
        cls.cluster_cfg = r.stdout
        cls.cluster_path = os.path.join(cls.tmp, "haproxy.cfg")
        with open(cls.cluster_path, "w") as f:
            f.write(cls.cluster_cfg)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check(self, path):
        r = subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_docker_config_is_valid(self):
        self.check(os.path.join(SRC, "docker", "haproxy.cfg"))

    def test_cluster_config_is_valid(self):
        self.check(self.cluster_path)

    def test_docker_config_finds_replicas_through_docker_dns(self):
        d = haproxy_directives(self.docker_cfg)
        self.assertIn("nameserver dns1 127.0.0.11:53", d)
        tmpl = [x for x in d if x.startswith("server-template ")]
        self.assertEqual(len(tmpl), 1, tmpl)
        words = tmpl[0].split()
        self.assertEqual(words[1], "ctxd-")
        self.assertGreaterEqual(int(words[2]), 3)
        self.assertEqual(words[3], "ctxd:%d" % PORT)
        for opt in ("check", "resolvers docker", "init-addr none"):
            self.assertIn(" %s" % opt, tmpl[0])
        self.assertIn("bind :%d" % PORT, d)

    def test_checks_readyz_and_retries_elsewhere(self):
        for cfg in (self.docker_cfg, self.cluster_cfg):
            d = haproxy_directives(cfg)
            self.assertIn("option httpchk GET /readyz", d)
            self.assertIn("option redispatch 1", d)
            self.assertIn("retry-on conn-failure empty-response", d)

    def test_timeouts_outlast_a_model_call(self):
        help_text = ctxd_help()
        budget = (int(help_default(help_text, "CTXD_UPSTREAM_DEADLINE_MS"))
                  + int(help_default(help_text, "CTXD_LOCK_WAIT_MS"))) / 1000
        for cfg in (self.docker_cfg, self.cluster_cfg):
            t = dict(x.split()[1:3] for x in haproxy_directives(cfg) if x.startswith("timeout "))
            self.assertGreater(seconds(t["server"]), budget)
            self.assertGreater(seconds(t["client"]), budget)

    def test_cluster_config_is_the_docker_one_on_loopback(self):
        """Same directives but for the lines cluster.sh rewrites."""
        def common(cfg):
            d = haproxy_directives(cfg)
            out, skip = [], False
            for x in d:
                if x.startswith("resolvers "):
                    skip = True
                    continue
                if skip and x.split()[0] in ("global", "defaults", "frontend",
                                             "backend", "listen"):
                    skip = False
                if skip or x.split()[0] in ("bind", "server", "server-template") \
                        or x.startswith("stats socket"):
                    continue
                out.append(x)
            return out
        self.assertEqual(common(self.cluster_cfg), common(self.docker_cfg))
        d = haproxy_directives(self.cluster_cfg)
        self.assertIn("bind 127.0.0.1:%d" % PORT, d)
        self.assertEqual([x for x in d if x.startswith("server ")],
                         ["server ctxd-%d 127.0.0.1:%d check" % (i, 61910 + i)
                          for i in (1, 2, 3)])
        self.assertFalse([x for x in d if "resolvers" in x or "127.0.0.11" in x])


class ReadmeTest(unittest.TestCase):
    def test_documents_the_commands(self):
        text = read("README.md")
        for s in ("docker-compose up", "--scale ctxd=5", "scripts/cluster.sh up",
                  "scripts/cluster.sh down", "scripts/cluster.sh status",
                  "127.0.0.1:%d" % PORT, "/readyz", "/healthz"):
            self.assertIn(s, text)


if __name__ == "__main__":
    harness.main()
