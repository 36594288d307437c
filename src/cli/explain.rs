//! `aixds explain`: from manifests compiled here, or from a running aixds's admin server.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::api::ObjectKey;
use crate::compile::{CompileOptions, Compiler};
use crate::source::Location;
use crate::xds::SnapshotStore;

pub fn run(
    object: &ObjectKey,
    paths: Vec<PathBuf>,
    admin: Option<String>,
) -> anyhow::Result<ExitCode> {
    let text = match admin {
        Some(addr) => from_admin(&addr, object)?,
        None => {
            let loaded = super::load(paths)?;
            for warning in super::validate::file_messages(&loaded.source) {
                eprintln!("{warning}");
            }
            // No Envoy is connected, so the snapshot only says what would be produced.
            let store = SnapshotStore::new();
            store.publish(Compiler::new(CompileOptions::default()).full(&loaded.graph));
            let produced = crate::status::produced(&store.load(), &[], &[]);
            let locations: Vec<String> =
                loaded.source.locations(object).iter().map(Location::to_string).collect();
            let mine = produced.get(object).map(Vec::as_slice).unwrap_or_default();
            crate::status::explain(&loaded.graph, object, BTreeMap::new(), mine, &locations)?
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `GET /debug/explain` on a running aixds, over a plain HTTP/1.0 connection (one request does
/// not justify an HTTP client dependency).
fn from_admin(addr: &str, object: &ObjectKey) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)
        .with_context(|| format!("connecting to the aixds admin server at {addr}"))?;
    let query: String = object
        .to_string()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    write!(stream, "GET /debug/explain?object={query} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    anyhow::ensure!(status == "200", "{addr} answered {status}: {}", body.trim());
    Ok(body.to_string())
}
