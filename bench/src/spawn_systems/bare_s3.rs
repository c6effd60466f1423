//! A bare S3 client for the floor's start from S3 (`vfork-exec`, `cold-start-s3`): one plain
//! HTTP/1.1 request per call on a `std::net::TcpStream`, signed with AWS Signature Version 4
//! (`UNSIGNED-PAYLOAD`, as `curl --aws-sigv4` signs), and a GET's body read 256 KiB at a time
//! straight into a file. No connection pool, no ranged parts, no retries, no digest: the least a
//! client must do to bring an object from S3 into a file, against which sigmad's fetch (ranged
//! parts in flight, written and hashed on its cores) is measured.
//!
//! It speaks to the suite's own S3 server (`sigma_tests::s3`, plain HTTP on 127.0.0.1) only;
//! object keys are the suite's own (`[a-z0-9-]`), so no percent-encoding is needed.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context, Result};
use ring::{digest, hmac};

/// Bytes a GET's body is read at a time.
const READ_BYTES: usize = 256 * 1024;
/// The most bytes of response headers read before giving up.
const HEADERS_MAX: usize = 64 * 1024;

/// Where and as whom: an S3 endpoint `http://HOST:PORT`, its region and keys.
#[derive(Debug, Clone)]
pub struct BareS3 {
    host: String,
    region: String,
    access_key: String,
    secret_key: String,
}

/// A response's status, length and whatever body bytes came with the headers.
struct Head {
    status: u16,
    length: u64,
    body_start: Vec<u8>,
}

impl BareS3 {
    /// A client of `endpoint` (`http://HOST:PORT`).
    pub fn new(endpoint: &str, region: &str, access_key: &str, secret_key: &str) -> Result<BareS3> {
        let Some(host) = endpoint.strip_prefix("http://") else {
            bail!("the bare S3 client speaks plain HTTP only, not {endpoint}");
        };
        Ok(BareS3 {
            host: host.trim_end_matches('/').to_string(),
            region: region.to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
        })
    }

    /// A connection to the endpoint, made ahead of a timed call (as a client with a pooled
    /// connection would have one).
    pub fn connect(&self) -> Result<TcpStream> {
        let s = TcpStream::connect(&self.host).with_context(|| format!("connecting to {}", self.host))?;
        s.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(s)
    }

    /// PUT `body` as `bucket/key`; fails unless the server answers 200.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Result<()> {
        let mut s = self.connect()?;
        self.send(&mut s, "PUT", bucket, key, Some(body.len()))?;
        s.write_all(body).context("sending the PUT's body")?;
        let head = read_head(&mut s)?;
        drain(&mut s, &head)?;
        if head.status != 200 {
            bail!("PUT {bucket}/{key}: HTTP {}", head.status);
        }
        Ok(())
    }

    /// DELETE `bucket/key`; fails unless the server answers 2xx.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let mut s = self.connect()?;
        self.send(&mut s, "DELETE", bucket, key, None)?;
        let head = read_head(&mut s)?;
        drain(&mut s, &head)?;
        if !(200..300).contains(&head.status) {
            bail!("DELETE {bucket}/{key}: HTTP {}", head.status);
        }
        Ok(())
    }

    /// GET `bucket/key` on `conn` into `file` (written from its start); the bytes written.
    pub fn get_into(&self, mut conn: TcpStream, bucket: &str, key: &str, file: &mut std::fs::File) -> Result<u64> {
        self.send(&mut conn, "GET", bucket, key, None)?;
        let head = read_head(&mut conn)?;
        if head.status != 200 {
            bail!("GET {bucket}/{key}: HTTP {}", head.status);
        }
        let mut done = head.body_start.len() as u64;
        if done > head.length {
            bail!("GET {bucket}/{key}: more body than its Content-Length {}", head.length);
        }
        file.write_all(&head.body_start).context("writing the object")?;
        let mut buf = vec![0u8; READ_BYTES];
        while done < head.length {
            let want = (head.length - done).min(READ_BYTES as u64) as usize;
            let n = conn.read(&mut buf[..want]).context("reading the object")?;
            if n == 0 {
                bail!(
                    "GET {bucket}/{key}: the connection closed after {done} of {} bytes",
                    head.length
                );
            }
            file.write_all(&buf[..n]).context("writing the object")?;
            done += n as u64;
        }
        Ok(done)
    }

    /// Sends a signed request's line and headers (a body, if any, is the caller's to send).
    fn send(&self, s: &mut TcpStream, method: &str, bucket: &str, key: &str, body_len: Option<usize>) -> Result<()> {
        let path = format!("/{bucket}/{key}");
        let (date, time) = amz_now();
        let amz_date = format!("{date}T{time}Z");
        let canonical = format!(
            "{method}\n{path}\n\nhost:{}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD",
            self.host
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let mut k = format!("AWS4{}", self.secret_key).into_bytes();
        for part in [date.as_str(), self.region.as_str(), "s3", "aws4_request"] {
            k = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), part.as_bytes())
                .as_ref()
                .to_vec();
        }
        let signature = hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), to_sign.as_bytes()).as_ref());
        let length = body_len.map_or(String::new(), |n| format!("content-length: {n}\r\n"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: {amz_date}\r\nauthorization: AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}\r\n{length}\r\n",
            self.host, self.access_key
        );
        s.write_all(request.as_bytes())
            .with_context(|| format!("sending {method} {path}"))
    }
}

/// Reads a response's status line and headers; the body bytes that came with them are kept.
fn read_head(s: &mut TcpStream) -> Result<Head> {
    let mut got = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if got.len() > HEADERS_MAX {
            bail!("a response's headers past {HEADERS_MAX} bytes");
        }
        let n = s.read(&mut buf).context("reading a response")?;
        if n == 0 {
            bail!("the connection closed before a response's headers ended");
        }
        got.extend_from_slice(&buf[..n]);
    };
    let text = std::str::from_utf8(&got[..end]).context("response headers not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("a response's status line: {status_line:?}"))?;
    let mut length = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value
                    .trim()
                    .parse()
                    .with_context(|| format!("Content-Length {value:?}"))?;
            }
            if name.trim().eq_ignore_ascii_case("transfer-encoding") {
                bail!("a chunked response: the bare client reads Content-Length bodies only");
            }
        }
    }
    Ok(Head {
        status,
        length,
        body_start: got[end + 4..].to_vec(),
    })
}

/// Reads and drops the rest of a (small) response body.
fn drain(s: &mut TcpStream, head: &Head) -> Result<()> {
    let mut left = head.length.saturating_sub(head.body_start.len() as u64);
    let mut buf = [0u8; 4096];
    while left > 0 {
        let n = s
            .read(&mut buf[..left.min(4096) as usize])
            .context("reading a response body")?;
        if n == 0 {
            bail!("the connection closed inside a response body");
        }
        left -= n as u64;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now in UTC as SigV4 wants it: (`YYYYMMDD`, `HHMMSS`).
fn amz_now() -> (String, String) {
    let t = crate::report::Utc::now();
    (
        format!("{:04}{:02}{:02}", t.year, t.month, t.day),
        format!("{:02}{:02}{:02}", t.hour, t.minute, t.second),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        use crate::report::Utc;
        let day = |secs| {
            let t = Utc::from_unix(secs);
            (t.year, t.month, t.day, t.hour, t.minute, t.second)
        };
        assert_eq!(day(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(day(11_016 * 86_400 + 3_661), (2000, 2, 29, 1, 1, 1));
        assert_eq!(day(20_420 * 86_400 + 86_399), (2025, 11, 28, 23, 59, 59));
        assert_eq!(day(-1), (1969, 12, 31, 23, 59, 59));
    }

    /// Against the suite's own S3 server: a PUT, a GET of the same bytes into a file, a DELETE,
    /// then a GET of what is gone fails; a wrong secret is refused.
    #[test]
    fn put_get_delete_against_the_test_server() {
        use sigma_tests::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};
        let server = S3Server::start_or_panic(&["bare-s3-test"]);
        let c = BareS3::new(&server.endpoint, REGION, ACCESS_KEY, SECRET_KEY).unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        c.put("bare-s3-test", "obj-1", &body).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("got");
        let mut f = std::fs::File::create(&path).unwrap();
        let n = c
            .get_into(c.connect().unwrap(), "bare-s3-test", "obj-1", &mut f)
            .unwrap();
        drop(f);
        assert_eq!(n, body.len() as u64);
        assert!(std::fs::read(&path).unwrap() == body, "the object came back changed");
        c.delete("bare-s3-test", "obj-1").unwrap();
        let mut f = std::fs::File::create(&path).unwrap();
        let gone = c.get_into(c.connect().unwrap(), "bare-s3-test", "obj-1", &mut f);
        assert!(gone.is_err(), "a deleted object was served");
        let wrong = BareS3::new(&server.endpoint, REGION, ACCESS_KEY, "not-the-secret").unwrap();
        assert!(
            wrong.put("bare-s3-test", "obj-2", b"x").is_err(),
            "a bad signature was accepted"
        );
    }
}
