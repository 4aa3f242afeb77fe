//! A small HTTP/1.1 client over the daemon's unix socket, for the CLI.

use std::path::PathBuf;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::ErrorBody;

pub struct Client {
    socket: PathBuf,
}

/// A non-2xx answer: the daemon's message, shown to the user as is.
#[derive(Debug, thiserror::Error)]
#[error("Error response from daemon: {message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    /// The daemon socket this client talks to.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// PID of the daemon behind the socket (SO_PEERCRED).
    pub async fn daemon_pid(&self) -> anyhow::Result<u32> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("cannot reach the dataplane daemon at {}", self.socket.display()))?;
        let cred = stream.peer_cred()?;
        cred.pid().and_then(|p| u32::try_from(p).ok()).context("the socket did not tell the daemon's pid")
    }

    /// Sends a request; returns the status and the body.
    pub async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<(u16, Bytes)> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "cannot reach the dataplane daemon at {} (is it running? set --socket or DATAPLANE_SOCKET)",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "dataplane")
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        // A daemon that dies mid-request (kill -9, a crash) leaves a change
        // it may or may not have committed: say so rather than guess.
        let gone = || {
            if method == "GET" {
                format!(
                    "the dataplane daemon closed the connection before answering {method} {path} (did it stop?)"
                )
            } else {
                format!(
                    "the dataplane daemon closed the connection before answering {method} {path} (did it stop?): \
                     the change may or may not have been made; check (e.g. `dataplane ps -a`) once the daemon is back"
                )
            }
        };
        let resp = sender.send_request(req).await.with_context(gone)?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.with_context(gone)?.to_bytes();
        Ok((status, bytes))
    }

    /// GET whose answer is a stream: calls `started` once the daemon has
    /// answered, then `each` with every complete line until the daemon ends
    /// it (or `each` returns false).
    pub async fn get_lines(
        &self,
        path: &str,
        started: impl FnOnce(),
        mut each: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<()> {
        let mut pending = Vec::new();
        self.get_stream(path, started, |data| {
            pending.extend_from_slice(data);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                if !each(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref()) {
                    return false;
                }
            }
            true
        })
        .await
    }

    /// GET whose answer is a stream of bytes: `each` gets every piece as it
    /// comes, until the daemon ends the answer (or `each` returns false).
    pub async fn get_stream(
        &self,
        path: &str,
        started: impl FnOnce(),
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> anyhow::Result<()> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("cannot reach the dataplane daemon at {}", self.socket.display()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("Host", "dataplane")
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if !(200..300).contains(&status) {
            let bytes = body.collect().await?.to_bytes();
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!(ApiError { status, message });
        }
        started();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            if !each(&data) {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Bytes> {
        let (status, bytes) = self.raw(method, path, body).await?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!(ApiError { status, message });
        }
        Ok(bytes)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let b = self.call("GET", path, None).await?;
        serde_json::from_slice(&b).with_context(|| format!("decoding the answer to GET {path}"))
    }

    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(&self.call("GET", path, None).await?).into_owned())
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let b = self.call("POST", path, Some(serde_json::to_vec(body)?)).await?;
        if b.is_empty() {
            return serde_json::from_slice(b"null").context("empty answer");
        }
        serde_json::from_slice(&b).with_context(|| format!("decoding the answer to POST {path}"))
    }

    pub async fn post_empty(&self, path: &str) -> anyhow::Result<()> {
        self.call("POST", path, Some(b"{}".to_vec())).await.map(|_| ())
    }

    /// DELETE; returns the warnings the daemon sent (none when all went).
    pub async fn delete(&self, path: &str) -> anyhow::Result<Vec<String>> {
        let b = self.call("DELETE", path, None).await?;
        if b.is_empty() {
            return Ok(Vec::new());
        }
        let w: super::wire::Warnings =
            serde_json::from_slice(&b).with_context(|| format!("decoding the answer to DELETE {path}"))?;
        Ok(w.warnings)
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
