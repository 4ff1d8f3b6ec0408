//! The kernel modules the guest loads before it can mount the host's root, in load order.
//!
//! Input: the text of `modules.dep` (written by `busybox depmod`) and `modules.builtin`, and module
//! names. Output: `.ko` paths relative to `lib/modules/<release>/`, each after its dependencies.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context as _, Result};

/// What the guest's `/init` needs that Debian builds as modules: the PCI transport of virtio
/// devices, the virtiofs client (with fuse) and overlayfs for the writable layer over the host root.
pub(crate) const REQUIRED: [&str; 3] = ["virtio_pci", "virtiofs", "overlay"];

/// `modules.dep`, parsed: module path → the paths it depends on.
struct DepGraph<'a> {
    deps: BTreeMap<&'a str, Vec<&'a str>>,
}

impl<'a> DepGraph<'a> {
    fn parse(modules_dep: &'a str) -> Self {
        let deps = modules_dep
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(path, deps)| (path.trim(), deps.split_whitespace().collect()))
            .collect();
        Self { deps }
    }

    fn path_of(&self, name: &str) -> Option<&'a str> {
        self.deps.keys().copied().find(|p| module_name(p) == name)
    }

    /// Appends `path`'s dependencies (depth first) and then `path` to `order`, each once.
    fn visit(
        &self,
        path: &'a str,
        seen: &mut HashSet<&'a str>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if !seen.insert(path) {
            return Ok(());
        }
        let deps = self
            .deps
            .get(path)
            .with_context(|| format!("`{path}` is a dependency but has no modules.dep entry"))?;
        for dep in deps {
            self.visit(dep, seen, order)?;
        }
        order.push(path.to_owned());
        Ok(())
    }
}

/// The `.ko` files to load for `names`, dependencies first; names built into the kernel are
/// skipped.
///
/// # Errors
/// When a name is neither in `modules.dep` nor in `modules.builtin`, or a dependency has no entry.
pub(crate) fn load_order(
    modules_dep: &str,
    modules_builtin: &str,
    names: &[&str],
) -> Result<Vec<String>> {
    let graph = DepGraph::parse(modules_dep);
    let builtin: HashSet<String> = modules_builtin.lines().map(module_name).collect();
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for name in names {
        let name = normalize(name);
        if let Some(path) = graph.path_of(&name) {
            graph.visit(path, &mut seen, &mut order)?;
        } else if !builtin.contains(&name) {
            bail!("kernel module `{name}` is neither in modules.dep nor built in");
        }
    }
    Ok(order)
}

/// `kernel/fs/fuse/virtiofs.ko[.xz]` → `virtiofs`; `-` and `_` are the same in module names.
fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or_default();
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/fs/fuse/fuse.ko:
kernel/net/sched/sch-ingress.ko:
";

    #[test]
    fn dependencies_come_first_and_once() {
        let order = load_order(DEP, "", &["virtio_pci", "virtiofs"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/fs/fuse/fuse.ko",
                "kernel/fs/fuse/virtiofs.ko",
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped() {
        let order = load_order(
            DEP,
            "kernel/fs/overlayfs/overlay.ko\n",
            &["overlay", "fuse"],
        )
        .unwrap();
        assert_eq!(order, ["kernel/fs/fuse/fuse.ko"]);
    }

    #[test]
    fn dash_and_underscore_are_the_same_name() {
        let order = load_order(DEP, "", &["sch_ingress"]).unwrap();
        assert_eq!(order, ["kernel/net/sched/sch-ingress.ko"]);
    }

    #[test]
    fn unknown_module_is_an_error() {
        let err = load_order(DEP, "", &["nope"]).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
    }
}
