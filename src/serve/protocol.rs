//! The wire protocol of `qforget serve`: one JSON object per line in each direction.
//!
//! Why JSON lines: a device app in any language (a shell script with `socat` included) can
//! speak it without a client library, and one line is one message, so a reader never has to
//! guess where a message ends. Parsing is strict (unknown ops and unknown keys are errors that
//! say what was expected), because a typo'd option silently ignored would run a different
//! forget request from the one the app asked for. Everything the server writes goes through
//! [`Reply`], serialized compactly (never pretty-printed: a newline inside a message would
//! break the framing).

use serde::Serialize;
use serde_json::Value;

use crate::request::{Options, Report};
use crate::unlearn::Progress;

/// One line a client sent, parsed.
#[derive(Debug, Clone)]
pub enum Op {
    /// Queue a forget request. `options` is exactly what the C API's `qf_request_new` takes
    /// (the CLI's long option names with `_` for `-`); `json` is the object as sent, which the
    /// request's record keeps.
    Forget { options: Box<Options>, json: Value },
    /// Every request's state, or one request's.
    Status { id: Option<u64> },
    /// Cancel a queued or running request.
    Cancel { id: u64 },
}

const OPS: &str = "forget, status or cancel";

/// Parse one line. The error is the message of the `error` reply.
pub fn parse(line: &str) -> Result<Op, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err(format!(
            "expected one JSON object per line ({{\"op\": ...}}), got {}",
            kind(&v)
        ));
    };
    let op = match obj.remove("op") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(format!(
                "\"op\" must be a string ({OPS}), not {}",
                kind(&other)
            ))
        }
        None => return Err(format!("no \"op\" ({OPS})")),
    };
    let allowed: &[&str] = match op.as_str() {
        "forget" => &["options"],
        "status" => &["id"],
        "cancel" => &["id"],
        _ => return Err(format!("unknown op \"{op}\" (expected {OPS})")),
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "op \"{op}\" takes no key \"{k}\" (it takes: {})",
            allowed.join(", ")
        ));
    }
    match op.as_str() {
        "forget" => {
            let json = obj
                .remove("options")
                .ok_or("op \"forget\" needs \"options\": an object of request options, e.g. {\"forget_class\": 3}")?;
            if !json.is_object() {
                return Err(format!(
                    "\"options\" must be an object, not {}",
                    kind(&json)
                ));
            }
            let options: Options = serde_json::from_value(json.clone())
                .map_err(|e| format!("request options: {e}"))?;
            // Settings and the forget spec are checked now, so a bad request is refused on
            // its submitter's connection instead of failing later in the queue.
            options.config().map_err(|e| e.to_string())?;
            options.spec().map_err(|e| e.to_string())?;
            Ok(Op::Forget {
                options: Box::new(options),
                json,
            })
        }
        "status" => Ok(Op::Status {
            id: obj.get("id").map(id_of).transpose()?,
        }),
        _ => Ok(Op::Cancel {
            id: id_of(obj.get("id").ok_or("op \"cancel\" needs \"id\"")?)?,
        }),
    }
}

fn id_of(v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("\"id\" must be a request id (a positive integer), not {v}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Progress of a running request, as status and progress lines show it (the C API's
/// `QfProgress`: `epoch` 0-based, `step` 1-based within the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub steps_per_epoch: usize,
    pub loss: f32,
}

impl From<&Progress> for Step {
    fn from(p: &Progress) -> Self {
        Step {
            epoch: p.epoch,
            epochs: p.epochs,
            step: p.step,
            steps_per_epoch: p.steps_per_epoch,
            loss: p.loss,
        }
    }
}

/// One request as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestStatus {
    pub id: u64,
    /// `queued`, `running`, `done`, `refused`, `failed` or `cancelled`.
    pub state: &'static str,
    /// Requests ahead of it (queued only; 0: it runs next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// The last step (running only, once the method has taken one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Step>,
    /// Why it failed, or what else happened to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its delta file (done only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    pub submitted_unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<u64>,
    /// The request's options as submitted (status of one request only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    /// The report (status of one request only, done or refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
}

/// Everything the server writes: one line each, tagged by `event`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Reply {
    /// The request is accepted and has an id; `position` requests run before it.
    Queued { id: u64, position: usize },
    /// The worker took it up.
    Running { id: u64 },
    /// A step of the method (a few per second at most).
    Progress {
        id: u64,
        #[serde(flatten)]
        step: Step,
    },
    /// Recorded: the delta is in the journal and the served model was replaced. `report` is
    /// what `qforget forget --json` prints (same fields, same order).
    Done {
        id: u64,
        delta: String,
        model: String,
        /// Set when the served model could not be replaced (the request is recorded all the
        /// same; the next start rebuilds the model).
        #[serde(skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
        report: Box<Report>,
    },
    /// The guard refused the result; nothing was written.
    Refused { id: u64, report: Box<Report> },
    /// Cancelled before anything was written.
    Cancelled { id: u64 },
    /// The request failed; nothing was written.
    Failed { id: u64, message: String },
    /// Answer to `cancel`: `cancelled` (it was queued) or `cancelling` (it is running; its
    /// submitter gets `cancelled` when it stops).
    Cancel { id: u64, state: &'static str },
    /// Answer to `status` without an id.
    Status { requests: Vec<RequestStatus> },
    /// Answer to `status` with an id.
    Request { request: RequestStatus },
    /// A line the server could not act on; the connection stays usable.
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        message: String,
    },
}

impl Reply {
    /// The line to send (no trailing newline).
    pub fn line(&self) -> String {
        // Plain strings, integers, finite or null floats and JSON values: cannot fail; the
        // fallback still keeps the framing.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"event\":\"error\",\"message\":\"cannot encode a reply: {e}\"}}")
        })
    }

    /// An `error` reply.
    pub fn error(message: impl Into<String>) -> Self {
        Reply::Error {
            id: None,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::forget::ForgetSpec;
    use crate::unlearn::MethodName;

    #[test]
    fn forget_takes_the_c_apis_options() {
        let op = parse(
            r#"{"op":"forget","options":{"forget_class":3,"method":"grad-ascent","no_metrics":true}}"#,
        )
        .unwrap();
        let Op::Forget { options, json } = op else {
            panic!("not a forget op")
        };
        assert_eq!(options.spec().unwrap(), ForgetSpec::Class(3));
        assert_eq!(options.method, MethodName::GradAscent);
        assert!(options.no_metrics);
        assert_eq!(json["forget_class"], 3);
    }

    #[test]
    fn status_and_cancel() {
        assert!(matches!(
            parse(r#"{"op":"status"}"#),
            Ok(Op::Status { id: None })
        ));
        assert!(matches!(
            parse(r#" {"op":"status","id":7} "#),
            Ok(Op::Status { id: Some(7) })
        ));
        assert!(matches!(
            parse(r#"{"id":3,"op":"cancel"}"#),
            Ok(Op::Cancel { id: 3 })
        ));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            ("", "not JSON"),
            ("{\"op\":\"forget\"", "not JSON"),
            ("[1,2]", "an array"),
            ("{}", "no \"op\""),
            (r#"{"op":3}"#, "must be a string"),
            (r#"{"op":"reboot"}"#, "unknown op \"reboot\""),
            (r#"{"op":"status","id":-1}"#, "positive integer"),
            (r#"{"op":"status","id":"4"}"#, "positive integer"),
            (r#"{"op":"status","verbose":true}"#, "no key \"verbose\""),
            (r#"{"op":"cancel"}"#, "needs \"id\""),
            (r#"{"op":"forget"}"#, "needs \"options\""),
            (r#"{"op":"forget","options":[3]}"#, "must be an object"),
            (
                r#"{"op":"forget","options":{"forget_klass":3}}"#,
                "forget_klass",
            ),
            (r#"{"op":"forget","options":{}}"#, "say what to forget"),
            (
                r#"{"op":"forget","options":{"forget_class":3,"lr":-1}}"#,
                "learning rate",
            ),
            (
                r#"{"op":"forget","options":{"forget_class":"3"}}"#,
                "request options",
            ),
        ];
        for (line, want) in cases {
            let e = parse(line).expect_err(line);
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn replies_are_single_lines_tagged_by_event() {
        let r = Reply::Progress {
            id: 2,
            step: Step {
                epoch: 0,
                epochs: 3,
                step: 4,
                steps_per_epoch: 9,
                loss: 0.5,
            },
        };
        let v: Value = serde_json::from_str(&r.line()).unwrap();
        assert_eq!(v["event"], "progress");
        assert_eq!(v["id"], 2);
        assert_eq!(v["step"], 4);
        assert_eq!(v["loss"], 0.5);
        let l = Reply::Failed {
            id: 1,
            message: "two\nlines".into(),
        }
        .line();
        assert!(!l.contains('\n'), "{l}");
        let v: Value = serde_json::from_str(&Reply::error("bad").line()).unwrap();
        assert_eq!(v, serde_json::json!({"event": "error", "message": "bad"}));
        // A NaN loss is sent as null, not as an unparsable token.
        let l = Reply::Progress {
            id: 1,
            step: Step {
                epoch: 0,
                epochs: 1,
                step: 1,
                steps_per_epoch: 1,
                loss: f32::NAN,
            },
        }
        .line();
        assert!(serde_json::from_str::<Value>(&l).is_ok(), "{l}");
    }
}
