//! `QfRequest`: one forget request being prepared and run: its options (JSON, the CLI's names),
//! its samples (a dataset directory or buffers in memory), and its cancel flag.

use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::error::{guard, null, path_arg, put, str_arg, Fail, FfiResult, QfStatus};
use super::registry::Registry;
use super::result::{ResultObj, RESULTS};
use super::session::{QfSession, SESSIONS};
use super::QfResult;
use crate::data::IdxDataset;
use crate::request::{Data, Event, Options, Session};

/// A forget request. `id` 0 is the empty handle.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QfRequest {
    pub id: u64,
}

/// Progress after one optimizer step.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QfProgress {
    /// 0-based epoch and the epoch budget.
    pub epoch: u32,
    pub epochs: u32,
    /// 1-based step within the epoch, and the epoch's steps.
    pub step: u32,
    pub steps_per_epoch: u32,
    /// The step's loss.
    pub loss: f32,
}

/// Called after every step with `user_data` as given to `qf_request_run`; return 0 to go on,
/// anything else to cancel the request.
pub type QfProgressCallback =
    Option<unsafe extern "C" fn(progress: *const QfProgress, user_data: *mut c_void) -> i32>;

pub(crate) struct RequestObj {
    session: Arc<Session>,
    state: Mutex<Prepared>,
    cancel: AtomicBool,
    running: AtomicBool,
}

#[derive(Default)]
struct Prepared {
    options: Options,
    data: Option<Arc<Data>>,
    ids_file: Option<PathBuf>,
}

pub(crate) static REQUESTS: Registry<RequestObj> = Registry::new("request");

fn invalid(msg: String) -> Fail {
    Fail(QfStatus::QF_ERR_INVALID_ARGUMENT, msg)
}

impl RequestObj {
    fn prepared(&self) -> std::sync::MutexGuard<'_, Prepared> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Create a request on `session` with `options_json`: a JSON object whose keys are the long
/// options of `qforget forget` with `_` for `-` (`{"forget_class": 3}`,
/// `{"forget_ids": [1, 5], "method": "oeu", "epochs": 5}`; NULL or `{}` for the defaults,
/// what to forget then comes from `qf_request_read_forget_ids`).
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn qf_request_new(
    session: QfSession,
    options_json: *const c_char,
    out: *mut QfRequest,
) -> QfStatus {
    guard("qf_request_new", || {
        if out.is_null() {
            return Err(null("out"));
        }
        let s = SESSIONS.get(session.id)?;
        let options = if options_json.is_null() {
            Options::default()
        } else {
            // SAFETY: non-NULL C string per the contract.
            Options::from_json(unsafe { str_arg(options_json, "options_json") }?)?
        };
        options.config()?;
        let id = REQUESTS.insert(RequestObj {
            session: s,
            state: Mutex::new(Prepared {
                options,
                ..Prepared::default()
            }),
            cancel: AtomicBool::new(false),
            running: AtomicBool::new(false),
        });
        // SAFETY: checked non-NULL above; writable per the contract.
        unsafe { put(out, QfRequest { id }, "out") }
    })
}

/// Use the idx dataset in `dir` (`{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`); sample
/// ids index its training split. `train_limit` > 0 uses only the first that many training
/// images. Loaded (and checked) now.
///
/// # Safety
/// `dir` is a NUL-terminated path.
#[no_mangle]
pub unsafe extern "C" fn qf_request_set_dataset(
    request: QfRequest,
    dir: *const c_char,
    train_limit: usize,
) -> QfStatus {
    guard("qf_request_set_dataset", || {
        let r = REQUESTS.get(request.id)?;
        // SAFETY: the caller's contract.
        let dir = unsafe { path_arg(dir, "dir") }?;
        let data = Data::load(&dir, (train_limit > 0).then_some(train_limit))?;
        r.prepared().data = Some(Arc::new(data));
        Ok(())
    })
}

fn samples(
    images: *const u8,
    labels: *const u8,
    n: usize,
    rows: usize,
    cols: usize,
    name: &str,
) -> FfiResult<IdxDataset> {
    if images.is_null() {
        return Err(null(&format!("{name}_images")));
    }
    if labels.is_null() {
        return Err(null(&format!("{name}_labels")));
    }
    let len = n
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .filter(|&l| l <= isize::MAX as usize)
        .ok_or_else(|| invalid(format!("{name}: {n} images of {rows}×{cols} is too large")))?;
    if n == 0 || rows == 0 || cols == 0 {
        return Err(invalid(format!(
            "{name}: no samples ({n} images of {rows}×{cols})"
        )));
    }
    // SAFETY: the caller guarantees `images` holds n·rows·cols bytes and `labels` n bytes
    // (qf_request_set_samples' contract); both checked non-NULL, length checked ≤ isize::MAX.
    let (img, lab) = unsafe {
        (
            std::slice::from_raw_parts(images, len),
            std::slice::from_raw_parts(labels, n),
        )
    };
    Ok(IdxDataset {
        images: img.to_vec(),
        labels: lab.to_vec(),
        n,
        channels: 1,
        rows,
        cols,
        images_path: PathBuf::from(format!("<{name} samples in memory>")),
        labels_path: PathBuf::from(format!("<{name} labels in memory>")),
    })
}

/// Use samples held in memory: `n_train` training images (`rows`×`cols` bytes each, row-major,
/// one channel) with their labels, and `n_test` test images and labels for the metrics. The
/// bytes are copied; the buffers may be freed after the call.
///
/// # Safety
/// `train_images` holds `n_train·rows·cols` bytes, `train_labels` `n_train` bytes, and the
/// same for the test buffers with `n_test`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qf_request_set_samples(
    request: QfRequest,
    train_images: *const u8,
    train_labels: *const u8,
    n_train: usize,
    test_images: *const u8,
    test_labels: *const u8,
    n_test: usize,
    rows: usize,
    cols: usize,
) -> QfStatus {
    guard("qf_request_set_samples", || {
        let r = REQUESTS.get(request.id)?;
        let train = samples(train_images, train_labels, n_train, rows, cols, "train")?;
        let test = samples(test_images, test_labels, n_test, rows, cols, "test")?;
        r.prepared().data = Some(Arc::new(Data {
            train,
            test,
            name: "<samples in memory>".into(),
        }));
        Ok(())
    })
}

/// Forget the training samples listed in the file at `path` (0-based ids, one per line, `#`
/// comments), checked against the training split when the request runs.
///
/// # Safety
/// `path` is a NUL-terminated path.
#[no_mangle]
pub unsafe extern "C" fn qf_request_read_forget_ids(
    request: QfRequest,
    path: *const c_char,
) -> QfStatus {
    guard("qf_request_read_forget_ids", || {
        let r = REQUESTS.get(request.id)?;
        // SAFETY: the caller's contract.
        let p = unsafe { path_arg(path, "path") }?;
        if !p.is_file() {
            return Err(Fail(
                QfStatus::QF_ERR_IO,
                format!("{}: no such file", p.display()),
            ));
        }
        r.prepared().ids_file = Some(p);
        Ok(())
    })
}

/// Run the request (blocking; seconds to minutes). `progress` (may be NULL) is called after
/// every step on the calling thread. On success `*out` is a result, also when the request was
/// refused (see `qf_result_refused`; a refused result writes nothing). A cancelled run returns
/// `QF_ERR_CANCELLED` and no result; the request can then be run again.
///
/// # Safety
/// `out` is writable; `progress`, if not NULL, is safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn qf_request_run(
    request: QfRequest,
    progress: QfProgressCallback,
    user_data: *mut c_void,
    out: *mut QfResult,
) -> QfStatus {
    guard("qf_request_run", || {
        if out.is_null() {
            return Err(null("out"));
        }
        let r = REQUESTS.get(request.id)?;
        if r.running.swap(true, Ordering::AcqRel) {
            return Err(Fail(
                QfStatus::QF_ERR_BUSY,
                format!("request {} is already running", request.id),
            ));
        }
        let res = run(&r, progress, user_data);
        r.cancel.store(false, Ordering::Release);
        r.running.store(false, Ordering::Release);
        let id = RESULTS.insert(res?);
        // SAFETY: checked non-NULL above; writable per the contract.
        unsafe { put(out, QfResult { id }, "out") }
    })
}

fn run(
    r: &RequestObj,
    progress: QfProgressCallback,
    user_data: *mut c_void,
) -> FfiResult<ResultObj> {
    let (mut opts, data, ids_file) = {
        let p = r.prepared();
        (p.options.clone(), p.data.clone(), p.ids_file.clone())
    };
    let data = data.ok_or_else(|| {
        invalid("no samples: call qf_request_set_dataset or qf_request_set_samples first".into())
    })?;
    if let Some(f) = ids_file {
        if opts.forget_class.is_some() || opts.forget_random.is_some() || opts.forget_ids.is_some()
        {
            return Err(invalid(
                "the options already say what to forget; an ids file would be a second answer"
                    .into(),
            ));
        }
        opts.forget_ids = Some(crate::data::read_ids(&f, data.train.n)?);
    }
    let step = |e: &Event| match e {
        Event::Step(p) => Some(QfProgress {
            epoch: p.epoch as u32,
            epochs: p.epochs as u32,
            step: p.step as u32,
            steps_per_epoch: p.steps_per_epoch as u32,
            loss: p.loss,
        }),
        _ => None,
    };
    // Calls the application's callback: on the calling thread, as the header promises.
    let call = |q: &QfProgress| match progress {
        // SAFETY: the caller of qf_request_run guarantees the callback may be called with
        // `user_data`; `q` lives across the call.
        Some(cb) => (unsafe { cb(q, user_data) }) != 0,
        None => false,
    };
    let forget = |on_event: &mut dyn FnMut(&Event)| {
        r.session.forget(&data, &opts, on_event, Some(&r.cancel))
    };
    let outcome = if rayon::current_thread_index().is_some() {
        // Already on a rayon worker: run here (handing off to the pool and waiting on it
        // from a worker could leave the job with no thread to run it).
        forget(&mut |e| {
            if step(e).is_some_and(|q| call(&q)) {
                r.cancel.store(true, Ordering::Release);
            }
        })?
    } else {
        on_worker(forget, step, call, &r.cancel)?
    };
    Ok(ResultObj::new(r.session.clone(), outcome))
}

/// Run `forget` on a worker of rayon's pool while this thread waits, relaying each progress
/// event back here to `call` in lockstep (the worker waits for the answer, so a callback that
/// asks to stop stops the run after that very step, as before).
///
/// Why: from the application's thread, every parallel loop of the request was handed to the
/// pool and waited on, a wake-up and two context switches per loop, thousands per step; the
/// CLI's OEU epoch at one thread was 26 % faster once its work ran on a worker (benches/README).
fn on_worker<T: Send>(
    forget: impl FnOnce(&mut dyn FnMut(&Event)) -> crate::Result<T> + Send,
    step: impl Fn(&Event) -> Option<QfProgress> + Sync,
    call: impl Fn(&QfProgress) -> bool,
    cancel: &AtomicBool,
) -> crate::Result<T> {
    let (events, received) = std::sync::mpsc::sync_channel::<QfProgress>(0);
    let (answer, answers) = std::sync::mpsc::sync_channel::<bool>(0);
    let mut ran = None;
    rayon::in_place_scope(|scope| {
        let ran = &mut ran;
        let step = &step;
        scope.spawn(move |_| {
            *ran = Some(forget(&mut |e| {
                if let Some(q) = step(e) {
                    // The application's answer; none when this thread has gone (it never
                    // goes before the run ends).
                    if events.send(q).is_ok() && answers.recv().unwrap_or(false) {
                        cancel.store(true, Ordering::Release);
                    }
                }
            }));
            // `events` drops here: the loop below ends.
        });
        for q in received.iter() {
            let _ = answer.send(call(&q));
        }
    });
    ran.expect("the spawned run finished before its scope ended")
}

/// Ask a running request to stop after its current step (callable from any thread, at any
/// time; the run then returns `QF_ERR_CANCELLED`). A request that is not running ignores it.
#[no_mangle]
pub extern "C" fn qf_request_cancel(request: QfRequest) -> QfStatus {
    guard("qf_request_cancel", || {
        let r = REQUESTS.get(request.id)?;
        if r.running.load(Ordering::Acquire) {
            r.cancel.store(true, Ordering::Release);
        }
        Ok(())
    })
}

/// Release a request (a run in progress on another thread finishes first; its result is
/// still handed out). A zero handle is a no-op; a released one is refused.
#[no_mangle]
pub extern "C" fn qf_request_release(request: QfRequest) -> QfStatus {
    guard("qf_request_release", || REQUESTS.remove(request.id))
}
