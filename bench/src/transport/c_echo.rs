//! Builds the plaintext reference, `bench/c/enet_echo_server.c` on Debian's libenet, with the
//! system C compiler at run time into a temporary directory that is removed afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The C source, carried in the binary so the bench runs from anywhere.
const SOURCE: &str = include_str!("../../c/enet_echo_server.c");

/// The built server and the directory that holds it (removed on drop).
pub struct CEchoServer {
    dir: PathBuf,
    pub binary: PathBuf,
    /// What was compiled against, e.g. `libenet 1.3.17`.
    pub version: String,
}

impl Drop for CEchoServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Compiles the server; `Err` holds a one-line reason (no compiler, no libenet) for the report.
pub fn build() -> Result<CEchoServer, String> {
    let dir = std::env::temp_dir().join(format!("tavern-bench-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // From here on the directory goes away with `server`, whatever happens.
    let mut server = CEchoServer { dir: dir.clone(), binary: dir.join("enet_echo_server"), version: String::new() };
    let source = dir.join("enet_echo_server.c");
    std::fs::write(&source, SOURCE).map_err(|e| format!("cannot write {}: {e}", source.display()))?;

    let pkg = |arg: &str| -> Option<String> {
        let out = Command::new("pkg-config").args([arg, "libenet"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // Without pkg-config, plain -lenet still finds Debian's library.
    let flags = pkg("--libs").map_or_else(|| "-lenet".to_owned(), |libs| format!("{} {libs}", pkg("--cflags").unwrap_or_default()));
    let version = pkg("--modversion").map_or_else(|| "libenet (version unknown)".to_owned(), |v| format!("libenet {v}"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let out = Command::new(&cc)
        .args(["-O2", "-std=c11", "-o"])
        .arg(&server.binary)
        .arg(&source)
        .args(flags.split_whitespace())
        .output()
        .map_err(|e| format!("no C compiler ({cc}: {e}); install gcc and libenet-dev"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(format!("{cc} could not build the C ENet echo server (is libenet-dev installed?): {first}"));
    }
    server.version = version;
    Ok(server)
}

impl CEchoServer {
    pub fn path(&self) -> &Path {
        &self.binary
    }
}
