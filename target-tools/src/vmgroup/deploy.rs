//! The deploy actions: which images every VM role boots. `deploy_linaro_image` and
//! `deploy_linaro_kernel` (for a role, or for every VM role without one; the later action
//! wins), else the VM entry's `image`. Deploys for the host's role concern the host device,
//! which the lab deploys: they are logged, not run.

use std::path::{Path, PathBuf};

use super::actions::JobAction;
use super::images::{self, Deployed};
use super::job::Job;

/// The images of every VM role. With `dir`, each is fetched (and decompressed) into it; without
/// (`vm-group show`), the paths are shown as given.
pub fn deploy(job: &Job, dir: Option<&Path>) -> Result<Vec<(String, Deployed)>, String> {
    let mut roles: Vec<String> = Vec::new();
    for spec in &job.vms {
        if !roles.contains(&spec.role) {
            roles.push(spec.role.clone());
        }
    }
    let mut out = Vec::new();
    for role in roles {
        let get = |source: &str, field: &str| -> Result<PathBuf, String> {
            match dir {
                Some(dir) => images::fetch(source, dir, &role).map_err(|e| format!("{field}: {e}")),
                None => Ok(PathBuf::from(
                    source.strip_prefix("file://").unwrap_or(source),
                )),
            }
        };
        let mut deployed = Deployed::default();
        for (i, action) in job.actions.iter().enumerate() {
            if !action.applies_to(&role) {
                continue;
            }
            let field = format!("actions[{i}].parameters");
            match action {
                JobAction::DeployImage { image, .. } => {
                    deployed = Deployed::image(get(image, &format!("{field}.image"))?);
                }
                JobAction::DeployKernel {
                    kernel,
                    ramdisk,
                    dtb,
                    rootfs,
                    ..
                } => {
                    let mut d = Deployed::kernel(get(kernel, &format!("{field}.kernel"))?);
                    if let Some(r) = ramdisk {
                        d = d.with_ramdisk(get(r, &format!("{field}.ramdisk"))?);
                    }
                    if let Some(t) = dtb {
                        d = d.with_dtb(get(t, &format!("{field}.dtb"))?);
                    }
                    if let Some(r) = rootfs {
                        d = d.with_rootfs(get(r, &format!("{field}.rootfs"))?);
                    }
                    deployed = d;
                }
                _ => {}
            }
        }
        if deployed.is_empty() {
            // The VM entry's own image, when the default launcher boots it.
            let entry = job
                .vms
                .iter()
                .enumerate()
                .find(|(_, v)| v.role == role && v.launch_with.is_empty());
            if let Some((i, spec)) = entry {
                if let Some(image) = &spec.image {
                    deployed = Deployed::image(get(image, &format!("vm_group.vms[{i}].image"))?);
                }
            }
        }
        out.push((role, deployed));
    }
    Ok(out)
}

/// What `deploy` gave `role`.
pub fn of<'a>(deployed: &'a [(String, Deployed)], role: &str) -> Option<&'a Deployed> {
    deployed
        .iter()
        .find(|(r, _)| r == role)
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(actions: serde_json::Value) -> Job {
        Job::from_value(&json!({
            "vm_group": {"host": {"device_type": "arndale", "role": "host"},
                         "vms": [{"device_type": "kvm", "role": "server"},
                                 {"device_type": "kvm", "role": "client", "image": "c.img"}]},
            "actions": actions,
        }))
        .unwrap()
    }

    #[test]
    fn later_deploys_win_and_roles_apply() {
        let j = job(json!([
            {"command": "deploy_linaro_image", "parameters": {"image": "file:///a.img"}},
            {"command": "deploy_linaro_kernel", "parameters": {"kernel": "k", "ramdisk": "r", "role": "server"}},
            {"command": "deploy_linaro_image", "parameters": {"image": "/h.img", "role": "host"}},
        ]));
        let d = deploy(&j, None).unwrap();
        let server = of(&d, "server").unwrap();
        assert_eq!(server.kernel.as_deref(), Some(Path::new("k")));
        assert_eq!(server.ramdisk.as_deref(), Some(Path::new("r")));
        assert_eq!(
            of(&d, "client").unwrap().image.as_deref(),
            Some(Path::new("/a.img"))
        );
        assert!(of(&d, "host").is_none(), "the lab deploys the host");
    }

    /// `kvm-arm` with an image made for this machine boots as `kvm`; anything else as given.
    #[test]
    fn kvm_arm_follows_an_image_made_for_this_machine() {
        let dir = std::env::temp_dir().join(format!("lava-arch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pc_disk = vec![0u8; 4096];
        pc_disk[..4].copy_from_slice(&[0xfa, 0x31, 0xc0, 0x8e]);
        pc_disk[510..512].copy_from_slice(&[0x55, 0xAA]);
        std::fs::write(dir.join("pc.img"), &pc_disk).unwrap();
        let mut arm_kernel = vec![0u8; 4096];
        arm_kernel[0x38..0x3c].copy_from_slice(b"ARM\x64");
        std::fs::write(dir.join("Image"), &arm_kernel).unwrap();
        std::fs::write(dir.join("blank.img"), vec![0u8; 4096]).unwrap();
        let pc = Deployed::image(dir.join("pc.img"));
        let arm = Deployed::kernel(dir.join("Image"));
        let blank = Deployed::image(dir.join("blank.img"));
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(device_type_for("kvm-arm", &pc), "kvm");
        }
        assert_eq!(device_type_for("kvm-arm", &arm), "kvm-arm");
        assert_eq!(device_type_for("kvm-arm", &blank), "kvm-arm");
        assert_eq!(device_type_for("qemu", &pc), "qemu");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_entrys_image_without_deploys() {
        let d = deploy(&job(json!([])), None).unwrap();
        assert!(of(&d, "server").is_none());
        assert_eq!(
            of(&d, "client").unwrap().image.as_deref(),
            Some(Path::new("c.img"))
        );
    }

    #[test]
    fn a_missing_image_names_the_action() {
        let dir = std::env::temp_dir();
        let j = job(
            json!([{"command": "deploy_linaro_image", "parameters": {"image": "/nonexistent/x.img", "role": "server"}}]),
        );
        let e = deploy(&j, Some(&dir)).unwrap_err();
        assert!(e.starts_with("actions[0].parameters.image: "), "{e}");
    }
}

/// How the VMs start: what was deployed for each role, and the accelerator of the default
/// launcher (for VMs without `launch_with`).
#[derive(Debug, Clone)]
pub struct Launch {
    pub deployed: Vec<(String, Deployed)>,
    pub accel: super::qemu::Accel,
}

impl Launch {
    pub fn of(&self, role: &str) -> Option<&Deployed> {
        of(&self.deployed, role)
    }
}

/// The device type the default launcher uses for a VM: `kvm-arm` (the seed's VMs on an ARM
/// board) boots an image made for this machine's architecture (a PC disk, an x86 kernel on an
/// x86_64 machine) as `kvm`, so that the seed's job runs as written on the machine at hand;
/// any other case as given.
pub fn device_type_for<'a>(given: &'a str, deployed: &Deployed) -> &'a str {
    let image = deployed.kernel.as_ref().or(deployed.image.as_ref());
    let native = image.and_then(|p| images::image_arch(p)) == Some(std::env::consts::ARCH);
    if given == "kvm-arm" && native && std::env::consts::ARCH != "aarch64" {
        "kvm"
    } else {
        given
    }
}

/// Where a VM's writable disk goes (an overlay of its deployed image).
pub fn disk_path(log_dir: &Path, client: &str) -> PathBuf {
    log_dir.join(format!("{client}.qcow2"))
}
