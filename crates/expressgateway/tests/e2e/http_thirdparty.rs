//! Third-party peers: curl as the client (HTTP/1.1, HTTP/2 over TLS, h2c
//! prior knowledge) and a Python HTTP server as the backend.

use std::process::{Child, Command, Stdio};

use crate::support::http::HttpBackend;
use crate::support::tls::cert;
use crate::support::*;

/// Run curl with `args`; returns (http version, status, body).
fn curl(args: Vec<String>) -> (String, u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(&args)
        .output()
        .expect("curl is required for this test (Debian package `curl`)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, meta) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut it = meta.split_whitespace();
    let version = it.next().unwrap_or_default().to_owned();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (version, status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_every_front_protocol() {
    let backend = HttpBackend::start("c").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"{b}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1s\"\n[listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n[[listeners.backends]]\naddress = \"{b}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
        b = backend.addr
    );
    let gw = Gateway::start_in(dir, &config);
    let (h1, h1s) = (gw.addr(0), gw.addr(1));
    let ca = c.cert_path.display().to_string();
    let resolve = format!("localhost:{}:127.0.0.1", h1s.port());
    let tls_url = format!("https://localhost:{}/tls", h1s.port());
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["--http1.1".into(), format!("http://{h1}/one")],
            "1.1",
            "backend c /one\n",
        ),
        (
            vec!["--http2-prior-knowledge".into(), format!("http://{h1}/two")],
            "2",
            "backend c /two\n",
        ),
        (
            vec![
                "--http2".into(),
                "--cacert".into(),
                ca.clone(),
                "--resolve".into(),
                resolve.clone(),
                tls_url.clone(),
            ],
            "2",
            "backend c /tls\n",
        ),
        (
            vec![
                "--http1.1".into(),
                "--cacert".into(),
                ca,
                "--resolve".into(),
                resolve,
                tls_url,
            ],
            "1.1",
            "backend c /tls\n",
        ),
    ];
    for (args, version, body) in cases {
        let out = tokio::task::spawn_blocking(move || curl(args))
            .await
            .expect("join");
        assert_eq!(
            (out.0.as_str(), out.1, out.2.as_str()),
            (version, 200, body)
        );
    }
}

/// A Python (CPython http.server) backend: GET answers, POST echoes.
struct PythonBackend {
    child: Child,
    port: u16,
}

const PY_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body = ("python saw " + self.path + " host=" + self.headers.get("Host", "") +
                " xff=" + self.headers.get("X-Forwarded-For", "")).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0")); data = self.rfile.read(n)
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl PythonBackend {
    fn start() -> Self {
        let mut child = Command::new("python3")
            .args(["-c", PY_SERVER])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is required for this test");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("port line");
        let port = line.trim().parse().expect("port");
        Self { child, port }
    }
}

impl Drop for PythonBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_backend_behind_h1_and_h2c_fronts() {
    let py = PythonBackend::start();
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"127.0.0.1:{}\"\n",
        py.port
    );
    let gw = Gateway::start(&config);
    let url = format!("http://{}/py?x=1", gw.addr(0));
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let args = vec![
            proto.to_owned(),
            "-H".into(),
            "Host: app.example".into(),
            url.clone(),
        ];
        let (_, status, body) = tokio::task::spawn_blocking(move || curl(args))
            .await
            .expect("join");
        assert_eq!(status, 200);
        assert_eq!(body, "python saw /py?x=1 host=app.example xff=127.0.0.1");
    }
    // A 1 MiB POST through to Python and back.
    let data: String = "0123456789abcdef".repeat(65_536);
    let path = scratch();
    let file = path.path().join("upload.bin");
    std::fs::write(&file, &data).expect("write");
    let at = format!("@{}", file.display());
    let url = format!("http://{}/upload", gw.addr(0));
    let args = vec![
        "--http2-prior-knowledge".to_owned(),
        "--data-binary".into(),
        at,
        url,
    ];
    let (_, status, body) = tokio::task::spawn_blocking(move || curl(args))
        .await
        .expect("join");
    assert_eq!(status, 200);
    assert_eq!(body.len(), data.len());
    assert!(body == data, "echoed body differs");
}
