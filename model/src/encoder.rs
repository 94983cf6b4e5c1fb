//! TorchScript encoders and their manifests. The manifest is the encoder's contract (input
//! size, normalisation, output dimension, files and their sha256), so another encoder can be
//! dropped in without code changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use crate::hashing::verify_files;
use crate::tokenize::TextTokenizer;
use crate::ModelError;

/// Which side an encoder serves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    Image,
    Text,
}

/// `manifest.json` of an encoder, as written by `scripts/export_encoders.py`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EncoderManifest {
    pub name: String,
    pub kind: EncoderKind,
    /// The TorchScript file, relative to the encoder's directory.
    pub file: String,
    #[serde(default)]
    pub source: String,
    /// Input contract (image: height, width, range; text: tokenizer, max_length).
    pub input: serde_json::Value,
    #[serde(default)]
    pub normalisation: String,
    pub output_dim: i64,
    /// Every file of the encoder and its sha256.
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub torch: Option<String>,
    /// Re-exports of the same network for serving (faster, or for other devices), each checked
    /// against `file` at export; `file` stays the encoder's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serving: Vec<ServingVariant>,
}

/// A serving re-export of an encoder (`scripts/export_encoders.py`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServingVariant {
    /// The TorchScript file, relative to the encoder's directory (listed in `files`).
    pub file: String,
    /// Device kinds it runs on: "cpu", "cuda".
    pub devices: Vec<String>,
    /// Number format of its weights and activations: "fp32" (the reference's) or "bf16".
    #[serde(default = "fp32")]
    pub precision: String,
    /// Largest difference from the reference file's outputs, measured at export.
    pub max_abs_diff: f64,
    /// How it was made.
    #[serde(default)]
    pub how: String,
}

fn fp32() -> String {
    "fp32".into()
}

/// Which file of an encoder to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum EncoderFile {
    /// The reference export (the trainer's: vectors exactly as versions were trained on).
    Reference,
    /// The first fp32 serving variant made for the device, else the reference.
    Serving,
    /// The first bfloat16 serving variant made for the device, else as `Serving`: faster on
    /// CPUs with native bf16 (AVX512-BF16, AMX), with more drift from the reference's vectors
    /// (`imagesearch-train eval --encoder-files serving-bf16` measures what it costs).
    ServingBf16,
    /// `ServingBf16` on a CPU that does bf16 arithmetic natively (AVX512-BF16 or AMX in
    /// /proc/cpuinfo); `Serving` elsewhere (emulated bf16 would be slower than fp32) and on GPUs.
    Auto,
}

/// Whether this machine's CPU does bf16 arithmetic natively (Linux x86: `avx512_bf16` or
/// `amx_bf16` among /proc/cpuinfo's flags); read once.
pub fn cpu_has_native_bf16() -> bool {
    static NATIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NATIVE.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        native_bf16_in(&info)
    })
}

fn native_bf16_in(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "avx512_bf16" || f == "amx_bf16")
}

impl EncoderFile {
    /// What `self` means on `device` on this machine (`Auto` resolved; the rest unchanged).
    pub fn resolve(self, device: Device) -> EncoderFile {
        match self {
            EncoderFile::Auto if device == Device::Cpu && cpu_has_native_bf16() => EncoderFile::ServingBf16,
            EncoderFile::Auto => EncoderFile::Serving,
            other => other,
        }
    }
}

fn device_kind(device: Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Mps => "mps",
        Device::Vulkan => "vulkan",
    }
}

impl EncoderManifest {
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|source| ModelError::Manifest { path, source })
    }

    /// The sha256 of the TorchScript file: what scorers record to name the encoder they need.
    pub fn sha256(&self) -> &str {
        self.files.get(&self.file).map(String::as_str).unwrap_or("")
    }

    /// The file to load on `device`: a serving variant made for it, or the reference.
    pub fn file_for(&self, which: EncoderFile, device: Device) -> &str {
        let variant = |precision: &str| {
            self.serving
                .iter()
                .find(|v| v.precision == precision && v.devices.iter().any(|d| d == device_kind(device)))
                .map(|v| v.file.as_str())
        };
        match which.resolve(device) {
            EncoderFile::Reference => &self.file,
            EncoderFile::Serving | EncoderFile::Auto => variant("fp32").unwrap_or(&self.file),
            EncoderFile::ServingBf16 => variant("bf16").or_else(|| variant("fp32")).unwrap_or(&self.file),
        }
    }

    /// The sha256 of the file [`Self::file_for`] names (what its vectors are cached under).
    pub fn sha256_of(&self, which: EncoderFile, device: Device) -> &str {
        self.files.get(self.file_for(which, device)).map(String::as_str).unwrap_or("")
    }

    fn input_usize(&self, key: &str) -> Result<usize, ModelError> {
        self.input
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| {
                ModelError::Incompatible(format!("encoder {}: manifest input lacks '{key}'", self.name))
            })
    }
}

fn load_module(dir: &Path, kind: EncoderKind, device: Device, which: EncoderFile) -> Result<(EncoderManifest, CModule), ModelError> {
    let manifest = EncoderManifest::load(dir)?;
    if manifest.kind != kind {
        return Err(ModelError::Incompatible(format!(
            "{}: encoder '{}' is a {:?} encoder, expected {kind:?}",
            dir.display(),
            manifest.name,
            manifest.kind
        )));
    }
    let tokenizer = manifest.input.get("tokenizer").and_then(serde_json::Value::as_str);
    let file = manifest.file_for(which, device).to_string();
    for needed in [manifest.file.as_str(), file.as_str()].into_iter().chain(tokenizer) {
        let listed = manifest.files.get(needed);
        if !listed.is_some_and(|sha| sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(ModelError::Incompatible(format!(
                "{}: manifest does not list a sha256 for {needed}",
                dir.display()
            )));
        }
    }
    verify_files(dir, &manifest.files)?;
    let mut module = CModule::load_on_device(dir.join(&file), device)?;
    module.set_eval();
    Ok((manifest, module))
}

/// The image encoder: CHW f32 photos in, `[B, output_dim]` vectors out.
pub struct ImageEncoder {
    pub manifest: EncoderManifest,
    pub dir: PathBuf,
    module: CModule,
    device: Device,
    width: u32,
    height: u32,
}

impl ImageEncoder {
    /// Loads and verifies an image encoder directory (its reference file).
    pub fn load(dir: &Path, device: Device) -> Result<Self, ModelError> {
        Self::load_file(dir, device, EncoderFile::Reference)
    }

    /// Loads and verifies an image encoder directory, the file chosen by `which`.
    pub fn load_file(dir: &Path, device: Device, which: EncoderFile) -> Result<Self, ModelError> {
        let (manifest, module) = load_module(dir, EncoderKind::Image, device, which)?;
        let width = manifest.input_usize("width")? as u32;
        let height = manifest.input_usize("height")? as u32;
        Ok(ImageEncoder { manifest, dir: dir.to_path_buf(), module, device, width, height })
    }

    /// Input size (width, height) the encoder expects.
    pub fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Encodes a batch of preprocessed photos (each `3*height*width` floats); returns f32 on CPU.
    pub fn encode(&self, photos: &[&[f32]]) -> Result<Tensor, ModelError> {
        let plane = (self.width * self.height) as usize * 3;
        if let Some(bad) = photos.iter().find(|p| p.len() != plane) {
            return Err(ModelError::Incompatible(format!(
                "photo input has {} values, the encoder wants {plane}",
                bad.len()
            )));
        }
        let flat: Vec<f32> = photos.iter().flat_map(|p| p.iter().copied()).collect();
        let input = Tensor::from_slice(&flat)
            .view([photos.len() as i64, 3, self.height as i64, self.width as i64])
            .to_device(self.device);
        let out = tch::no_grad(|| self.module.forward_ts(&[input]))?;
        check_output(&self.manifest, &out, photos.len())
    }
}

/// The encoder must return `[B, output_dim]`, as its manifest promises.
fn check_output(manifest: &EncoderManifest, out: &Tensor, batch: usize) -> Result<Tensor, ModelError> {
    let size = out.size();
    if size != [batch as i64, manifest.output_dim] {
        return Err(ModelError::Incompatible(format!(
            "encoder {} returned shape {size:?}, its manifest promises [{batch}, {}]",
            manifest.name, manifest.output_dim
        )));
    }
    Ok(out.to_kind(Kind::Float).to_device(Device::Cpu))
}

/// The text encoder with its tokenizer: texts in, `[B, output_dim]` vectors out.
pub struct TextEncoder {
    pub manifest: EncoderManifest,
    pub dir: PathBuf,
    module: CModule,
    tokenizer: TextTokenizer,
    device: Device,
}

impl TextEncoder {
    /// Loads and verifies a text encoder directory (reference module and tokenizer).
    pub fn load(dir: &Path, device: Device) -> Result<Self, ModelError> {
        Self::load_file(dir, device, EncoderFile::Reference)
    }

    /// Loads and verifies a text encoder directory, the module file chosen by `which`.
    pub fn load_file(dir: &Path, device: Device, which: EncoderFile) -> Result<Self, ModelError> {
        let (manifest, module) = load_module(dir, EncoderKind::Text, device, which)?;
        let tokenizer_file = manifest
            .input
            .get("tokenizer")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("tokenizer.json")
            .to_string();
        let max_len = manifest.input_usize("max_length").unwrap_or(128);
        let tokenizer = TextTokenizer::from_file(&dir.join(tokenizer_file), max_len)?;
        Ok(TextEncoder { manifest, dir: dir.to_path_buf(), module, tokenizer, device })
    }

    /// Loads on `device` and runs a probe; when the module cannot run there (a traced module
    /// may hold constants made on the CPU at export, e.g. position ids), it is loaded on the
    /// CPU instead. Returns the encoder and why it fell back, if it did.
    pub fn load_probed(dir: &Path, device: Device, which: EncoderFile) -> Result<(Self, Option<String>), ModelError> {
        let enc = Self::load_file(dir, device, which)?;
        if device == Device::Cpu {
            return Ok((enc, None));
        }
        match enc.encode(&["a probe of the text encoder"]) {
            Ok(_) => Ok((enc, None)),
            Err(e) => {
                let first_line = e.to_string().lines().rev().find(|l| l.contains("Error")).unwrap_or("").trim().to_string();
                Ok((Self::load_file(dir, Device::Cpu, which)?, Some(first_line)))
            }
        }
    }

    /// The device the module runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The tokenizer (for length sorting and limits).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Encodes a batch of texts; returns f32 on CPU. Callers sort long lists by length first.
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let (ids, mask) = self.tokenizer.encode_batch(texts)?;
        let out = tch::no_grad(|| {
            self.module.forward_ts(&[ids.to_device(self.device), mask.to_device(self.device)])
        })?;
        check_output(&self.manifest, &out, texts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(serving: serde_json::Value) -> EncoderManifest {
        serde_json::from_value(serde_json::json!({
            "name": "e", "kind": "image", "file": "ref.pt", "input": {}, "output_dim": 4,
            "files": {"ref.pt": "r", "cpu.pt": "c", "bf16.pt": "b", "any.pt": "a"},
            "serving": serving,
        }))
        .unwrap()
    }

    #[test]
    fn each_file_choice_names_the_variant_for_its_precision_and_device() {
        let m = manifest(serde_json::json!([
            {"file": "bf16.pt", "devices": ["cpu"], "precision": "bf16", "max_abs_diff": 0.1},
            {"file": "cpu.pt", "devices": ["cpu"], "max_abs_diff": 1e-6},
            {"file": "any.pt", "devices": ["cpu", "cuda"], "precision": "fp32", "max_abs_diff": 1e-6},
        ]));
        let cuda = Device::Cuda(0);
        // A variant without a precision is fp32 (manifests written before bf16 variants).
        assert_eq!(m.serving[1].precision, "fp32");
        assert_eq!(m.file_for(EncoderFile::Reference, Device::Cpu), "ref.pt");
        assert_eq!(m.file_for(EncoderFile::Serving, Device::Cpu), "cpu.pt", "never the bf16 file unless asked");
        assert_eq!(m.file_for(EncoderFile::ServingBf16, Device::Cpu), "bf16.pt");
        // No bf16 variant for the device: the fp32 serving file; none at all: the reference.
        assert_eq!(m.file_for(EncoderFile::ServingBf16, cuda), "any.pt");
        assert_eq!(m.file_for(EncoderFile::Serving, Device::Mps), "ref.pt");
        assert_eq!((m.sha256_of(EncoderFile::ServingBf16, Device::Cpu), m.sha256()), ("b", "r"), "the identity stays the reference");
        // Auto: bf16 only on a CPU that does it natively, never on a GPU.
        let auto = if cpu_has_native_bf16() { "bf16.pt" } else { "cpu.pt" };
        assert_eq!(m.file_for(EncoderFile::Auto, Device::Cpu), auto);
        assert_eq!(m.file_for(EncoderFile::Auto, cuda), "any.pt");
        let text = EncoderManifest { kind: EncoderKind::Text, ..m.clone() };
        assert_eq!(text.file_for(EncoderFile::Auto, Device::Cpu), auto, "text encoders follow the CPU as image encoders do");
        assert_eq!(text.file_for(EncoderFile::Auto, cuda), "any.pt");
    }

    #[test]
    fn native_bf16_is_read_from_the_cpu_flags() {
        assert!(native_bf16_in("processor : 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n"));
        assert!(native_bf16_in("flags : fpu amx_bf16\n"));
        assert!(!native_bf16_in("flags : fpu sse2 avx512f avx512bw\nbugs : avx512_bf16_is_not_a_flag_here\n"));
        assert!(!native_bf16_in(""));
    }
}
