//! The C API called as C would call it: NULLs, stale and double-released handles, a cancel from
//! the progress callback (nothing written), then a real request on bundled data through to a
//! delta that verifies and rebuilds the exported bytes.

use std::ffi::{c_void, CStr, CString};
use std::ptr::{null, null_mut};

use super::*;
use QfStatus::*;

const MODEL: &str = "onnx-models/mnist_mlp_matmul_qdq.onnx";
const DATA: &str = "data/mnist";

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    // SAFETY: qf_last_error returns a valid NUL-terminated string owned by this thread.
    unsafe { CStr::from_ptr(qf_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn open() -> QfSession {
    let mut s = QfSession::default();
    // SAFETY: valid C string, no parents, writable out.
    let st = unsafe { qf_session_open(c(MODEL).as_ptr(), null(), 0, &mut s) };
    assert_eq!(st, QF_OK, "{}", last_error());
    s
}

fn request(s: QfSession, json: &str) -> QfRequest {
    let mut r = QfRequest::default();
    // SAFETY: valid C string and out-parameter.
    let st = unsafe { qf_request_new(s, c(json).as_ptr(), &mut r) };
    assert_eq!(st, QF_OK, "{}", last_error());
    // SAFETY: valid path.
    let st = unsafe { qf_request_set_dataset(r, c(DATA).as_ptr(), 3000) };
    assert_eq!(st, QF_OK, "{}", last_error());
    r
}

fn json_of(res: QfResult) -> serde_json::Value {
    let mut p = null();
    // SAFETY: writable out-parameter; the string is read before the result is released.
    assert_eq!(unsafe { qf_result_json(res, &mut p) }, QF_OK);
    let text = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn version_matches_the_crate() {
    // SAFETY: static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(qf_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(QF_VERSION_STR, v);
    assert_eq!(
        format!("{QF_VERSION_MAJOR}.{QF_VERSION_MINOR}.{QF_VERSION_PATCH}"),
        v
    );
}

#[test]
fn null_arguments_are_errors_not_crashes() {
    let mut s = QfSession::default();
    // SAFETY: every pointer is NULL or valid; NULLs are what is tested.
    unsafe {
        assert_eq!(
            qf_session_open(null(), null(), 0, &mut s),
            QF_ERR_NULL_ARGUMENT
        );
        assert!(last_error().contains("model is NULL"), "{}", last_error());
        assert_eq!(
            qf_session_open(c(MODEL).as_ptr(), null(), 0, null_mut()),
            QF_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            qf_session_open(c(MODEL).as_ptr(), null(), 2, &mut s),
            QF_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            qf_result_json(QfResult { id: 1 }, null_mut()),
            QF_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            qf_chain_rebuild(null(), null(), 0, null()),
            QF_ERR_NULL_ARGUMENT
        );
        let mut n = 0usize;
        assert_eq!(
            qf_chain_verify(c(MODEL).as_ptr(), null(), 0, null(), null_mut()),
            QF_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            qf_chain_verify(null(), null(), 0, null(), &mut n),
            QF_ERR_NULL_ARGUMENT
        );
    }
    assert_eq!(s, QfSession::default(), "a failed open hands out no handle");
}

#[test]
fn stale_and_double_released_handles_are_refused() {
    let s = open();
    assert_eq!(qf_session_release(s), QF_OK);
    assert_eq!(qf_session_release(s), QF_ERR_INVALID_HANDLE);
    assert!(last_error().contains("not live"), "{}", last_error());
    let mut r = QfRequest::default();
    // SAFETY: valid out-parameter; the session handle is stale on purpose.
    assert_eq!(
        unsafe { qf_request_new(s, null(), &mut r) },
        QF_ERR_INVALID_HANDLE
    );
    assert_eq!(
        qf_request_cancel(QfRequest { id: u64::MAX }),
        QF_ERR_INVALID_HANDLE
    );
    // The empty handle is "none": releasing it is a no-op.
    assert_eq!(qf_session_release(QfSession::default()), QF_OK);
    assert_eq!(qf_request_release(QfRequest::default()), QF_OK);
    assert_eq!(qf_result_release(QfResult::default()), QF_OK);
}

#[test]
fn bad_inputs_say_what_is_wrong() {
    let mut s = QfSession::default();
    // SAFETY: valid C strings and out-parameter.
    let st = unsafe { qf_session_open(c("no/such/model.onnx").as_ptr(), null(), 0, &mut s) };
    assert_eq!(st, QF_ERR_IO);
    assert!(
        last_error().contains("no/such/model.onnx"),
        "{}",
        last_error()
    );
    let s = open();
    let mut r = QfRequest::default();
    // SAFETY: valid C strings and out-parameter.
    unsafe {
        let st = qf_request_new(s, c(r#"{"forget_klass": 3}"#).as_ptr(), &mut r);
        assert_eq!(st, QF_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("forget_klass"), "{}", last_error());
        let st = qf_request_new(s, c(r#"{"lr": -1}"#).as_ptr(), &mut r);
        assert_eq!(st, QF_ERR_INVALID_ARGUMENT);
        assert!(qf_request_new(s, c("{}").as_ptr(), &mut r) == QF_OK);
        // No samples yet.
        let mut res = QfResult::default();
        assert_eq!(
            qf_request_run(r, None, null_mut(), &mut res),
            QF_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("no samples"), "{}", last_error());
        let st = qf_request_set_dataset(r, c("no/such/dir").as_ptr(), 0);
        assert_eq!(st, QF_ERR_DATASET, "{}", last_error());
        // Samples that do not fit the model (20×20 images for a 28×28 input).
        let img = vec![0u8; 4 * 400];
        let lab = [0u8, 1, 2, 3];
        let st = qf_request_set_samples(
            r,
            img.as_ptr(),
            lab.as_ptr(),
            4,
            img.as_ptr(),
            lab.as_ptr(),
            4,
            20,
            20,
        );
        assert_eq!(st, QF_OK);
        assert_eq!(
            qf_request_run(r, None, null_mut(), &mut res),
            QF_ERR_DATASET
        );
        assert!(
            last_error().contains("20×20") || last_error().contains("20"),
            "{}",
            last_error()
        );
        assert_eq!(
            qf_request_set_samples(
                r,
                null(),
                lab.as_ptr(),
                4,
                img.as_ptr(),
                lab.as_ptr(),
                4,
                20,
                20
            ),
            QF_ERR_NULL_ARGUMENT
        );
    }
    assert_eq!(qf_request_release(r), QF_OK);
    assert_eq!(qf_session_release(s), QF_OK);
}

thread_local! {
    /// Set on the thread that calls `qf_request_run` in the cancel test.
    static CALLING_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Set when the progress callback ran on another thread than the one that called
/// `qf_request_run` (the header promises the calling thread; the run itself is on a worker).
static CALLBACK_ELSEWHERE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

unsafe extern "C" fn cancel_at_third_step(p: *const QfProgress, user: *mut c_void) -> i32 {
    if !CALLING_THREAD.with(|c| c.get()) {
        CALLBACK_ELSEWHERE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // SAFETY: qforget passes a valid progress; `user` is the test's counter.
    let (p, n) = unsafe { (&*p, &mut *(user as *mut u32)) };
    assert!(p.step >= 1 && p.epochs >= 1 && p.loss.is_finite());
    *n += 1;
    i32::from(*n >= 3)
}

#[test]
fn a_request_through_the_c_api_cancels_then_runs_and_verifies() {
    let dir = std::env::temp_dir().join(format!("qf-ffi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = open();
    let r = request(s, r#"{"forget_class": 3}"#);
    let mut res = QfResult::default();
    let mut steps = 0u32;
    CALLING_THREAD.with(|c| c.set(true));
    // SAFETY: the callback matches the contract; `steps` outlives the call.
    let st = unsafe {
        qf_request_run(
            r,
            Some(cancel_at_third_step),
            (&mut steps as *mut u32).cast(),
            &mut res,
        )
    };
    assert_eq!(st, QF_ERR_CANCELLED, "{}", last_error());
    // In lockstep: the run stopped after the step whose callback asked it to.
    assert_eq!(steps, 3);
    assert!(
        !CALLBACK_ELSEWHERE.load(std::sync::atomic::Ordering::SeqCst),
        "the progress callback ran on another thread than qf_request_run's caller"
    );
    assert_eq!(
        res,
        QfResult::default(),
        "a cancelled run hands out no result"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written"
    );

    // The same request runs again to the end.
    // SAFETY: valid out-parameter, no callback.
    let st = unsafe { qf_request_run(r, None, null_mut(), &mut res) };
    assert_eq!(st, QF_OK, "{}", last_error());
    let mut refused = -1;
    // SAFETY: writable out-parameter.
    assert_eq!(unsafe { qf_result_refused(res, &mut refused) }, QF_OK);
    assert_eq!(refused, 0);
    let (delta, model_out) = (dir.join("r1.qfd"), dir.join("out.onnx"));
    let (cd, cm) = (c(delta.to_str().unwrap()), c(model_out.to_str().unwrap()));
    // SAFETY: valid C strings.
    unsafe {
        assert_eq!(
            qf_result_write_delta(res, cd.as_ptr(), null()),
            QF_OK,
            "{}",
            last_error()
        );
        assert_eq!(
            qf_result_export(res, cm.as_ptr()),
            QF_OK,
            "{}",
            last_error()
        );
    }
    let v = json_of(res);
    let (f, r_) = (
        v["forget_count"].as_u64().unwrap(),
        v["retain_count"].as_u64().unwrap(),
    );
    assert!(f > 0 && f + r_ == 3000, "{v}");
    assert!(v["after"]["forget_acc"].as_f64().unwrap() <= 1.0, "{v}");
    assert_eq!(v["delta"], delta.to_str().unwrap());
    assert_eq!(v["delta_sha256"].as_str().unwrap().len(), 64);

    // The chain verifies with its journal, and rebuilds the exported bytes exactly.
    let deltas = [cd.as_ptr()];
    let mut mismatches = usize::MAX;
    let rebuilt = c(dir.join("rebuilt.onnx").to_str().unwrap());
    // SAFETY: valid C strings and out-parameter.
    unsafe {
        let st = qf_chain_verify(
            c(MODEL).as_ptr(),
            deltas.as_ptr(),
            1,
            null(),
            &mut mismatches,
        );
        assert_eq!(st, QF_OK, "{}", last_error());
        assert_eq!(mismatches, 0, "{}", last_error());
        let st = qf_chain_rebuild(c(MODEL).as_ptr(), deltas.as_ptr(), 1, rebuilt.as_ptr());
        assert_eq!(st, QF_OK, "{}", last_error());
        // Writing over a delta of the chain is refused.
        let st = qf_chain_rebuild(c(MODEL).as_ptr(), deltas.as_ptr(), 1, cd.as_ptr());
        assert_eq!(st, QF_ERR_INVALID_ARGUMENT);
    }
    assert_eq!(
        std::fs::read(dir.join("rebuilt.onnx")).unwrap(),
        std::fs::read(&model_out).unwrap()
    );
    assert_eq!(qf_result_release(res), QF_OK);
    assert_eq!(qf_result_release(res), QF_ERR_INVALID_HANDLE);
    assert_eq!(qf_request_release(r), QF_OK);
    assert_eq!(qf_session_release(s), QF_OK);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn samples_in_memory_give_the_same_request_as_the_dataset_files() {
    let data = crate::request::Data::load(DATA.as_ref(), Some(3000)).unwrap();
    let s = open();
    let from_dir = request(s, r#"{"forget_class": 5, "no_metrics": true}"#);
    let mut from_mem = QfRequest::default();
    let (tr, te) = (&data.train, &data.test);
    // SAFETY: valid C string; the buffers hold n·rows·cols image bytes and n labels.
    unsafe {
        let st = qf_request_new(
            s,
            c(r#"{"forget_class": 5, "no_metrics": true}"#).as_ptr(),
            &mut from_mem,
        );
        assert_eq!(st, QF_OK);
        let st = qf_request_set_samples(
            from_mem,
            tr.images.as_ptr(),
            tr.labels.as_ptr(),
            tr.n,
            te.images.as_ptr(),
            te.labels.as_ptr(),
            te.n,
            tr.rows,
            tr.cols,
        );
        assert_eq!(st, QF_OK, "{}", last_error());
    }
    let mut outs = Vec::new();
    for r in [from_dir, from_mem] {
        let mut res = QfResult::default();
        // SAFETY: valid out-parameter.
        assert_eq!(
            unsafe { qf_request_run(r, None, null_mut(), &mut res) },
            QF_OK,
            "{}",
            last_error()
        );
        let mut v = json_of(res);
        for k in ["dataset", "seconds", "epoch_seconds"] {
            v[k] = serde_json::Value::Null;
        }
        outs.push(v);
        qf_result_release(res);
        qf_request_release(r);
    }
    assert_eq!(outs[0], outs[1]);
    qf_session_release(s);
}
