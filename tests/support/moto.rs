//! A real S3 server for tests: moto's server, started as a process on 127.0.0.1 and stopped
//! when dropped. `scripts/test` installs it into `.venv`; `STRATA_MOTO_SERVER` may point
//! elsewhere. Without it these tests fail rather than skip: they are the S3 tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

fn server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATA_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
}

impl Moto {
    pub fn start() -> Moto {
        let path = server_path();
        assert!(
            path.exists(),
            "no moto server at {} (run scripts/test, which installs it, or set STRATA_MOTO_SERVER)",
            path.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// Creates a bucket (moto accepts an unsigned CreateBucket).
    pub fn create_bucket(&self, name: &str) {
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let request = format!("PUT /{name} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "CreateBucket {name}: {response}"
        );
    }

    /// Static credentials for the AWS chain (moto accepts any).
    pub fn set_credentials() {
        // Set once, before any AWS client reads them; every test uses the same values.
        std::env::set_var("AWS_ACCESS_KEY_ID", "strata-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "strata-test-secret");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
