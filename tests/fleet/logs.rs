//! Every log line of this test binary, at TRACE level, for the tests that check what the logs
//! never hold.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static BUFFER: OnceLock<Buffer> = OnceLock::new();

/// What was logged since [`capture`] was called.
pub struct Captured {
    from: usize,
}

impl Captured {
    pub fn contents(&self) -> String {
        let buffer = BUFFER.get().unwrap().0.lock().unwrap();
        String::from_utf8_lossy(&buffer[self.from.min(buffer.len())..]).into_owned()
    }
}

/// Installs the process-wide TRACE subscriber (once) and starts reading from now.
pub fn capture() -> Captured {
    let buffer = BUFFER.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        buffer
    });
    let from = buffer.0.lock().unwrap().len();
    Captured { from }
}
