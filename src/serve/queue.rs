//! The request table every thread shares: the records, the FIFO queue, who to tell about each
//! request, and the cancel flags.
//!
//! Why one mutex over all of it: every change of a request's state is written to its record
//! (atomically, a few milliseconds) and told to its submitter, and doing both under the lock
//! keeps the order of records on disk, lines on the wire and answers to `status` the same for
//! every observer (a client never sees `progress` before `queued`, nor `status` disagree with
//! a final line it already got). Requests are short next to these writes; the lock is never
//! held while a request runs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::protocol::{Reply, RequestStatus, Step};
use super::record::{State, Ticket};
use super::state::StateDir;
use crate::request::Options;
use crate::Result;

/// Progress lines per request are sent at most this often (the first step at once).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

struct Slot {
    ticket: Ticket,
    /// Parsed options, until the worker takes the request.
    options: Option<Box<Options>>,
    cancel: Arc<AtomicBool>,
    /// The submitting connection's outgoing lines (gone once the request ended).
    subscriber: Option<Sender<String>>,
    progress: Option<Step>,
    last_sent: Option<Instant>,
}

impl Slot {
    fn tell(&self, r: &Reply) {
        if let Some(s) = &self.subscriber {
            // A client that went away just misses the line; the request goes on.
            let _ = s.send(r.line());
        }
    }
}

struct Inner {
    slots: BTreeMap<u64, Slot>,
    queue: VecDeque<u64>,
    running: Option<u64>,
    next_id: u64,
}

/// A request handed to the worker.
pub struct Job {
    pub id: u64,
    pub options: Box<Options>,
    pub cancel: Arc<AtomicBool>,
}

/// The shared table.
pub struct Queue {
    inner: Mutex<Inner>,
    wake: Condvar,
    dir: StateDir,
}

impl Queue {
    /// A table holding the recovered records, with no request queued.
    pub fn new(dir: StateDir, tickets: Vec<Ticket>, next_id: u64) -> Self {
        let slots = tickets
            .into_iter()
            .map(|t| {
                (
                    t.id,
                    Slot {
                        ticket: t,
                        options: None,
                        cancel: Arc::new(AtomicBool::new(false)),
                        subscriber: None,
                        progress: None,
                        last_sent: None,
                    },
                )
            })
            .collect();
        Queue {
            inner: Mutex::new(Inner {
                slots,
                queue: VecDeque::new(),
                running: None,
                next_id,
            }),
            wake: Condvar::new(),
            dir,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the server down with it: the table stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accept a request: record it, queue it, and send `queued` to `to` (which also gets its
    /// progress and final lines). Returns its id.
    pub fn submit(&self, options: Box<Options>, json: Value, to: Sender<String>) -> Result<u64> {
        let mut g = self.lock();
        let id = g.next_id;
        // Consumed even if the record cannot be written: an id is never given out twice.
        g.next_id += 1;
        let ticket = Ticket::queued(id, json);
        self.dir.save(&ticket)?;
        let position = g.queue.len() + usize::from(g.running.is_some());
        let slot = Slot {
            ticket,
            options: Some(options),
            cancel: Arc::new(AtomicBool::new(false)),
            subscriber: Some(to),
            progress: None,
            last_sent: None,
        };
        slot.tell(&Reply::Queued { id, position });
        g.slots.insert(id, slot);
        g.queue.push_back(id);
        self.wake.notify_all();
        Ok(id)
    }

    /// Wait for the next queued request and mark it running.
    pub fn next(&self) -> Job {
        let mut g = self.lock();
        loop {
            while let Some(id) = g.queue.pop_front() {
                let Some(slot) = g.slots.get_mut(&id) else {
                    continue;
                };
                let Some(options) = slot.options.take() else {
                    continue;
                };
                slot.ticket.state = State::Running;
                if let Err(e) = self.dir.save(&slot.ticket) {
                    let msg = format!("cannot record that it started: {e}");
                    slot.ticket.end(State::Failed, Some(msg.clone()));
                    slot.tell(&Reply::Failed { id, message: msg });
                    slot.subscriber = None;
                    let _ = self.dir.save(&slot.ticket);
                    continue;
                }
                slot.tell(&Reply::Running { id });
                let cancel = slot.cancel.clone();
                g.running = Some(id);
                return Job {
                    id,
                    options,
                    cancel,
                };
            }
            g = self.wake.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A step of the running request: kept for `status`, sent to its submitter at most every
    /// [`PROGRESS_EVERY`].
    pub fn progress(&self, id: u64, step: Step) {
        let mut g = self.lock();
        let Some(slot) = g.slots.get_mut(&id) else {
            return;
        };
        slot.progress = Some(step);
        let now = Instant::now();
        if slot
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= PROGRESS_EVERY)
        {
            slot.last_sent = Some(now);
            slot.tell(&Reply::Progress { id, step });
        }
    }

    /// The point of no return: unless a cancel came first, record that the request's result is
    /// being written, with the ids it forgot and its report. Returns false if it was cancelled
    /// (then nothing may be written).
    pub fn begin_recording(
        &self,
        id: u64,
        delta: &str,
        forget_ids: Vec<u64>,
        report: Value,
    ) -> Result<bool> {
        let mut g = self.lock();
        let Some(slot) = g.slots.get_mut(&id) else {
            return Ok(false);
        };
        if slot.cancel.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let mut t = slot.ticket.clone();
        t.state = State::Recording;
        t.delta = Some(delta.to_string());
        t.forget_ids = Some(forget_ids);
        t.report = Some(report);
        self.dir.save(&t)?;
        slot.ticket = t;
        Ok(true)
    }

    /// End the running request: record `state` (with `delta`, `report` and `message` as
    /// given), send `reply` to its submitter, and let the next one run.
    pub fn finish(
        &self,
        id: u64,
        state: State,
        message: Option<String>,
        report: Option<Value>,
        reply: Reply,
    ) {
        let mut g = self.lock();
        if g.running == Some(id) {
            g.running = None;
        }
        let Some(slot) = g.slots.get_mut(&id) else {
            return;
        };
        slot.progress = None;
        if state != State::Done {
            slot.ticket.delta = None;
            slot.ticket.forget_ids = None;
        }
        slot.ticket.report = report;
        slot.ticket.end(state, message);
        if let Err(e) = self.dir.save(&slot.ticket) {
            // The reply still goes out; after a restart, recovery derives the state from the
            // journal (a done request is journaled, anything else is marked failed).
            log::error!("request {id}: cannot record that it ended: {e}");
        }
        slot.tell(&reply);
        slot.subscriber = None;
    }

    /// Cancel request `id`: a queued one at once, a running one through its cancel flag.
    /// Returns the `cancel` reply's state, or why it cannot be cancelled.
    pub fn cancel(&self, id: u64) -> std::result::Result<&'static str, String> {
        let mut g = self.lock();
        let Some(slot) = g.slots.get_mut(&id) else {
            return Err(format!("no request {id}"));
        };
        match slot.ticket.state {
            State::Queued => {
                slot.options = None;
                slot.ticket.end(State::Cancelled, None);
                let saved = self.dir.save(&slot.ticket);
                slot.tell(&Reply::Cancelled { id });
                slot.subscriber = None;
                g.queue.retain(|&q| q != id);
                saved.map_err(|e| {
                    format!("request {id} is cancelled, but its record was not updated: {e}")
                })?;
                Ok("cancelled")
            }
            State::Running => {
                slot.cancel.store(true, Ordering::SeqCst);
                Ok("cancelling")
            }
            State::Recording => Err(format!(
                "request {id} is already being recorded; it can no longer be cancelled"
            )),
            s => Err(format!("request {id} has already ended ({})", s.shown())),
        }
    }

    /// Every request, oldest first.
    pub fn status_all(&self) -> Vec<RequestStatus> {
        let g = self.lock();
        g.slots
            .values()
            .map(|s| view(&self.dir, &g, s, false))
            .collect()
    }

    /// One request, with its options and report.
    pub fn status(&self, id: u64) -> Option<RequestStatus> {
        let g = self.lock();
        g.slots.get(&id).map(|s| view(&self.dir, &g, s, true))
    }
}

fn view(dir: &StateDir, g: &Inner, s: &Slot, full: bool) -> RequestStatus {
    let t = &s.ticket;
    let position = (t.state == State::Queued).then(|| {
        g.queue.iter().position(|&q| q == t.id).unwrap_or(0) + usize::from(g.running.is_some())
    });
    RequestStatus {
        id: t.id,
        state: t.state.shown(),
        position,
        progress: s.progress,
        message: t.message.clone(),
        delta: (t.state == State::Done)
            .then(|| {
                t.delta
                    .as_ref()
                    .map(|d| dir.deltas.join(d).display().to_string())
            })
            .flatten(),
        submitted_unix_ms: t.submitted_unix_ms,
        finished_unix_ms: t.finished_unix_ms,
        options: full.then(|| t.options.clone()),
        report: if full { t.report.clone() } else { None },
    }
}
