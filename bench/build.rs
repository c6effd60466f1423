//! Generates the tonic client and server of `proto/echo.proto` (the `tonic` system of the `rpc`
//! suite). Needs `protoc` (Debian: `protobuf-compiler`, installed by `scripts/setup.sh`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    tonic_prost_build::compile_protos("proto/echo.proto").map_err(|e| {
        format!(
            "{e}\nsigmabench needs protoc: run scripts/setup.sh (apt-get install protobuf-compiler libprotobuf-dev)"
        )
    })?;
    Ok(())
}
