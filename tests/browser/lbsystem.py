"""tests/browser/lbsystem.py: a whole lb system on 127.0.0.1 for the browser
tests, the screenshots and the metric-name check: three lb-backend processes,
lb-controlplane (admin API on a free TCP port, plain HTTP on loopback, an ro
and an rw token), one lb-dataplane, a light load. Free ports only, every wait
bounded, everything stopped by pid. The temp dir is removed unless the
environment sets LB_KEEP=1."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

BACKENDS = ["web-a", "web-b", "web-c"]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def scaled(seconds):
    """<seconds> scaled as the e2e harness scales its waits: by
    LB_TEST_TIMEOUT_MS / 10000 (default 10000, so 1)."""
    try:
        f = int(os.environ.get("LB_TEST_TIMEOUT_MS", "10000")) // 10000
    except ValueError:
        f = 1
    return seconds * max(1, f)


def wait_for(check, timeout, what, step=0.1):
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(step)
    raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))


class System:
    def __init__(self, build_dir, load=True, tls=False):
        self.build = os.path.abspath(build_dir)
        self.dir = tempfile.mkdtemp(prefix="lb-browser-")
        os.chmod(self.dir, 0o700)
        self.procs = {}  # name -> Popen
        self.codes = {}  # name -> exit status of a daemon stopped by SIGTERM
        self.front = free_port()
        self.metrics = free_port()
        self.admin = free_port()
        self.backend_ports = {b: free_port() for b in BACKENDS}
        self.ro = secrets.token_hex(16)
        self.rw = secrets.token_hex(16)
        self.load_on = load
        # tls: a second frontend with a self-signed certificate and an
        # https:// backend verified by it, so that the TLS metrics have samples
        self.tls = tls
        self.tls_front = free_port() if tls else 0
        self.stop_load = threading.Event()
        self.load_thread = None
        self.load_errors = 0
        self.extra = []  # backends started later by start_extra_backend

    # ---- files -----------------------------------------------------------
    def write_files(self):
        tokens = os.path.join(self.dir, "tokens")
        fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("dashboard-ro %s ro\ndashboard-rw %s rw\n" % (self.ro, self.rw))
        for name, tok in (("ro.token", self.ro), ("rw.token", self.rw)):
            fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(tok + "\n")
        backends = "".join(
            '  - id: "%s"\n    url: "http://127.0.0.1:%d"\n    weight: %d\n' % (b, p, 3 - i)
            for i, (b, p) in enumerate(self.backend_ports.items()))
        tls_front = tls_ssl = ""
        if self.tls:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj",
                            "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", os.path.join(self.dir, "key.pem"),
                            "-out", os.path.join(self.dir, "cert.pem")],
                           check=True, capture_output=True, timeout=30)
            tls_front = ('  - name: "secure"\n    address: "127.0.0.1"\n    port: %d\n'
                         '    tls: true\n' % self.tls_front)
            backends += ('  - id: "tls-api"\n    url: "https://127.0.0.1:%d"\n'
                         '    caFile: "cert.pem"\n' % free_port())
            tls_ssl = 'ssl:\n  certFile: "cert.pem"\n  keyFile: "key.pem"\n'
        config = (
            'frontends:\n  - name: "web"\n    address: "127.0.0.1"\n    port: %d\n' + tls_front +
            "backends:\n%s" + tls_ssl +
            'healthcheck:\n  interval: "500ms"\n  timeout: "400ms"\n  path: "/health"\n'
            '  rise: 2\n  fall: 2\n  type: "http"\n  failOpen: false\n'
            'circuitbreaker:\n  enabled: true\n  threshold: 3\n  timeout: "60s"\n'
            # a backend taken down keeps getting (failing) requests until its
            # checks fail, so its breaker opens; ejection would stop them first
            'ejection:\n  enabled: false\n'
            'retries:\n  enabled: false\n'
            'metrics:\n  enabled: true\n  address: "127.0.0.1"\n  port: %d\n'
            'logging:\n  level: "warn"\n'
        ) % (self.front, backends, self.metrics)
        with open(os.path.join(self.dir, "config.yaml"), "w") as f:
            f.write(config)

    # ---- processes -------------------------------------------------------
    def spawn(self, name, argv):
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.dir)
        log.close()
        return self.procs[name]

    def start_backend(self, b):
        self.spawn(b, [os.path.join(self.build, "lb-backend"), "--port",
                       str(self.backend_ports[b]), "--name", b])
        wait_for(lambda: port_open(self.backend_ports[b]), 10, "backend " + b)

    def start_extra_backend(self, name, *args):
        """Starts one more lb-backend named <name> (extra arguments such as
        "--fail-status", "500") on a free port; returns its URL. It is not in
        the config: a test adds it (a rollout, a backend write)."""
        self.backend_ports[name] = free_port()
        self.spawn(name, [os.path.join(self.build, "lb-backend"), "--port",
                          str(self.backend_ports[name]), "--name", name] + list(args))
        self.extra.append(name)
        wait_for(lambda: port_open(self.backend_ports[name]), 10, "backend " + name)
        return "http://127.0.0.1:%d" % self.backend_ports[name]

    def start_controlplane(self):
        run = os.path.join(self.dir, "run")
        self.spawn("controlplane", [
            os.path.join(self.build, "lb-controlplane"), "--db", os.path.join(self.dir, "lb.db"),
            "--bootstrap", os.path.join(self.dir, "config.yaml"), "--runtime-dir", run,
            "--admin-listen", "127.0.0.1:%d" % self.admin,
            "--admin-tokens", os.path.join(self.dir, "tokens"), "--admin-insecure-http"])
        wait_for(lambda: self.api_status("/health") == 200, 20, "the control plane's admin API")

    def start_dataplane(self):
        state = os.path.join(self.dir, "dpstate")
        os.makedirs(state, mode=0o700, exist_ok=True)
        self.spawn("dataplane", [
            os.path.join(self.build, "lb-dataplane"), "--control",
            "ipc://" + os.path.join(self.dir, "run"), "--state-dir", state,
            "--node-id", "dp-1", "--workers", "1"])
        wait_for(lambda: port_open(self.front), 20, "the data plane's frontend")

    def start(self):
        self.write_files()
        for b in BACKENDS:
            self.start_backend(b)
        self.start_controlplane()
        self.start_dataplane()
        wait_for(lambda: all(b["health"] == "up" for b in self.backends()
                             if b["id"] in BACKENDS), 20, "every backend up")
        if self.load_on:
            self.load_thread = threading.Thread(target=self._load, daemon=True)
            self.load_thread.start()
        return self

    def stop_proc(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if name in ("controlplane", "dataplane") and not self.codes.get(name):
            self.codes[name] = p.returncode  # the first failure is kept

    def restart_controlplane(self):
        self.stop_proc("controlplane")
        self.start_controlplane()

    def stop(self):
        self.stop_load.set()
        if self.load_thread:
            self.load_thread.join(timeout=5)
        for name in ["dataplane", "controlplane"] + BACKENDS + self.extra:
            self.stop_proc(name)
        bad = {n: c for n, c in self.codes.items() if c != 0}
        if os.environ.get("LB_KEEP") != "1" and not bad:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif bad:
            print("lbsystem: %s; logs kept in %s" % (bad, self.dir))
        return self.codes

    def log(self, name):
        try:
            with open(os.path.join(self.dir, name + ".log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # ---- light load: a few requests per second ---------------------------
    def burst(self, n, path="/"):
        """Sends <n> requests for <path> one after another; returns how many
        got a 5xx."""
        bad = 0
        req = ("GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path).encode()
        for _ in range(n):
            try:
                with socket.create_connection(("127.0.0.1", self.front), timeout=2) as s:
                    s.sendall(req)
                    head = s.recv(12)
                    bad += head.startswith(b"HTTP/1.1 5")
            except OSError:
                bad += 1
        return bad

    def _load(self):
        while not self.stop_load.wait(0.05):
            try:
                with socket.create_connection(("127.0.0.1", self.front), timeout=2) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    while s.recv(4096):
                        pass
            except OSError:
                self.load_errors += 1

    # ---- admin API and lbctl ---------------------------------------------
    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.admin

    def api_status(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def api_json(self, path, token=None):
        import json
        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": "Bearer " + (token or self.ro)})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def backends(self):
        return {b["id"]: b for b in self.api_json("/api/v1/backends")["backends"]}.values()

    def backend(self, bid):
        for b in self.api_json("/api/v1/backends")["backends"]:
            if b["id"] == bid:
                return b
        raise KeyError(bid)

    def lbctl(self, *args, rw=True):
        tok = os.path.join(self.dir, "rw.token" if rw else "ro.token")
        out = subprocess.run([os.path.join(self.build, "lbctl"), "--url", self.url,
                              "--token-file", tok, "--timeout", "5"] + list(args),
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError("lbctl %s failed (%d): %s%s" % (" ".join(args), out.returncode,
                                                               out.stdout, out.stderr))
        return out.stdout
