//! Compiles every `.proto` under `mesh/` with protox (pure Rust, so no `protoc` is needed),
//! then generates prost messages, tonic services and pbjson serde impls from one descriptor set.

use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read proto dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            proto_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let mut files = Vec::new();
    proto_files(Path::new("mesh"), &mut files);
    println!("cargo:rerun-if-changed=mesh");

    let fds = protox::compile(&files, ["."]).expect("compile protos");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let descriptor_path = out_dir.join("descriptors.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))
        .expect("write descriptors");

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_well_known_types(true)
        // Ordered maps keep the encoding of a config byte-stable, so its hash is its version.
        .btree_map(".")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds.clone())
        .expect("generate prost and tonic code");

    let descriptors = std::fs::read(&descriptor_path).expect("read descriptors");
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)
        .expect("register descriptors")
        .btree_map(["."])
        .build(&[".mesh"])
        .expect("generate serde impls");
}
