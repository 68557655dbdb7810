//! Our `lava-*` tools for a guest that has none: the static `lava-multinode` of the guest's
//! architecture, found on the host and typed into the guest over its console (gzip, then
//! base64 in here-documents), with a link per tool name.
//!
//! Where the binary is looked for, first found:
//! 1. `$LAVA_MULTINODE_GUEST_TOOLS/TRIPLE/lava-multinode` (a folder laid out like `dist/`);
//! 2. `dist/TRIPLE/lava-multinode` of the source tree this launcher was built in (two folders
//!    above the binary: `target/release/` → `dist/`), where `packaging/build-static.sh` puts it;
//! 3. `/usr/lib/lava-multinode/TRIPLE/lava-multinode` (an installed package);
//! 4. this launcher itself, when it is static and of the guest's architecture.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

/// Largest binary typed into a guest (a debug build is far bigger than a static release one).
const MAX_BYTES: u64 = 8 << 20;
/// Base64 lines per here-document: a few KiB per step keeps within the guest's tty buffers.
const LINES_PER_STEP: usize = 48;

/// The guest's architecture from its `device_type`.
pub fn guest_arch(device_type: &str) -> &'static str {
    match device_type {
        "kvm-arm" => "aarch64",
        _ => std::env::consts::ARCH,
    }
}

/// The musl target of an architecture.
fn triple(arch: &str) -> String {
    match arch {
        "arm" => "armv7-unknown-linux-musleabihf".into(),
        other => format!("{other}-unknown-linux-musl"),
    }
}

/// Whether an ELF file has no program interpreter (is statically linked).
fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // 64-bit little-endian ELF only: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if bytes.len() < 0x40 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let mut off = [0u8; 8];
    off.copy_from_slice(&bytes[0x20..0x28]);
    let phoff = u64::from_le_bytes(off) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = phoff + i * size;
        // PT_INTERP is 3.
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != 3)
    })
}

/// The static binary for `arch`, or where it was looked for.
pub fn find(arch: &str) -> Result<PathBuf, String> {
    let triple = triple(arch);
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("LAVA_MULTINODE_GUEST_TOOLS") {
        candidates.push(PathBuf::from(dir).join(&triple).join("lava-multinode"));
    }
    let exe = std::env::current_exe().ok();
    if let Some(root) = exe.as_ref().and_then(|e| e.parent()?.parent()?.parent()) {
        candidates.push(root.join("dist").join(&triple).join("lava-multinode"));
    }
    candidates.push(
        Path::new("/usr/lib/lava-multinode")
            .join(&triple)
            .join("lava-multinode"),
    );
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    if let Some(exe) = exe {
        if arch == std::env::consts::ARCH && is_static(&exe) {
            return Ok(exe);
        }
        candidates.push(exe);
    }
    Err(format!(
        "no static lava-multinode for {arch} (looked at {}; a dynamic launcher is not used); \
         build it with packaging/build-static.sh {triple}",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Commands that put `binary` at `ROOT/bin/lava-multinode` with a link per tool, each as
/// (command line, here-document input or empty).
pub fn delivery(
    binary_path: &Path,
    root: &str,
    tools: &[String],
) -> Result<Vec<(String, String)>, String> {
    let size = std::fs::metadata(binary_path)
        .map_err(|e| format!("{}: {e}", binary_path.display()))?
        .len();
    if size > MAX_BYTES {
        return Err(format!(
            "{} is {} MiB: too big to type into a guest (a static release build is under 1 MiB)",
            binary_path.display(),
            size >> 20
        ));
    }
    let binary =
        std::fs::read(binary_path).map_err(|e| format!("{}: {e}", binary_path.display()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&binary)
        .map_err(|e| format!("cannot compress {}: {e}", binary_path.display()))?;
    let packed = gz
        .finish()
        .map_err(|e| format!("cannot compress {}: {e}", binary_path.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(packed);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let staging = format!("{root}/bin/lava-multinode.gz.b64");
    let mut out = vec![(
        format!("mkdir -p {root}/bin && : > {staging}"),
        String::new(),
    )];
    for block in lines.chunks(LINES_PER_STEP) {
        out.push((
            format!("cat >> {staging} <<'LAVA_MULTINODE_EOF'"),
            format!("{}\nLAVA_MULTINODE_EOF\n", block.join("\n")),
        ));
    }
    let links: Vec<String> = tools
        .iter()
        .map(|t| format!("ln -sf lava-multinode {root}/bin/{t}"))
        .collect();
    out.push((
        format!(
            "base64 -d {staging} | gzip -dc > {root}/bin/lava-multinode && rm {staging} && \
             chmod 755 {root}/bin/lava-multinode && {}",
            links.join(" && ")
        ),
        String::new(),
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn arch_and_triples() {
        assert_eq!(guest_arch("kvm-arm"), "aarch64");
        assert_eq!(guest_arch("kvm"), std::env::consts::ARCH);
        assert_eq!(triple("x86_64"), "x86_64-unknown-linux-musl");
        assert_eq!(triple("arm"), "armv7-unknown-linux-musleabihf");
        assert!(!is_static(Path::new("/bin/sh")), "Debian's sh is dynamic");
    }

    /// The commands, run by a real shell with their input, rebuild the binary byte for byte.
    #[test]
    fn a_binary_arrives_whole() {
        let dir = std::env::temp_dir().join(format!("lava-tools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fake: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let src = dir.join("src-binary");
        std::fs::write(&src, &fake).unwrap();
        let root = dir.join("root").display().to_string();
        let steps = delivery(&src, &root, &["lava-send".into(), "lava-wait".into()]).unwrap();
        assert!(steps.len() > 3);
        for (cmd, input) in &steps {
            assert!(cmd.len() < 1000 && input.lines().all(|l| l.len() <= 76));
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(format!("{cmd}\n{input}"))
                .spawn()
                .unwrap();
            assert!(child.wait().unwrap().success(), "{cmd}");
        }
        assert_eq!(
            std::fs::read(format!("{root}/bin/lava-multinode")).unwrap(),
            fake
        );
        assert!(std::fs::symlink_metadata(format!("{root}/bin/lava-send"))
            .unwrap()
            .is_symlink());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
