//! A deploy action's images for the VMs (issue 12, `deploy_linaro_image`,
//! `deploy_linaro_kernel`): fetched from `file://` URLs, plain paths or http(s), decompressed
//! into the log folder, and given to each VM as a writable overlay of its own.
//!
//! The original image is never written: an uncompressed local file is used where it is (read
//! only, through an overlay or with qemu's `snapshot=on`), anything else lands in the log folder.

// The launcher calls these once the deploy actions are wired in; until then only the tests do.
#![cfg_attr(not(test), allow(dead_code))]

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why an image could not be had. `image` is the source as the job gave it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image}: {path} does not exist")]
    Missing { image: String, path: PathBuf },
    #[error("image {image}: {path} is not a file")]
    NotAFile { image: String, path: PathBuf },
    #[error("image {image}: cannot read {path}: {cause}")]
    Unreadable {
        image: String,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("image {image}: {reason}")]
    BadSource { image: String, reason: String },
    #[error("image {image}: bad {format} data: {cause}")]
    BadData {
        image: String,
        format: &'static str,
        cause: io::Error,
    },
    #[error("image {image}: download failed: {message}")]
    Download { image: String, message: String },
    #[error("image {image}: cannot write {path}: {cause}")]
    Write {
        image: String,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("overlay of {base}: {message}")]
    Overlay { base: PathBuf, message: String },
}

/// What the deploy actions gave one role: a whole disk image, or a kernel with its ramdisk,
/// device tree and root filesystem. Local paths, as [`fetch`] returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployed {
    pub image: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
}

impl Deployed {
    /// `deploy_linaro_image`: a whole disk image.
    pub fn image(image: impl Into<PathBuf>) -> Self {
        Deployed {
            image: Some(image.into()),
            ..Deployed::default()
        }
    }

    /// `deploy_linaro_kernel`: a kernel; add the rest with the `with_*` methods.
    pub fn kernel(kernel: impl Into<PathBuf>) -> Self {
        Deployed {
            kernel: Some(kernel.into()),
            ..Deployed::default()
        }
    }

    pub fn with_ramdisk(mut self, path: impl Into<PathBuf>) -> Self {
        self.ramdisk = Some(path.into());
        self
    }

    pub fn with_dtb(mut self, path: impl Into<PathBuf>) -> Self {
        self.dtb = Some(path.into());
        self
    }

    pub fn with_rootfs(mut self, path: impl Into<PathBuf>) -> Self {
        self.rootfs = Some(path.into());
        self
    }

    /// Nothing deployed.
    pub fn is_empty(&self) -> bool {
        *self == Deployed::default()
    }
}

/// A compression format, told by the file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Xz,
    Bzip2,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// The format the file name claims, with the name without its suffix.
    fn from_name(name: &str) -> Option<(Self, &str)> {
        [
            (".gz", Compression::Gzip),
            (".xz", Compression::Xz),
            (".bz2", Compression::Bzip2),
        ]
        .into_iter()
        .find_map(|(suffix, c)| name.strip_suffix(suffix).map(|stem| (c, stem)))
    }

    /// The format the first bytes show. The magic, not only the name, decides: a compressed
    /// image under another name would otherwise reach qemu as a (garbage) raw disk.
    fn from_magic(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            Some(Compression::Bzip2)
        } else {
            None
        }
    }
}

/// Where an image comes from.
#[derive(Debug, PartialEq, Eq)]
enum Origin {
    Local(PathBuf),
    Http(String),
}

fn parse_source(source: &str) -> Result<Origin, ImageError> {
    let bad = |reason: String| ImageError::BadSource {
        image: source.to_owned(),
        reason,
    };
    if source.trim().is_empty() {
        return Err(bad("is empty".into()));
    }
    if let Some(rest) = source.strip_prefix("file://") {
        // file:///abs/path, or file://localhost/abs/path.
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(bad(
                "a file URL needs an absolute path: file:///abs/path".into()
            ));
        }
        let decoded = percent_decode(path).ok_or_else(|| bad("bad %-escape in the URL".into()))?;
        return Ok(Origin::Local(PathBuf::from(decoded)));
    }
    let lower = source.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(Origin::Http(source.to_owned()));
    }
    if let Some((scheme, _)) = source.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return Err(bad(format!(
                "unsupported URL scheme {scheme}:// (file://, http://, https:// or a path)"
            )));
        }
    }
    Ok(Origin::Local(PathBuf::from(source)))
}

/// `%XX` escapes of a URL path; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A file name for the log folder: `HINT-NAME` with anything unusual replaced, so that two
/// roles' images of one name do not meet.
fn local_name(name_hint: &str, base: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let base = clean(base.trim_start_matches('.'));
    let base = if base.is_empty() {
        "image".into()
    } else {
        base
    };
    match clean(name_hint) {
        hint if hint.is_empty() => base,
        hint => format!("{hint}-{base}"),
    }
}

/// The last path segment of a URL, without query or fragment.
fn url_file_name(url: &str) -> &str {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = no_query.split_once("://").map_or(no_query, |(_, r)| r);
    match after_scheme.split_once('/') {
        Some((_, path)) => path.rsplit('/').next().unwrap_or(""),
        None => "",
    }
}

/// The image `source` names as a local file: `file:///abs/path`, a plain path (relative to
/// the current directory) or an http(s) URL (downloaded with curl into `dir`). A gzip, xz or
/// bzip2 file is decompressed into `dir` as `NAME_HINT-NAME` (its name without `.gz`, `.xz`,
/// `.bz2`); an uncompressed local file is returned as it is, and nothing is ever written to
/// the original. `dir` (the log folder) must exist.
pub fn fetch(source: &str, dir: &Path, name_hint: &str) -> Result<PathBuf, ImageError> {
    match parse_source(source)? {
        Origin::Local(path) => {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ImageError::Missing {
                        image: source.to_owned(),
                        path,
                    })
                }
                Err(cause) => {
                    return Err(ImageError::Unreadable {
                        image: source.to_owned(),
                        path,
                        cause,
                    })
                }
            };
            if !meta.is_file() {
                return Err(ImageError::NotAFile {
                    image: source.to_owned(),
                    path,
                });
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match detect(source, &path, &name)? {
                None => Ok(path),
                Some((format, stem)) => {
                    let out = dir.join(local_name(name_hint, &stem));
                    decompress(source, &path, format, &out)?;
                    Ok(out)
                }
            }
        }
        Origin::Http(url) => {
            let name = url_file_name(&url).to_owned();
            let downloaded = dir.join(local_name(name_hint, &name));
            download(source, &url, &downloaded)?;
            match detect(source, &downloaded, &name)? {
                None => Ok(downloaded),
                Some((format, stem)) => {
                    let mut out = dir.join(local_name(name_hint, &stem));
                    if out == downloaded {
                        out.set_extension("img");
                    }
                    let result = decompress(source, &downloaded, format, &out);
                    // The download was only a means to the decompressed image.
                    let _ = std::fs::remove_file(&downloaded);
                    result.map(|()| out)
                }
            }
        }
    }
}

/// The compression of `path` (by its first bytes) and the name its output gets; `None` for an
/// uncompressed file. A name that claims a compression its bytes do not show is an error.
fn detect(
    source: &str,
    path: &Path,
    name: &str,
) -> Result<Option<(Compression, String)>, ImageError> {
    let unreadable = |cause| ImageError::Unreadable {
        image: source.to_owned(),
        path: path.to_owned(),
        cause,
    };
    let mut head = [0u8; 6];
    let mut file = File::open(path).map_err(unreadable)?;
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable(e)),
        }
    }
    let by_name = Compression::from_name(name);
    match (Compression::from_magic(&head[..got]), by_name) {
        (Some(c), Some((named, stem))) if c == named => Ok(Some((c, stem.to_owned()))),
        (Some(c), _) => Ok(Some((c, format!("{name}.out")))),
        (None, Some((named, _))) => Err(ImageError::BadData {
            image: source.to_owned(),
            format: named.name(),
            cause: io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not start as {} data does",
                    path.display(),
                    named.name()
                ),
            ),
        }),
        (None, None) => Ok(None),
    }
}

/// Decompresses `input` into `out`, through a temporary name so that an interrupted or failed
/// run never leaves a truncated image that looks whole.
fn decompress(
    source: &str,
    input: &Path,
    format: Compression,
    out: &Path,
) -> Result<(), ImageError> {
    let file = File::open(input).map_err(|cause| ImageError::Unreadable {
        image: source.to_owned(),
        path: input.to_owned(),
        cause,
    })?;
    let reader = BufReader::new(file);
    // The multi-member/multi-stream readers: `pigz`, `pbzip2` and `xz -T` write several.
    let mut decoder: Box<dyn Read> = match format {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(reader, true)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
    };
    let partial = out.with_file_name(format!(
        ".{}.partial",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    let write_error = |path: &Path, cause| ImageError::Write {
        image: source.to_owned(),
        path: path.to_owned(),
        cause,
    };
    let mut dest = File::create(&partial).map_err(|e| write_error(&partial, e))?;
    let copied = copy_classified(&mut decoder, &mut dest);
    let finished = match copied {
        Ok(()) => dest.flush().map_err(|e| write_error(&partial, e)),
        Err(CopyError::Read(cause)) => Err(ImageError::BadData {
            image: source.to_owned(),
            format: format.name(),
            cause,
        }),
        Err(CopyError::Write(cause)) => Err(write_error(&partial, cause)),
    };
    drop(dest);
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        write_error(out, e)
    })
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy`, telling a read error (bad compressed data) from a write error (a full disk).
fn copy_classified(from: &mut dyn Read, to: &mut dyn Write) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

/// Downloads `url` into `out` with curl (no HTTP client in this static binary).
fn download(source: &str, url: &str, out: &Path) -> Result<(), ImageError> {
    let failed = |message: String| ImageError::Download {
        image: source.to_owned(),
        message,
    };
    let result = Command::new("curl")
        .args(["-fsSL", "--proto", "=http,https"])
        // Never hang on a dead server: give up when nothing comes for a minute.
        .args(["--connect-timeout", "30", "--speed-time", "60"])
        .args(["--speed-limit", "1"])
        .arg("-o")
        .arg(out)
        .arg("--")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(failed(
            "curl is not installed (it fetches http(s) images): install curl, or give a file:// URL or a path"
                .into(),
        )),
        Err(e) => Err(failed(format!("cannot run curl: {e}"))),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let _ = std::fs::remove_file(out);
            let text = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            Err(failed(if text.is_empty() {
                format!("curl ended with {}", o.status)
            } else {
                text
            }))
        }
    }
}

/// A disk image's format as qemu names it, from its first bytes: `qcow2` or `raw`. (Naming the
/// format keeps qemu from probing, which it warns about and which restricts writes to a raw
/// image's first block.)
pub fn disk_format(path: &Path) -> &'static str {
    let mut head = [0u8; 4];
    match File::open(path).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) if head == *b"QFI\xfb" => "qcow2",
        // Not made yet (`vm-group show` names the overlay a run will create).
        Err(_) if path.extension().is_some_and(|e| e == "qcow2") => "qcow2",
        _ => "raw",
    }
}

/// The architecture a deployed image is made for, when its first bytes tell: a PC disk (an MBR
/// with x86 boot code, not a GPT's protective one) or an x86 `bzImage` kernel is `x86_64`, an
/// arm64 `Image` kernel `aarch64`. `None`: unknown (a qcow2 file, a GPT disk, anything else).
pub fn image_arch(path: &Path) -> Option<&'static str> {
    let mut head = vec![0u8; 4096];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let head = &head[..n];
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0x38, b"ARM\x64") {
        return Some("aarch64");
    }
    if at(0x202, b"HdrS") {
        return Some("x86_64");
    }
    let mbr = at(510, &[0x55, 0xAA]);
    let protective = head.get(450) == Some(&0xEE);
    let boot_code = head
        .get(..440)
        .is_some_and(|code| code.iter().any(|b| *b != 0));
    (mbr && !protective && boot_code).then_some("x86_64")
}

/// A writable image of `base` for one VM, `dir/CLIENT.qcow2`: a qcow2 overlay whose backing
/// file is `base` (`qemu-img create -f qcow2 -b BASE -F FORMAT`), so that every VM writes its
/// own file and `base` stays as it is. Without qemu-img, a plain copy `dir/CLIENT.img` (the
/// error text says so when the copy fails).
pub fn overlay(base: &Path, dir: &Path, client: &str) -> Result<PathBuf, ImageError> {
    overlay_with("qemu-img", base, dir, client)
}

fn overlay_with(
    qemu_img: &str,
    base: &Path,
    dir: &Path,
    client: &str,
) -> Result<PathBuf, ImageError> {
    let fail = |message: String| ImageError::Overlay {
        base: base.to_owned(),
        message,
    };
    // qemu-img resolves a relative backing file against the overlay's folder, not ours.
    let base_abs = std::fs::canonicalize(base).map_err(|e| fail(format!("cannot find it: {e}")))?;
    if !base_abs.is_file() {
        return Err(fail("is not a file".into()));
    }
    let format = match qemu_img_info(qemu_img, &base_abs) {
        Ok(format) => format,
        Err(QemuImg::Missing) => {
            let copy = dir.join(format!("{client}.img"));
            return match std::fs::copy(&base_abs, &copy) {
                Ok(_) => Ok(copy),
                Err(e) => Err(fail(format!(
                    "{qemu_img} not found, so a plain copy instead of an overlay: cannot copy to {}: {e}",
                    copy.display()
                ))),
            };
        }
        Err(QemuImg::Failed(message)) => return Err(fail(message)),
    };
    let out = dir.join(format!("{client}.qcow2"));
    // qemu-img would refuse to overwrite nothing, but a stale overlay of an earlier run with
    // another base must not be reused: start afresh.
    let _ = std::fs::remove_file(&out);
    let created = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(&base_abs)
        .args(["-F", &format])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| fail(format!("cannot run {qemu_img}: {e}")))?;
    if !created.status.success() {
        return Err(fail(format!(
            "{qemu_img} create failed: {}",
            String::from_utf8_lossy(&created.stderr).trim()
        )));
    }
    Ok(out)
}

enum QemuImg {
    Missing,
    Failed(String),
}

/// The format `qemu-img info` detects for `path` (`raw`, `qcow2`, `vmdk`, ...).
fn qemu_img_info(qemu_img: &str, path: &Path) -> Result<String, QemuImg> {
    let output = Command::new(qemu_img)
        .args(["info", "--output=json", "--"])
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output();
    let output = match output {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(QemuImg::Missing),
        Err(e) => return Err(QemuImg::Failed(format!("cannot run {qemu_img}: {e}"))),
        Ok(o) => o,
    };
    if !output.status.success() {
        return Err(QemuImg::Failed(format!(
            "{qemu_img} info failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .ok()
        .and_then(|v| v.get("format")?.as_str().map(str::to_owned))
        .ok_or_else(|| QemuImg::Failed(format!("{qemu_img} info gave no format")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A fresh folder under the system's temporary folder, removed when dropped.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl AsRef<Path> for TempDir {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    fn temp_dir(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("lava-images-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    const DATA: &[u8] = b"hello image\n";
    /// `printf 'hello image\n' | xz -9` (the xz crate here has no encoder).
    const XZ: &[u8] = &[
        0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00, 0x21,
        0x01, 0x1c, 0x00, 0x00, 0x00, 0x10, 0xcf, 0x58, 0xcc, 0x01, 0x00, 0x0b, 0x68, 0x65, 0x6c,
        0x6c, 0x6f, 0x20, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x0a, 0x00, 0xee, 0x2f, 0x07, 0x53, 0xae,
        0xb7, 0xee, 0xcf, 0x00, 0x01, 0x24, 0x0c, 0xa6, 0x18, 0xd8, 0xd8, 0x1f, 0xb6, 0xf3, 0x7d,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 0x59, 0x5a,
    ];

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn sources_are_parsed() {
        assert_eq!(
            parse_source("file:///srv/a%20b.img").unwrap(),
            Origin::Local("/srv/a b.img".into())
        );
        assert_eq!(
            parse_source("file://localhost/srv/a.img").unwrap(),
            Origin::Local("/srv/a.img".into())
        );
        assert_eq!(
            parse_source("images/a.img").unwrap(),
            Origin::Local("images/a.img".into())
        );
        assert_eq!(
            parse_source("HTTPS://example.invalid/a.img").unwrap(),
            Origin::Http("HTTPS://example.invalid/a.img".into())
        );
        for bad in ["", "file://rel/a.img", "ftp://x/a.img", "file:///a%zz"] {
            let e = parse_source(bad).unwrap_err();
            assert!(matches!(e, ImageError::BadSource { .. }), "{bad}: {e}");
        }
        assert_eq!(
            url_file_name("http://h:1/d/disk.img.gz?x=1#f"),
            "disk.img.gz"
        );
        assert_eq!(url_file_name("http://h"), "");
        assert_eq!(local_name("server", "disk.img"), "server-disk.img");
        assert_eq!(local_name("", "../x y"), "_x_y");
        assert_eq!(local_name("a b", ""), "a_b-image");
    }

    #[test]
    fn an_uncompressed_local_file_is_used_in_place() {
        let dir = temp_dir("plain");
        let image = dir.join("disk.img");
        std::fs::write(&image, DATA).unwrap();
        let url = format!("file://{}", image.display());
        assert_eq!(fetch(&url, &dir, "server").unwrap(), image);
        assert_eq!(
            fetch(image.to_str().unwrap(), &dir, "server").unwrap(),
            image
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "nothing written"
        );
    }

    #[test]
    fn compressed_files_are_decompressed_into_the_folder() {
        let src = temp_dir("compressed-src");
        let dir = temp_dir("compressed-out");
        // Two gzip members, as pigz writes them.
        let mut two = gzip(b"hello ");
        two.extend(gzip(b"image\n"));
        for (name, bytes) in [
            ("a.img.gz", two),
            ("b.img.xz", XZ.to_vec()),
            ("c.img.bz2", bzip2(DATA)),
            // The bytes decide; the name without a known suffix gets `.out`.
            ("d.bin", gzip(DATA)),
        ] {
            let path = src.join(name);
            std::fs::write(&path, &bytes).unwrap();
            let got = fetch(&format!("file://{}", path.display()), &dir, "vm").unwrap();
            assert_eq!(got.parent(), Some(dir.as_path()), "{name}");
            assert_eq!(std::fs::read(&got).unwrap(), DATA, "{name}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{name}: original untouched"
            );
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["vm-a.img", "vm-b.img", "vm-c.img", "vm-d.bin.out"]);
    }

    #[test]
    fn errors_name_the_source_and_the_cause() {
        let dir = temp_dir("errors");
        let missing = dir.join("nope.img");
        let e = fetch(missing.to_str().unwrap(), &dir, "x").unwrap_err();
        assert!(matches!(e, ImageError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("nope.img does not exist"), "{e}");

        let e = fetch(&format!("file://{}", dir.display()), &dir, "x").unwrap_err();
        assert!(e.to_string().ends_with("is not a file"), "{e}");

        let corrupt = dir.join("bad.img.gz");
        let mut bytes = gzip(&[7u8; 4096]);
        let n = bytes.len();
        bytes[n / 2..].fill(0xff);
        std::fs::write(&corrupt, bytes).unwrap();
        let e = fetch(corrupt.to_str().unwrap(), &dir, "x").unwrap_err();
        assert!(
            matches!(e, ImageError::BadData { format: "gzip", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("bad.img.gz: bad gzip data"), "{e}");

        let liar = dir.join("liar.img.xz");
        std::fs::write(&liar, DATA).unwrap();
        let e = fetch(liar.to_str().unwrap(), &dir, "x").unwrap_err();
        assert!(e.to_string().contains("bad xz data"), "{e}");

        let mut truncated = XZ.to_vec();
        truncated.truncate(30);
        let cut = dir.join("cut.img.xz");
        std::fs::write(&cut, truncated).unwrap();
        let e = fetch(cut.to_str().unwrap(), &dir, "x").unwrap_err();
        assert!(e.to_string().contains("bad xz data"), "{e}");
        // No partial output is left behind.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial") || n.starts_with("x-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A one-shot HTTP server on 127.0.0.1 answering every request with `status` and `body`.
    fn serve(status: &'static str, body: Vec<u8>, requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let Ok(mut stream) = stream else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        format!("http://{addr}")
    }

    fn have_curl() -> bool {
        Command::new("curl")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn http_images_are_downloaded_with_curl() {
        if !have_curl() {
            eprintln!("skipped: curl is not installed");
            return;
        }
        let dir = temp_dir("http");
        let base = serve("200 OK", gzip(DATA), 1);
        let got = fetch(
            &format!("{base}/images/disk.img.gz?token=1"),
            &dir,
            "server",
        )
        .unwrap();
        assert_eq!(got, dir.join("server-disk.img"));
        assert_eq!(std::fs::read(&got).unwrap(), DATA);
        assert!(!dir.join("server-disk.img.gz").exists(), "download removed");

        let base = serve("200 OK", DATA.to_vec(), 1);
        let got = fetch(&format!("{base}/plain.img"), &dir, "client").unwrap();
        assert_eq!(got, dir.join("client-plain.img"));
        assert_eq!(std::fs::read(&got).unwrap(), DATA);

        let base = serve("404 Not Found", b"no".to_vec(), 1);
        let e = fetch(&format!("{base}/missing.img"), &dir, "x").unwrap_err();
        assert!(matches!(e, ImageError::Download { .. }), "{e}");
        assert!(e.to_string().contains("404"), "{e}");
        assert!(!dir.join("x-missing.img").exists());
    }

    #[test]
    fn deployed_builder() {
        let d = Deployed::kernel("vmlinuz")
            .with_ramdisk("initrd.gz")
            .with_dtb("board.dtb")
            .with_rootfs("rootfs.ext4");
        assert_eq!(d.kernel.as_deref(), Some(Path::new("vmlinuz")));
        assert_eq!(d.rootfs.as_deref(), Some(Path::new("rootfs.ext4")));
        assert_eq!(d.image, None);
        assert_eq!(
            Deployed::image("disk.img").image.as_deref(),
            Some(Path::new("disk.img"))
        );
        assert!(Deployed::default().is_empty());
        assert!(!d.is_empty());
    }

    fn have_qemu_img() -> bool {
        Command::new("qemu-img")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn overlays_keep_the_base_untouched() {
        let dir = temp_dir("overlay");
        let base = dir.join("base.img");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(disk_format(&base), "raw");
        if have_qemu_img() {
            let a = overlay(&base, &dir, "server-1").unwrap();
            let b = overlay(&base, &dir, "server-2").unwrap();
            assert_eq!(a, dir.join("server-1.qcow2"));
            assert_ne!(a, b);
            assert_eq!(disk_format(&a), "qcow2");
            let info = Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(&a)
                .output()
                .unwrap();
            let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
            assert_eq!(info["backing-filename-format"], "raw");
            // An overlay of a qcow2 base says so too.
            let c = overlay(&a, &dir, "nested").unwrap();
            assert_eq!(disk_format(&c), "qcow2");
        } else {
            eprintln!("qemu-img is not installed: only the copy fallback is tested");
        }
        // Without qemu-img: a plain copy.
        let copy = overlay_with("qemu-img-not-here", &base, &dir, "client-1").unwrap();
        assert_eq!(copy, dir.join("client-1.img"));
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&base).unwrap());
        let e = overlay_with("qemu-img-not-here", &base, &dir.join("gone"), "c").unwrap_err();
        assert!(e.to_string().contains("plain copy"), "{e}");
        let e = overlay(&dir.join("nope"), &dir, "c").unwrap_err();
        assert!(e.to_string().contains("cannot find it"), "{e}");
    }
}
