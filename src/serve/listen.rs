//! The listening socket: bound at start, after removing a stale socket file.
//!
//! Why the care: a server killed with `kill -9` leaves its socket file behind, and binding
//! over it fails; but removing a socket another server is still listening on would silently
//! steal its address. So the file is removed only if it is a socket and nothing accepts a
//! connection on it; anything else at that path is an error naming it.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::{Error, Result};

fn refuse(path: &Path, why: &str) -> Error {
    Error::io(path, std::io::Error::other(why.to_string()))
}

/// Bind a listener at `path`, replacing a stale socket file.
pub fn bind(path: &Path) -> Result<UnixListener> {
    // sockaddr_un holds 108 bytes with the terminating NUL; say so rather than "SUN_LEN".
    let len = path.as_os_str().len();
    if len > 107 {
        return Err(refuse(
            path,
            &format!("a Unix socket path may have at most 107 bytes, this one has {len} (choose a shorter --socket)"),
        ));
    }
    match UnixListener::bind(path) {
        Ok(l) => return Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(e) => {
            return Err(Error::io(
                path,
                std::io::Error::new(e.kind(), format!("cannot listen here: {e}")),
            ))
        }
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.file_type().is_socket() {
        return Err(refuse(
            path,
            "exists and is not a socket; refusing to replace it (choose another --socket)",
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(refuse(
            path,
            "another server is listening on this socket (choose another --socket)",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            log::info!("removed the stale socket {}", path.display());
            UnixListener::bind(path).map_err(|e| Error::io(path, e))
        }
        Err(e) => Err(Error::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!("a socket file is in the way and cannot be checked: {e}"),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_a_dead_socket() {
        let dir = std::env::temp_dir().join(format!("qf-serve-listen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.sock");
        let live = bind(&p).unwrap();
        let e = bind(&p).unwrap_err().to_string();
        assert!(e.contains("another server"), "{e}");
        drop(live); // the file stays: a stale socket
        assert!(p.exists());
        let _again = bind(&p).unwrap();
        let f = dir.join("plain");
        std::fs::write(&f, b"x").unwrap();
        let e = bind(&f).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&f).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
