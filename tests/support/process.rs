//! Local processes a test starts: ones that live as long as the test binary, free ports
//! for them, and blocking probes of what they serve (no runtime needed).

use std::process::Command;
use std::time::{Duration, Instant};

/// Start a process that lives as long as this test process: it is spawned from a thread
/// that never ends, with PR_SET_PDEATHSIG, so the kernel kills it when we exit (shared
/// statics are never dropped). Returns its pid.
pub fn spawn_for_life(mut cmd: Command) -> u32 {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn process");
        tx.send(child.id()).expect("send pid");
        let _ = child.wait();
        // Keep this thread (the child's parent) alive until the process exits.
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("pid")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A blocking GET that answers whether `url` (plain http) returned 200.
pub fn http_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// Wait (blocking) until `url` answers 200, or fail the test after `deadline`; returns
/// how long it took.
pub fn wait_http_ok(url: &str, deadline: Duration) -> Duration {
    let start = Instant::now();
    while !http_ok(url) {
        assert!(
            start.elapsed() < deadline,
            "{url} did not answer 200 within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}
