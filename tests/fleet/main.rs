//! Issue 11: one token for a fleet, through a real `redis-server` (installed by `.ci/run` from
//! Debian's packages; each test starts its own on a free loopback port, so it can kill, pause
//! and restart it), with real child processes where the behaviour spans processes. Under `CI`
//! a missing `redis-server` fails the tests; elsewhere they are skipped with a message.
//! `CC_FLEET_SERVER=valkey-server` runs the same suite against Valkey (`.ci/run` runs both).

mod logs;
mod servers;
mod worker;

mod adoption;
mod faults;
mod processes;
mod store;
mod variants;
