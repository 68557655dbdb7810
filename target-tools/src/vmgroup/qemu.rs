//! The default launcher (issue 12, "Default launchers"): the qemu command that starts a VM
//! whose entry has no `launch_with`, from its `device_type` and what the deploy actions gave.
//!
//! | `device_type` | qemu |
//! | --- | --- |
//! | `kvm`, `qemu` | this machine's architecture: x86_64 `qemu-system-x86_64 -M q35`, aarch64 `qemu-system-aarch64 -M virt` (`-cpu host` under KVM, `-cpu max` under TCG) |
//! | `kvm-arm` | `qemu-system-aarch64 -M virt -cpu max` (KVM only on an aarch64 machine) |
//!
//! `kvm-arm` is 64-bit: the seed's 32-bit boards are long gone and arm64 kernels are what
//! distributions ship; a 32-bit guest needs its own `launch_with` (`qemu-system-arm -M virt`).
//! On `-M virt` a whole-disk image needs UEFI firmware (Debian's `qemu-efi-aarch64`).

// The launcher calls these once the default launchers are wired in; until then only the tests do.
#![cfg_attr(not(test), allow(dead_code))]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::images::{self, Deployed};

/// The device types with a default launcher.
pub const DEVICE_TYPES: [&str; 3] = ["kvm", "qemu", "kvm-arm"];

/// How qemu runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation, with the host's CPU model (`-accel kvm -cpu host`).
    Kvm,
    /// qemu's own emulation (`-accel tcg`), which works everywhere, more slowly.
    Tcg,
}

/// UEFI firmware for `-M virt` disk boots, from Debian's qemu-efi-aarch64 (first found).
const AARCH64_FIRMWARE: [&str; 2] = [
    "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
    "/usr/share/AAVMF/AAVMF_CODE.no-secboot.fd",
];

/// Memory of a default VM, MiB: room for a distribution's cloud kernel and its initramfs.
const MEMORY_MIB: u32 = 512;

/// The architecture a device type's guest has on a machine of `host_arch`.
fn guest_arch(device_type: &str, host_arch: &str) -> Result<&'static str, String> {
    match device_type {
        "kvm" | "qemu" => match host_arch {
            "x86_64" => Ok("x86_64"),
            "aarch64" => Ok("aarch64"),
            other => Err(format!(
                "{device_type:?} has no default launcher on a {other} machine (x86_64 or aarch64): give launch_with"
            )),
        },
        "kvm-arm" => Ok("aarch64"),
        other => Err(format!(
            "{other:?} has no default launcher (supported: {}); give launch_with to start it",
            DEVICE_TYPES.join(", ")
        )),
    }
}

/// A word for `sh -c`: single-quoted unless it needs no quoting.
fn sh_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '=' | ',' | ':' | '+')
        });
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A path as a shell word for the returned template: shell-quoted, with `{` and `}` doubled
/// so that `job::substitute` gives them back as they are.
fn path_word(path: &Path) -> String {
    sh_quote(&path.display().to_string())
        .replace('{', "{{")
        .replace('}', "}}")
}

/// A `-drive` option: qemu's option syntax doubles commas inside a value.
fn drive(path: &Path, snapshot: bool) -> String {
    let file = path.display().to_string().replace(',', ",,");
    let format = images::disk_format(path);
    let mut value = format!("file={file},if=virtio,format={format}");
    if snapshot {
        // Writes go to a temporary file: the deployed original is never written.
        value.push_str(",snapshot=on");
    }
    format!("-drive {}", path_word(Path::new(&value)))
}

/// The qemu command that starts `client` from what was deployed for it: one command for
/// `sh -c`, starting with `exec` so that the launcher's signals reach qemu itself. `disk` is
/// the VM's own writable image ([`images::overlay`] of the deployed image or root filesystem);
/// without it the deployed file is used with `snapshot=on`, so it is never written either.
///
/// - A kernel (`deploy_linaro_kernel`) boots directly: `-kernel`, `-initrd`, `-dtb`, the root
///   filesystem as the virtio disk `/dev/vda`, and `-append 'console=ttyS0|ttyAMA0 ...'`.
/// - Otherwise the whole-disk image boots through its own boot loader.
///
/// The console is qemu's standard input and output alone (no monitor, no Ctrl-A escapes, no
/// Ctrl-C handling: every byte the launcher types reaches the guest's serial port). The NIC is
/// virtio-net (Debian's cloud kernels have no e1000 driver) on user networking, where the host
/// is 10.0.2.2.
///
/// The result is a `launch_with` command, to go through `job::substitute` like any other: the
/// kernel command line ends with `{kernel_cmdline}`, and braces in paths are doubled. Errors
/// name the problem; the caller adds the field (`vm_group.vms[i].device_type`).
pub fn default_command(
    device_type: &str,
    deployed: &Deployed,
    disk: Option<&Path>,
    client: &str,
    log_dir: &Path,
    accel: Accel,
) -> Result<String, String> {
    command_for(
        std::env::consts::ARCH,
        device_type,
        deployed,
        disk,
        client,
        log_dir,
        accel,
        aarch64_firmware,
    )
}

fn aarch64_firmware() -> Option<PathBuf> {
    AARCH64_FIRMWARE
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

#[allow(clippy::too_many_arguments)]
fn command_for(
    host_arch: &str,
    device_type: &str,
    deployed: &Deployed,
    disk: Option<&Path>,
    client: &str,
    log_dir: &Path,
    accel: Accel,
    firmware: fn() -> Option<PathBuf>,
) -> Result<String, String> {
    let arch = guest_arch(device_type, host_arch)?;
    // KVM runs only a guest of the machine's own architecture.
    let kvm = accel == Accel::Kvm && arch == host_arch;
    let mut args: Vec<String> = vec!["exec".into()];
    match arch {
        "x86_64" => args.extend(["qemu-system-x86_64", "-M", "q35"].map(String::from)),
        _ => args.extend(["qemu-system-aarch64", "-M", "virt"].map(String::from)),
    }
    if kvm {
        args.extend(["-accel", "kvm", "-cpu", "host"].map(String::from));
    } else {
        args.extend(["-accel", "tcg"].map(String::from));
        if arch == "aarch64" {
            args.extend(["-cpu", "max"].map(String::from));
        }
    }
    args.extend([
        "-name".into(),
        sh_quote(client),
        "-m".into(),
        MEMORY_MIB.to_string(),
        "-nographic".into(),
        "-no-reboot".into(),
        // The console: the serial port on stdio without qemu's multiplexer, so no Ctrl-A
        // sequence the launcher types can reach a monitor, and Ctrl-C goes to the guest.
        "-monitor".into(),
        "none".into(),
        "-chardev".into(),
        "stdio,id=console,mux=off,signal=off".into(),
        "-serial".into(),
        "chardev:console".into(),
        "-netdev".into(),
        "user,id=n0".into(),
        // No option ROM: iPXE would only slow the boot down.
        "-device".into(),
        "virtio-net-pci,netdev=n0,romfile=".into(),
        "-pidfile".into(),
        path_word(&log_dir.join(format!("{client}.pid"))),
    ]);

    let console = if arch == "x86_64" { "ttyS0" } else { "ttyAMA0" };
    if let Some(kernel) = &deployed.kernel {
        args.extend(["-kernel".into(), path_word(kernel)]);
        if let Some(ramdisk) = &deployed.ramdisk {
            args.extend(["-initrd".into(), path_word(ramdisk)]);
        }
        if let Some(dtb) = &deployed.dtb {
            args.extend(["-dtb".into(), path_word(dtb)]);
        }
        let mut append = format!("console={console}");
        let root = match (disk, &deployed.rootfs) {
            (Some(d), _) => Some(drive(d, false)),
            (None, Some(r)) => Some(drive(r, true)),
            (None, None) => None,
        };
        if let Some(root) = root {
            args.push(root);
            append.push_str(" root=/dev/vda rw rootwait");
        }
        // Kernel parameters are words the launcher makes (no single quotes in them).
        args.extend(["-append".into(), format!("'{append} {{kernel_cmdline}}'")]);
    } else {
        for (what, given) in [("ramdisk", &deployed.ramdisk), ("dtb", &deployed.dtb)] {
            if given.is_some() {
                return Err(format!(
                    "a {what} was deployed without a kernel (deploy_linaro_kernel needs kernel)"
                ));
            }
        }
        let drive_arg = match (disk, &deployed.image, &deployed.rootfs) {
            (Some(d), _, _) => drive(d, false),
            (None, Some(image), _) => drive(image, true),
            (None, None, Some(_)) => {
                return Err(
                    "a rootfs was deployed without a kernel to boot it (deploy_linaro_kernel needs kernel)"
                        .into(),
                )
            }
            (None, None, None) => {
                return Err(
                    "nothing to boot: no image (deploy_linaro_image, or the VM's image) and no kernel (deploy_linaro_kernel)"
                        .into(),
                )
            }
        };
        if arch == "aarch64" {
            // -M virt has no firmware of its own to run a disk's boot loader.
            match firmware() {
                Some(fw) => args.extend(["-bios".into(), path_word(&fw)]),
                None => {
                    return Err(format!(
                        "booting a whole-disk image on {device_type} needs UEFI firmware ({}): apt-get install qemu-efi-aarch64, or deploy a kernel",
                        AARCH64_FIRMWARE.join(" or ")
                    ))
                }
            }
        }
        args.push(drive_arg);
    }
    Ok(args.join(" "))
}

/// The qemu of this machine's own architecture, for the probe.
fn native_qemu() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("qemu-system-x86_64"),
        "aarch64" => Some("qemu-system-aarch64"),
        _ => None,
    }
}

/// The longest a probe's qemu run may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(2500);

/// Whether KVM really works here: `/dev/kvm` opens read-write, answers `KVM_GET_API_VERSION`
/// (12) and creates a VM, and qemu with `-accel kvm -cpu host` (what [`default_command`] then
/// uses) runs a machine: on x86_64 until its BIOS has finished and tries to boot (SeaBIOS's
/// debug port), within 2.5 s. An opening `/dev/kvm` is not enough: in some nested setups a
/// guest hangs in early boot under the default CPU, and qemu aborts with `-cpu host`
/// ("failed to set MSR"). Returns the accelerator and why, for the launcher's log. Nothing is
/// cached: every run probes afresh.
pub fn probe_accel() -> (Accel, String) {
    match probe() {
        Ok(how) => (Accel::Kvm, how),
        Err(why) => (Accel::Tcg, why),
    }
}

fn probe() -> Result<String, String> {
    let api = kvm_api()?;
    let qemu = native_qemu()
        .ok_or_else(|| format!("no default qemu for a {} machine", std::env::consts::ARCH))?;
    let ran = probe_qemu(qemu, &KVM_ARGS)?;
    Ok(format!(
        "/dev/kvm API {api}; {qemu} {} {ran}",
        KVM_ARGS.join(" ")
    ))
}

/// The KVM API version, once a VM could be created with it.
fn kvm_api() -> Result<i32, String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    // _IO(KVMIO, 0x00) and _IO(KVMIO, 0x01) of <linux/kvm.h>. Both with an explicit 0
    // argument: KVM refuses KVM_GET_API_VERSION with EINVAL when the argument is not 0.
    nix::ioctl_write_int_bad!(kvm_get_api_version, nix::request_code_none!(0xAE, 0x00));
    nix::ioctl_write_int_bad!(kvm_create_vm, nix::request_code_none!(0xAE, 0x01));
    const KVM_API_VERSION: i32 = 12;

    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("cannot open /dev/kvm read-write: {e}"))?;
    // SAFETY: both requests take no pointer; the file is /dev/kvm.
    let version = unsafe { kvm_get_api_version(dev.as_raw_fd(), 0) }
        .map_err(|e| format!("/dev/kvm: KVM_GET_API_VERSION failed: {e}"))?;
    if version != KVM_API_VERSION {
        return Err(format!(
            "/dev/kvm has KVM API {version}, not {KVM_API_VERSION}"
        ));
    }
    // SAFETY: as above; 0 is the default machine type.
    let vm = unsafe { kvm_create_vm(dev.as_raw_fd(), 0) }
        .map_err(|e| format!("/dev/kvm: KVM_CREATE_VM failed: {e}"))?;
    // SAFETY: KVM_CREATE_VM returned a new descriptor that nothing else owns; closed here.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    Ok(version)
}

/// The accelerator arguments of a KVM guest, as [`default_command`] gives them.
const KVM_ARGS: [&str; 4] = ["-accel", "kvm", "-cpu", "host"];

/// Runs a machine without disks with `accel` (the [`KVM_ARGS`]) for at most
/// [`PROBE_TIMEOUT`]; what it got to, or why not.
fn probe_qemu(qemu: &str, accel: &[&str]) -> Result<String, String> {
    let what = format!("{qemu} {}", accel.join(" "));
    let mut cmd = Command::new(qemu);
    cmd.args(accel)
        .args(["-nodefaults", "-display", "none"])
        .args([
            "-no-reboot",
            "-m",
            "64",
            "-serial",
            "none",
            "-monitor",
            "none",
        ]);
    let x86 = qemu.ends_with("x86_64");
    if x86 {
        // SeaBIOS writes its progress to I/O port 0x402.
        cmd.args(["-M", "q35", "-chardev", "stdio,id=dbg,signal=off"])
            .args(["-device", "isa-debugcon,iobase=0x402,chardev=dbg"]);
    } else {
        cmd.args(["-M", "virt"]);
    }
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {qemu}: {e}"))?;
    let (tx, rx) = mpsc::channel::<bool>();
    if let Some(mut out) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                // The BIOS is done and looks for something to boot: the CPU works.
                if seen.windows(12).any(|w| w == b"Booting from")
                    || seen.windows(18).any(|w| w == b"No bootable device")
                {
                    let _ = tx.send(true);
                    return;
                }
            }
            let _ = tx.send(false);
        });
    }
    let got_there = rx.recv_timeout(PROBE_TIMEOUT);
    let elapsed = started.elapsed();
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let prefix = format!("{qemu}: ");
    let stderr = stderr
        .lines()
        .filter(|l| !l.contains("terminating on signal"))
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ");
    match got_there {
        Ok(true) => Ok(format!(
            "ran the BIOS to its boot in {:.1} s",
            elapsed.as_secs_f64()
        )),
        // Not x86: no BIOS to watch; still running after the timeout is all we can tell.
        Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected)
            if !x86 && exited.is_none() =>
        {
            Ok(format!("ran {:.1} s without error", elapsed.as_secs_f64()))
        }
        _ if !stderr.is_empty() => Err(format!("{what}: {stderr}")),
        _ => Err(format!(
            "{what}: the BIOS did not finish within {:.1} s",
            PROBE_TIMEOUT.as_secs_f64()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmgroup::job;

    fn no_firmware() -> Option<PathBuf> {
        None
    }

    fn some_firmware() -> Option<PathBuf> {
        Some(PathBuf::from("/fw/QEMU_EFI.fd"))
    }

    fn build(
        arch: &str,
        device_type: &str,
        deployed: &Deployed,
        disk: Option<&Path>,
        accel: Accel,
    ) -> Result<String, String> {
        command_for(
            arch,
            device_type,
            deployed,
            disk,
            "server-1",
            Path::new("/logs"),
            accel,
            no_firmware,
        )
    }

    #[test]
    fn kvm_and_qemu_follow_the_machine() {
        let d = Deployed::image("/img/disk.img");
        for dt in ["kvm", "qemu"] {
            let c = build(
                "x86_64",
                dt,
                &d,
                Some(Path::new("/logs/server-1.qcow2")),
                Accel::Tcg,
            )
            .unwrap();
            assert!(
                c.starts_with("exec qemu-system-x86_64 -M q35 -accel tcg -name server-1 -m 512 "),
                "{c}"
            );
            for part in [
                " -nographic -no-reboot -monitor none",
                " -chardev stdio,id=console,mux=off,signal=off -serial chardev:console",
                " -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=",
                " -pidfile /logs/server-1.pid",
                // Not made yet: the overlay a run creates, qcow2 by its name.
                " -drive file=/logs/server-1.qcow2,if=virtio,format=qcow2",
            ] {
                assert!(c.contains(part), "{part} in {c}");
            }
            assert!(!c.contains("-kernel") && !c.contains("-append"), "{c}");
            let c = build("x86_64", dt, &d, None, Accel::Kvm).unwrap();
            assert!(c.contains(" -accel kvm -cpu host "), "{c}");
            // Without an overlay the deployed image is never written.
            assert!(
                c.contains(" -drive file=/img/disk.img,if=virtio,format=raw,snapshot=on"),
                "{c}"
            );
            let c = build("aarch64", dt, &Deployed::kernel("/k"), None, Accel::Tcg).unwrap();
            assert!(
                c.starts_with("exec qemu-system-aarch64 -M virt -accel tcg -cpu max "),
                "{c}"
            );
            let e = build("riscv64", dt, &d, None, Accel::Tcg).unwrap_err();
            assert!(e.contains("riscv64") && e.contains("launch_with"), "{e}");
        }
    }

    #[test]
    fn kvm_arm_is_aarch64_virt() {
        let d = Deployed::kernel("/b/Image")
            .with_ramdisk("/b/initrd.gz")
            .with_dtb("/b/virt.dtb")
            .with_rootfs("/b/rootfs.ext4");
        let c = build("x86_64", "kvm-arm", &d, None, Accel::Kvm).unwrap();
        // KVM cannot run an arm guest on an x86_64 machine.
        assert!(
            c.starts_with("exec qemu-system-aarch64 -M virt -accel tcg -cpu max "),
            "{c}"
        );
        assert!(
            c.contains(" -kernel /b/Image -initrd /b/initrd.gz -dtb /b/virt.dtb"),
            "{c}"
        );
        assert!(
            c.contains(" -drive file=/b/rootfs.ext4,if=virtio,format=raw,snapshot=on"),
            "{c}"
        );
        assert!(
            c.ends_with(" -append 'console=ttyAMA0 root=/dev/vda rw rootwait {kernel_cmdline}'"),
            "{c}"
        );
        let c = build("aarch64", "kvm-arm", &d, None, Accel::Kvm).unwrap();
        assert!(c.contains(" -accel kvm -cpu host "), "{c}");

        // A disk boot needs firmware on -M virt.
        let disk = Deployed::image("/b/disk.img");
        let e = build("x86_64", "kvm-arm", &disk, None, Accel::Tcg).unwrap_err();
        assert!(e.contains("qemu-efi-aarch64"), "{e}");
        let c = command_for(
            "x86_64",
            "kvm-arm",
            &disk,
            None,
            "c-1",
            Path::new("/l"),
            Accel::Tcg,
            some_firmware,
        )
        .unwrap();
        assert!(
            c.contains(" -bios /fw/QEMU_EFI.fd -drive file=/b/disk.img,"),
            "{c}"
        );
    }

    #[test]
    fn kernel_boot() {
        let d = Deployed::kernel("/g/vmlinuz").with_ramdisk("/g/initrd.gz");
        let c = build("x86_64", "qemu", &d, None, Accel::Tcg).unwrap();
        assert!(
            c.contains(" -kernel /g/vmlinuz -initrd /g/initrd.gz -append "),
            "{c}"
        );
        assert!(
            c.ends_with(" -append 'console=ttyS0 {kernel_cmdline}'"),
            "{c}"
        );
        assert!(!c.contains("-drive") && !c.contains("-dtb"), "{c}");

        // The overlay of the rootfs, not the rootfs, is the root disk.
        let dir = std::env::temp_dir().join(format!("lava-qemu-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let overlay = dir.join("server-1.qcow2");
        std::fs::write(&overlay, b"QFI\xfb\0\0\0\x03").unwrap();
        let c = build(
            "x86_64",
            "kvm",
            &d.clone().with_rootfs("/g/rootfs.img"),
            Some(&overlay),
            Accel::Tcg,
        )
        .unwrap();
        let expect = format!(" -drive file={},if=virtio,format=qcow2 ", overlay.display());
        assert!(c.contains(&expect), "{c}");
        assert!(!c.contains("rootfs.img"), "{c}");
        assert!(c.contains("'console=ttyS0 root=/dev/vda rw rootwait {kernel_cmdline}'"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn paths_are_quoted_for_the_shell_qemu_and_substitute() {
        let d = Deployed::kernel("/my images/it's {v1},x/vmlinuz");
        let c = command_for(
            "x86_64",
            "qemu",
            &d.clone().with_rootfs("/r,1/root fs"),
            None,
            "vm-1",
            Path::new("/tmp/log dir"),
            Accel::Tcg,
            no_firmware,
        )
        .unwrap();
        assert!(
            c.contains(r" -kernel '/my images/it'\''s {{v1}},x/vmlinuz'"),
            "{c}"
        );
        assert!(c.contains(" -pidfile '/tmp/log dir/vm-1.pid'"), "{c}");
        assert!(
            c.contains(" -drive 'file=/r,,1/root fs,if=virtio,format=raw,snapshot=on'"),
            "{c}"
        );
        // Through the placeholders, as a launch_with command, the paths come back whole.
        let value = |name: &str| {
            (name == "kernel_cmdline").then(|| "lava_multinode.client=vm-1".to_owned())
        };
        let done = job::substitute(&c, &value).unwrap();
        assert!(
            done.contains(r" -kernel '/my images/it'\''s {v1},x/vmlinuz'"),
            "{done}"
        );
        assert!(
            done.ends_with(" rootwait lava_multinode.client=vm-1'"),
            "{done}"
        );
    }

    #[test]
    fn errors() {
        let d = Deployed::image("/d.img");
        let e = build("x86_64", "xen", &d, None, Accel::Tcg).unwrap_err();
        assert!(
            e.contains("\"xen\"") && e.contains("kvm, qemu, kvm-arm"),
            "{e}"
        );
        let e = build("x86_64", "kvm", &Deployed::default(), None, Accel::Tcg).unwrap_err();
        assert!(e.starts_with("nothing to boot"), "{e}");
        let e = build(
            "x86_64",
            "kvm",
            &Deployed::image("/d.img").with_dtb("/x.dtb"),
            None,
            Accel::Tcg,
        )
        .unwrap_err();
        assert!(e.contains("dtb was deployed without a kernel"), "{e}");
        let e = build(
            "x86_64",
            "kvm",
            &Deployed::default().with_rootfs("/r"),
            None,
            Accel::Tcg,
        )
        .unwrap_err();
        assert!(e.contains("rootfs was deployed without a kernel"), "{e}");
    }

    #[test]
    fn the_probe_answers_quickly_with_a_reason() {
        let started = Instant::now();
        let (accel, why) = probe_accel();
        let took = started.elapsed();
        eprintln!("probe: {accel:?} ({why}) in {took:?}");
        assert!(!why.is_empty());
        assert!(took < Duration::from_secs(4), "{took:?}");
    }

    #[test]
    fn the_probe_sees_a_bios_finish_and_a_qemu_fail() {
        if std::env::consts::ARCH != "x86_64" || !have("qemu-system-x86_64") {
            eprintln!("skipped: no qemu-system-x86_64 on this x86_64 machine");
            return;
        }
        // TCG gets through SeaBIOS in well under a second: the probe's way of telling works.
        let ran = probe_qemu("qemu-system-x86_64", &["-accel", "tcg"]).unwrap();
        assert!(ran.starts_with("ran the BIOS to its boot in"), "{ran}");
        let e = probe_qemu(
            "qemu-system-x86_64",
            &["-accel", "tcg", "-cpu", "no-such-cpu"],
        )
        .unwrap_err();
        assert!(
            e.starts_with("qemu-system-x86_64 -accel tcg -cpu no-such-cpu: ")
                && e.contains("no-such-cpu"),
            "{e}"
        );
        let e = probe_qemu("qemu-system-not-here", &["-accel", "tcg"]).unwrap_err();
        assert!(e.starts_with("cannot run qemu-system-not-here"), "{e}");
    }

    /// Runs `command` with `sh -c` until `marker` shows on its output (within `limit`), then
    /// kills it; the output so far on failure.
    fn run_until(command: &str, marker: &'static [u8], limit: Duration) -> Result<u32, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let mut out = child.stdout.take().ok_or("no stdout")?;
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(marker.len()).any(|w| w == marker) {
                    let _ = tx.send(Ok(()));
                    return;
                }
            }
            let _ = tx.send(Err(String::from_utf8_lossy(&seen).into_owned()));
        });
        let result = rx.recv_timeout(limit);
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        match result {
            Ok(Ok(())) => Ok(child.id()),
            Ok(Err(console)) => Err(format!("ended first: {stderr}\n{console}")),
            Err(_) => Err(format!("not within {limit:?}: {stderr}")),
        }
    }

    #[test]
    fn qemu_takes_a_disk_boot_of_an_overlay() {
        if std::env::consts::ARCH != "x86_64" || !have("qemu-system-x86_64") || !have("qemu-img") {
            eprintln!("skipped: no qemu-system-x86_64 and qemu-img on this x86_64 machine");
            return;
        }
        let dir = std::env::temp_dir().join(format!("lava-qemu-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("blank.img");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let disk = images::overlay(&base, &dir, "disk-1").unwrap();
        let template = default_command(
            "kvm",
            &Deployed::image(&base),
            Some(&disk),
            "disk-1",
            &dir,
            Accel::Tcg,
        )
        .unwrap();
        assert!(template.contains(",format=qcow2"), "{template}");
        // A blank disk: SeaBIOS tries it on the console, which shows qemu took every option.
        let got = run_until(
            &template,
            b"Booting from Hard Disk",
            Duration::from_secs(20),
        );
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = got {
            panic!("{e}\n{template}");
        }
    }

    /// The test guest of packaging/vm-guest (build.sh): `LAVA_VM_GUEST_DIR` or target/vm-guest.
    fn guest_dir() -> PathBuf {
        match std::env::var_os("LAVA_VM_GUEST_DIR") {
            Some(d) => PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vm-guest"),
        }
    }

    fn have(program: &str) -> bool {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn boots_the_test_guest_from_a_kernel() {
        if std::env::consts::ARCH != "x86_64" || !have("qemu-system-x86_64") {
            eprintln!("skipped: no qemu-system-x86_64 on this x86_64 machine");
            return;
        }
        let guest = guest_dir();
        let (kernel, initrd) = (guest.join("vmlinuz"), guest.join("initrd.gz"));
        if !kernel.is_file() || !initrd.is_file() {
            eprintln!(
                "skipped: no test guest in {} (sh packaging/vm-guest/build.sh)",
                guest.display()
            );
            return;
        }
        let log_dir = std::env::temp_dir().join(format!("lava-qemu-boot-{}", std::process::id()));
        std::fs::create_dir_all(&log_dir).unwrap();
        let deployed = Deployed::kernel(&kernel).with_ramdisk(&initrd);
        // TCG: what this test checks is the command, not the machine's KVM.
        let template =
            default_command("qemu", &deployed, None, "boot-1", &log_dir, Accel::Tcg).unwrap();
        let value = |name: &str| {
            (name == "kernel_cmdline")
                .then(|| "lava_multinode.client=boot-1 lava_multinode.console=shell".to_owned())
        };
        let command = job::substitute(&template, &value).unwrap();
        let got = run_until(&command, b"lava-guest# ", Duration::from_secs(60));
        // `exec`: the shell's pid is qemu's, and qemu's pid file says so.
        let pid = std::fs::read_to_string(log_dir.join("boot-1.pid")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&log_dir);
        match got {
            Ok(shell_pid) => assert_eq!(pid.trim(), shell_pid.to_string(), "exec reaches qemu"),
            Err(e) => panic!("no \"lava-guest# \": {e}\n{command}"),
        }
    }
}
