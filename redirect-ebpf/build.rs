//! Compiles the kernel programs (C) with clang into `$OUT_DIR/portcullis.o`,
//! and runs `bpf/layout.c` on the host to emit `$OUT_DIR/c_layout.rs`, the
//! header's sizes, offsets and constants for the layout unit test.

use std::env;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command, what: &str) -> Output {
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{what}: `{}` not found. The kernel programs are C built with clang: \
             install it (`apt-get install -y clang llvm libbpf-dev`) or point $CLANG at it.",
            cmd.get_program().to_string_lossy()
        ),
        Err(e) => panic!("{what}: cannot run {cmd:?}: {e}"),
    };
    if !output.status.success() {
        panic!(
            "{what} failed ({}): {cmd:?}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = Path::new("bpf");
    for file in ["portcullis.c", "portcullis.h", "layout.c"] {
        println!("cargo:rerun-if-changed=bpf/{file}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // Debian keeps asm/types.h under the multiarch directory.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");

    let object = out_dir.join("portcullis.o");
    run(
        Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(&multiarch)
            .arg("-c")
            .arg(bpf_dir.join("portcullis.c"))
            .arg("-o")
            .arg(&object),
        "compiling bpf/portcullis.c",
    );

    let layout = out_dir.join("layout");
    run(
        Command::new(&clang)
            .args(["-O0", "-Wall", "-Werror"])
            .arg(&multiarch)
            .arg(bpf_dir.join("layout.c"))
            .arg("-o")
            .arg(&layout),
        "compiling bpf/layout.c",
    );
    let printed = run(&mut Command::new(&layout), "running bpf/layout.c");
    std::fs::write(out_dir.join("c_layout.rs"), printed.stdout)
        .expect("write $OUT_DIR/c_layout.rs");
}
