//! A Redis client for exactly what the counters need: `INCRBY` and `EXPIRE`, pipelined, over a
//! few connections, each call bounded by a timeout.
//!
//! Why not the `redis` crate: two commands do not justify its dependency tree (URL parsing
//! with IDNA tables among it), and what matters here is the failure behaviour, which is this
//! module's: a call never waits longer than its timeout (connecting included); a connection
//! that failed or timed out mid-reply is dropped, never reused, and the next call on that slot
//! connects afresh, so traffic recovers by itself when Redis is back.
//!
//! `redis://[[user]:password@]host[:port][/db]`; `rediss://` (TLS) is refused at start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::store::Bump;

/// Connections per client: calls spread over them round robin.
const CONNECTIONS: usize = 4;
/// The longest reply line read (Redis's integer and error replies are short).
const MAX_LINE: usize = 64 * 1024;

/// Where Redis is and how to log in. Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `host:port`.
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: Option<u32>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

impl RedisConfig {
    pub fn parse(url: &str) -> Result<RedisConfig, String> {
        let rest = match url.split_once("://") {
            Some(("redis", rest)) => rest,
            Some(("rediss", _)) => {
                return Err("rediss:// (TLS to Redis) is not supported; use redis://".into());
            }
            // Not echoed: the URL may hold a password.
            _ => return Err("the Redis URL must start with redis://".into()),
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (host_port, db) = match rest.split_once('/') {
            Some((hp, "")) => (hp, None),
            Some((hp, db)) => (
                hp,
                Some(db.parse::<u32>().map_err(|_| format!("database {db:?} is not a number"))?),
            ),
            None => (rest, None),
        };
        if host_port.is_empty() {
            return Err("the Redis URL has no host".into());
        }
        let addr = if host_port.starts_with('[') {
            match host_port.rsplit_once("]:") {
                Some(_) => host_port.to_string(),
                None => format!("{host_port}:6379"),
            }
        } else if host_port.contains(':') {
            host_port.to_string()
        } else {
            format!("{host_port}:6379")
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(auth) => match auth.split_once(':') {
                Some((user, password)) => {
                    ((!user.is_empty()).then(|| user.to_string()), Some(password.to_string()))
                }
                None => (Some(auth.to_string()), None),
            },
        };
        Ok(RedisConfig { addr, username, password, db })
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("Redis at {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("Redis at {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("Redis at {addr} answered: {message}")]
    Reply { addr: String, message: String },
}

/// Counters in Redis.
pub struct Redis {
    config: RedisConfig,
    timeout: Duration,
    slots: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

impl Redis {
    /// Connects lazily, on the first call.
    pub fn new(config: RedisConfig, timeout: Duration) -> Redis {
        let slots = (0..CONNECTIONS).map(|_| Mutex::new(None)).collect();
        Redis { config, timeout, slots, next: AtomicUsize::new(0) }
    }

    pub fn addr(&self) -> &str {
        &self.config.addr
    }

    /// `INCRBY key hits` then `EXPIRE key ttl` for each bump, in one round trip; the counts
    /// after each increment.
    pub async fn incr(&self, items: &[Bump]) -> Result<Vec<u64>, RedisError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let call = async {
            let mut guard = slot.lock().await;
            // Taken out while in use: if the timeout drops this future mid-reply, the
            // connection goes with it instead of being reused half-read.
            let mut conn = match guard.take() {
                Some(conn) => conn,
                None => Connection::open(&self.config).await.map_err(|e| self.io(e))?,
            };
            let counts = conn.incr(items).await.map_err(|e| match e {
                Failure::Io(e) => self.io(e),
                Failure::Reply(message) => {
                    RedisError::Reply { addr: self.config.addr.clone(), message }
                }
            })?;
            *guard = Some(conn);
            Ok(counts)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => {
                Err(RedisError::Timeout { addr: self.config.addr.clone(), timeout: self.timeout })
            }
        }
    }

    fn io(&self, source: std::io::Error) -> RedisError {
        RedisError::Io { addr: self.config.addr.clone(), source }
    }
}

enum Failure {
    Io(std::io::Error),
    /// An error reply, or a reply of the wrong type.
    Reply(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    async fn open(config: &RedisConfig) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(&config.addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Connection { stream: BufReader::new(stream) };
        let mut hello = Vec::new();
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                command(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()])
            }
            (None, Some(password)) => command(&mut hello, &[b"AUTH", password.as_bytes()]),
            _ => {}
        }
        if let Some(db) = config.db {
            command(&mut hello, &[b"SELECT", db.to_string().as_bytes()]);
        }
        if !hello.is_empty() {
            let replies = usize::from(config.password.is_some()) + usize::from(config.db.is_some());
            conn.stream.get_mut().write_all(&hello).await?;
            for _ in 0..replies {
                match conn.reply().await {
                    Ok(Reply::Simple(_)) => {}
                    Ok(Reply::Integer(_)) | Err(Failure::Reply(_)) | Err(Failure::Io(_)) => {
                        return Err(std::io::Error::other("Redis refused AUTH or SELECT"));
                    }
                }
            }
        }
        Ok(conn)
    }

    async fn incr(&mut self, items: &[Bump]) -> Result<Vec<u64>, Failure> {
        let mut out = Vec::with_capacity(items.len() * 64);
        for b in items {
            command(&mut out, &[b"INCRBY", b.key.as_bytes(), b.hits.to_string().as_bytes()]);
            command(&mut out, &[b"EXPIRE", b.key.as_bytes(), b.ttl_seconds.to_string().as_bytes()]);
        }
        self.stream.get_mut().write_all(&out).await?;
        // On any error the caller drops the connection, so an unread reply never matters.
        let mut counts = Vec::with_capacity(items.len());
        for _ in items {
            match self.reply().await? {
                Reply::Integer(n) => counts.push(u64::try_from(n).unwrap_or(0)),
                Reply::Simple(s) => return Err(Failure::Reply(format!("INCRBY answered {s:?}"))),
            }
            self.reply().await?;
        }
        Ok(counts)
    }

    /// One reply: an integer or a simple string; an error reply is a [`Failure::Reply`].
    async fn reply(&mut self) -> Result<Reply, Failure> {
        let mut line = Vec::with_capacity(16);
        let n = (&mut self.stream).take(MAX_LINE as u64).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if !line.ends_with(b"\r\n") {
            return Err(Failure::Io(std::io::Error::other("a Redis reply line too long")));
        }
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        match line[0] {
            b':' => text
                .parse()
                .map(Reply::Integer)
                .map_err(|_| Failure::Reply(format!("{text:?} is not an integer"))),
            b'+' => Ok(Reply::Simple(text)),
            b'-' => Err(Failure::Reply(text)),
            other => Err(Failure::Io(std::io::Error::other(format!(
                "unexpected Redis reply type {:?}",
                other as char
            )))),
        }
    }
}

enum Reply {
    Integer(i64),
    Simple(String),
}

/// Appends one command as a RESP array of bulk strings.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_as_redis_clients_read_them() {
        let parse = |url| RedisConfig::parse(url);
        assert_eq!(
            parse("redis://127.0.0.1").unwrap(),
            RedisConfig { addr: "127.0.0.1:6379".into(), username: None, password: None, db: None }
        );
        let full = parse("redis://app:s3cr@t@redis.ns.svc:6380/2").unwrap();
        assert_eq!(full.addr, "redis.ns.svc:6380");
        assert_eq!(full.username.as_deref(), Some("app"));
        assert_eq!(full.password.as_deref(), Some("s3cr@t"));
        assert_eq!(full.db, Some(2));
        let password_only = parse("redis://:pw@[::1]/").unwrap();
        assert_eq!(password_only.addr, "[::1]:6379");
        assert_eq!((password_only.username, password_only.password.as_deref()), (None, Some("pw")));
        for bad in ["127.0.0.1:6379", "http://x", "redis://", "redis://h/x", "rediss://h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_are_resp_arrays() {
        let mut out = Vec::new();
        command(&mut out, &[b"INCRBY", b"k", b"10"]);
        assert_eq!(out, b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$2\r\n10\r\n");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_and_the_next_call_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..2 {
                held.push(listener.accept().await.unwrap().0);
            }
            held
        });
        let config = RedisConfig::parse(&format!("redis://{addr}")).unwrap();
        let redis = Redis {
            slots: vec![Mutex::new(None)],
            ..Redis::new(config, Duration::from_millis(50))
        };
        for _ in 0..2 {
            let bump = Bump { key: "k".into(), hits: 1, ttl_seconds: 60 };
            let err = redis.incr(&[bump]).await.unwrap_err();
            assert!(matches!(err, RedisError::Timeout { .. }), "{err}");
        }
        assert_eq!(accepted.await.unwrap().len(), 2, "a fresh connection for the second call");
    }
}
