//! Starting the real `logd` binary on a free port and waiting until it answers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Option<Child>,
    pub base: String,
    pub addr: String,
    pub data: PathBuf,
}

impl Server {
    /// Starts `logd` on a free loopback port with its data in `data`.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        Self::start_at(data, &addr, extra)
    }

    pub fn start_at(data: &Path, addr: &str, extra: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_logd"))
            .args(["--listen", addr, "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            // LOGD_TEST_LOG=1 shows the servers' logs.
            .stderr(if std::env::var_os("LOGD_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start logd");
        let mut s = Self {
            child: Some(child),
            base: format!("http://{addr}"),
            addr: addr.to_owned(),
            data: data.to_path_buf(),
        };
        s.wait_ready();
        s
    }

    /// Waits until this `logd` answers HTTP on its address. A TCP connection alone is not
    /// proof: under load (two tests starting servers at once) one was accepted on the port
    /// before this `logd` listened there, and the test's first request was then refused (about
    /// 1 run in 20 of `tests/api.rs`, with the server found listening moments later).
    fn wait_ready(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("logd exited before it answered on {}: {status}", self.addr);
                }
            }
            if self.answers_http() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("logd did not answer on {} within 30 s", self.addr);
    }

    /// Whether an HTTP request to the server gets an HTTP response (any status: a clustered
    /// node without a leader yet answers too).
    fn answers_http(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut conn) = std::net::TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if conn.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 ")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < until,
                "logd did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
