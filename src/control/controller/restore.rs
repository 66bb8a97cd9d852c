//! After a (re)start: reconcile the state dir with the model, then rebuild every network and sandbox.

use super::*;

impl Inner {
    /// Make the state dir agree with the model after a crash: namespace pins and /etc dirs of
    /// sandboxes the model does not know (a create that was killed half way) are removed, and
    /// so are the mount-namespace pins of releases before 0.2. Sandboxes the model knows but
    /// whose namespaces are gone are made again by `restore`.
    pub(super) fn reconcile(&mut self) {
        let known: HashSet<String> = self
            .state
            .sandboxes
            .iter()
            .map(|s| s.name.clone())
            .collect();
        for dir in self.dirs.pin_dirs() {
            for name in names_in(&dir) {
                if !known.contains(&name) {
                    eprintln!(
                        "tapnet: removing leftover namespace {}",
                        dir.join(&name).display()
                    );
                    namespace::remove(&dir.join(&name));
                }
            }
        }
        for name in names_in(&self.dirs.etc_root()) {
            if !known.contains(&name) {
                etc_files::remove(&self.dirs, &name);
            }
        }
        let legacy = self.dirs.legacy_mntns_dir();
        if legacy.exists() {
            for name in names_in(&legacy) {
                namespace::remove(&legacy.join(name));
            }
            let _ = std::fs::remove_dir(&legacy);
        }
    }

    pub(super) fn restore(&mut self) {
        let networks: Vec<Network> = self.state.networks.clone();
        for net in &networks {
            if let Err(e) = self.add_switch(net) {
                eprintln!("tapnet: cannot restore network {}: {e}", net.name);
            }
        }
        let sandboxes: Vec<Arc<Sandbox>> = self.state.sandboxes.iter().cloned().collect();
        let waited = retry_while_interfaces_linger(
            sandboxes,
            |sb| self.restore_sandbox(sb),
            |sb, e| eprintln!("tapnet: cannot restore sandbox {}: {e}", sb.name),
        );
        if let Some(ms) = waited {
            eprintln!(
                "tapnet: sandboxes restored after {ms} ms waiting for the dead daemon's \
                 interfaces to go"
            );
        }
        // Impairments and blocks, once per network now that its sandboxes' ports are there.
        for net in &networks {
            links::sync(&self.state, &self.ports, &self.dp, &net.name, None, |n| {
                self.served_port(n)
            });
        }
        self.restore_cni();
        self.restore_docker();
        self.restore_vm_ports();
    }

    pub(super) fn restore_sandbox(&mut self, sb: &Sandbox) -> Result<()> {
        let host_mode = drivers::shares_host(&self.state, sb);
        let netns = self.dirs.netns_path(&sb.name);
        if !namespace::is_mounted_ns(&netns) {
            // The namespaces are gone (a reboot, or someone unmounted them): make them anew.
            if host_mode {
                namespace::pin_current_netns(&netns)?;
            } else {
                namespace::remove(&netns);
                namespace::remove(&self.dirs.utsns_path(&sb.name));
                self.create_namespaces(sb)?;
            }
        } else if !host_mode {
            self.refresh_etc(sb);
        }
        for ep in &sb.endpoints {
            // Tried again (`restore`): an endpoint wired by an earlier try is done.
            if self
                .ports
                .contains_key(&(sb.name.clone(), ep.network.clone()))
            {
                continue;
            }
            if let Some(net) = self.state.network(&ep.network).cloned() {
                self.wire(sb, ep, &net)?;
            }
        }
        // TAPs the fd keeper kept have their routes still (a `kill -9`): entering every
        // sandbox's namespace again would only delay the first answer.
        let interfaces: Vec<&str> = sb
            .endpoints
            .iter()
            .map(|ep| ep.interface.as_deref().unwrap_or(""))
            .collect();
        if !crate::keeper::client::all_reused(&sb.name, &interfaces) {
            self.sync_default_route(sb)?;
        }
        let sockets = sb
            .ports
            .iter()
            .map(ports::bind)
            .collect::<Result<Vec<_>>>()?;
        self.publish(sb, sockets);
        Ok(())
    }
}

/// How long a restart waits for the TAPs of the daemon that died: the kernel removes one only
/// once it has released the dead process's last reference to it (an io_uring's in-flight reads
/// hold one until the ring's teardown, which runs later, in a kernel worker; 740-773 ms in the
/// runs of issue 24).
const STALE_TAP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Restore each of `items` with `attempt`; one that fails because an interface of its name is
/// still there (`Error::AlreadyExists` of kind "interface") is tried again every 50 ms until
/// `STALE_TAP_WAIT` is over, any other failure goes to `report`. Returns the milliseconds
/// waited, if it had to wait.
pub(super) fn retry_while_interfaces_linger<T>(
    mut items: Vec<T>,
    mut attempt: impl FnMut(&T) -> Result<()>,
    report: impl Fn(&T, Error),
) -> Option<u128> {
    let lingers = |e: &Error| {
        matches!(
            e,
            Error::AlreadyExists {
                kind: "interface",
                ..
            }
        )
    };
    let started = std::time::Instant::now();
    let mut waited = false;
    loop {
        let mut again = Vec::new();
        for item in items {
            match attempt(&item) {
                Ok(()) => {}
                Err(e) if lingers(&e) && started.elapsed() < STALE_TAP_WAIT => again.push(item),
                Err(e) => report(&item, e),
            }
        }
        if again.is_empty() {
            return waited.then(|| started.elapsed().as_millis());
        }
        items = again;
        waited = true;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
