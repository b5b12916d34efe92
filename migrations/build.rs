//! Rebuilds this crate when a migration file is added or changed: `sqlx::migrate!` embeds the
//! SQL at compile time, and on stable Rust it cannot tell cargo which files it read.

fn main() {
    println!("cargo:rerun-if-changed=postgres");
    println!("cargo:rerun-if-changed=sqlite");
}
