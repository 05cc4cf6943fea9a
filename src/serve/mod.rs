//! `qforget serve`: a long-running request mode for device apps.
//!
//! Why a server as well as the CLI and the C API: a device app that takes "forget my data"
//! requests from its users wants to hand them off and carry on, not to own a training run.
//! The server keeps the state a chain of requests needs (the delta chain, the journal, the
//! samples already forgotten, the served model), runs one request at a time in the order they
//! came, tells each submitter how its request is going, and survives being killed at any
//! moment. Like the CLI and the C API it is a shell over [`crate::request`]: a request's
//! options are the same [`Options`](crate::request::Options) JSON, its report the same
//! [`Report`](crate::request::Report).
//!
//! Newline-delimited JSON over a Unix domain socket, on the standard library only (threads,
//! channels, no async runtime): a device's requests are few and long, so a thread per
//! connection costs nothing, and the binary stays small. `docs/SERVE.md` documents the
//! protocol, the state directory and the crash guarantees.
//!
//! | file | concern |
//! | --- | --- |
//! | `protocol.rs` | the lines clients send and the lines they get |
//! | `record.rs` | the record each request leaves in the state directory |
//! | `state.rs` | the state directory's layout and lock |
//! | `recover.rs` | making the state directory consistent at start |
//! | `queue.rs` | the request table and FIFO queue all threads share |
//! | `worker.rs` | the one thread that runs requests and writes their results |
//! | `conn.rs` | one client connection |
//! | `listen.rs` | the socket, and a stale socket file left by a killed server |
//!
//! ```no_run
//! use qforget::serve::{Config, Server};
//! let server = Server::open(&Config {
//!     model: "model.onnx".into(),
//!     dataset: "data/mnist".into(),
//!     state: "/var/lib/qforget".into(),
//!     socket: None,
//!     train_limit: None,
//!     norm: None,
//! })?;
//! for note in server.notes() {
//!     eprintln!("{note}");
//! }
//! server.run()?; // serves until the process ends
//! # Ok::<(), qforget::Error>(())
//! ```

mod conn;
mod listen;
pub mod protocol;
mod queue;
pub mod record;
mod recover;
mod state;
mod worker;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use protocol::{Op, Reply, RequestStatus, Step};
pub use state::StateDir;

use crate::request::Data;
use crate::{Error, Result};

/// What a server serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The base model (never modified).
    pub model: PathBuf,
    /// The device's dataset directory (idx, npy or image folder; see [`crate::data`]); sample
    /// ids index its training split.
    pub dataset: PathBuf,
    /// The state directory (created if missing).
    pub state: PathBuf,
    /// The socket (default `STATE/qforget.sock`).
    pub socket: Option<PathBuf>,
    /// Use only the first N training images (as `forget --train-limit`).
    pub train_limit: Option<usize>,
    /// The input normalisation, replacing the model's metadata (as `forget --mean/--std`);
    /// `None`: the model's own.
    pub norm: Option<crate::graph::Normalization>,
}

/// A server whose state is recovered and whose socket is bound, ready to [`run`](Self::run).
pub struct Server {
    listener: UnixListener,
    socket: PathBuf,
    queue: Arc<queue::Queue>,
    worker: worker::Worker,
    notes: Vec<String>,
    _lock: state::DirLock,
}

impl Server {
    /// Lock and recover the state directory, load the dataset, bind the socket.
    pub fn open(cfg: &Config) -> Result<Self> {
        let base = &cfg.model;
        // The model must be one qforget can train, and the data must load, before the state
        // directory is created or touched.
        let mut graph = crate::onnx::load(base)?;
        if cfg.norm.is_some() {
            graph.set_normalization(cfg.norm.clone())?;
        }
        let data = Data::load_for(&cfg.dataset, cfg.train_limit, Some(graph.input.shape))?;
        crate::eval::check_fits(&graph, &data.train)?;
        crate::eval::check_fits(&graph, &data.test)?;
        if same_file(base, &state::StateDir::new(&cfg.state).model) {
            return Err(Error::InvalidArgument(format!(
                "{}: the base model cannot be the served model of the state directory (it would be overwritten); keep the base elsewhere",
                base.display()
            )));
        }
        let (dir, lock) = state::StateDir::open(&cfg.state)?;
        let rec = recover::recover(&dir, base)?;
        let socket = cfg.socket.clone().unwrap_or_else(|| dir.socket());
        let listener = listen::bind(&socket)?;
        let queue = Arc::new(queue::Queue::new(dir.clone(), rec.tickets, rec.next_id));
        let mut notes = rec.notes;
        notes.push(format!(
            "serving {} (base {} + {} delta(s)) on {}; next request id {}",
            dir.model.display(),
            base.display(),
            rec.chain.deltas.len(),
            socket.display(),
            rec.next_id
        ));
        Ok(Server {
            listener,
            socket,
            queue,
            worker: worker::Worker {
                base: base.clone(),
                data: Arc::new(data),
                dir,
                chain: rec.chain,
                broken: None,
                norm: cfg.norm.clone(),
            },
            notes,
            _lock: lock,
        })
    }

    /// What opening did (recovery, the socket), one line each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The socket clients connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serve until the process ends (or accepting connections fails).
    pub fn run(self) -> Result<()> {
        let Server {
            listener,
            socket,
            queue,
            worker,
            _lock,
            ..
        } = self;
        let q = queue.clone();
        std::thread::Builder::new()
            .name("qforget-worker".into())
            .spawn(move || worker.run(&q))
            .map_err(|e| Error::io(&socket, e))?;
        for conn in listener.incoming() {
            match conn {
                Ok(stream) => {
                    let q = queue.clone();
                    if let Err(e) = std::thread::Builder::new()
                        .name("qforget-conn".into())
                        .spawn(move || conn::handle(stream, q))
                    {
                        log::warn!("serve: cannot start a connection thread: {e}");
                    }
                }
                // A client that gave up between connect and accept, or a short-lived lack of
                // descriptors: keep serving the others.
                Err(e) => {
                    log::warn!("serve: accept on {}: {e}", socket.display());
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
