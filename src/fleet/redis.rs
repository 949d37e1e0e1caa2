//! [`RedisStore`]: the [`TokenStore`] on Redis or Valkey (standalone or Cluster, plain or TLS,
//! default or ACL user), with one Lua script per operation that must be atomic.
//!
//! Layout, all in one hash slot (the `{...}` hash tag of [`StoreKey`]):
//!
//! | key | type | contents |
//! |---|---|---|
//! | `{cc:..}:token` | hash, `PEXPIRE` = the token's remaining lifetime | `id` (random), `v` (the encrypted value), `acc` (`1` once the API accepted it) |
//! | `{cc:..}:lock` | string, `PX` = the lock's time to live | the holder's id |
//! | `{cc:..}:limit` | hash, expires after an hour | `strikes` (evictions since the API last accepted a token), `last` (when the last eviction ran, the server's time in ms) |

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, IntoConnectionInfo, Script};

use super::store::{Eviction, ForcedBackoff, StoreError, StoreKey, StoredToken, TokenStore};
use crate::{BoxFuture, ConfigError};

/// How long the store's own connection attempts may take (each call is bounded by the fleet's
/// operation timeout as well).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the limiter's state outlives the last eviction.
const LIMIT_TTL_MS: u64 = 3_600_000;

/// `KEYS[1]` lock; `ARGV[1]` holder. Deletes the lock only if the holder still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// `KEYS[1]` token, `KEYS[2]` lock; `ARGV` holder (`''`: only if no token is stored), id,
/// value, time to live in ms. Returns 1 when stored.
const SAVE: &str = r"
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'v', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// `KEYS[1]` token, `KEYS[2]` limit; `ARGV` id, backoff base ms, backoff max ms, limit ttl ms.
/// Returns `{1, 0}` evicted, `{0, 0}` not the stored token, `{2, ms}` limited for `ms`.
const EVICT: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' or redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then
  return {0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local strikes = 0
local last = 0
if redis.call('TYPE', KEYS[2]).ok == 'hash' then
  strikes = tonumber(redis.call('HGET', KEYS[2], 'strikes') or '0') or 0
  last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0') or 0
end
if redis.call('HGET', KEYS[1], 'acc') == '1' then
  strikes = 0
elseif strikes > 0 then
  local wait = math.min(tonumber(ARGV[2]) * 2 ^ math.min(strikes - 1, 20), tonumber(ARGV[3]))
  if now < last + wait then
    return {2, last + wait - now}
  end
end
strikes = strikes + 1
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'strikes', strikes, 'last', now)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {1, 0}
";

/// `KEYS[1]` token; `ARGV[1]` id. Marks the token accepted if it is still the stored one.
const ACCEPTED: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'hash' and redis.call('HGET', KEYS[1], 'id') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'acc', '1')
end
return 1
";

/// `KEYS[1]` token. Returns `{id, value, pttl}`, or `{}` when no token of the right type is
/// stored (a value of another type counts as none: `save` replaces it).
const LOAD: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return {} end
local v = redis.call('HMGET', KEYS[1], 'id', 'v')
return {v[1], v[2], redis.call('PTTL', KEYS[1])}
";

/// The scripts, hashed once.
struct Scripts {
    load: Script,
    unlock: Script,
    save: Script,
    evict: Script,
    accepted: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            load: Script::new(LOAD),
            unlock: Script::new(UNLOCK),
            save: Script::new(SAVE),
            evict: Script::new(EVICT),
            accepted: Script::new(ACCEPTED),
        }
    }
}

/// Boxed: the two differ much in size, and a store holds one.
enum Target {
    Single(Box<Client>),
    Cluster(Box<ClusterClient>),
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A script or a command.
enum Op<'a> {
    Script(&'a redis::ScriptInvocation<'a>),
    Command(&'a redis::Cmd),
}

impl Connection {
    async fn exec<T: redis::FromRedisValue>(&mut self, op: Op<'_>) -> redis::RedisResult<T> {
        match (self, op) {
            (Connection::Single(c), Op::Script(s)) => s.invoke_async(c).await,
            (Connection::Cluster(c), Op::Script(s)) => s.invoke_async(c).await,
            (Connection::Single(c), Op::Command(cmd)) => cmd.query_async(c).await,
            (Connection::Cluster(c), Op::Command(cmd)) => cmd.query_async(c).await,
        }
    }
}

/// Drops the store's connection unless disarmed: a call that failed for another reason than
/// the server's answer (a dropped or refused connection), or that was cancelled (the fleet's
/// operation timeout), leaves a connection that may be dead, so the next call makes a new one.
struct ResetUnlessDisarmed<'a> {
    store: &'a RedisStore,
    armed: bool,
}

impl Drop for ResetUnlessDisarmed<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.connection.store(None);
        }
    }
}

/// The Redis / Valkey [`TokenStore`] (the `redis` feature).
///
/// Works with a standalone server (`redis://host:6379/0`), TLS (`rediss://`), an ACL user
/// (`redis://user:password@host`), and Redis Cluster ([`RedisStore::cluster`]); every key of
/// one token is in one hash slot. Needs Redis 6.2 or Valkey 7.2 or later, `EVAL`/`EVALSHA`
/// and the commands the scripts call (`GET`, `SET`, `DEL`, `EXISTS`, `TYPE`, `HGET`, `HMGET`,
/// `HSET`, `PTTL`, `PEXPIRE`, `TIME`) on the `{cc:*` keys: with an ACL user, for example
/// `+@read +@write +@scripting ~{cc:*`. A user that may not run scripts (`NOPERM`) makes every
/// call fail, so the fleet fetches as if there were no store.
///
/// Never connects when made: the first call does, and a lost connection is made again by the
/// next call.
pub struct RedisStore {
    target: Target,
    name: String,
    connection: ArcSwapOption<Connection>,
    connecting: tokio::sync::Mutex<()>,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.name)
            .finish_non_exhaustive()
    }
}

fn invalid(e: impl std::fmt::Display) -> ConfigError {
    ConfigError::InvalidFleet(format!(
        "invalid Redis URL: {}",
        crate::text::shown(&e.to_string())
    ))
}

impl RedisStore {
    /// A store on the server at `url`. Never connects here.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let info = url.into_connection_info().map_err(invalid)?;
        let name = format!("redis {}", info.addr());
        let client = Client::open(info).map_err(invalid)?;
        Ok(Self::with_target(Target::Single(Box::new(client)), name))
    }

    /// A store on the Redis Cluster reachable at any of `urls` (each `redis://` or
    /// `rediss://`, all with the same credentials). Never connects here.
    pub fn cluster<I, S>(urls: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls: Vec<String> = urls.into_iter().map(|u| u.as_ref().to_owned()).collect();
        let first = urls
            .first()
            .ok_or_else(|| {
                ConfigError::InvalidFleet("a Redis Cluster needs at least one URL".into())
            })?
            .as_str()
            .into_connection_info()
            .map_err(invalid)?;
        let client = ClusterClient::builder(urls)
            .connection_timeout(CONNECT_TIMEOUT)
            .retries(1)
            .build()
            .map_err(invalid)?;
        Ok(Self::with_target(
            Target::Cluster(Box::new(client)),
            format!("redis cluster {}", first.addr()),
        ))
    }

    /// A store on a `redis::Client` you configured (custom TLS roots or client certificates,
    /// RESP3, a Unix socket).
    pub fn from_client(client: Client) -> Self {
        let name = format!("redis {}", client.get_connection_info().addr());
        Self::with_target(Target::Single(Box::new(client)), name)
    }

    /// A store on a `redis::cluster::ClusterClient` you configured.
    pub fn from_cluster_client(client: ClusterClient) -> Self {
        Self::with_target(
            Target::Cluster(Box::new(client)),
            "redis cluster".to_owned(),
        )
    }

    fn with_target(target: Target, name: String) -> Self {
        Self {
            target,
            name,
            connection: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            scripts: Arc::new(Scripts::new()),
        }
    }

    /// How logs name the server: `redis host:port` (never a password).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `op` on the connection (made if there is none).
    async fn exec<T: redis::FromRedisValue>(&self, op: Op<'_>) -> Result<T, StoreError> {
        let mut reset = ResetUnlessDisarmed {
            store: self,
            armed: true,
        };
        let mut connection = self.connection().await?;
        match connection.exec(op).await {
            Ok(value) => {
                reset.armed = false;
                Ok(value)
            }
            Err(error) => {
                // The server answered (a refused command, a script error): the connection is
                // fine.
                if matches!(
                    error.kind(),
                    redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
                ) {
                    reset.armed = false;
                }
                Err(StoreError::new(error))
            }
        }
    }

    async fn connection(&self) -> Result<Connection, StoreError> {
        if let Some(connection) = self.connection.load_full() {
            return Ok((*connection).clone());
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.connection.load_full() {
            return Ok((*connection).clone());
        }
        let connection = match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(100));
                Connection::Single(
                    ConnectionManager::new_lazy_with_config((**client).clone(), config)
                        .map_err(StoreError::new)?,
                )
            }
            Target::Cluster(client) => Connection::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(StoreError::new)?,
            ),
        };
        self.connection.store(Some(Arc::new(connection.clone())));
        Ok(connection)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl TokenStore for RedisStore {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        Box::pin(async move {
            let reply: Vec<redis::Value> = self
                .exec(Op::Script(&self.scripts.load.key(&key.token)))
                .await?;
            if reply.is_empty() {
                return Ok(None);
            }
            let [id, value, ttl] = <[redis::Value; 3]>::try_from(reply).map_err(|r| {
                StoreError::new(format!("unexpected LOAD reply of {} items", r.len()))
            })?;
            let id: Option<String> = redis::from_redis_value(id).map_err(StoreError::new)?;
            let value: Option<Vec<u8>> = redis::from_redis_value(value).map_err(StoreError::new)?;
            let ttl: i64 = redis::from_redis_value(ttl).map_err(StoreError::new)?;
            Ok(match (id, value, u64::try_from(ttl)) {
                (Some(id), Some(value), Ok(ttl)) => Some(StoredToken {
                    id,
                    value,
                    ttl: Duration::from_millis(ttl),
                }),
                // Half a token (fields missing) or no expiry (-1): not ours; replaced.
                (Some(id), _, _) => Some(StoredToken {
                    id,
                    value: Vec::new(),
                    ttl: Duration::ZERO,
                }),
                _ => None,
            })
        })
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key.lock)
                .arg(holder)
                .arg("NX")
                .arg("PX")
                .arg(ms(ttl));
            let reply: Option<String> = self.exec(Op::Command(&cmd)).await?;
            Ok(reply.is_some())
        })
    }

    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let _: i64 = self
                .exec(Op::Script(self.scripts.unlock.key(&key.lock).arg(holder)))
                .await?;
            Ok(())
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
        holder: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut invocation = self.scripts.save.key(&key.token);
            invocation
                .key(&key.lock)
                .arg(holder.unwrap_or(""))
                .arg(&token.id)
                .arg(&token.value[..])
                .arg(ms(token.ttl));
            let saved: i64 = self.exec(Op::Script(&invocation)).await?;
            Ok(saved == 1)
        })
    }

    fn evict<'a>(
        &'a self,
        key: &'a StoreKey,
        id: &'a str,
        backoff: ForcedBackoff,
    ) -> BoxFuture<'a, Result<Eviction, StoreError>> {
        Box::pin(async move {
            let mut invocation = self.scripts.evict.key(&key.token);
            invocation
                .key(&key.limit)
                .arg(id)
                .arg(ms(backoff.base))
                .arg(ms(backoff.max))
                .arg(LIMIT_TTL_MS);
            let (outcome, wait): (i64, i64) = self.exec(Op::Script(&invocation)).await?;
            Ok(match outcome {
                1 => Eviction::Evicted,
                2 => Eviction::Limited(Duration::from_millis(u64::try_from(wait).unwrap_or(0))),
                _ => Eviction::NotCurrent,
            })
        })
    }

    fn accepted<'a>(
        &'a self,
        key: &'a StoreKey,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let _: i64 = self
                .exec(Op::Script(self.scripts.accepted.key(&key.token).arg(id)))
                .await?;
            Ok(())
        })
    }
}
