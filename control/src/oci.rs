//! `warden oci`: `warden.wasm` as a Wasm OCI image that Istio (`WasmPlugin`) and Envoy Gateway
//! (`EnvoyExtensionPolicy`, `code.type: Image`) pull, written as an OCI image layout directory, without Docker.
//!
//! The image is the *compat* variant of the Wasm image specification (solo-io/wasm `spec-compat.md`), the one both
//! pullers try first (Istio `pkg/wasm/imagefetcher.go`, copied by Envoy Gateway): an OCI image manifest with one
//! layer of media type `application/vnd.oci.image.layer.v1.tar+gzip` holding the module as `plugin.wasm`, and the
//! annotation `module.wasm.image/variant: compat`. (The other variant, a raw `application/vnd.module.wasm.content.
//! layer.v1+wasm` layer, needs a second layer in Istio's puller and is not accepted by every registry.) The build is
//! reproducible: tar entry and gzip header carry no time, owner or host, so the same module always gives the same
//! manifest digest, which is what `sha256` in a `WasmPlugin` or `EnvoyExtensionPolicy` pins for an `oci://` URL.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use warden_core::envelope::sha256_hex;

use crate::files;
use crate::Status;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file name the pullers look for in the layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";

/// Package warden.wasm as a Wasm OCI image (compat variant) in an OCI image layout directory.
///
/// Writes DIR/oci-layout, DIR/index.json (the manifest, tagged --tag) and DIR/blobs/sha256/*, and prints the image's
/// manifest digest: the value of `sha256` for an `oci://` URL in Istio's WasmPlugin and of `code.image.sha256` in
/// Envoy Gateway. Push the directory with any OCI tool, keeping the digest, e.g.
///   skopeo copy --preserve-digests oci:DIR:TAG docker://REGISTRY/warden/warden-wasm:TAG
///   oras cp --from-oci-layout DIR:TAG REGISTRY/warden/warden-wasm:TAG
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The module (target/wasm32-wasip1/wasm/warden.wasm).
    #[arg(long, value_name = "warden.wasm")]
    wasm: PathBuf,
    /// The OCI image layout directory to write (created; must be empty or absent).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The tag recorded in index.json (`org.opencontainers.image.ref.name`).
    #[arg(long, value_name = "TAG", default_value = concat!(env!("CARGO_PKG_VERSION")))]
    tag: String,
}

/// A content-addressed blob.
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn digest(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.bytes))
    }

    fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest(), "size": self.bytes.len() })
    }
}

/// The image: manifest, config and layer blobs.
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layer: Blob,
}

/// Builds the image of a module (pure: same bytes in, same digests out).
pub fn image(wasm: &[u8], tag: &str) -> Result<Image> {
    let tar = tar_one_file(PLUGIN_FILE, wasm)?;
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let mut gz = flate2::GzBuilder::new().operating_system(255).write(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar)?;
    let layer = Blob { media_type: LAYER_MEDIA_TYPE, bytes: gz.finish()? };
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let config = Blob { media_type: CONFIG_MEDIA_TYPE, bytes: serde_json::to_vec(&config)? };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": {
            "module.wasm.image/variant": "compat",
            "org.opencontainers.image.title": "warden.wasm",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.description":
                "Warden: a proxy-wasm filter that governs what AI agents may do (plugin.wasm, wasm32-wasip1)",
        },
    });
    let manifest = Blob { media_type: MANIFEST_MEDIA_TYPE, bytes: serde_json::to_vec(&manifest)? };
    Ok(Image { manifest, config, layer })
}

/// A ustar archive holding one regular file (mode 0644, owner 0:0, time 0).
fn tar_one_file(name: &str, contents: &[u8]) -> Result<Vec<u8>> {
    if name.len() > 99 {
        bail!("tar entry name {name:?} is too long");
    }
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}", width = field.len() - 1);
        field[..text.len()].copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    if contents.len() as u64 >= 0o77777777777 {
        bail!("the module is too large for a ustar entry");
    }
    octal(&mut header[124..136], contents.len() as u64);
    octal(&mut header[136..148], 0);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(contents);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    Ok(out)
}

fn write_layout(dir: &Path, image: &Image, tag: &str) -> Result<()> {
    if dir.exists() && dir.read_dir().with_context(|| format!("cannot read {}", dir.display()))?.next().is_some() {
        bail!("{} is not empty; give a new or empty directory to --out", dir.display());
    }
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("cannot create {}", blobs.display()))?;
    for blob in [&image.layer, &image.config, &image.manifest] {
        let hex = blob.digest().trim_start_matches("sha256:").to_string();
        files::write_atomic(&blobs.join(hex), &blob.bytes, 0o644)?;
    }
    files::write_atomic(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
    let mut descriptor = image.manifest.descriptor();
    descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor],
    });
    files::write_atomic(&dir.join("index.json"), &serde_json::to_vec_pretty(&index)?, 0o644)
}

pub fn run(args: &Args) -> Result<Status> {
    let wasm = files::read_bytes(&args.wasm)?;
    if !wasm.starts_with(b"\0asm") {
        bail!("{}: not a WebAssembly module (no \\0asm magic)", args.wasm.display());
    }
    if args.tag.is_empty()
        || args.tag.len() > 128
        || !args.tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        bail!("--tag {:?}: an OCI tag is 1 to 128 of letters, digits, '.', '_' and '-'", args.tag);
    }
    let image = image(&wasm, &args.tag)?;
    write_layout(&args.out, &image, &args.tag)?;
    let digest = image.manifest.digest();
    println!("{digest}");
    eprintln!("wrote OCI image layout {} (tag {}): Wasm image, compat variant", args.out.display(), args.tag);
    eprintln!(
        "  manifest: {digest}   <- `sha256: {}` for an oci:// URL (Istio WasmPlugin, Envoy Gateway image)",
        digest.trim_start_matches("sha256:")
    );
    eprintln!("  layer:    {} ({} bytes, plugin.wasm)", image.layer.digest(), image.layer.bytes.len());
    eprintln!("  module:   sha256:{}   <- `sha256` only for an https:// URL of the .wasm itself", sha256_hex(&wasm));
    eprintln!(
        "push it keeping the digest: skopeo copy --preserve-digests oci:{}:{} docker://REGISTRY/warden/warden-wasm:{}",
        args.out.display(),
        args.tag,
        args.tag
    );
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_entry_is_what_tar_readers_expect() {
        let tar = tar_one_file("plugin.wasm", b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(tar.len(), 512 + 512 + 1024);
        assert_eq!(&tar[..11], b"plugin.wasm");
        assert_eq!(&tar[124..135], b"00000000010");
        let sum: u32 =
            tar[..512].iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) }).sum();
        assert_eq!(std::str::from_utf8(&tar[148..154]).unwrap(), format!("{sum:06o}"));
        assert_eq!(&tar[512..520], b"\0asm\x01\0\0\0");
    }

    #[test]
    fn the_image_is_reproducible_and_names_its_parts() {
        let a = image(b"\0asm\x01\0\0\0", "1.0").unwrap();
        let b = image(b"\0asm\x01\0\0\0", "1.0").unwrap();
        assert_eq!(a.manifest.digest(), b.manifest.digest());
        let m: Value = serde_json::from_slice(&a.manifest.bytes).unwrap();
        assert_eq!(m["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["digest"], a.layer.digest());
        assert_eq!(m["config"]["digest"], a.config.digest());
        assert_eq!(m["annotations"]["module.wasm.image/variant"], "compat");
        assert_ne!(image(b"\0asm\x01\0\0\x01", "1.0").unwrap().manifest.digest(), a.manifest.digest());
    }
}
