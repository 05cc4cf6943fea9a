//! The committed C header (`include/qforget.h`) must be exactly what cbindgen makes of
//! `src/ffi/` with `cbindgen.toml`, so an app never builds against a stale API. Regenerate
//! with `QF_BLESS=1 cargo test --test it header` (or `cbindgen --config cbindgen.toml
//! --output include/qforget.h src/ffi/mod.rs`).

use std::path::Path;

#[test]
fn c_header_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(cfg)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen parses src/ffi/");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = root.join("include/qforget.h");
    if std::env::var_os("QF_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read(&path).expect("include/qforget.h");
    assert!(
        committed == fresh,
        "include/qforget.h is stale: regenerate it with `QF_BLESS=1 cargo test --test it header`"
    );
    let text = String::from_utf8(committed).unwrap();
    let version = format!("#define QF_VERSION \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        text.contains(&version),
        "the header's QF_VERSION is not Cargo.toml's version (want `{version}`; fix cbindgen.toml)"
    );
    let (major, rest) = env!("CARGO_PKG_VERSION").split_once('.').unwrap();
    let minor = rest.split('.').next().unwrap();
    assert!(text.contains(&format!("#define QF_VERSION_MAJOR {major}")));
    assert!(text.contains(&format!("#define QF_VERSION_MINOR {minor}")));
}
