//! Plain HTTP GETs of the endpoints `orrery` serves (metrics, live view),
//! and the address an `orrery` line prints.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET http://addr/path` over a plain socket: the status line, the head and the body.
pub fn http_get(addr: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_string(), body.to_string())
}

/// `host:port` of the URL an `orrery` line prints (`live view: http://127.0.0.1:4780/`).
pub fn addr_in(line: &str) -> String {
    let start = line.find("http://").expect("a URL on the line") + "http://".len();
    line[start..]
        .split(['/', ' '])
        .next()
        .expect("host:port after http://")
        .to_string()
}
