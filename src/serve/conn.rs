//! One client connection: a thread reading request lines, and a thread writing every line the
//! client is owed (answers, and the progress and final lines of the requests it submitted).
//!
//! Why a writer thread fed by a channel: lines for one client come from two threads (its
//! reader answers `status` and `cancel`; the worker reports its requests), and one writer
//! draining one channel keeps every line whole and in order without a lock held across a
//! socket write. When the client stops sending (EOF), its requests still run and it still gets
//! their lines; the connection closes once the last of them has ended. A client that goes away
//! does not cancel its requests: `status` shows how they ended.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use super::protocol::{self, Op, Reply};
use super::queue::Queue;

/// Longest request line (a long `forget_ids` list fits many times over).
pub const MAX_LINE: u64 = 16 << 20;

/// Serve one connection until the client closes it and its requests have ended.
pub fn handle(stream: UnixStream, queue: Arc<Queue>) {
    let out = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("serve: cannot use a new connection: {e}");
            return;
        }
    };
    let (tx, rx) = mpsc::channel::<String>();
    let writer = std::thread::spawn(move || write_lines(out, rx));
    read_lines(stream, &queue, &tx);
    drop(tx);
    // The writer ends when every sender is gone: ours now, each request's when it ends.
    let _ = writer.join();
}

fn write_lines(mut s: UnixStream, rx: Receiver<String>) {
    for mut line in rx {
        line.push('\n');
        if s.write_all(line.as_bytes()).is_err() {
            // The client is gone; later lines for it are dropped as they are sent.
            break;
        }
    }
}

fn read_lines(stream: UnixStream, queue: &Queue, tx: &Sender<String>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut buf = Vec::new();
        match (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                log::debug!("serve: connection read error: {e}");
                return;
            }
        }
        if !buf.ends_with(b"\n") && buf.len() as u64 > MAX_LINE {
            let _ = tx.send(
                Reply::error(format!(
                    "line longer than {MAX_LINE} bytes; closing the connection"
                ))
                .line(),
            );
            return;
        }
        let reply = match std::str::from_utf8(&buf) {
            Err(e) => Some(Reply::error(format!("not UTF-8: {e}"))),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => answer(line.trim(), queue, tx),
        };
        if let Some(r) = reply {
            let _ = tx.send(r.line());
        }
    }
}

/// Act on one line; the reply to send, if the queue has not already sent it.
fn answer(line: &str, queue: &Queue, tx: &Sender<String>) -> Option<Reply> {
    let op = match protocol::parse(line) {
        Ok(op) => op,
        Err(m) => return Some(Reply::error(m)),
    };
    match op {
        Op::Forget { options, json } => match queue.submit(options, json, tx.clone()) {
            Ok(_) => None,
            Err(e) => Some(Reply::error(format!("cannot accept the request: {e}"))),
        },
        Op::Status { id: None } => Some(Reply::Status {
            requests: queue.status_all(),
        }),
        Op::Status { id: Some(id) } => Some(match queue.status(id) {
            Some(request) => Reply::Request { request },
            None => Reply::Error {
                id: Some(id),
                message: format!("no request {id}"),
            },
        }),
        Op::Cancel { id } => Some(match queue.cancel(id) {
            Ok(state) => Reply::Cancel { id, state },
            Err(message) => Reply::Error {
                id: Some(id),
                message,
            },
        }),
    }
}
